"""Time two per-step costs on the CPU: one ``ModelEMA.update`` of a zoo model, and ``COCOEvaluator.update`` per
image on synthetic jittered detections. ``python tools/bench_ema_matching.py [--model gelan-t] [--runs 100]``."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from detector.engine.ema import ModelEMA
from detector.metrics import COCOEvaluator, ImageDetections, ImageGroundTruth
from detector.model import build_model


def ema_ms(model_name: str, runs: int) -> tuple[float, int]:
    model = build_model(model_name, nc=80).train()
    ema = ModelEMA(model)
    for _ in range(10):
        ema.update(model)
    t = time.perf_counter()
    for _ in range(runs):
        ema.update(model)
    return (time.perf_counter() - t) * 1e3 / runs, len(model.state_dict())


def matching_ms(images: int = 50, gts: int = 20, copies: int = 5, classes: int = 3) -> float:
    """Each GT seen by ``copies`` detections jittered by 6 px with random scores."""
    rng = np.random.default_rng(0)
    data = []
    for _ in range(images):
        xy, wh = rng.random((gts, 2)) * 500, 20 + rng.random((gts, 2)) * 60
        gt, cls = np.concatenate([xy, xy + wh], 1), rng.integers(0, classes, gts)
        rep = np.repeat(np.arange(gts), copies)
        data.append((gt[rep] + rng.normal(0, 6, (len(rep), 4)), rng.random(len(rep)), cls[rep], gt, cls))
    ev = COCOEvaluator()
    t = time.perf_counter()
    for det, score, det_cls, gt, cls in data:
        ev.update(ImageDetections(det, score, det_cls), ImageGroundTruth(gt, cls))
    return (time.perf_counter() - t) * 1e3 / images


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gelan-t")
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ms, n = ema_ms(args.model, args.runs)
    print(f"ModelEMA.update {args.model} ({n} state tensors): {ms:.2f} ms")
    print(f"COCOEvaluator.update (20 GTs x 5 detections, 3 classes): {matching_ms():.2f} ms per image")
