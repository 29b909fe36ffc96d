"""Small-kernel aggregation (SKA) of LSNet (arXiv 2503.23135): a per-pixel dynamic depthwise k x k conv.

``y[b, c, p] = sum_k x[b, c, p + k] * w[b, c mod G, k, p]`` over the k x k neighbourhood (zero padding), where
``G = w.shape[1]`` weight groups are shared by channels ``c, c + G, c + 2G, ...`` (the authors' kernel indexes
the weight channel as ``c % G``).

This is the pure-PyTorch reference: nine shifted slices of the padded input, each multiplied by its kernel tap
and summed. It is exact, runs on any device, is differentiable by autograd and exports to ONNX as
Pad/Slice/Mul/Add. A fused GPU kernel can replace it later behind the same signature.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def ska(x: Tensor, w: Tensor) -> Tensor:
    """Apply per-pixel kernels ``w`` to ``x``.

    Args:
        x (Tensor[B, C, H, W]): input features.
        w (Tensor[B, G, k*k, H, W]): one k x k kernel per weight group and pixel, taps in row-major order;
            ``C`` must be a multiple of ``G`` and ``k`` odd.
    Returns:
        Tensor[B, C, H, W].
    """
    b, c, h, wd = x.shape
    if w.dim() != 5 or w.shape[0] != b or w.shape[3:] != (h, wd):
        raise ValueError(f"ska: weights {tuple(w.shape)} do not match input {tuple(x.shape)}; want (B, G, k*k, H, W)")
    groups, taps = w.shape[1], w.shape[2]
    k = math.isqrt(taps)
    if k * k != taps or k % 2 == 0 or c % groups:
        raise ValueError(f"ska: need an odd square kernel and C % G == 0, got C={c}, G={groups}, taps={taps}")
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad)).reshape(b, c // groups, groups, h + 2 * pad, wd + 2 * pad)  # any layout
    out = None
    for i in range(k):
        for j in range(k):
            term = xp[..., i : i + h, j : j + wd] * w[:, None, :, i * k + j]  # (B, C/G, G, H, W)
            out = term if out is None else out + term
    return out.reshape(b, c, h, wd)


class SKA(nn.Module):
    """``ska(x, w)`` as a module (no parameters). Shapes: (B, C, H, W), (B, G, k*k, H, W) -> (B, C, H, W)."""

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return ska(x, w)
