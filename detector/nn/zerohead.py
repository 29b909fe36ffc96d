"""ZeroHead (DAMO-YOLO, arXiv 2211.15444): one classification conv and one regression conv per level.

No stacked convs: the RepGFPN outputs feed the prediction convs directly. Boxes are regressed as GFL
distributions over ``reg_max`` bins (distance 0..reg_max - 1 in stride units; the authors' "reg_max 16" is our
``reg_max: 17``, the same meaning as in ``DFLHead``), scaled by a learnable scalar per level; anchor points sit
on the grid corners ``(i * stride, j * stride)``, with no half-cell offset.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detector.nn.heads import BinnedHead
from detector.registry import BLOCKS


@BLOCKS.register()
class ZeroHead(BinnedHead):
    """Per level: ``cls`` conv kxk -> nc logits, ``reg`` conv kxk -> 4 * reg_max distribution logits.

    Args:
        c1: widths of the input levels. nc: classes. strides: the levels' strides (filled in by the builder).
        reg_max: bins per side, as in every ``BinnedHead`` (17 for T..L, 8 for nano: the authors' 16 and 7
            count the largest distance instead). k: kernel (3 for T..L, 1 for nano).
        prior_prob: initial class probability (sets the class bias, as the authors' focal-loss init).
        loss_weight: weight of this head's loss.

    Training: list of raw maps ``(B, 4 * reg_max + nc, H_i, W_i)`` (ltrb distribution logits already
    multiplied by the level's scale, then class logits). Eval: ``(B, 4 + nc, A)`` xyxy pixels + sigmoid scores.
    """

    loss = "aota"
    anchor_offset = 0.0

    def __init__(
        self,
        c1: list[int],
        nc: int,
        strides: list[float],
        reg_max: int = 17,
        k: int = 3,
        prior_prob: float = 0.01,
        loss_weight: float = 1.0,
    ) -> None:
        if not isinstance(c1, list):
            raise ValueError("ZeroHead reads several levels: give `from` as a list, e.g. [P3, P4, P5]")
        super().__init__(nc, strides, reg_max, loss_weight)
        self.cls = nn.ModuleList(nn.Conv2d(c, nc, k, 1, k // 2) for c in c1)
        self.reg = nn.ModuleList(nn.Conv2d(c, 4 * self.bins, k, 1, k // 2) for c in c1)
        # None once fuse() has folded the scales into the regression convs
        self.scales: nn.ParameterList | None = nn.ParameterList(nn.Parameter(torch.ones(())) for _ in c1)
        self.init_weights(prior_prob)

    @torch.no_grad()
    def init_weights(self, prior_prob: float = 0.01) -> None:
        """Weights N(0, 0.01); regression bias 0; class bias -log((1 - p) / p) so every score starts at p."""
        for cls, reg in zip(self.cls, self.reg):
            nn.init.normal_(cls.weight, std=0.01)
            nn.init.normal_(reg.weight, std=0.01)
            nn.init.constant_(cls.bias, -math.log((1 - prior_prob) / prior_prob))
            nn.init.zeros_(reg.bias)

    def forward_raw(self, xs: list[Tensor]) -> list[Tensor]:
        maps = []
        for i, x in enumerate(xs):
            dist = self.reg[i](x)
            if self.scales is not None:
                dist = dist * self.scales[i]
            maps.append(torch.cat((dist, self.cls[i](x)), 1))
        return maps

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold each level's scale into its regression conv (s * (Wx + b) = (sW)x + sb)."""
        if self.scales is None:
            return
        for reg, scale in zip(self.reg, self.scales):
            reg.weight.mul_(scale)
            reg.bias.mul_(scale)
        self.scales = None
