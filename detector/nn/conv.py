"""Convolution primitives shared by every family: Conv (conv-BN-act), plain layers, Concat, Upsample."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from detector.nn.block import Block
from detector.registry import BLOCKS

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "leaky": nn.LeakyReLU,
    "gelu": nn.GELU,
}


def make_act(act: str | bool | None) -> nn.Module:
    """``"silu"``/``True`` -> SiLU, ``None``/``False``/``"none"`` -> Identity, else the named activation."""
    if act is True:
        return nn.SiLU(inplace=True)
    if act in (None, False, "none", "identity"):
        return nn.Identity()
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)} or none")
    cls = ACTIVATIONS[act]
    return cls(inplace=True) if cls in (nn.SiLU, nn.ReLU, nn.ReLU6, nn.Hardswish) else cls()


def fused_bn_runs(x: Tensor) -> bool:
    """Whether the fused BatchNorm + SiLU training kernel runs on ``x``: CUDA tensors with Triton usable."""
    if x.device.type != "cuda":
        return False
    from cuda_ops import use_kernel

    return use_kernel("batchnorm_silu", "auto", x.device)


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """'Same' padding for an odd kernel ``k`` with dilation ``d``."""
    if p is not None:
        return p
    return d * (k - 1) // 2


@BLOCKS.register()
class Conv(Block):
    """Conv2d -> BatchNorm2d -> activation; deploy form: one biased Conv2d -> activation.

    Args:
        c1: input channels. out: output channels. k, s, p, g, d: kernel, stride, padding (default 'same'),
        groups, dilation. act: activation name or None. bias: conv bias before BN (LeYOLO's mn_conv).
        eps, momentum: BatchNorm settings (YOLO family default 1e-3 / 0.03).
    Shapes: (B, c1, H, W) -> (B, out, H/s, W/s).

    Training on CUDA with SiLU, BN+SiLU run as one fused Triton op (``cuda_ops.batchnorm_silu``: fewer passes
    over the activation, same values); ``fused_bn = False`` on the instance (``use_fused_bn``) keeps the stock
    path, which every other case takes (CPU, eval, SyncBatchNorm, another activation).
    """

    fused_bn = True

    def __init__(
        self,
        c1: int,
        out: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        d: int = 1,
        act: str | bool | None = "silu",
        bias: bool = False,
        eps: float = 1e-3,
        momentum: float = 0.03,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, out, k, s, autopad(k, p, d), dilation=d, groups=g, bias=bias)
        self.bn: nn.Module = nn.BatchNorm2d(out, eps=eps, momentum=momentum)
        self.act = make_act(act)
        self.c2 = out
        self.stride_factor = float(s)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.fused_bn and self.training and self._fusable_bn() and fused_bn_runs(y):
            return self._fused_bn_silu(y)
        return self.act(self.bn(y))

    def _fusable_bn(self) -> bool:
        """Plain BatchNorm2d (not SyncBatchNorm, not fused away) tracking running statistics, then SiLU."""
        bn = self.bn
        return (
            type(bn) is nn.BatchNorm2d
            and isinstance(self.act, nn.SiLU)
            and bn.track_running_stats
            and bn.affine
            and bn.momentum is not None
        )

    def _fused_bn_silu(self, y: Tensor) -> Tensor:
        from cuda_ops.batchnorm_silu import batchnorm_silu

        bn = self.bn
        bn.num_batches_tracked.add_(1)  # type: ignore[union-attr, operator]
        return batchnorm_silu(y, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps)

    def fuse(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
            self.bn = nn.Identity()


def use_fused_bn(model: nn.Module, enabled: bool) -> None:
    """Switch the fused BatchNorm + SiLU training kernel on or off in every ``Conv`` of ``model``."""
    for m in model.modules():
        if isinstance(m, Conv):
            m.fused_bn = enabled


@BLOCKS.register()
class Concat(Block):
    """Concatenate inputs along channels. Shapes: [(B, Ci, H, W)] -> (B, sum Ci, H, W)."""

    def __init__(self, c1: list[int]) -> None:
        super().__init__()
        if not isinstance(c1, list):
            raise ValueError("Concat needs several inputs: give `from` as a list")
        self.c2 = sum(c1)

    def out_stride(self, in_strides: list[float]) -> float:
        if len(set(in_strides)) != 1:
            raise ValueError(f"Concat inputs have different strides {in_strides}; resample one of them first")
        return in_strides[0]

    def forward(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, 1)


@BLOCKS.register()
class Upsample(Block):
    """Nearest-neighbour upsampling by ``scale``. Shapes: (B, C, H, W) -> (B, C, H*scale, W*scale)."""

    def __init__(self, c1: int, scale: int = 2, mode: str = "nearest") -> None:
        super().__init__()
        self.c2 = c1
        self.scale = scale
        self.mode = mode
        self.stride_factor = 1.0 / scale

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.interpolate(x, scale_factor=self.scale, mode=self.mode)


@BLOCKS.register()
class Identity(Block):
    """Pass-through; useful to re-tag a layer (e.g. expose the input image under a name)."""

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.c2 = c1

    def forward(self, x: Tensor) -> Tensor:
        return x
