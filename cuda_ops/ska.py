"""LSNet small-kernel aggregation (SKA): a per-pixel dynamic depthwise k x k conv, forward and backward.

``y[b, c, p] = sum_t x[b, c, p + off_t] * w[b, c mod G, t, p]`` over the k x k taps ``t`` (zero padding), where
``G = w.shape[1]`` weight groups are shared by channels ``c, c + G, c + 2G, ...`` (LSNet: arXiv 2503.23135).

Three things side by side:

- :func:`ska_reference`: nine shifted slices of the padded input, multiplied by their taps and summed; exact,
  any device, differentiable by autograd, exports to ONNX as Pad/Slice/Mul/Add (``detector.nn.ska`` uses it);
- the Triton kernels: one program per (image, weight group, pixel block) loads the group's k*k taps once and
  loops over the ``C / G`` channels that share them, so ``w`` is read once instead of ``C / G`` times and nothing
  like the unfold fallback's k*k-times-larger tensor is written. The backward kernel produces ``dx`` and ``dw``
  in one pass (``dw`` accumulated in registers over the channels of the group);
- ``torch.ops.cuda_ops.ska`` / ``ska_backward``: the custom ops (``register_fake`` for compile/export,
  ``register_autograd`` so training goes through the backward kernel).
"""

from __future__ import annotations

import functools
import math
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

from cuda_ops._triton import CompileSpec, cdiv, jit_kernels, next_pow2
from cuda_ops.availability import kernel_runs_on, use_kernel

tl = None  # triton.language, bound on first kernel use (see cuda_ops._triton)

BLOCK = 128  # pixels per program


def check_shapes(x: Tensor, w: Tensor) -> int:
    """Validate ``x (B, C, H, W)`` against ``w (B, G, k*k, H, W)``; returns ``k``."""
    b, c, h, wd = x.shape
    if w.dim() != 5 or w.shape[0] != b or w.shape[3:] != (h, wd):
        raise ValueError(f"ska: weights {tuple(w.shape)} do not match input {tuple(x.shape)}; want (B, G, k*k, H, W)")
    groups, taps = w.shape[1], w.shape[2]
    k = math.isqrt(taps)
    if k * k != taps or k % 2 == 0 or c % groups:
        raise ValueError(f"ska: need an odd square kernel and C % G == 0, got C={c}, G={groups}, taps={taps}")
    return k


def ska_reference(x: Tensor, w: Tensor) -> Tensor:
    """Pure-PyTorch SKA. ``x (Tensor[B, C, H, W])``, ``w (Tensor[B, G, k*k, H, W])`` -> ``Tensor[B, C, H, W]``.

    Taps in row-major order; ``C`` must be a multiple of ``G`` and ``k`` odd.
    """
    k = check_shapes(x, w)
    b, c, h, wd = x.shape
    groups = w.shape[1]
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad)).reshape(b, c // groups, groups, h + 2 * pad, wd + 2 * pad)  # any layout
    out = None
    for i in range(k):
        for j in range(k):
            term = xp[..., i : i + h, j : j + wd] * w[:, None, :, i * k + j]  # (B, C/G, G, H, W)
            out = term if out is None else out + term
    return out.reshape(b, c, h, wd)


def ska_backward_reference(grad: Tensor, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`ska_reference` w.r.t. ``x`` and ``w`` for an output gradient ``grad (B, C, H, W)``."""
    with torch.enable_grad():
        xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
        gx, gw = torch.autograd.grad(ska_reference(xr, wr), (xr, wr), grad)
    return gx, gw


# ---------------------------------------------------------------------------------------------------- kernels
def _taps(p, H, W, K: tl.constexpr, KKP: tl.constexpr, sign: tl.constexpr):
    """Flat offsets and masks of the k*k neighbours ``p + sign * off_t`` of pixels ``p``: ([KKP, BLOCK]) x2."""
    t = tl.arange(0, KKP)
    dh = t // K - K // 2
    dw = t % K - K // 2
    ph = p // W
    pw = p % W
    nh = ph[None, :] + sign * dh[:, None]
    nw = pw[None, :] + sign * dw[:, None]
    inside = (t[:, None] < K * K) & (p[None, :] < H * W) & (nh >= 0) & (nh < H) & (nw >= 0) & (nw < W)
    return nh * W + nw, inside


def _ska_fwd(x_ptr, w_ptr, y_ptr, C, H, W, G, K: tl.constexpr, KKP: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (cdiv(H*W, BLOCK), G, B): y for the C/G channels of weight group ``g`` over one pixel block."""
    pid = tl.program_id(0)
    g = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    hw = H * W
    p = pid * BLOCK + tl.arange(0, BLOCK)
    pm = p < hw
    t = tl.arange(0, KKP)
    noff, nmask = _taps(p, H, W, K, KKP, 1)
    w_base = (b * G + g) * (K * K) * hw
    wt = tl.load(w_ptr + w_base + t[:, None] * hw + p[None, :], mask=(t[:, None] < K * K) & pm[None, :], other=0.0)
    wt = wt.to(tl.float32)
    for j in range(0, C // G):
        x_base = (b * C + g + j * G) * hw
        xv = tl.load(x_ptr + x_base + noff, mask=nmask, other=0.0).to(tl.float32)
        y = tl.sum(xv * wt, axis=0)
        tl.store(y_ptr + x_base + p, y.to(y_ptr.dtype.element_ty), mask=pm)


def _ska_bwd(g_ptr, x_ptr, w_ptr, dx_ptr, dw_ptr, C, H, W, G, K: tl.constexpr, KKP: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (cdiv(H*W, BLOCK), G, B): ``dx[c, q] = sum_t g[c, q - off_t] w[t, q - off_t]`` for the group's
    channels and ``dw[t, p] = sum_c g[c, p] x[c, p + off_t]`` accumulated over them."""
    pid = tl.program_id(0)
    g = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    hw = H * W
    p = pid * BLOCK + tl.arange(0, BLOCK)
    pm = p < hw
    t = tl.arange(0, KKP)
    noff, nmask = _taps(p, H, W, K, KKP, 1)  # p + off_t: where x is read for dw
    soff, smask = _taps(p, H, W, K, KKP, -1)  # p - off_t: where g and w are read for dx
    w_base = (b * G + g) * (K * K) * hw
    w_sh = tl.load(w_ptr + w_base + t[:, None] * hw + soff, mask=smask, other=0.0).to(tl.float32)
    dw = tl.zeros((KKP, BLOCK), dtype=tl.float32)
    for j in range(0, C // G):
        base = (b * C + g + j * G) * hw
        xv = tl.load(x_ptr + base + noff, mask=nmask, other=0.0).to(tl.float32)
        gc = tl.load(g_ptr + base + p, mask=pm, other=0.0).to(tl.float32)
        dw += xv * gc[None, :]
        g_sh = tl.load(g_ptr + base + soff, mask=smask, other=0.0).to(tl.float32)
        tl.store(dx_ptr + base + p, tl.sum(g_sh * w_sh, axis=0).to(dx_ptr.dtype.element_ty), mask=pm)
    tl.store(
        dw_ptr + w_base + t[:, None] * hw + p[None, :],
        dw.to(dw_ptr.dtype.element_ty),
        mask=(t[:, None] < K * K) & pm[None, :],
    )


@functools.cache
def _kernels():
    return jit_kernels(sys.modules[__name__], (_ska_fwd, _ska_bwd), helpers=(_taps,))


def _kkp(k: int) -> int:
    return next_pow2(k * k)


def _grid(x: Tensor, w: Tensor) -> tuple[int, int, int]:
    return (cdiv(x.shape[2] * x.shape[3], BLOCK), w.shape[1], x.shape[0])


def ska_kernel(x: Tensor, w: Tensor) -> Tensor:
    """Triton forward; contiguous inputs of one floating dtype."""
    k = check_shapes(x, w)
    x, w = x.contiguous(), w.contiguous()
    y = torch.empty_like(x)
    if x.numel():
        _, c, h, wd = x.shape
        _kernels().ska_fwd[_grid(x, w)](x, w, y, c, h, wd, w.shape[1], K=k, KKP=_kkp(k), BLOCK=BLOCK)
    return y


def ska_backward_kernel(grad: Tensor, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Triton backward: ``(dx, dw)`` in one pass."""
    k = check_shapes(x, w)
    grad, x, w = grad.contiguous(), x.contiguous(), w.contiguous()
    dx, dw = torch.empty_like(x), torch.empty_like(w)
    if x.numel():
        _, c, h, wd = x.shape
        _kernels().ska_bwd[_grid(x, w)](grad, x, w, dx, dw, c, h, wd, w.shape[1], K=k, KKP=_kkp(k), BLOCK=BLOCK)
    return dx, dw


def compile_specs() -> list[CompileSpec]:
    """The specialisations compiled ahead of time for sm_90 by the tests (fp16 and fp32, k = 3)."""
    specs = []
    for ty in ("fp16", "fp32"):
        common = {"C": "i32", "H": "i32", "W": "i32", "G": "i32"}
        const = {"K": 3, "KKP": 16, "BLOCK": BLOCK}
        fwd = {"x_ptr": f"*{ty}", "w_ptr": f"*{ty}", "y_ptr": f"*{ty}", **common}
        bwd = {
            "g_ptr": f"*{ty}",
            "x_ptr": f"*{ty}",
            "w_ptr": f"*{ty}",
            "dx_ptr": f"*{ty}",
            "dw_ptr": f"*{ty}",
            **common,
        }
        specs += [
            CompileSpec(f"ska_fwd_{ty}", _ska_fwd, fwd, const),
            CompileSpec(f"ska_bwd_{ty}", _ska_bwd, bwd, const),
        ]
    return specs


# ---------------------------------------------------------------------------------------------- custom ops
@torch.library.custom_op("cuda_ops::ska", mutates_args=())
def ska_op(x: Tensor, w: Tensor) -> Tensor:
    """SKA as a custom op: the Triton kernel where it can run on ``x``'s device, else the reference."""
    if kernel_runs_on(x.device):
        return ska_kernel(x, w)
    return ska_reference(x, w).contiguous()


@ska_op.register_fake
def _(x: Tensor, w: Tensor) -> Tensor:
    check_shapes(x, w)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("cuda_ops::ska_backward", mutates_args=())
def ska_backward_op(grad: Tensor, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``(dx, dw)`` of SKA for ``grad``: the Triton kernel where it can run, else autograd of the reference."""
    if kernel_runs_on(x.device):
        return ska_backward_kernel(grad, x, w)
    gx, gw = ska_backward_reference(grad, x, w)
    return gx.contiguous(), gw.contiguous()


@ska_backward_op.register_fake
def _(grad: Tensor, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(
        w, memory_format=torch.contiguous_format
    )


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor):
    x, w = ctx.saved_tensors
    return tuple(torch.ops.cuda_ops.ska_backward(grad, x, w))


torch.library.register_autograd("cuda_ops::ska", _backward, setup_context=_setup_context)


def ska(x: Tensor, w: Tensor, impl: str = "auto") -> Tensor:
    """SKA of ``x (Tensor[B, C, H, W])`` with per-pixel kernels ``w (Tensor[B, G, k*k, H, W])`` -> ``(B, C, H, W)``.

    ``impl``: ``"kernel"`` (Triton forward and backward through ``torch.ops.cuda_ops.ska``), ``"reference"``
    (:func:`ska_reference`, plain autograd) or ``"auto"`` (the kernel where it can run, see
    :func:`cuda_ops.availability.use_kernel`). Mixed dtypes (AMP: fp16 features, fp32 GroupNorm kernels) are
    promoted to the common dtype, as the reference's arithmetic promotes them.
    """
    if use_kernel("ska", impl, x.device):
        if x.dtype != w.dtype:
            common = torch.promote_types(x.dtype, w.dtype)
            x, w = x.to(common), w.to(common)
        return torch.ops.cuda_ops.ska(x, w)
    return ska_reference(x, w)
