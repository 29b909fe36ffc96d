"""The smallest detector the tests share: five stride-2 convs and a DDetect on strides 8/16/32 (3 classes)."""

from __future__ import annotations

import copy

_TINY = {
    "name": "tiny",
    "nc": 3,
    "backbone": [
        {"Conv": {"out": 8, "k": 3, "s": 2}},
        {"Conv": {"out": 16, "k": 3, "s": 2}},
        {"Conv": {"out": 16, "k": 3, "s": 2, "tag": "B3"}},
        {"Conv": {"out": 32, "k": 3, "s": 2, "tag": "B4"}},
        {"Conv": {"out": 32, "k": 3, "s": 2, "tag": "B5"}},
    ],
    "neck": [{"Identity": {"from": "B3", "tag": "P3"}}],
    "head": [{"DDetect": {"from": ["P3", "B4", "B5"]}}],
}


def tiny_detector() -> dict:
    """A fresh copy of the tiny model dict (callers may edit it)."""
    return copy.deepcopy(_TINY)


def tiny_checkpoint(path, names=("Platelets", "RBC", "WBC")):
    """Save the tiny model with its class bias raised, so random weights still give detections; returns ``path``."""
    import torch

    from detector.checkpoint import save_checkpoint
    from detector.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_detector())
    for seq in model.main_head.cls:
        seq[-1].bias.data[:] = 0.5
    save_checkpoint({"model": model.state_dict(), "model_yaml": model.yaml, "names": list(names)}, path)
    return path
