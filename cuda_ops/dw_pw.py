"""Fused depthwise 3x3 + act + pointwise 1x1 + act (BatchNorm folded into both), channels-last.

``y = act_pw(pw(act_dw(dw3x3(x, stride) + b_dw)) + b_pw)``: the inverted-bottleneck / depthwise-separable pair
of LeYOLO, LSNet and VoVNet-DW. The block fusion of "On the Efficiency of Convolutional Neural Networks": one
program computes the depthwise output of a tile of pixels for ``BLOCK_K`` channels at a time in registers, feeds
it straight into the pointwise matrix product (``tl.dot``, fp32 accumulation) and applies bias + activation in
the epilogue, so the depthwise activation map never travels through device memory.

Tensors are logically NCHW (PyTorch's convention) and read/written through their strides; channels-last
(``memory_format=torch.channels_last``, i.e. NHWC in memory) gives contiguous channel loads and is what the
result uses. Weights are BN-folded: ``dw_weight (C, 1, 3, 3)``, ``dw_bias (C,)``, ``pw_weight (N, C, 1, 1)`` or
``(N, C)``, ``pw_bias (N,)``.
"""

from __future__ import annotations

import functools
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

from cuda_ops._triton import CompileSpec, cdiv, jit_kernels, next_pow2, program_block
from cuda_ops.availability import kernel_runs_on, use_kernel

tl = None  # triton.language, bound on first kernel use (see cuda_ops._triton)

ACTS = {None: 0, "relu": 1, "silu": 2}
BLOCK_P = 64  # output pixels per program
BLOCK_K = 32  # input channels per depthwise step


def _act_code(act) -> int:
    if act not in ACTS:
        raise ValueError(f"dw_pw: activation {act!r} is not one of {list(ACTS)}")
    return ACTS[act]


def _split_act(act) -> tuple[int, int]:
    """``act`` or ``(dw_act, pw_act)`` -> activation codes."""
    dw_act, pw_act = act if isinstance(act, tuple) else (act, act)
    return _act_code(dw_act), _act_code(pw_act)


def check_shapes(x: Tensor, dw_weight: Tensor, dw_bias: Tensor, pw_weight: Tensor, pw_bias: Tensor, stride: int):
    """Validate the block's tensors; returns ``(N, OH, OW)``."""
    if x.dim() != 4:
        raise ValueError(f"dw_pw: x must be (B, C, H, W), got {tuple(x.shape)}")
    c = x.shape[1]
    if tuple(dw_weight.shape) != (c, 1, 3, 3) or tuple(dw_bias.shape) != (c,):
        raise ValueError(
            f"dw_pw: depthwise weight/bias {tuple(dw_weight.shape)}/{tuple(dw_bias.shape)}, want ({c}, 1, 3, 3)/({c},)"
        )
    n = pw_weight.shape[0]
    if pw_weight.reshape(n, -1).shape[1] != c or tuple(pw_bias.shape) != (n,):
        raise ValueError(f"dw_pw: pointwise weight/bias {tuple(pw_weight.shape)}/{tuple(pw_bias.shape)} for {c} inputs")
    if stride not in (1, 2):
        raise ValueError(f"dw_pw: stride must be 1 or 2, got {stride}")
    oh, ow = (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1
    return n, oh, ow


def _apply(y: Tensor, code: int) -> Tensor:
    return F.relu(y) if code == 1 else F.silu(y) if code == 2 else y


def dw_pw_reference(
    x: Tensor,
    dw_weight: Tensor,
    dw_bias: Tensor,
    pw_weight: Tensor,
    pw_bias: Tensor,
    stride: int,
    dw_act: int,
    pw_act: int,
) -> Tensor:
    """The unfused torch ops (grouped conv, act, 1x1 conv, act); activation codes as in ``ACTS``."""
    check_shapes(x, dw_weight, dw_bias, pw_weight, pw_bias, stride)
    n = pw_weight.shape[0]
    y = _apply(F.conv2d(x, dw_weight, dw_bias, stride, 1, groups=x.shape[1]), dw_act)
    return _apply(F.conv2d(y, pw_weight.reshape(n, -1, 1, 1), pw_bias), pw_act)


# ---------------------------------------------------------------------------------------------------- kernels
def _activate(v, ACT: tl.constexpr):
    if ACT == 1:
        v = tl.maximum(v, 0.0)
    elif ACT == 2:
        v = v / (1.0 + tl.exp(-v))
    return v


def _dw_pw(
    x_ptr,
    dww_ptr,
    dwb_ptr,
    pww_ptr,
    pwb_ptr,
    y_ptr,
    C,
    H,
    W,
    N,
    OH,
    OW,
    sxb,
    sxc,
    sxh,
    sxw,
    syb,
    syc,
    syh,
    syw,
    STRIDE: tl.constexpr,
    DW_ACT: tl.constexpr,
    PW_ACT: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Grid (cdiv(OH*OW, BLOCK_P), cdiv(N, BLOCK_N), B): one tile of output pixels x output channels."""
    pid_p = tl.program_id(0)
    pid_n = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < OH * OW
    oh = p // OW
    ow = p % OW
    nn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = nn < N
    acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        kk = tl.max_contiguous(tl.multiple_of(k0 + tl.arange(0, BLOCK_K), BLOCK_K), BLOCK_K)
        km = kk < C
        d = tl.zeros((BLOCK_P, BLOCK_K), dtype=tl.float32)
        for t in tl.static_range(9):
            ih = oh * STRIDE + (t // 3 - 1)
            iw = ow * STRIDE + (t % 3 - 1)
            m = pm & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            ptr = x_ptr + b * sxb + ih[:, None] * sxh + iw[:, None] * sxw + kk[None, :] * sxc
            xv = tl.load(ptr, mask=m[:, None] & km[None, :], other=0.0).to(tl.float32)
            wv = tl.load(dww_ptr + kk * 9 + t, mask=km, other=0.0).to(tl.float32)
            d += xv * wv[None, :]
        d = _activate(d + tl.load(dwb_ptr + kk, mask=km, other=0.0).to(tl.float32)[None, :], DW_ACT)
        d = tl.where(km[None, :], d, 0.0).to(x_ptr.dtype.element_ty)  # the depthwise tile, on chip only
        wp = tl.load(pww_ptr + nn[None, :] * C + kk[:, None], mask=km[:, None] & nm[None, :], other=0.0)
        if IEEE:
            acc += tl.dot(d, wp.to(x_ptr.dtype.element_ty), input_precision="ieee")
        else:
            acc += tl.dot(d, wp.to(x_ptr.dtype.element_ty))
    acc = _activate(acc + tl.load(pwb_ptr + nn, mask=nm, other=0.0).to(tl.float32)[None, :], PW_ACT)
    out = y_ptr + b * syb + oh[:, None] * syh + ow[:, None] * syw + nn[None, :] * syc
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=pm[:, None] & nm[None, :])


@functools.cache
def _kernels():
    return jit_kernels(sys.modules[__name__], (_dw_pw,), helpers=(_activate,))


def _block_n(n: int, fp32: bool) -> int:
    """Output channels per program: all of them up to 128 (each extra N tile recomputes the depthwise); 32 in
    fp32, whose exact (non-tf32) product needs far more shared memory per tile."""
    return min(max(16, next_pow2(n)), 32 if fp32 else 128)


def dw_pw_kernel(
    x: Tensor,
    dw_weight: Tensor,
    dw_bias: Tensor,
    pw_weight: Tensor,
    pw_bias: Tensor,
    stride: int,
    dw_act: int,
    pw_act: int,
) -> Tensor:
    """Triton :func:`dw_pw_reference`; the result is channels-last in ``x``'s dtype."""
    n, oh, ow = check_shapes(x, dw_weight, dw_bias, pw_weight, pw_bias, stride)
    b, c, h, w = x.shape
    y = torch.empty((b, n, oh, ow), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    if y.numel() == 0:
        return y
    dww = dw_weight.reshape(c, 9).contiguous()
    pww = pw_weight.reshape(n, c).contiguous()
    bn = _block_n(n, x.dtype == torch.float32)
    bp = program_block(BLOCK_P, x.device, 256)
    grid = (cdiv(oh * ow, bp), cdiv(n, bn), b)
    _kernels().dw_pw[grid](
        x, dww, dw_bias.contiguous(), pww, pw_bias.contiguous(), y, c, h, w, n, oh, ow,
        *x.stride(), *y.stride(),
        STRIDE=stride, DW_ACT=dw_act, PW_ACT=pw_act, IEEE=x.dtype == torch.float32,
        BLOCK_P=bp, BLOCK_K=BLOCK_K, BLOCK_N=bn,
    )  # fmt: skip
    return y


def compile_specs() -> list[CompileSpec]:
    """The specialisations compiled ahead of time for sm_90 by the tests (fp16 SiLU and fp32 ReLU/none)."""
    specs = []
    for ty, stride, acts in (("fp16", 1, (2, 2)), ("fp16", 2, (1, 0)), ("fp32", 1, (2, 1))):
        sig = {n: f"*{ty}" for n in ("x_ptr", "dww_ptr", "dwb_ptr", "pww_ptr", "pwb_ptr", "y_ptr")}
        sig.update({n: "i32" for n in ("C", "H", "W", "N", "OH", "OW")})
        sig.update({n: "i64" for n in ("sxb", "sxh", "sxw", "syb", "syh", "syw")})
        const = {"sxc": 1, "syc": 1}  # channels-last: Triton specialises a stride of 1 at run time
        const.update({"STRIDE": stride, "DW_ACT": acts[0], "PW_ACT": acts[1], "IEEE": ty == "fp32"})
        const.update({"BLOCK_P": BLOCK_P, "BLOCK_K": BLOCK_K, "BLOCK_N": _block_n(128, ty == "fp32")})
        aligned = ("C", "N", "sxb", "sxh", "sxw", "syb", "syh", "syw")  # channels-last, C and N multiples of 16
        specs.append(CompileSpec(f"dw_pw_{ty}_s{stride}", _dw_pw, sig, const, 4, aligned))
    return specs


# ---------------------------------------------------------------------------------------------- custom op
@torch.library.custom_op("cuda_ops::dw_pw", mutates_args=())
def dw_pw_op(
    x: Tensor,
    dw_weight: Tensor,
    dw_bias: Tensor,
    pw_weight: Tensor,
    pw_bias: Tensor,
    stride: int,
    dw_act: int,
    pw_act: int,
) -> Tensor:
    """Fused block as a custom op (activation codes as in ``ACTS``); channels-last result."""
    if kernel_runs_on(x.device):
        return dw_pw_kernel(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, dw_act, pw_act)
    y = dw_pw_reference(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, dw_act, pw_act)
    return y.contiguous(memory_format=torch.channels_last)


@dw_pw_op.register_fake
def _(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, dw_act, pw_act):
    n, oh, ow = check_shapes(x, dw_weight, dw_bias, pw_weight, pw_bias, stride)
    return x.new_empty((x.shape[0], n, oh, ow)).contiguous(memory_format=torch.channels_last)


def dw_pw(
    x: Tensor,
    dw_weight: Tensor,
    dw_bias: Tensor,
    pw_weight: Tensor,
    pw_bias: Tensor,
    act: str | None | tuple[str | None, str | None] = "silu",
    stride: int = 1,
    impl: str = "auto",
) -> Tensor:
    """Depthwise 3x3 (padding 1, ``stride`` 1 or 2) + act + pointwise 1x1 + act, BN folded into the weights.

    Args:
        x (Tensor[B, C, H, W]): input, best channels-last (NHWC in memory); fp16 or fp32.
        dw_weight (Tensor[C, 1, 3, 3]), dw_bias (Tensor[C]): folded depthwise conv + BN.
        pw_weight (Tensor[N, C, 1, 1] or [N, C]), pw_bias (Tensor[N]): folded pointwise conv + BN.
        act: ``"silu"``, ``"relu"`` or None after both convs, or ``(dw_act, pw_act)``.

    Returns:
        Tensor[B, N, OH, OW], channels-last on the kernel path, in ``x``'s dtype. Inference only (no autograd).
    """
    dw_act, pw_act = _split_act(act)
    if use_kernel("dw_pw", impl, x.device):
        return torch.ops.cuda_ops.dw_pw(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, dw_act, pw_act)
    return dw_pw_reference(x, dw_weight, dw_bias, pw_weight, pw_bias, stride, dw_act, pw_act)
