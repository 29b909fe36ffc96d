"""Detector.predict: every source type, Results formats, streaming, CLI parity and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_checkpoint, tiny_detector

from detector import Detector, Results
from detector.errors import DetectorError

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "datasets/bccd/JPEGImages").glob("*.jpg"))[:3]
NAMES = ["Platelets", "RBC", "WBC"]
TINY = tiny_detector()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A checkpoint of a tiny model whose class bias is raised so random weights still give detections."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", NAMES)


@pytest.fixture(scope="module")
def det(ckpt) -> Detector:
    return Detector(ckpt, device="cpu")


def _rows(r: Results) -> np.ndarray:
    """Detections as rows sorted by class then rounded box, so near-tied scores cannot reorder them."""
    rows = np.concatenate((r.cls[:, None], r.xyxy.round(1), r.scores[:, None]), 1)
    return rows[np.lexsort(rows[:, 4::-1].T)]


def _same(a: Results, b: Results) -> None:
    assert len(a) == len(b) > 0
    ra, rb = _rows(a), _rows(b)
    np.testing.assert_array_equal(ra[:, 0], rb[:, 0])
    np.testing.assert_allclose(ra[:, 1:5], rb[:, 1:5], atol=0.2)
    np.testing.assert_allclose(ra[:, 5], rb[:, 5], atol=1e-5)


def test_path_numpy_pil_tensor_give_same_detections(det):
    path = IMAGES[0]
    bgr = cv2.imread(str(path))
    by_path = det.predict(path, imgsz=160)[0]
    assert by_path.orig_shape == bgr.shape[:2] and by_path.path == str(path)
    assert by_path.names == dict(enumerate(NAMES)) and set(by_path.class_names) <= set(NAMES)
    _same(by_path, det.predict(bgr, imgsz=160)[0])
    _same(by_path, det.predict(Image.open(path), imgsz=160)[0])
    rgb = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    _same(by_path, det.predict(rgb, imgsz=160)[0])


def test_directory_glob_and_list(det, tmp_path):
    for p in IMAGES:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    by_dir = det.predict(tmp_path, imgsz=160)
    by_glob = det.predict(str(tmp_path / "*.jpg"), imgsz=160)
    by_list = det.predict([str(p) for p in sorted(tmp_path.glob("*.jpg"))], imgsz=160)
    assert [Path(r.path).name for r in by_dir] == [p.name for p in IMAGES]
    for a, b, c in zip(by_dir, by_glob, by_list):
        _same(a, b)
        _same(a, c)


def test_batching_matches_single_images(det):
    single = [det.predict(p, imgsz=160)[0] for p in IMAGES]
    batched = det.predict(list(IMAGES), imgsz=160, batch=3)
    for a, b in zip(single, batched):
        _same(a, b)


def test_box_formats_and_filters(det):
    r = det.predict(IMAGES[0], imgsz=160, conf=0.3)[0]
    h, w = r.orig_shape
    assert np.all(r.scores > 0.3)
    np.testing.assert_allclose(r.xywh[:, 2], r.xyxy[:, 2] - r.xyxy[:, 0], rtol=1e-6)
    np.testing.assert_allclose(r.xyxyn * [w, h, w, h], r.xyxy, rtol=1e-5)
    assert np.all((r.xywhn >= 0) & (r.xywhn <= 1))
    assert np.all(r.xyxy[:, [0, 2]] <= w) and np.all(r.xyxy[:, [1, 3]] <= h)
    assert len(det.predict(IMAGES[0], imgsz=160, conf=0.3, max_det=2)[0]) == 2
    only = det.predict(IMAGES[0], imgsz=160, conf=0.3, classes=[1])[0]
    assert len(only) > 0 and set(only.cls.tolist()) == {1}
    assert set(r.speed) == {"preprocess", "inference", "postprocess"} and all(v >= 0 for v in r.speed.values())


def test_results_json_txt_plot_roundtrip(det, tmp_path):
    r = det.predict(IMAGES[0], imgsz=160)[0]
    back = Results.from_json(r.to_json())
    _same(r, back)
    assert back.names == r.names and back.orig_shape == r.orig_shape and back.path == r.path
    lines = r.to_txt()
    assert len(lines) == len(r)
    first = [float(v) for v in lines[0].split()]
    assert int(first[0]) == r.cls[0]
    np.testing.assert_allclose(first[1:], r.xywhn[0], atol=1e-5)
    drawn = r.plot()
    assert drawn.shape == r.orig_img.shape and not np.array_equal(drawn, r.orig_img)
    saved = cv2.imread(str(r.save(tmp_path / "out.jpg")))
    assert saved.shape == drawn.shape


def _write_video(path: Path, frames: int, size=(96, 128)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size[1], size[0]))
    rng = np.random.default_rng(0)
    base = cv2.resize(cv2.imread(str(IMAGES[0])), (size[1], size[0]))
    for _ in range(frames):
        writer.write(np.clip(base.astype(int) + rng.integers(-5, 5, base.shape), 0, 255).astype(np.uint8))
    writer.release()


def test_video_stream_keeps_memory_flat(det, tmp_path):
    short, long = tmp_path / "short.avi", tmp_path / "long.avi"
    _write_video(short, 5)
    _write_video(long, 60)
    assert len(det.predict(short, imgsz=96)) == 5

    def peak(path: Path) -> tuple[int, int]:
        tracemalloc.start()
        n = 0
        for r in det.predict(path, imgsz=96, stream=True):
            assert r.frame == n and r.path == str(path)
            n += 1
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return n, top

    n_short, peak_short = peak(short)
    n_long, peak_long = peak(long)
    assert (n_short, n_long) == (5, 60)
    frame_bytes = 96 * 128 * 3
    # 12x the frames must not cost anywhere near 12x the memory: a few frames of slack at most.
    assert peak_long - peak_short < 10 * frame_bytes


def test_cli_matches_api(det, ckpt, tmp_path):
    for p in IMAGES:
        (tmp_path / "imgs").mkdir(exist_ok=True)
        (tmp_path / "imgs" / p.name).write_bytes(p.read_bytes())
    cmd = [sys.executable, "-m", "detector", "predict", f"model={ckpt}", f"source={tmp_path / 'imgs'}", "imgsz=160",
           "save_json=True", "save_txt=True", f"project={tmp_path / 'runs'}", "name=exp", "device=cpu"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "runs" / "exp"
    records = json.loads((run / "predictions.json").read_text())
    api = det.predict(tmp_path / "imgs", imgsz=160)
    assert len(records) == len(api) == len(IMAGES)
    for rec, r in zip(records, api):
        _same(Results.from_json(rec), r)
        assert (run / f"{Path(r.path).stem}.jpg").is_file()
        assert len((run / "labels" / f"{Path(r.path).stem}.txt").read_text().splitlines()) == len(r)


def test_bad_inputs_have_clear_messages(det, tmp_path):
    with pytest.raises(DetectorError, match=r"nope.jpg: no such file or directory"):
        det.predict(tmp_path / "nope.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(DetectorError, match=r"broken.jpg: .*image"):
        det.predict(broken)
    with pytest.raises(DetectorError, match=r"unsupported source type dict"):
        det.predict({"a": 1})
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(DetectorError, match=r"foreign.pt: not a detector checkpoint"):
        Detector(foreign)
    with pytest.raises(DetectorError, match=r"unsupported model file type '.txt'"):
        Detector(tmp_path / "model.txt")


def test_unreadable_image_in_directory_is_skipped_and_reported(det, tmp_path):
    (tmp_path / "a.jpg").write_bytes(IMAGES[0].read_bytes())
    (tmp_path / "b.jpg").write_bytes(IMAGES[1].read_bytes()[:0])
    results = det.predict(tmp_path, imgsz=160)
    assert [Path(r.path).name for r in results] == ["a.jpg"]
    assert len(det.skipped) == 1 and det.skipped[0][0].endswith("b.jpg") and "empty" in det.skipped[0][1]


def test_save_keeps_sub_paths_of_same_named_files(ckpt, tmp_path):
    """A directory source is searched recursively (as dataset splits are) and outputs keep the sub-path below
    it: 10 inputs, 4 of them named x.jpg, give 10 images and 10 label files."""
    from detector.predict.cli import cli_predict

    src = tmp_path / "src"
    rels = [
        "x.jpg",
        "a/x.jpg",
        "b/x.jpg",
        "b/c/x.jpg",
        "y.jpg",
        "a/y.jpg",
        "a/z.png",
        "b/z.jpg",
        "b/c/w.jpg",
        "d/v.jpg",
    ]
    for i, rel in enumerate(rels):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / rel), cv2.imread(str(IMAGES[i % len(IMAGES)])))
    args = [f"model={ckpt}", f"source={src}", "imgsz=160", "save_txt=True", f"project={tmp_path}", "name=run",
            "device=cpu", "verbose=False", "multi_label=True", "conf=0.3"]  # fmt: skip
    assert cli_predict(args) == 0
    run = tmp_path / "run"
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*.*") if "labels" not in p.parts) == sorted(rels)
    labels = sorted(str(p.relative_to(run / "labels")) for p in (run / "labels").rglob("*.txt"))
    assert labels == sorted(str(Path(r).with_suffix(".txt")) for r in rels)
    # the CLI passed multi_label and conf on: the label file of x.jpg equals the API's multi-label detections
    (r,) = Detector(ckpt, device="cpu").predict(src / "x.jpg", imgsz=160, multi_label=True, conf=0.3)
    assert len((run / "labels" / "x.txt").read_text().splitlines()) == len(r) > 0


def test_nms_defaults_are_the_predict_preset(det):
    from detector.ops import NMSConfig

    assert det.nms == NMSConfig.predict() and not det.nms.multi_label and det.nms.conf == 0.25
    single = det.predict(IMAGES[0], imgsz=160)[0]
    multi = det.predict(IMAGES[0], imgsz=160, multi_label=True)[0]
    assert len(multi) >= len(single) > 0
    with pytest.raises(DetectorError, match=r"conf=2 must lie in \[0, 1\]"):
        det.predict(IMAGES[0], conf=2)
    with pytest.raises(DetectorError, match=r"multiple of the stride 32"):
        det.predict(IMAGES[0], imgsz=100)
