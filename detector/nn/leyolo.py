"""LeYOLO blocks (arXiv 2406.14239): MNConv, InvertedBottleneck, SPPF and the DNiN head.

The FPAN neck is not a block: it is a plain layer list of InvertedBottlenecks, MNConvs, Upsample and Concat
(see ``models/components/fpan-*.yaml``).

Width scaling: LeYOLO-Small/Medium/Large are the base widths run through ``leyolo_width`` (cap at 576, times
1.33, rounded up to a multiple of 8), expansion widths included. The zoo YAMLs write the scaled widths out, so
every file shows the layer widths that are actually built; a test checks them against this rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detector.nn.block import Block
from detector.nn.conv import Conv
from detector.nn.heads import DFLHead
from detector.registry import BLOCKS

MAX_CHANNELS = 576
"""LeYOLO caps every base width at this value before scaling."""


def leyolo_width(channels: int, width: float, max_channels: int = MAX_CHANNELS) -> int:
    """Scaled width of a LeYOLO layer: ``ceil(min(channels, max_channels) * width / 8) * 8``.

    ``leyolo_width(64, 1.33) == 88``; ``leyolo_width(576, 1.33) == 768``.
    """
    return int(math.ceil(min(channels, max_channels) * width / 8) * 8)


@BLOCKS.register()
class MNConv(Conv):
    """LeYOLO's ``mn_conv``: Conv2d WITH bias -> BatchNorm2d -> SiLU.

    Padding is 'same' except where ``k == s`` (a patchify conv), which takes no padding. Deploy form: the BN
    folds into the (already biased) conv. Shapes: (B, c1, H, W) -> (B, out, H/s, W/s).
    """

    def __init__(self, c1: int, out: int, k: int = 1, s: int = 1, g: int = 1, act: str | None = "silu") -> None:
        super().__init__(c1, out, k, s, p=0 if k == s else None, g=g, act=act, bias=True)


@BLOCKS.register()
class InvertedBottleneck(Block):
    """MobileNet-style inverted bottleneck as LeYOLO uses it.

    [MNConv 1x1 c1 -> e, if ``expand``] -> depthwise MNConv kxk stride ``s`` -> biased 1x1 conv -> BN (no
    activation); the input is added back when ``c1 == out`` and ``s == 1``. The official squeeze-excite flag is
    unused there and has no counterpart here.

    Args:
        c1: input width. out: output width. k: depthwise kernel. e: expansion width (default: ``c1``).
        s: depthwise stride. expand: with the 1x1 expansion; without it the depthwise conv runs on ``c1``.
    Shapes: (B, c1, H, W) -> (B, out, H/s, W/s).
    """

    def __init__(self, c1: int, out: int, k: int = 3, e: int | None = None, s: int = 1, expand: bool = True) -> None:
        super().__init__()
        mid = c1 if e is None else int(e)
        if not expand and mid != c1:
            raise ValueError(
                f"InvertedBottleneck with expand: false runs its depthwise conv on the input width {c1}; "
                f"leave `e` out (got e={e})"
            )
        layers: list[nn.Module] = [MNConv(c1, mid, 1)] if expand else []
        layers += [MNConv(mid, mid, k, s, g=mid), Conv(mid, out, 1, bias=True, act=None)]
        self.layers = nn.Sequential(*layers)
        self.residual = c1 == out and s == 1
        self.c2 = out
        self.stride_factor = float(s)

    def forward(self, x: Tensor) -> Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


@BLOCKS.register()
class SPPF(Block):
    """Fast spatial pyramid pooling: Conv1x1 -> c1/2, three cascaded max-pools kxk, concat (2*c1) -> Conv1x1.

    Shapes: (B, c1, H, W) -> (B, out, H, W).
    """

    def __init__(self, c1: int, out: int, k: int = 5) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(4 * hidden, out, 1)
        self.k = k
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(F.max_pool2d(y[-1], self.k, 1, self.k // 2))
        return self.cv2(torch.cat(y, 1))


def _nin_branch(c_in: int, width: int, c_out: int) -> nn.Sequential:
    """Conv1x1 -> width, depthwise Conv3x3 twice, then a plain biased 1x1 to ``c_out`` (network in network)."""
    return nn.Sequential(
        Conv(c_in, width, 1),
        Conv(width, width, 3, g=width),
        Conv(width, width, 3, g=width),
        nn.Conv2d(width, c_out, 1),
    )


@BLOCKS.register()
class DNiN(DFLHead):
    """LeYOLO's decoupled network-in-network head.

    Per level: box branch Conv1x1 -> c_box, DW3x3, DW3x3, 1x1 -> 4*reg_max (the DFL bins); cls branch the same
    at c_cls, ending in nc. ``c_box = max(16, C_P3 / 4, 4 * reg_max)`` (64 for every LeYOLO) and
    ``c_cls = max(C_P3, min(nc, 100))`` (``max(C_P3, 80)`` on COCO), as in the authors' code.
    Raw maps and decode are DDetect's (``DFLHead``): loss "tal", 16 bins, anchors at cell centres.
    """

    def __init__(self, c1: list[int], nc: int, strides: list[float], reg_max: int = 16, loss_weight: float = 1.0):
        super().__init__(nc, strides, reg_max, loss_weight)
        c_box = max(16, c1[0] // 4, 4 * reg_max)
        c_cls = max(c1[0], min(nc, 100))
        self.box = nn.ModuleList(_nin_branch(c, c_box, 4 * reg_max) for c in c1)
        self.cls = nn.ModuleList(_nin_branch(c, c_cls, nc) for c in c1)
        self.init_bias()
