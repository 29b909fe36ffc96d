"""Deterministic weights for the DAMO-YOLO conversion fixtures, shared by ``tools/reference_outputs_damoyolo.py``
(run beside the upstream code) and ``tests/test_convert_damoyolo.py`` (run here).

``convert_kit.reference_weights`` draws every conv weight from N(0, 0.05^2) whatever its fan-in; through the
deep residual chains of DAMO-YOLO-L that grows activations to ~1e4 at P5 (float32 then cannot resolve 1e-4)
and saturates every score. Here each conv weight is rescaled to N(0, 1 / fan_in), which keeps activations
near unit size in all four scales, and the head's per-level ``Scale`` starts near 1 instead of near 0, so the
box distributions are far from uniform. Their model reads 0..255 pixels, so the stem conv's weight is divided
by 255 as well (the fixture input is pixels; ours sees them / 255 with that weight times 255 after conversion).
Values stay fp16-exact.
"""

from __future__ import annotations

import math

import torch
from convert_kit import reference_weights

STEMS = ("backbone.block_list.0.conv.conv.weight", "backbone.csp_stage.0.conv.conv.weight")


def damoyolo_reference_weights(keys_shapes: list[tuple[str, list[int]]]) -> dict[str, torch.Tensor]:
    """``reference_weights(keys_shapes)`` with conv weights scaled to std 1/sqrt(fan_in) (the stem's also / 255)
    and ``*.scale`` + 1."""
    out = reference_weights(keys_shapes)
    for key, v in out.items():
        if v.ndim == 4 and key.endswith("weight"):
            fan_in = v.shape[1] * v.shape[2] * v.shape[3]
            pixels = 255.0 if key in STEMS else 1.0
            out[key] = (v / (0.05 * math.sqrt(fan_in) * pixels)).half().float()
        elif key.endswith(".scale"):
            out[key] = (1.0 + v).half().float()
    return out
