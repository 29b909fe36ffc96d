"""GELAN / YOLOv9 blocks (arXiv 2402.13616): AConv, ADown, RepConvN, RepNCSP, RepNCSPELAN4, ELAN1, SPPELAN,
CBLinear, CBFuse. Widths follow the paper's argument names: c2 output, c3/c4 inner widths."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detector.nn.block import Block
from detector.nn.conv import Conv, make_act
from detector.registry import BLOCKS


@BLOCKS.register()
class AConv(Block):
    """avg-pool 2x2 s1 -> Conv 3x3 s2. Shapes: (B, c1, H, W) -> (B, out, H/2, W/2)."""

    stride_factor = 2.0

    def __init__(self, c1: int, out: int) -> None:
        super().__init__()
        self.cv1 = Conv(c1, out, 3, 2, 1)
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        return self.cv1(F.avg_pool2d(x, 2, 1, 0, False, True))


@BLOCKS.register()
class ADown(Block):
    """avg-pool 2x2 s1, split channels; Conv 3x3 s2 on one half, max-pool 3x3 s2 + Conv 1x1 on the other.

    Shapes: (B, c1, H, W) -> (B, out, H/2, W/2).
    """

    stride_factor = 2.0

    def __init__(self, c1: int, out: int) -> None:
        super().__init__()
        half = out // 2
        self.cv1 = Conv(c1 // 2, half, 3, 2, 1)
        self.cv2 = Conv(c1 // 2, half, 1, 1, 0)
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, 2, 1, 0, False, True)
        a, b = x.chunk(2, 1)
        return torch.cat((self.cv1(a), self.cv2(F.max_pool2d(b, 3, 2, 1))), 1)


class RepConvN(Block):
    """act(BN(conv3x3 x) + BN(conv1x1 x)), no identity branch; fuses into one biased 3x3 conv + act.

    Shapes: (B, c1, H, W) -> (B, c2, H/s, W/s).
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, act: str | None = "silu") -> None:
        super().__init__()
        if k != 3:
            raise ValueError("RepConvN is defined for k=3 (3x3 + 1x1 branches)")
        self.conv1 = Conv(c1, c2, 3, s, 1, g=g, act=None)
        self.conv2 = Conv(c1, c2, 1, s, 0, g=g, act=None)
        self.act = make_act(act)
        self.fused: nn.Conv2d | None = None
        self.c2 = c2

    def forward(self, x: Tensor) -> Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        return self.act(self.conv1(x) + self.conv2(x))

    def fuse(self) -> None:
        if self.fused is not None:
            return
        self.conv1.fuse()
        self.conv2.fuse()
        c3, c1 = self.conv1.conv, self.conv2.conv
        fused = nn.Conv2d(c3.in_channels, c3.out_channels, 3, c3.stride, 1, groups=c3.groups, bias=True).to(
            c3.weight.device, c3.weight.dtype
        )
        fused.weight.data = c3.weight.data + F.pad(c1.weight.data, [1, 1, 1, 1])
        fused.bias.data = c3.bias.data + c1.bias.data
        self.fused = fused
        del self.conv1, self.conv2


class RepNBottleneck(nn.Module):
    """RepConvN 3x3 -> Conv 3x3 with a residual when widths match. Shapes: (B, c1, H, W) -> (B, c2, H, W)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 1.0) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = RepConvN(c1, c_, 3, 1)
        self.cv2 = Conv(c_, c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class RepNCSP(nn.Module):
    """CSP stage of ``n`` RepNBottlenecks at half width. Shapes: (B, c1, H, W) -> (B, c2, H, W)."""

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(RepNBottleneck(c_, c_, e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class ELANAggregation(Block):
    """Shared ELAN forward: cv1 splits into halves (a, b); cv2 on b, cv3 on that; concat all four -> cv4."""

    cv1: nn.Module
    cv2: nn.Module
    cv3: nn.Module
    cv4: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.cv2(y[-1]))
        y.append(self.cv3(y[-1]))
        return self.cv4(torch.cat(y, 1))


@BLOCKS.register()
class RepNCSPELAN4(ELANAggregation):
    """ELAN aggregation of two RepNCSP+Conv branches.

    Conv1x1 -> mid, split in halves (a, b); y2 = Conv3x3(RepNCSP(b)), y3 = Conv3x3(RepNCSP(y2));
    concat(a, b, y2, y3) -> Conv1x1 -> out. Shapes: (B, c1, H, W) -> (B, out, H, W).
    """

    def __init__(self, c1: int, out: int, mid: int, hidden: int, n: int = 1) -> None:
        super().__init__()
        self.c = mid // 2
        self.cv1 = Conv(c1, mid, 1, 1)
        self.cv2 = nn.Sequential(RepNCSP(mid // 2, hidden, n), Conv(hidden, hidden, 3, 1))
        self.cv3 = nn.Sequential(RepNCSP(hidden, hidden, n), Conv(hidden, hidden, 3, 1))
        self.cv4 = Conv(mid + 2 * hidden, out, 1, 1)
        self.c2 = out


@BLOCKS.register()
class ELAN1(ELANAggregation):
    """RepNCSPELAN4 with plain Conv3x3 branches (stride-4 stage of gelan-t/s)."""

    def __init__(self, c1: int, out: int, mid: int, hidden: int) -> None:
        super().__init__()
        self.c = mid // 2
        self.cv1 = Conv(c1, mid, 1, 1)
        self.cv2 = Conv(mid // 2, hidden, 3, 1)
        self.cv3 = Conv(hidden, hidden, 3, 1)
        self.cv4 = Conv(mid + 2 * hidden, out, 1, 1)
        self.c2 = out


@BLOCKS.register()
class SPPELAN(Block):
    """Conv1x1 -> mid, three cascaded max-pool 5x5, concat (4*mid) -> Conv1x1 -> out."""

    def __init__(self, c1: int, out: int, mid: int, k: int = 5) -> None:
        super().__init__()
        self.cv1 = Conv(c1, mid, 1, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)
        self.cv5 = Conv(4 * mid, out, 1, 1)
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv5(torch.cat(y, 1))


@BLOCKS.register()
class CBLinear(Block):
    """One biased 1x1 conv to sum(outs) channels, returned as a tuple split by ``outs`` (CBNet routing).

    Shapes: (B, c1, H, W) -> tuple of (B, outs[i], H, W).
    """

    def __init__(self, c1: int, outs: list[int]) -> None:
        super().__init__()
        self.outs = [int(c) for c in outs]
        self.conv = nn.Conv2d(c1, sum(self.outs), 1, 1, 0, bias=True)
        self.c2 = tuple(self.outs)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.conv(x).split(self.outs, dim=1)


@BLOCKS.register()
class CBFuse(Block):
    """Sum chosen CBLinear splits (nearest-resized to the last input's size) with the last input.

    ``from`` lists the CBLinear layers and last the feature map; ``idx[i]`` picks the split of input i.
    """

    def __init__(self, c1: list, idx: list[int]) -> None:
        super().__init__()
        if not isinstance(c1, list) or len(c1) < 2:
            raise ValueError("CBFuse needs `from: [CBLinear..., feature map]` (at least two inputs)")
        self.idx = [int(i) for i in idx]
        if len(self.idx) != len(c1) - 1:
            raise ValueError(f"CBFuse got {len(c1)} inputs but {len(self.idx)} split indices")
        if not isinstance(c1[-1], int):
            raise ValueError("CBFuse: the last input must be a feature map, not a CBLinear output")
        for i, (widths, j) in enumerate(zip(c1[:-1], self.idx)):
            if not isinstance(widths, tuple):
                raise ValueError(f"CBFuse input {i} is not a CBLinear output (every input but the last must be)")
            if not 0 <= j < len(widths):
                raise ValueError(f"CBFuse input {i} has {len(widths)} splits, split index {j} is out of range")
            if widths[j] != c1[-1]:
                raise ValueError(f"CBFuse input {i} split {j} has {widths[j]} channels, expected {c1[-1]}")
        self.c2 = c1[-1]

    def out_stride(self, in_strides: list[float]) -> float:
        return in_strides[-1]

    def forward(self, xs: list) -> Tensor:
        target = xs[-1]
        size = target.shape[2:]
        out = target
        for x, j in zip(xs[:-1], self.idx):
            out = out + F.interpolate(x[j], size=size, mode="nearest")
        return out
