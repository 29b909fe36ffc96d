"""Per-channel weight clipping: the remedy for fused re-parameterised convs whose weights have outliers.

Fusing RepConv (3x3 + 1x1 + identity branches) or RepVGG-DW adds the branches' kernels into one, and the BN
scales folded in can differ a lot between branches, so a few weights of a channel end up far larger than
the rest. Symmetric per-channel int8 spends its 255 levels on [-max|w|, max|w|], and the bulk of that
channel's weights then gets only a few levels. Clipping each output channel at ``k`` standard deviations
trades a small error on the outliers for finer steps on everything else.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def clip_conv_weights(model: onnx.ModelProto, k: float, skip: set[str]) -> int:
    """Clip every Conv weight (not in ``skip``) per output channel to ``mean +- k * std``; in place.

    Returns the number of weights changed.
    """
    inits = {t.name: t for t in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in skip or len(node.input) < 2 or node.input[1] not in inits:
            continue
        t = inits[node.input[1]]
        w = numpy_helper.to_array(t)
        flat = w.reshape(w.shape[0], -1)  # (C_out, C_in/groups * kh * kw)
        if flat.shape[1] < 9:  # too few weights per channel for a spread to mean anything
            continue
        mean, std = flat.mean(1, keepdims=True), flat.std(1, keepdims=True)
        clipped = np.clip(flat, mean - k * std, mean + k * std)
        changed += int((clipped != flat).sum())
        t.CopyFrom(numpy_helper.from_array(clipped.reshape(w.shape).astype(w.dtype), t.name))
    return changed
