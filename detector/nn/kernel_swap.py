"""Swap the PyTorch form of a block for one that calls another implementation of the same op.

Two callers need the same blocks computed differently: the ``graph`` backend runs SKA through our Triton kernel
(``cuda_ops.ska``), and ``export plugins=True`` traces SKA as one custom ONNX node for a TensorRT plugin. Both
replace each ``LSConv`` by ``LSConvWith(lsconv, ska_fn)``, which keeps the block's own weights and only changes
the function that aggregates. ``swap_modules`` does the walk; it never touches the caller's model when given a
copy, and it reports how many blocks it replaced so a caller can tell "nothing to swap" from "swapped".
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

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
