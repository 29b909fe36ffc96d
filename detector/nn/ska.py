"""Small-kernel aggregation (SKA) of LSNet (arXiv 2503.23135): a per-pixel dynamic depthwise k x k conv.

``y[b, c, p] = sum_k x[b, c, p + k] * w[b, c mod G, k, p]`` over the k x k neighbourhood (zero padding), where
``G = w.shape[1]`` weight groups are shared by channels ``c, c + G, c + 2G, ...`` (the authors' kernel indexes
the weight channel as ``c % G``).

Two implementations behind one signature, both in ``cuda_ops.ska``: on CUDA tensors the fused Triton kernel
(forward and backward, where CUDA and Triton are usable), everywhere else and while tracing/exporting the
pure-PyTorch reference (nine shifted slices of the padded input times their taps: exact, differentiable by
autograd, exports to ONNX as Pad/Slice/Mul/Add). CPU behaviour is the reference's, unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cuda_ops.ska import ska as ska_op
from cuda_ops.ska import ska_reference


def ska(x: Tensor, w: Tensor) -> Tensor:
    """Apply per-pixel kernels ``w`` to ``x``.

    Args:
        x (Tensor[B, C, H, W]): input features.
        w (Tensor[B, G, k*k, H, W]): one k x k kernel per weight group and pixel, taps in row-major order;
            ``C`` must be a multiple of ``G`` and ``k`` odd.
    Returns:
        Tensor[B, C, H, W].
    """
    exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
    if x.is_cuda and not exporting:
        return ska_op(x, w, impl="auto")  # the Triton kernel where it can run, else the reference
    return ska_reference(x, w)


class SKA(nn.Module):
    """``ska(x, w)`` as a module (no parameters). Shapes: (B, C, H, W), (B, G, k*k, H, W) -> (B, C, H, W)."""

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return ska(x, w)
