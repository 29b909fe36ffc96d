"""Swap the PyTorch form of a block for one that calls another implementation of the same op.

Two callers need the same blocks computed differently: the ``graph`` backend runs SKA through our Triton kernel
(``cuda_ops.ska``), and ``export plugins=True`` traces SKA as one custom ONNX node for a TensorRT plugin. Both
replace each ``LSConv`` by ``LSConvWith(lsconv, ska_fn)``, which keeps the block's own weights and only changes
the function that aggregates. The graph backend also replaces each fused depthwise 3x3 ``Conv`` directly followed
by a pointwise ``Conv`` in a ``Sequential`` (LeYOLO's inverted bottlenecks, LSNet's stage transitions) by
``DwPw``, one ``cuda_ops.dw_pw`` call that keeps the depthwise output on chip. The swaps modify the model in
place and return how many blocks they replaced.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from detector.nn.conv import Conv
from detector.nn.lsnet import LSConv

SkaFn = Callable[[Tensor, Tensor], Tensor]
"""``(x (Tensor[B, C, H, W]), w (Tensor[B, G, k*k, H, W])) -> Tensor[B, C, H, W]``, see ``detector.nn.ska``."""


class LSConvWith(nn.Module):
    """``BN(ska_fn(x, LKP(x))) + x``: an ``LSConv`` whose small-kernel aggregation is ``ska_fn``.

    Holds the original block's ``lkp`` and ``bn`` (same parameters, same state-dict keys below them).
    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, block: LSConv, ska_fn: SkaFn) -> None:
        super().__init__()
        self.lkp, self.bn = block.lkp, block.bn
        self.ska_fn = ska_fn

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.ska_fn(x, self.lkp(x))) + x


def swap_modules(model: nn.Module, replace: dict[type, Callable[[nn.Module], nn.Module]]) -> int:
    """Replace, in place, every submodule whose exact type is a key of ``replace`` by ``replace[type](module)``.

    Returns the number of modules replaced. Replacements are not searched again (no recursion into them).
    """
    count = 0
    for name, child in list(model.named_children()):
        make = replace.get(type(child))
        if make is not None:
            setattr(model, name, make(child))
            count += 1
        else:
            count += swap_modules(child, replace)
    return count


def swap_ska(model: nn.Module, ska_fn: SkaFn) -> int:
    """Every ``LSConv`` of ``model`` aggregates through ``ska_fn``; returns how many were swapped."""
    return swap_modules(model, {LSConv: lambda m: LSConvWith(m, ska_fn)})


DW_PW_ACTS: dict[type, str | None] = {nn.Identity: None, nn.ReLU: "relu", nn.SiLU: "silu"}
"""Activations ``cuda_ops.dw_pw`` applies in its epilogues."""


def _fused_conv(m: nn.Module, k: int) -> nn.Conv2d | None:
    """The conv of a fused (BN folded) ``Conv`` with a ``k x k`` kernel and a supported activation, else None."""
    if not isinstance(m, Conv) or not isinstance(m.bn, nn.Identity) or type(m.act) not in DW_PW_ACTS:
        return None
    c = m.conv
    if c.kernel_size != (k, k) or c.dilation != (1, 1) or c.padding != (k // 2, k // 2):
        return None
    return c


class DwPw(nn.Module):
    """A fused depthwise 3x3 ``Conv`` and the pointwise ``Conv`` after it as one ``cuda_ops.dw_pw`` call.

    Holds both original modules (same weights). Shapes: (B, C, H, W) -> (B, N, H/s, W/s).
    """

    def __init__(self, dw: Conv, pw: Conv, impl: str) -> None:
        super().__init__()
        self.dw, self.pw, self.impl = dw, pw, impl
        self.acts = (DW_PW_ACTS[type(dw.act)], DW_PW_ACTS[type(pw.act)])

    @staticmethod
    def _bias(c: nn.Conv2d):
        return c.bias if c.bias is not None else c.weight.new_zeros(c.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        import cuda_ops

        d, p = self.dw.conv, self.pw.conv
        return cuda_ops.dw_pw(
            x, d.weight, self._bias(d), p.weight, self._bias(p), act=self.acts, stride=d.stride[0], impl=self.impl
        )


def swap_dw_pw(model: nn.Module, impl: str) -> int:
    """Every depthwise 3x3 ``Conv`` (stride 1 or 2) followed by a 1x1 ``Conv`` inside a ``Sequential`` becomes a
    ``DwPw`` (the pointwise slot becomes an ``Identity``, so indices stay); returns how many pairs were fused.
    Call after ``fuse()``: BN must already be folded into both convs."""
    count = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            dw, pw = _fused_conv(seq[i], 3), _fused_conv(seq[i + 1], 1)
            if dw is None or pw is None or not (dw.groups == dw.in_channels == dw.out_channels == pw.in_channels):
                continue
            if dw.stride not in ((1, 1), (2, 2)) or pw.stride != (1, 1) or pw.groups != 1:
                continue
            seq[i], seq[i + 1] = DwPw(seq[i], seq[i + 1], impl), nn.Identity()
            count += 1
    return count
