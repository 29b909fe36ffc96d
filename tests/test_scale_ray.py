"""Batch inference on Ray Data (local Ray, 2 CPU workers): one row per image, the same detections as
``Detector.predict``, corrupt files as rows with their error, and a worker that dies mid-run retried."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _engine_kit import BCCD, NAMES, TINY_MODEL

from detector import Detector
from detector.checkpoint import save_checkpoint
from detector.cli import main
from detector.errors import DetectorError
from detector.export import export
from detector.model import build_model, load_model_dict
from detector.scale import list_images, predict_dataset, read_detections

pa = pytest.importorskip("pyarrow")  # comes with ray[data], which the test extra installs
import pyarrow.parquet as pq  # noqa: E402

IMGSZ, CONF, MAX_DET = 160, 0.3, 20
CORRUPT = {"truncated.jpg", "not-an-image.jpg", "empty.png"}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    """A seeded tiny detector exported to a dynamic ONNX (the deploy backend most batch jobs use)."""
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, nc=3)
    with torch.no_grad():  # varied class logits around 0 instead of the rare-object prior: weights that detect
        for name, p in model.named_parameters():
            if ".cls." in name and ".2." in name:
                p.normal_(0.0, 0.5)
    ckpt = root / "tiny.pt"
    save_checkpoint({"model": model.state_dict(), "model_yaml": load_model_dict(TINY_MODEL, 3), "names": NAMES}, ckpt)
    return export(ckpt, format="onnx", imgsz=IMGSZ, dynamic=True, dynamic_hw=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """All 364 BCCD images (symlinks) plus three planted files that cannot be decoded."""
    root = tmp_path_factory.mktemp("images")
    for p in sorted((BCCD / "JPEGImages").glob("*.jpg")):
        (root / p.name).symlink_to(p)
    first = next(iter(sorted((BCCD / "JPEGImages").glob("*.jpg")))).read_bytes()
    (root / "truncated.jpg").write_bytes(first[:200])
    (root / "not-an-image.jpg").write_text("this is not a JPEG")
    (root / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def _rows(out: Path) -> dict[str, dict]:
    rows = read_detections(out).to_pylist()
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == len(rows), "an image appears in more than one row"
    return by_path


def test_every_image_one_row_equal_to_detector_and_a_dead_worker_is_retried(local_ray, onnx_model, images, tmp_path):
    marker = tmp_path / "worker-died-once"
    run = predict_dataset(
        onnx_model, images, tmp_path / "out", workers=2, batch=1, conf=CONF, imgsz=IMGSZ, max_det=MAX_DET,
        verbose=False, fail_once=str(marker),
    )  # fmt: skip
    assert marker.exists(), "the test hook should have killed one worker"
    n_images = 364 + len(CORRUPT)
    assert (run.images, run.rows, run.errors, run.workers) == (n_images, n_images, len(CORRUPT), 2)
    rows = _rows(tmp_path / "out")
    assert len(rows) == n_images

    for name in CORRUPT:
        r = rows[str(images / name)]
        assert r["error"] and r["boxes"] == [] and (r["width"], r["height"]) == (0, 0)
    assert "empty file" in rows[str(images / "empty.png")]["error"]

    good = sorted(p for p in rows if Path(p).name not in CORRUPT)
    local = Detector(onnx_model, device="cpu").predict(good, conf=CONF, imgsz=IMGSZ, max_det=MAX_DET, batch=1)
    assert sum(len(r) for r in local) > 364, "the check needs detections to compare"
    for ref in local:
        row = rows[ref.path]
        assert row["error"] is None
        assert (row["height"], row["width"]) == ref.orig_shape
        assert row["classes"] == ref.cls.tolist(), ref.path
        assert row["class_names"] == [NAMES[c] for c in ref.cls]
        np.testing.assert_allclose(np.array(row["boxes"], np.float32).reshape(-1, 4), ref.xyxy, atol=1e-4)
        np.testing.assert_allclose(np.array(row["scores"], np.float32), ref.scores, atol=1e-6)
    assert run.detections == sum(len(r) for r in local)


def test_cli_parquet_list_of_paths_to_json_lines(local_ray, onnx_model, images, tmp_path, capsys):
    paths = [str(p) for p in sorted(images.glob("BloodImage_0000*.jpg"))] + [str(images / "missing.jpg")]
    pq.write_table(pa.table({"path": paths}), tmp_path / "paths.parquet")
    out = tmp_path / "jsonl"
    argv = ["predict", f"model={onnx_model}", f"source={tmp_path / 'paths.parquet'}", "engine=ray", "workers=1",
            "batch=4", f"out={out}", "out_format=jsonl", f"imgsz={IMGSZ}", f"conf={CONF}", "verbose=False"]  # fmt: skip
    assert main(argv) == 0
    rows = _rows(out)
    assert not list(out.glob("*.parquet")) and list(out.glob("*.json*"))
    assert sorted(rows) == sorted(paths)
    assert (
        "no such file" in rows[str(images / "missing.jpg")]["error"].lower()
        or rows[str(images / "missing.jpg")]["error"]
    )
    assert all(rows[p]["error"] is None and rows[p]["width"] == 640 for p in paths[:-1])
    printed = capsys.readouterr().out
    assert f"{len(paths)} image(s) -> {len(paths)} row(s)" in printed and "images/s" in printed


def test_sources_list_file_and_bad_parquet(tmp_path):
    (tmp_path / "a").mkdir()
    listing = tmp_path / "a" / "images.txt"
    listing.write_text("# a comment\nx.jpg\n\n/abs/y.png\n")
    assert list_images(listing) == [str(tmp_path / "a" / "x.jpg"), "/abs/y.png"]
    pq.write_table(pa.table({"name": ["x.jpg"]}), tmp_path / "bad.parquet")
    with pytest.raises(DetectorError, match="no column of image paths"):
        list_images(tmp_path / "bad.parquet")
    with pytest.raises(DetectorError, match="no such file"):
        list_images(tmp_path / "nowhere")


def test_output_folder_must_be_new(tmp_path, images):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.parquet").write_text("x")
    with pytest.raises(DetectorError, match="not empty"):
        predict_dataset("gelan-t", images, tmp_path / "out")


def test_without_ray_one_sentence(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["predict", "model=gelan-t", f"source={tmp_path}", "engine=ray"]) == 2
