"""Network and camera sources for ``predict``: image URLs, RTSP/RTMP/HTTP(S) video streams and webcam indices.

* ``source=0`` (an int, or a string of digits that is not a file): webcam index, read with OpenCV.
* ``http(s)://.../x.jpg`` (an image suffix in the URL path): downloaded with urllib, decoded by OpenCV.
* any other ``rtsp://``, ``rtmp://``, ``http(s)://``, ``tcp://``, ``udp://`` URL: a video stream opened by OpenCV's
  FFmpeg backend.

Every network wait is bounded by ``TIMEOUT_S`` (opening, each read, the download), and every failure is one
``DetectorError`` sentence naming the source, never an OpenCV or urllib traceback.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np

from detector.errors import DetectorError

TIMEOUT_S = 10.0
"""Seconds to wait for a stream to open, for each frame of it, and for an image download."""
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "tcp", "udp")
IMAGE_URL_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def is_url(source: str) -> bool:
    return urlparse(source).scheme.lower() in STREAM_SCHEMES and "://" in source


def is_webcam(source: object) -> bool:
    """An int, or a string of digits that does not name an existing file."""
    if isinstance(source, bool):
        return False
    if isinstance(source, int):
        return True
    return isinstance(source, str) and source.isdigit() and not Path(source).exists()


def is_image_url(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme.lower() in ("http", "https") and Path(parsed.path).suffix.lower() in IMAGE_URL_SUFFIXES


def fetch_image(url: str, timeout_s: float | None = None) -> np.ndarray:
    """Download and decode an image URL to uint8 BGR (EXIF orientation applied, as OpenCV does for files)."""
    timeout = TIMEOUT_S if timeout_s is None else timeout_s
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the user's own URL
            data = response.read()
    except urllib.error.HTTPError as e:
        raise DetectorError(f"{url}: the server answered HTTP {e.code} ({e.reason})") from None
    except TimeoutError:
        raise DetectorError(f"{url}: no answer within {timeout:g} s") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise DetectorError(f"{url}: no answer within {timeout:g} s") from None
        raise DetectorError(f"{url}: cannot download ({reason})") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise DetectorError(f"{url}: the download ({len(data)} bytes) is not an image OpenCV can decode")
    return image


def open_capture(source: int | str, timeout_s: float | None = None) -> cv2.VideoCapture:
    """An opened ``cv2.VideoCapture`` for a webcam index or a stream URL; raises ``DetectorError`` if it cannot."""
    timeout_ms = int(1000 * (TIMEOUT_S if timeout_s is None else timeout_s))
    if is_webcam(source):
        index = int(source)
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            raise DetectorError(f"webcam {index}: cannot open camera {index} (no such device, or it is in use)")
        return cap
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    cap = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        raise DetectorError(
            f"{source}: cannot open the stream within {timeout_ms / 1000:g} s (unreachable, wrong URL, or not a video)"
        )
    return cap


def capture_label(source: int | str) -> str:
    """What ``Results.path`` says for a capture: the URL, or ``webcam N``."""
    return f"webcam {int(source)}" if is_webcam(source) else str(source)


def read_frames(cap: cv2.VideoCapture, label: str) -> Iterator[tuple[np.ndarray, int]]:
    """``(BGR frame, index)`` from an opened capture until it ends (or a read fails); releases it at the end.

    A capture that gives no frame at all raises ``DetectorError`` naming ``label``.
    """
    try:
        i = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            yield img, i
            i += 1
        if i == 0:
            raise DetectorError(f"{label}: opened, but no readable frame came")
    finally:
        cap.release()


def iter_capture(source: int | str, timeout_s: float | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """``(BGR frame, index)`` from a webcam or stream until it ends (or a read fails after the first frame)."""
    yield from read_frames(open_capture(source, timeout_s), capture_label(source))
