"""The Ultralytics-shaped facade: Detector(...).train / val / export / info / benchmark / add_callback / repr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _engine_kit import BCCD, TINY_MODEL, bccd_subset

from detector import Detector
from detector.config import to_dict
from detector.data.augment import AugmentConfig
from detector.engine.validator import ValResult
from detector.errors import DetectorError
from detector.info import count_params
from detector.model import build_model

IMAGE = BCCD / "JPEGImages" / "BloodImage_00000.jpg"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of the tiny model on 4 BCCD images through Detector.train; returns (det, result, calls, tmp)."""
    tmp = tmp_path_factory.mktemp("facade")
    data = bccd_subset(tmp / "data", 4)
    det = Detector(TINY_MODEL, device="cpu")
    calls: list[tuple[str, int]] = []
    det.add_callback("on_train_epoch_end", lambda t: calls.append(("epoch_end", t.epoch)))
    det.add_callback("after_train", lambda t: calls.append(("after_train", t.epoch)))
    result = det.train(
        data=data, epochs=1, imgsz=96, batch=2, workers=0, project=str(tmp / "runs"), plots=False, patience=0,
        augment=to_dict(AugmentConfig.off()), val={"plots": False}, **{"optim.nbs": 2, "optim.warmup_min_iters": 2},
    )  # fmt: skip
    return det, result, calls, tmp


def test_train_returns_the_metrics_and_switches_to_best(trained):
    det, result, calls, tmp = trained
    assert isinstance(result, ValResult) and result.images == 4 and 0.0 <= result.stats["mAP50"] <= 1.0
    best = tmp / "runs" / "exp" / "weights" / "best.pt"
    assert det.model_path == str(best) and best.is_file()
    assert (tmp / "runs" / "exp" / "results.csv").read_text().count("\n") == 2  # header + one epoch, as the CLI
    assert calls == [("epoch_end", 0), ("after_train", 0)]
    assert det.trainer.cfg.imgsz == 96 and det.trainer.cfg.optim.nbs == 2 and det.trainer.cfg.device == "cpu"


def test_val_matches_the_training_result(trained):
    det, result, _, tmp = trained
    again = det.val(batch=4, workers=0, project=str(tmp / "val"), plots=False)
    assert isinstance(again, ValResult) and again.images == 4
    assert again.stats["mAP50-95"] == pytest.approx(result.stats["mAP50-95"], abs=0.02)


def test_export_runs_the_same_weights(trained):
    det, _, _, tmp = trained
    onnx = det.export(format="onnx", imgsz=96, out=tmp / "tiny.onnx")
    assert onnx == tmp / "tiny.onnx" and onnx.is_file()
    a = det.predict(IMAGE, imgsz=96, conf=0.01)[0]
    b = Detector(onnx).predict(IMAGE, imgsz=96, conf=0.01)[0]
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes.data, b.boxes.data, atol=2e-3)


def test_export_of_fresh_weights_exports_those_weights(tmp_path):
    det = Detector(TINY_MODEL, device="cpu")
    onnx = det.export(imgsz=64, out=tmp_path / "fresh.onnx")
    a = det.predict(IMAGE, imgsz=64, conf=0.0, max_det=20)[0]
    b = Detector(onnx).predict(IMAGE, imgsz=64, conf=0.0, max_det=20)[0]
    np.testing.assert_allclose(a.boxes.conf, b.boxes.conf, atol=1e-4)


def test_info_and_benchmark(tmp_path, capsys):
    det = Detector(TINY_MODEL, device="cpu")
    summary = det.info(imgsz=64)
    assert summary["params"] == count_params(build_model(TINY_MODEL)) and summary["imgsz"] == 64
    assert "train form" in capsys.readouterr().out
    rows = det.benchmark(
        backends=["torch", "torch-fused"], batch=[1], imgsz=64, runs=2, warmup=0, out=str(tmp_path / "b.csv")
    )
    assert [(r.backend, r.batch, r.status) for r in rows] == [("torch", 1, "ok"), ("torch-fused", 1, "ok")]
    assert all(r.median_ms > 0 for r in rows) and (tmp_path / "b.csv").read_text().count("\n") == 3


def test_repr_and_errors(tmp_path):
    det = Detector(TINY_MODEL, device="cpu")
    assert repr(det) == f"Detector(model={TINY_MODEL!r}, backend=torch (deploy form, float32), device=cpu, classes=3)"
    with pytest.raises(DetectorError, match="validation needs trained weights"):
        det.val(data="bccd")
    with pytest.raises(DetectorError, match="unknown event 'on_train_epoch_ending'; did you mean 'on_train_epoch_end'"):
        det.add_callback("on_train_epoch_ending", print)
    onnx = det.export(imgsz=64, out=tmp_path / "m.onnx")
    exported = Detector(onnx)
    assert repr(exported).startswith(f"Detector(model={str(onnx)!r}, backend=OnnxRunner")
    with pytest.raises(DetectorError, match=r"\.train: needs a zoo name, model YAML or \.pt checkpoint"):
        exported.train(data="bccd")


def test_train_rejects_a_wrong_key_like_the_cli(tmp_path):
    from detector.config import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'epoch'; did you mean 'epochs'"):
        Detector(TINY_MODEL, device="cpu").train(data=str(Path(tmp_path)), epoch=1)
