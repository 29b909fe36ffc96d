"""Image URLs, HTTP video streams and webcam indices as predict sources, served from 127.0.0.1 only."""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_models import tiny_checkpoint

from detector import Detector
from detector.errors import DetectorError
from detector.predict import streams

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "datasets/bccd/JPEGImages").glob("*.jpg"))[:3]
FRAMES = 4


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder with one BCCD image and a 4-frame MJPG video, served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    folder = tmp_path_factory.mktemp("www")
    (folder / "cells.jpg").write_bytes(IMAGES[0].read_bytes())
    first = cv2.imread(str(IMAGES[0]))
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, first.shape[1::-1])
    for i in range(FRAMES):
        writer.write(cv2.imread(str(IMAGES[i % len(IMAGES)])))
    writer.release()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> Detector:
    return Detector(tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt"), device="cpu")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_image_url_gives_the_same_detections_as_the_file(det, served):
    folder, base = served
    (remote,) = det.predict(f"{base}/cells.jpg", imgsz=160)
    (local,) = det.predict(folder / "cells.jpg", imgsz=160)
    assert remote.path == f"{base}/cells.jpg" and remote.orig_shape == (480, 640)
    assert len(remote) == len(local) > 0
    np.testing.assert_allclose(remote.boxes.data, local.boxes.data, atol=1e-4)


def test_http_video_stream_yields_every_frame(det, served):
    folder, base = served
    remote = list(det.predict(f"{base}/clip.avi", imgsz=160, stream=True))
    local = det.predict(folder / "clip.avi", imgsz=160)
    assert [r.frame for r in remote] == list(range(FRAMES)) and all(r.path == f"{base}/clip.avi" for r in remote)
    for a, b in zip(remote, local):
        np.testing.assert_allclose(a.boxes.data, b.boxes.data, atol=1e-4)


def test_cli_predicts_a_url_and_saves_by_its_name(served, tmp_path, det):
    from detector.cli import main

    _, base = served
    ckpt = tmp_path / "m.pt"
    tiny_checkpoint(ckpt)
    argv = ["predict", f"model={ckpt}", f"source={base}/cells.jpg", "imgsz=160", f"project={tmp_path}", "name=p"]
    assert main([*argv, "save_txt=True"]) == 0
    assert (tmp_path / "p" / "cells.jpg").is_file() and (tmp_path / "p" / "labels" / "cells.txt").is_file()


def test_unreachable_and_missing_sources_fail_in_one_sentence(det, served):
    _, base = served
    port = _closed_port()
    for url, pattern in [
        (f"http://127.0.0.1:{port}/x.jpg", r"cannot download \(.*refused"),
        (f"{base}/missing.jpg", r"HTTP 404"),
        (f"rtsp://127.0.0.1:{port}/live", r"cannot open the stream within"),
        (f"http://127.0.0.1:{port}/live.mp4", r"cannot open the stream within"),
    ]:
        t0 = time.monotonic()
        with pytest.raises(DetectorError, match=pattern) as e:
            det.predict(url)
        assert time.monotonic() - t0 < 5 and "\n" not in str(e.value) and url in str(e.value)


def test_image_download_times_out(monkeypatch):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x.jpg"
        t0 = time.monotonic()
        with pytest.raises(DetectorError, match=r"no answer within 0.5 s"):
            streams.fetch_image(url, timeout_s=0.5)
        assert time.monotonic() - t0 < 3


def test_webcam_index_reads_frames_through_opencv(det, monkeypatch):
    frames = [cv2.imread(str(p)) for p in IMAGES[:2]]
    opened = []

    class FakeCamera:
        """cv2.VideoCapture(0) on a machine with a camera that delivers two frames."""

        def __init__(self, index, *args):
            opened.append(index)
            self.left = list(frames)

        def isOpened(self):
            return True

        def read(self):
            return (True, self.left.pop(0)) if self.left else (False, None)

        def release(self):
            pass

    monkeypatch.setattr(streams.cv2, "VideoCapture", FakeCamera)
    results = det.predict(0, imgsz=160)
    assert opened == [0] and [r.frame for r in results] == [0, 1] and results[0].path == "webcam 0"
    (local,) = det.predict(IMAGES[0], imgsz=160)
    np.testing.assert_allclose(results[0].boxes.data, local.boxes.data, atol=1e-4)
    assert len(det.predict("1", imgsz=160)) == 2 and opened[-1] == 1  # "1" on the command line is index 1


def test_missing_webcam_says_so():
    with pytest.raises(DetectorError, match=r"webcam 9: cannot open camera 9"):
        list(streams.iter_capture(9))
