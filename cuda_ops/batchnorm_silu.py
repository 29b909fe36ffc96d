"""BatchNorm with batch statistics + SiLU for training: fused Triton forward and backward, and the PyTorch reference.

``y = silu((x - mean) * invstd * weight + bias)`` with ``mean`` and the biased variance over (N, H, W) per
channel; the running statistics move by ``momentum`` towards ``mean`` and the unbiased variance, as
``torch.nn.functional.batch_norm(training=True)`` does. Activations may be fp32, fp16 or bf16; statistics,
weight, bias and running buffers are fp32. The kernels read any layout whose H and W merge into one stride
(NCHW-contiguous or channels-last); channels-last reads a row of channels at a time, so its loads coalesce.

Passes over the activation (the cost of this memory-bound op):
- forward: 1. per-channel partial (count, mean, M2) over row blocks (one read of ``x``); 2. a channel-sized
  kernel combines the partials (Chan et al.), writes ``mean`` / ``invstd`` and updates the running statistics;
  3. normalise + affine + SiLU (one read of ``x``, one write of ``y``);
- backward: 1. partial ``sum(dz)`` and ``sum(dz * xhat)`` with the SiLU derivative recomputed from ``x``
  (``dz = dy * silu'(z)``; one read of ``x`` and ``dy``); 2. ``dx = weight * invstd * (dz - mean(dz) -
  xhat * mean(dz * xhat))`` (one read of ``x`` and ``dy``, one write of ``dx``), with ``dbeta = sum(dz)`` and
  ``dgamma = sum(dz * xhat)``.
The stock path (cuDNN BN, then SiLU, each with its own backward) moves the activation about twice as often.

Registered as ``cuda_ops::bn_silu_forward`` / ``cuda_ops::bn_silu_backward`` (``torch.library.custom_op`` with
fake implementations, so ``torch.compile`` traces them) and tied together by an ``autograd.Function``. Neither
reads anything back to the host, so a CUDA graph can capture them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cuda_ops.availability import use_kernel

OP = "batchnorm_silu"
_MAX_PARTIALS = 512  # row-block partials per channel; more rows per program beyond that
_BLOCK_R = 64


def batchnorm_silu_reference(
    x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor, momentum: float, eps: float
) -> Tensor:
    """The PyTorch definition the kernels must equal: ``silu(batch_norm(x, training=True))``; updates the running
    statistics in place. ``x (Tensor[N, C, H, W])`` -> same shape and dtype."""
    return F.silu(F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps))


def batchnorm_silu(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    momentum: float = 0.1,
    eps: float = 1e-5,
    impl: str = "auto",
) -> Tensor:
    """Training-mode BatchNorm2d + SiLU of ``x (Tensor[N, C, H, W])``; ``weight``, ``bias``, ``running_mean``,
    ``running_var (Tensor[C])`` fp32 (the running ones updated in place). ``impl``: see ``cuda_ops.availability``."""
    if x.dim() != 4:
        raise ValueError(f"{OP}: expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    if x.shape[0] * x.shape[2] * x.shape[3] < 2:
        raise ValueError(f"{OP}: batch statistics need more than 1 value per channel, got shape {tuple(x.shape)}")
    if not use_kernel(OP, impl, x.device):
        return batchnorm_silu_reference(x, weight, bias, running_mean, running_var, momentum, eps)
    return _BatchNormSiLU.apply(x, weight, bias, running_mean, running_var, momentum, eps)


# -- Triton kernels (compiled on first use; importing this module does not need Triton) -----------------------
def _kernels():
    """Define the Triton kernels once (deferred so ``import cuda_ops`` works without Triton, and so that
    ``TRITON_INTERPRET`` is read when the first kernel runs). The ``@triton.jit`` helpers the kernels call are
    bound at module level: Triton (its interpreter too) resolves a kernel's callees through its globals."""
    global _KERNELS, _offsets, _tile, _channel_params, _silu_input, _dz
    if _KERNELS is not None:
        return _KERNELS
    import triton
    import triton.language as tl

    @triton.jit
    def _offsets(rows, cols, hw, s_n, s_hw, s_c):
        """Element offsets of rows ``n * HW + hw`` and channels ``c`` (int64: large activations)."""
        rows = rows.to(tl.int64)
        return (rows // hw * s_n + rows % hw * s_hw)[:, None] + cols.to(tl.int64)[None, :] * s_c

    @triton.jit
    def _tile(row_block, cols, col_ok, R, hw, s_n, s_hw, s_c, BLOCK_R: tl.constexpr):
        """(mask, offsets) of row block ``row_block`` x channel block ``cols``."""
        rows = row_block * BLOCK_R + tl.arange(0, BLOCK_R)
        return (rows < R)[:, None] & col_ok[None, :], _offsets(rows, cols, hw, s_n, s_hw, s_c)

    @triton.jit
    def bn_partial_stats(
        x_ptr, mean_ptr, m2_ptr, R, C, hw, s_n, s_hw, s_c,
        ITERS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """Per program: (mean, M2) of ``ITERS`` row blocks of ``BLOCK_C`` channels -> partial row ``pid_r``."""
        pid_r, pid_c = tl.program_id(0), tl.program_id(1)
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        col_ok = cols < C
        count = 0.0
        mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        for i in range(ITERS):
            block = pid_r * ITERS + i
            ok, offs = _tile(block, cols, col_ok, R, hw, s_n, s_hw, s_c, BLOCK_R)
            x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
            n_b = tl.minimum(tl.maximum(R - block * BLOCK_R, 0), BLOCK_R).to(tl.float32)
            mean_b = tl.sum(x, 0) / tl.maximum(n_b, 1.0)
            d = tl.where(ok, x - mean_b[None, :], 0.0)
            m2_b = tl.sum(d * d, 0)
            total = count + n_b
            delta = mean_b - mean
            frac = n_b / tl.maximum(total, 1.0)
            mean = mean + delta * frac
            m2 = m2 + m2_b + delta * delta * count * frac
            count = total
        tl.store(mean_ptr + pid_r * C + cols, mean, mask=col_ok)
        tl.store(m2_ptr + pid_r * C + cols, m2, mask=col_ok)

    @triton.jit
    def bn_finalize(
        pmean_ptr, pm2_ptr, mean_ptr, invstd_ptr, rmean_ptr, rvar_ptr, P, R, C, momentum, eps,
        ROWS_PER_PARTIAL: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """Combine the ``P`` partials of each channel; write mean, 1/std and update the running statistics."""
        pid_c = tl.program_id(0)
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        col_ok = cols < C
        count = 0.0
        mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        for p0 in range(0, P, BLOCK_P):
            parts = p0 + tl.arange(0, BLOCK_P)
            part_ok = parts < P
            ok = part_ok[:, None] & col_ok[None, :]
            n_p = tl.where(part_ok, tl.minimum(R - parts * ROWS_PER_PARTIAL, ROWS_PER_PARTIAL), 0).to(tl.float32)
            offs = parts[:, None] * C + cols[None, :]
            mean_p = tl.load(pmean_ptr + offs, mask=ok, other=0.0)
            m2_p = tl.load(pm2_ptr + offs, mask=ok, other=0.0)
            n_t = tl.sum(n_p, 0)
            mean_t = tl.sum(mean_p * n_p[:, None], 0) / tl.maximum(n_t, 1.0)
            d = mean_p - mean_t[None, :]
            m2_t = tl.sum(m2_p, 0) + tl.sum(d * d * n_p[:, None], 0)
            total = count + n_t
            delta = mean_t - mean
            frac = n_t / tl.maximum(total, 1.0)
            mean = mean + delta * frac
            m2 = m2 + m2_t + delta * delta * count * frac
            count = total
        var = m2 / count
        tl.store(mean_ptr + cols, mean, mask=col_ok)
        tl.store(invstd_ptr + cols, 1.0 / tl.sqrt(var + eps), mask=col_ok)
        rmean = tl.load(rmean_ptr + cols, mask=col_ok, other=0.0)
        rvar = tl.load(rvar_ptr + cols, mask=col_ok, other=0.0)
        unbiased = m2 / (count - 1.0)
        tl.store(rmean_ptr + cols, (1.0 - momentum) * rmean + momentum * mean, mask=col_ok)
        tl.store(rvar_ptr + cols, (1.0 - momentum) * rvar + momentum * unbiased, mask=col_ok)

    @triton.jit
    def _channel_params(mean_ptr, invstd_ptr, w_ptr, b_ptr, cols, col_ok):
        """The per-channel vectors of a channel block: mean, 1/std, weight, bias."""
        mean = tl.load(mean_ptr + cols, mask=col_ok, other=0.0)
        invstd = tl.load(invstd_ptr + cols, mask=col_ok, other=0.0)
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0)
        b = tl.load(b_ptr + cols, mask=col_ok, other=0.0)
        return mean, invstd, w, b

    @triton.jit
    def _silu_input(x, mean, invstd, w, b):
        """(xhat, z, sigmoid(z)) of a tile: the normalised input, the pre-activation and its gate."""
        xhat = (x - mean[None, :]) * invstd[None, :]
        z = xhat * w[None, :] + b[None, :]
        return xhat, z, tl.sigmoid(z)

    @triton.jit
    def bn_silu_apply(
        x_ptr, y_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, R, C, hw, s_n, s_hw, s_c,
        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """``y = silu(xhat * w + b)`` for one tile; ``y`` has the strides of ``x``."""
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        col_ok = cols < C
        ok, offs = _tile(tl.program_id(0), cols, col_ok, R, hw, s_n, s_hw, s_c, BLOCK_R)
        x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        mean, invstd, w, b = _channel_params(mean_ptr, invstd_ptr, w_ptr, b_ptr, cols, col_ok)
        _, z, s = _silu_input(x, mean, invstd, w, b)
        tl.store(y_ptr + offs, (z * s).to(y_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _dz(dy, z, s):
        """Gradient at the pre-activation: ``dy * silu'(z)``, ``silu'(z) = s * (1 + z * (1 - s))``."""
        return dy * s * (1.0 + z * (1.0 - s))

    @triton.jit
    def bn_silu_grad_partials(
        x_ptr, dy_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, sdz_ptr, sdzx_ptr, R, C, hw, s_n, s_hw, s_c,
        ITERS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """Per program: ``sum(dz)`` and ``sum(dz * xhat)`` over ``ITERS`` row blocks -> partial row ``pid_r``."""
        pid_r, pid_c = tl.program_id(0), tl.program_id(1)
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        col_ok = cols < C
        mean, invstd, w, b = _channel_params(mean_ptr, invstd_ptr, w_ptr, b_ptr, cols, col_ok)
        sdz = tl.zeros([BLOCK_C], dtype=tl.float32)
        sdzx = tl.zeros([BLOCK_C], dtype=tl.float32)
        for i in range(ITERS):
            ok, offs = _tile(pid_r * ITERS + i, cols, col_ok, R, hw, s_n, s_hw, s_c, BLOCK_R)
            x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
            xhat, z, s = _silu_input(x, mean, invstd, w, b)
            dz = tl.where(ok, _dz(dy, z, s), 0.0)
            sdz += tl.sum(dz, 0)
            sdzx += tl.sum(dz * xhat, 0)
        tl.store(sdz_ptr + pid_r * C + cols, sdz, mask=col_ok)
        tl.store(sdzx_ptr + pid_r * C + cols, sdzx, mask=col_ok)

    @triton.jit
    def bn_silu_grad_input(
        x_ptr, dy_ptr, dx_ptr, mean_ptr, invstd_ptr, w_ptr, b_ptr, dbeta_ptr, dgamma_ptr, R, C, hw, s_n, s_hw, s_c,
        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """``dx = w * invstd * (dz - dbeta / R - xhat * dgamma / R)`` for one tile."""
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        col_ok = cols < C
        ok, offs = _tile(tl.program_id(0), cols, col_ok, R, hw, s_n, s_hw, s_c, BLOCK_R)
        x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
        mean, invstd, w, b = _channel_params(mean_ptr, invstd_ptr, w_ptr, b_ptr, cols, col_ok)
        mean_dz = tl.load(dbeta_ptr + cols, mask=col_ok, other=0.0) / R
        mean_dzx = tl.load(dgamma_ptr + cols, mask=col_ok, other=0.0) / R
        xhat, z, s = _silu_input(x, mean, invstd, w, b)
        dz = _dz(dy, z, s)
        dx = (w * invstd)[None, :] * (dz - mean_dz[None, :] - xhat * mean_dzx[None, :])
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=ok)

    _KERNELS = {
        "partial_stats": bn_partial_stats,
        "finalize": bn_finalize,
        "apply": bn_silu_apply,
        "grad_partials": bn_silu_grad_partials,
        "grad_input": bn_silu_grad_input,
    }
    return _KERNELS


_KERNELS: dict | None = None


def _layout(x: Tensor) -> tuple[Tensor, int, int, int, int, int, int]:
    """``(x, R, C, HW, stride_n, stride_hw, stride_c)``: rows are (n, h, w) positions; H and W must merge."""
    n, c, h, w = x.shape
    if h > 1 and w > 1 and x.stride(2) != w * x.stride(3):
        x = x.contiguous(memory_format=torch.channels_last)
    s_hw = x.stride(3) if w > 1 else x.stride(2)
    return x, n * h * w, c, h * w, x.stride(0), s_hw, x.stride(1)


def _grid_plan(r: int, c: int) -> tuple[int, int, int]:
    """``(BLOCK_C, ITERS, P)``: channel block width, row blocks per reduction program, number of partials."""
    import triton

    block_c = min(64, triton.next_power_of_2(c))
    blocks = triton.cdiv(r, _BLOCK_R)
    iters = triton.cdiv(blocks, _MAX_PARTIALS)
    return block_c, iters, triton.cdiv(blocks, iters)


def _empty_like_layout(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """An uninitialised tensor with the shape and strides of ``x`` (so the kernels index both alike)."""
    return torch.empty_strided(x.shape, x.stride(), dtype=dtype or x.dtype, device=x.device)


@torch.library.custom_op("cuda_ops::bn_silu_forward", mutates_args=("running_mean", "running_var"))
def bn_silu_forward(
    x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor, momentum: float, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel forward: ``(y, mean, invstd)``, ``y`` with ``x``'s layout, ``mean`` / ``invstd (Tensor[C])`` fp32."""
    import triton

    k = _kernels()
    x, r, c, hw, s_n, s_hw, s_c = _layout(x)
    block_c, iters, parts = _grid_plan(r, c)
    f32 = dict(dtype=torch.float32, device=x.device)
    part_mean, part_m2 = torch.empty(parts, c, **f32), torch.empty(parts, c, **f32)
    mean, invstd = torch.empty(c, **f32), torch.empty(c, **f32)
    c_blocks = triton.cdiv(c, block_c)
    k["partial_stats"][(parts, c_blocks)](
        x, part_mean, part_m2, r, c, hw, s_n, s_hw, s_c, ITERS=iters, BLOCK_R=_BLOCK_R, BLOCK_C=block_c
    )
    k["finalize"][(c_blocks,)](
        part_mean, part_m2, mean, invstd, running_mean, running_var, parts, r, c, momentum, eps,
        ROWS_PER_PARTIAL=iters * _BLOCK_R, BLOCK_P=32, BLOCK_C=block_c,
    )  # fmt: skip
    y = _empty_like_layout(x)
    k["apply"][(triton.cdiv(r, _BLOCK_R), c_blocks)](
        x, y, mean, invstd, weight, bias, r, c, hw, s_n, s_hw, s_c, BLOCK_R=_BLOCK_R, BLOCK_C=block_c
    )
    return y, mean, invstd


@bn_silu_forward.register_fake
def _(x, weight, bias, running_mean, running_var, momentum, eps):
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty(c, dtype=torch.float32), x.new_empty(c, dtype=torch.float32)


@torch.library.custom_op("cuda_ops::bn_silu_backward", mutates_args=())
def bn_silu_backward(
    dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, invstd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel backward: ``(dx, dweight, dbias)`` of ``bn_silu_forward``."""
    import triton

    k = _kernels()
    x, r, c, hw, s_n, s_hw, s_c = _layout(x)
    dy = dy if dy.stride() == x.stride() else dy.contiguous(memory_format=torch.channels_last)
    if dy.stride() != x.stride():  # an NCHW x with a channels-last dy or the reverse: index both alike
        x, dy = x.contiguous(memory_format=torch.channels_last), dy.contiguous(memory_format=torch.channels_last)
        x, r, c, hw, s_n, s_hw, s_c = _layout(x)
    block_c, iters, parts = _grid_plan(r, c)
    f32 = dict(dtype=torch.float32, device=x.device)
    sdz, sdzx = torch.empty(parts, c, **f32), torch.empty(parts, c, **f32)
    c_blocks = triton.cdiv(c, block_c)
    k["grad_partials"][(parts, c_blocks)](
        x, dy, mean, invstd, weight, bias, sdz, sdzx, r, c, hw, s_n, s_hw, s_c,
        ITERS=iters, BLOCK_R=_BLOCK_R, BLOCK_C=block_c,
    )  # fmt: skip
    dbias, dweight = sdz.sum(0), sdzx.sum(0)
    dx = _empty_like_layout(x)
    k["grad_input"][(triton.cdiv(r, _BLOCK_R), c_blocks)](
        x, dy, dx, mean, invstd, weight, bias, dbias, dweight, r, c, hw, s_n, s_hw, s_c,
        BLOCK_R=_BLOCK_R, BLOCK_C=block_c,
    )  # fmt: skip
    return dx, dweight, dbias


@bn_silu_backward.register_fake
def _(dy, x, weight, bias, mean, invstd):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(bias)


class _BatchNormSiLU(torch.autograd.Function):
    """Autograd around the two ops (``custom_op`` cannot carry a backward for an op that mutates its inputs, and
    the forward updates the running statistics)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        y, mean, invstd = torch.ops.cuda_ops.bn_silu_forward(x, weight, bias, running_mean, running_var, momentum, eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        dx, dweight, dbias = torch.ops.cuda_ops.bn_silu_backward(dy, x, weight, bias, mean, invstd)
        return dx, dweight, dbias, None, None, None, None
