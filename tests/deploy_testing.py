"""Shared pieces of the export/deploy tests: real BCCD images, a model whose outputs spread like a trained
one's, and the model of each family present in the zoo."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from tiny_models import tiny_detector
from torch import nn

from deploy.preprocess import preprocess
from detector.model import DetectionModel, build_model
from detector.nn.block import Block
from detector.zoo import MODELS_DIR, model_names

ROOT = Path(__file__).resolve().parent.parent
BCCD = ROOT / "datasets" / "bccd" / "JPEGImages"

# The small model tested for each family (a family = a folder of models/); families added later without an
# entry here are covered by their alphabetically first "-t"/"-n" model (see family_models).
PREFERRED = ["gelan-t", "yolov9-t", "damoyolo-t", "leyolo-n", "vovnet19-repgfpn", "lsnet-t"]
NOT_DETECTORS = {"components", "classify", "mixes"}


def family_models() -> list[str]:
    """One model name per detection family present in ``models/`` (plus yolov9-t for the PGI drop)."""
    names = set(model_names())
    chosen = [n for n in PREFERRED if n in names]
    for folder in sorted(p for p in MODELS_DIR.iterdir() if p.is_dir() and p.name not in NOT_DETECTORS):
        stems = sorted(p.stem for p in folder.glob("*.yaml"))
        if stems and not any(s in chosen for s in stems):
            small = [s for s in stems if s.endswith(("-t", "-n"))]
            chosen.append((small or stems)[0])
    return chosen


def bccd_images(n: int, start: int = 0) -> list[np.ndarray]:
    """``n`` real BGR uint8 blood-smear photos (640x480) from the repo's BCCD data."""
    files = sorted(BCCD.glob("*.jpg"))[start : start + n]
    assert len(files) == n, f"need {n} images in {BCCD}"
    return [cv2.imread(str(f)) for f in files]


TINY = tiny_detector()


def tiny_model(seed: int = 0) -> DetectionModel:
    """A five-conv detector (3 classes named like BCCD's) that exports in about a second."""
    torch.manual_seed(seed)
    model = build_model(TINY)
    model.names = {0: "RBC", 1: "WBC", 2: "Platelets"}
    return model.eval()


@torch.no_grad()
def lively_model(name: str | dict, nc: int = 3, imgsz: int = 160, seed: int = 0) -> DetectionModel:
    """A randomly initialised model whose outputs vary like a trained model's, so NMS has work to do.

    At plain init deep activations shrink to almost nothing: every anchor scores the same and NMS sees only
    ties. Instead: one train-mode pass over real letterboxed images with BN momentum 1 stores each BN's batch
    statistics (unit-scale activations); BN gains are then scaled by 0.85 so the network contracts (at 1.0 it
    is chaotic: float32 rounding grows to pixels, which no trained model does); finally each head's
    prediction convs are rescaled per channel so that class logits have mean -2, std 1.5 (scores ~0.01-0.97)
    and box-bin logits std 1 around a slope that favours near bins (boxes of a few strides, varied sizes).
    """
    torch.manual_seed(seed)
    model = build_model(name, nc=nc)
    model.names = {i: f"class{i}" for i in range(nc)}
    x = torch.from_numpy(preprocess(bccd_images(8, 40), imgsz)[0])  # letterboxed like the inputs under test
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momentum = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    model.train()(x)
    for m, mom in zip(norms, momentum):
        m.momentum = mom
        m.weight.mul_(0.85)
    targets = {}  # each head's prediction conv -> (target mean per channel, target std)
    for head in model.heads().values():
        for name, conv in head.named_modules():
            owner = head.get_submodule(name.rpartition(".")[0]) if "." in name else head
            if isinstance(conv, nn.Conv2d) and conv.bias is not None and not isinstance(owner, Block):
                if conv.out_channels == head.nc:
                    targets[conv] = (torch.full((head.nc,), -2.0), 1.5)
                elif conv.out_channels == 4 * head.bins:  # channel = side * bins + bin: favour near bins
                    targets[conv] = (-0.4 * (torch.arange(4 * head.bins) % head.bins), 1.0)
    stats = {}
    hooks = [
        c.register_forward_hook(lambda c, i, o: stats.__setitem__(c, (o.mean((0, 2, 3)), o.std((0, 2, 3)))))
        for c in targets
    ]
    model.eval()(x, decode=False)  # auxiliary heads do not run in eval: they keep their init (export drops them)
    for h in hooks:
        h.remove()
    for conv, (mean_t, std_t) in targets.items():
        if conv not in stats:
            continue
        mean, std = stats[conv]
        k = std_t / std.clamp_min(1e-6)
        conv.weight.mul_(k.view(-1, 1, 1, 1))
        conv.bias.mul_(k).add_(mean_t - mean * k)
    return model


def assert_same_detections(got: np.ndarray, ref: np.ndarray, box_atol: float = 1e-3) -> None:
    """``(n, 6)`` rows ``[x1, y1, x2, y2, score, cls]``: the same (class, box) pairs matched one to one whatever
    their order (near-equal scores may swap), boxes equal within ``box_atol`` px, scores within 1e-4."""
    assert len(got) == len(ref)
    unmatched = list(range(len(got)))
    for det in ref:
        cands = [j for j in unmatched if got[j, 5] == det[5]]
        dist = [np.abs(got[j, :4] - det[:4]).max() for j in cands]
        assert cands, f"no detection of class {det[5]} left for {det}"
        j = cands[int(np.argmin(dist))]
        np.testing.assert_allclose(got[j, :4], det[:4], rtol=1e-4, atol=box_atol)
        np.testing.assert_allclose(got[j, 4], det[4], atol=1e-4)
        unmatched.remove(j)
