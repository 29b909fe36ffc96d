"""A trained tiny model: ``Detector.predict`` finds exactly what ``detector val`` found on the same images."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from _engine_kit import bccd_subset, tiny_config

from detector import Detector
from detector.engine.settings import ValRunConfig
from detector.engine.trainer import Trainer
from detector.engine.validator import validate_checkpoint


def test_predict_equals_validation_detections(tmp_path):
    torch.set_num_threads(1)
    data = bccd_subset(tmp_path / "bccd", 4)
    Trainer(tiny_config(tmp_path, data, epochs=3, imgsz=96)).train()
    ckpt = tmp_path / "runs" / "exp" / "weights" / "best.pt"
    val_dir = tmp_path / "val"
    validate_checkpoint(
        ValRunConfig(model=str(ckpt), data=str(data), imgsz=96, batch=4, device="cpu", workers=0, save_json=True,
                     plots=False, project=str(val_dir), name="exp")
    )  # fmt: skip
    by_image: dict[str, list] = defaultdict(list)
    for p in json.loads((val_dir / "exp" / "predictions.json").read_text()):
        x, y, w, h = p["bbox"]
        by_image[str(p["image_id"])].append([p["category_id"], x, y, x + w, y + h, p["score"]])
    assert sum(len(v) for v in by_image.values()) > 0, "the tiny model should detect something after 3 epochs"

    det = Detector(ckpt, device="cpu")
    images = sorted((tmp_path / "bccd" / "JPEGImages").glob("*.jpg"))
    results = det.predict(images, conf=0.001, iou=0.7, imgsz=96, max_det=300, multi_label=True, batch=4)
    for r in results:
        ours = np.array([[c, *b, s] for c, b, s in zip(r.cls, r.xyxy, r.scores)], dtype=np.float64).reshape(-1, 6)
        theirs = np.array(by_image[Path(r.path).stem], dtype=np.float64).reshape(-1, 6)
        assert len(ours) == len(theirs), Path(r.path).name
        # order by class then box (rounded: the JSON keeps 3 decimals), not by score, which ties at this conf
        key = lambda a: a[np.lexsort(np.round(a[:, [4, 3, 2, 1, 0]], 1).T)]  # noqa: E731
        ours, theirs = key(ours), key(theirs)
        np.testing.assert_array_equal(ours[:, 0], theirs[:, 0])
        np.testing.assert_allclose(ours[:, 1:5], theirs[:, 1:5], atol=0.01)  # JSON keeps 3 decimals
        np.testing.assert_allclose(ours[:, 5], theirs[:, 5], atol=1e-5)
