"""Deterministic 'random' weights from a key list, shared by ``tools/reference_outputs_yolov9.py`` (run beside
the upstream code) and the conversion tests (run here), so a committed fixture of the upstream model's outputs
can be reproduced without committing its weights."""

from __future__ import annotations

import torch


def reference_weights(keys_shapes: list[tuple[str, list[int]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """One tensor per ``(key, shape)`` in list order, from a seeded generator: BatchNorm statistics in safe
    ranges (var in [0.5, 1.5]), counters zero, everything else N(0, 0.05^2). Float values are rounded to
    fp16 and back, so a checkpoint saved in half precision (as upstream repositories save theirs) is exact."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in keys_shapes:
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            out[key] = torch.randn(shape, generator=g) * 0.1
        elif key.endswith(("bn.weight", "norm.weight")):
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[key] = 0.05 * torch.randn(shape, generator=g)
    return {k: v.half().float() if v.is_floating_point() else v for k, v in out.items()}
