"""One inference contract: the same real images of several sizes give identical model inputs and identical
detections through validation's dataset path, ``Detector`` (PyTorch, ONNX with fixed and with dynamic H/W) and
``deploy.predict``; exports carry the contract in their metadata."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from deploy_testing import BCCD, assert_same_detections, lively_model
from tiny_models import tiny_detector

import deploy
from deploy.errors import DeployError
from deploy.preprocess import preprocess
from detector import Detector
from detector.checkpoint import model_from_checkpoint, save_checkpoint
from detector.data import build_dataloader
from detector.engine.settings import ValConfig
from detector.engine.validator import Validator
from detector.errors import DetectorError
from detector.export import export
from detector.ops import NMSConfig, PreprocessSpec
from detector.predict.sources import read_image

IMGSZ = 160
NMS = NMSConfig(conf=0.5, iou=0.6, max_det=300, multi_label=True)  # one setting for every path
NAMES = ["RBC", "WBC", "Platelets"]
# (name, crop rows, crop cols) of real BCCD photos (480 x 640): landscape, wide, portrait, small, tiny
CROPS = [
    ("full", (0, 480), (0, 640)),
    ("wide", (90, 390), (40, 540)),
    ("portrait", (40, 440), (200, 460)),
    ("small", (150, 300), (300, 520)),
    ("tiny", (200, 260), (100, 180)),  # 60 x 80: enlarged to fit 160
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    photos = sorted(BCCD.glob("*.jpg"))[50 : 50 + len(CROPS)]
    for (name, (y0, y1), (x0, x1)), photo in zip(CROPS, photos):
        img = cv2.imread(str(photo))[y0:y1, x0:x1]
        (root / "images" / "val").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / "val" / f"{name}.png"), img)  # lossless: every reader sees these pixels
        (root / "labels" / "val" / f"{name}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames: {NAMES}\n")
    model = lively_model(tiny_detector(), nc=3, imgsz=IMGSZ, seed=3)
    model.names = dict(enumerate(NAMES))
    ckpt = root / "tiny.pt"
    save_checkpoint({"model": model.state_dict(), "model_yaml": model.yaml, "names": NAMES}, ckpt)
    dynamic = export(ckpt, imgsz=IMGSZ, dynamic=True, dynamic_hw=True, out=root / "dynamic.onnx")
    static = export(ckpt, imgsz=IMGSZ, out=root / "static.onnx")
    files = {name: root / "images" / "val" / f"{name}.png" for name, *_ in CROPS}
    return {"root": root, "data": data, "ckpt": ckpt, "dynamic": dynamic, "static": static, "files": files}


def val_inputs(data: Path, rect: bool) -> dict[str, torch.Tensor]:
    """Validation's model input per image (batch 1), as the validator makes it from the loader's batch."""
    loader, _ = build_dataloader(data, "val", imgsz=IMGSZ, batch=1, augment=None, workers=0, rect=rect)
    return {Path(b["im_files"][0]).stem: b["img"].float().div_(255) for b in loader}


def val_detections(setup: dict, rect: bool, name: str, batch: int = 1) -> dict[str, np.ndarray]:
    """What validation detects, read back from its predictions.json (rows x1, y1, x2, y2, score, class)."""
    loader, _ = build_dataloader(setup["data"], "val", imgsz=IMGSZ, batch=batch, augment=None, workers=0, rect=rect)
    cfg = ValConfig(conf=NMS.conf, iou=NMS.iou, max_det=NMS.max_det, multi_label=True, plots=False)
    run_dir = setup["root"] / name
    run_dir.mkdir()
    model = model_from_checkpoint(setup["ckpt"], deploy=True)
    Validator(loader, NAMES, cfg, torch.device("cpu"), run_dir=run_dir)(model, save_json=True)
    rows = defaultdict(list)
    for p in json.loads((run_dir / "predictions.json").read_text()):
        x, y, w, h = p["bbox"]
        rows[p["image_id"]].append([x, y, x + w, y + h, p["score"], p["category_id"]])
    return {k: np.array(rows[k], dtype=np.float64).reshape(-1, 6) for k in setup["files"]}


def rows(r) -> np.ndarray:
    """``Results`` or ``Detections`` -> ``(n, 6)`` rows."""
    cls = r.cls if hasattr(r, "cls") else r.class_ids
    boxes = r.xyxy if hasattr(r, "xyxy") else r.boxes  # Results.boxes is a Boxes object; Detections.boxes an array
    return np.concatenate([boxes, r.scores[:, None], cls[:, None].astype(np.float32)], 1).astype(np.float64)


def test_inputs_are_identical_on_every_path(setup):
    files = setup["files"]
    bgr = {k: read_image(p) for k, p in files.items()}
    torch_det = Detector(setup["ckpt"], device="cpu")
    dyn_det, static_det = Detector(setup["dynamic"], device="cpu"), Detector(setup["static"], device="cpu")
    dyn_run, static_run = deploy.load_runner(setup["dynamic"], "cpu"), deploy.load_runner(setup["static"], "cpu")
    rect, square = val_inputs(setup["data"], rect=True), val_inputs(setup["data"], rect=False)
    shapes = set()
    for k, img in bgr.items():
        ref = rect[k]
        shapes.add(tuple(ref.shape[2:]))
        for det in (torch_det, dyn_det):
            assert torch.equal(det.preprocess([img], IMGSZ)[0], ref), k
        assert np.array_equal(preprocess([img], dyn_run.input_spec(IMGSZ))[0], ref.numpy()), k
        # a fixed-size graph: the whole square, as validation without rectangular batches
        assert square[k].shape[2:] == (IMGSZ, IMGSZ)
        assert torch.equal(static_det.preprocess([img])[0], square[k]), k
        assert np.array_equal(preprocess([img], static_run.input_spec())[0], square[k].numpy()), k
    assert shapes == {(128, 160), (96, 160), (160, 128)}  # three different minimal inputs
    # batched: Detector pads a batch to its largest image, as validation's rectangular batches
    loader, _ = build_dataloader(setup["data"], "val", imgsz=IMGSZ, batch=5, augment=None, workers=0, rect=True)
    (batch,) = list(loader)
    ours, _ = torch_det.preprocess([bgr[Path(f).stem] for f in batch["im_files"]], IMGSZ)
    assert torch.equal(ours, batch["img"].float() / 255)


def test_detections_are_identical_on_every_path(setup):
    files = setup["files"]
    paths = [files[k] for k in files]
    kw = dict(conf=NMS.conf, iou=NMS.iou, max_det=NMS.max_det, multi_label=True)
    val_rect, val_square = val_detections(setup, True, "val_rect"), val_detections(setup, False, "val_square")
    # one image per batch everywhere: a batch is padded to its largest member (validation's rect batches too)
    minimal = {
        "torch": Detector(setup["ckpt"], device="cpu").predict(paths, imgsz=IMGSZ, **kw),
        "onnx dynamic": Detector(setup["dynamic"], device="cpu").predict(paths, imgsz=IMGSZ, **kw),
        "deploy dynamic": deploy.predict(
            deploy.load_runner(setup["dynamic"], "cpu"), [read_image(p) for p in paths], imgsz=IMGSZ, chunk=1, **kw
        ),
    }
    full = {
        "onnx static": Detector(setup["static"], device="cpu").predict(paths, **kw),
        "deploy static": deploy.predict(
            deploy.load_runner(setup["static"], "cpu"), [read_image(p) for p in paths], **kw
        ),
    }
    found = 0
    for i, k in enumerate(files):
        found += len(val_rect[k])
        for results in minimal.values():
            assert_same_detections(rows(results[i]), val_rect[k], box_atol=2e-3)  # JSON keeps 3 decimals
        for results in full.values():
            assert_same_detections(rows(results[i]), val_square[k], box_atol=2e-3)
    # all five in one batch: validation and Detector pad them to the same common shape
    val_batch = val_detections(setup, True, "val_batch", batch=len(paths))
    batched = Detector(setup["ckpt"], device="cpu").predict(paths, imgsz=IMGSZ, batch=len(paths), **kw)
    for i, k in enumerate(files):
        assert_same_detections(rows(batched[i]), val_batch[k], box_atol=2e-3)
    assert found >= 2 * len(files), "the lively model should detect several objects per image"


def test_exports_carry_the_contract_and_fixed_sizes_refuse_other_sizes(setup):
    dyn, static = deploy.load_runner(setup["dynamic"], "cpu"), deploy.load_runner(setup["static"], "cpu")
    assert dyn.metadata.preprocess == PreprocessSpec((IMGSZ, IMGSZ), 32, 114, auto=True, scaleup=True)
    assert static.metadata.preprocess == PreprocessSpec((IMGSZ, IMGSZ), 32, 114, auto=False, scaleup=True)
    assert static.metadata.postprocess == NMSConfig.predict()  # what deploy and Detector default to
    assert Detector(setup["static"], device="cpu").nms == NMSConfig.predict()
    assert dyn.input_spec(320).size == (320, 320)
    with pytest.raises(DeployError, match=r"fixed 160x160 input and cannot run at imgsz=320"):
        static.input_spec(320)
    with pytest.raises(DetectorError, match=r"fixed 160x160 input and cannot run at imgsz=320.*dynamic_hw=True"):
        Detector(setup["static"], device="cpu").predict(str(setup["files"]["full"]), imgsz=320)
