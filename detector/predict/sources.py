"""Turn anything a user may pass to ``predict`` into a stream of BGR frames.

Accepted: a path to an image or a video, a directory, a glob pattern, an image URL, an RTSP/HTTP stream URL, a
webcam index (``0``), a list of those, a numpy image (BGR, as OpenCV reads it), a PIL image, a torch tensor
((3, H, W) or (B, 3, H, W), RGB, 0..1), or a list of images.
Frames are produced lazily, so a long video is never held in memory.

A directory source is searched recursively (subfolders included, sorted by path), the same rule as a dataset
split given as a directory (``detector.data.format_yolo.list_images``); ``output_name`` keeps each file's
sub-path below the source, so same-named files in different folders never overwrite each other's outputs.
"""

from __future__ import annotations

import glob as globlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detector.data.image_io import ImageReadError
from detector.data.image_io import read_image as read_rgb
from detector.errors import DetectorError
from detector.predict.streams import (
    capture_label,
    fetch_image,
    is_image_url,
    is_url,
    is_webcam,
    iter_capture,
    read_frames,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpeg", ".mpg", ".wmv", ".webm", ".asf", ".gif", ".ts"}

SkipReporter = Callable[[str, str], None]


@dataclass
class Frame:
    """One image to run on: ``image`` (ndarray[H, W, 3]) uint8 BGR, where it came from, video frame index."""

    image: np.ndarray
    path: str = ""
    frame: int | None = None


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 BGR as displayed (the data pipeline's reader, which returns RGB).

    Raises ``DetectorError`` naming the file when it cannot be decoded.
    """
    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:
        raise DetectorError(f"{p}: empty file (0 bytes)")
    try:
        return cv2.cvtColor(read_rgb(p), cv2.COLOR_RGB2BGR)
    except ImageReadError as e:
        raise DetectorError(f"{path}: {e}") from None


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any HxW / HxWx1 / HxWx3 / HxWx4 array of uint8/uint16/float -> uint8 BGR HxWx3."""
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        scale = 255.0 if float(np.nanmax(img)) <= 1.0 else 1.0
        img = np.clip(img.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img)
    raise DetectorError(f"image array of shape {img.shape} is not HxW, HxWx1, HxWx3 or HxWx4")


def iter_video(path: Path) -> Iterator[Frame]:
    """Frames of a video file, one at a time."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DetectorError(f"{path}: cannot open video (missing codec or not a video)")
    for img, i in read_frames(cap, str(path)):
        yield Frame(img, str(path), i)


def video_frame_count(path: str | Path) -> int:
    """Number of frames the container claims (0 when unknown)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()


def _is_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def expand_paths(source: str | Path) -> list[Path]:
    """A file, directory (recursively) or glob -> sorted media files; a missing path raises ``DetectorError``."""
    s = str(source)
    p = Path(s)
    if p.is_dir():
        media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in media and f.is_file())
        if not files:
            raise DetectorError(f"{p}: directory has no images or videos (subfolders included)")
        return files
    if p.is_file():
        return [p]
    if _is_glob(s):
        files = sorted(Path(f) for f in globlib.glob(s, recursive=True) if Path(f).is_file())
        if not files:
            raise DetectorError(f"{s}: glob pattern matches no files")
        return files
    raise DetectorError(f"{s}: no such file or directory")


def source_root(source: str | Path) -> Path | None:
    """The folder a path source's files are named relative to: the directory itself, or a glob's fixed part."""
    p = Path(str(source))
    if p.is_dir():
        return p
    if _is_glob(str(source)):
        fixed = []
        for part in p.parts:
            if _is_glob(part):
                break
            fixed.append(part)
        return Path(*fixed) if fixed else Path(".")
    return None


def output_name(path: str | Path, root: Path | None) -> Path:
    """Where outputs of media file ``path`` go, relative to the run folder: its sub-path below ``root``
    (``a/x.jpg`` and ``b/x.jpg`` stay apart), or just its name when it lies outside ``root``."""
    p = Path(path)
    if root is not None:
        try:
            return p.resolve().relative_to(root.resolve())
        except ValueError:
            pass
    return Path(p.name)


def iter_frames(source: Any, on_skip: SkipReporter | None = None) -> Iterator[Frame]:
    """All frames of ``source`` (see the module docstring), lazily.

    In a directory, glob or list, an unreadable image is reported through ``on_skip(path, reason)`` and
    skipped; a single unreadable file given on its own raises ``DetectorError``.
    """
    if is_webcam(source) or (isinstance(source, str) and is_url(source)):
        yield from _iter_remote(source)
        return
    if isinstance(source, (str, Path)):
        paths = expand_paths(source)
        yield from _iter_paths(paths, on_skip if len(paths) > 1 or Path(str(source)).is_dir() else None)
        return
    if isinstance(source, np.ndarray):
        yield Frame(to_bgr8(source))
        return
    if _is_pil(source):
        yield Frame(cv2.cvtColor(np.asarray(source.convert("RGB")), cv2.COLOR_RGB2BGR))
        return
    if _is_tensor(source):
        yield from _iter_tensor(source)
        return
    if isinstance(source, (list, tuple)):
        if not source:
            raise DetectorError("predict: the source list is empty")
        for item in source:
            if isinstance(item, (str, Path)) and not (is_webcam(item) or is_url(str(item))):
                yield from _iter_paths(expand_paths(item), on_skip)
            else:
                yield from iter_frames(item, on_skip)
        return
    raise DetectorError(
        f"predict: unsupported source type {type(source).__name__}; give a path, directory, glob, list, URL, "
        "webcam index, numpy image, PIL image, torch tensor or video file"
    )


def _iter_remote(source: int | str) -> Iterator[Frame]:
    """An image URL (one frame), or the frames of a stream URL / webcam index (see ``detector.predict.streams``)."""
    if isinstance(source, str) and is_image_url(source):
        yield Frame(fetch_image(source), source)
        return
    label = capture_label(source)
    for img, i in iter_capture(source):
        yield Frame(img, label, i)


def _iter_paths(paths: list[Path], on_skip: SkipReporter | None) -> Iterator[Frame]:
    for p in paths:
        suffix = p.suffix.lower()
        try:
            if suffix in VIDEO_SUFFIXES:
                yield from iter_video(p)
            elif suffix in IMAGE_SUFFIXES:
                yield Frame(read_image(p), str(p))
            else:
                raise DetectorError(f"{p}: unsupported file type {suffix or '(none)'}")
        except DetectorError as e:
            if on_skip is None:
                raise
            on_skip(str(p), str(e).removeprefix(f"{p}: "))


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(obj, Image.Image)


def _is_tensor(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.Tensor)


def _iter_tensor(t) -> Iterator[Frame]:
    """(3, H, W) or (B, 3, H, W) RGB float in 0..1 (or uint8) -> BGR uint8 frames."""
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[1] != 3:
        raise DetectorError(f"predict: a tensor source must be (3, H, W) or (B, 3, H, W) RGB, got {tuple(t.shape)}")
    arr = t.detach().cpu()
    arr = arr.numpy() if arr.dtype.is_floating_point is False else (arr.float().clamp(0, 1) * 255).round().numpy()
    for img in arr.astype(np.uint8):
        yield Frame(np.ascontiguousarray(img.transpose(1, 2, 0)[:, :, ::-1]))
