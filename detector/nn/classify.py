"""Image-classification head, so a backbone's ImageNet form (params, GMACs @224) can be built and checked."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detector.nn.block import Head
from detector.registry import BLOCKS


@BLOCKS.register()
class Classify(Head):
    """Global average pool -> [BatchNorm1d] -> Linear -> ``nc`` logits.

    ``bn=True`` gives the BN + Linear classifier of LSNet (and LeViT/EfficientViT); ``bn=False`` the plain
    linear classifier of VoVNet. Write ``from: [B5]`` (one input). ``fuse()`` folds the BN into the Linear.

    ``forward_raw``: ``[(B, C, H, W)]`` -> ``[logits (B, nc)]``; ``decode``: -> probabilities ``(B, nc)``.
    The trainer's loss for it is ``"ce"`` (cross-entropy), looked up by ``loss`` like every head.
    """

    loss = "ce"

    def __init__(
        self, c1: int | list[int], nc: int, strides: list[float], bn: bool = False, loss_weight: float = 1.0
    ) -> None:
        super().__init__(nc, strides, loss_weight)
        widths = c1 if isinstance(c1, list) else [c1]
        if len(widths) != 1:
            raise ValueError(
                f"Classify is an image-classification head and takes one input (the last feature map), got "
                f"{len(widths)}; multi-level features such as a neck's P3/P4/P5 need a detection head"
            )
        c = widths[0]
        self.norm: nn.Module = nn.BatchNorm1d(c) if bn else nn.Identity()
        self.linear = nn.Linear(c, nc)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)
        self.c2 = nc

    def forward_raw(self, xs: list[Tensor] | Tensor) -> list[Tensor]:
        x = xs[0] if isinstance(xs, (list, tuple)) else xs
        return [self.linear(self.norm(x.mean((2, 3))))]

    def decode(self, maps: list[Tensor]) -> Tensor:
        """Logits -> class probabilities ``(B, nc)`` (softmax)."""
        return maps[0].softmax(1)

    @torch.no_grad()
    def fuse(self) -> None:
        if not isinstance(self.norm, nn.BatchNorm1d):
            return
        bn, lin = self.norm, self.linear
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
        shift = bn.bias - bn.running_mean * scale
        fused = nn.Linear(lin.in_features, lin.out_features).to(lin.weight.device, lin.weight.dtype)
        fused.weight.copy_(lin.weight * scale[None, :])
        fused.bias.copy_(lin.bias + lin.weight @ shift)
        self.linear = fused
        self.norm = nn.Identity()
