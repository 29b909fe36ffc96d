"""RepGFPN neck of DAMO-YOLO (arXiv 2211.15444): CSP fusion nodes with re-parameterisable blocks.

The neck is written in YAML as five ``GFPNNode`` layers over the backbone's B3/B4/B5 (strides 8/16/32):

    N5 = node(B5, down B4)           N4 = node(B4, down B3, up N5)      P3 = node(B3, up N4)
    P4 = node(N4, down P3)           P5 = node(N5, down N4, down P4)

"down" is a Conv3x3 stride 2 that keeps the width, "up" a nearest x2 upsampling. Every node concatenates
its resampled inputs and runs a ``RepCSPStage``; N5 and N4 keep the width of their first input, so no
backbone width is ever written by hand.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detector.nn.block import Block
from detector.nn.conv import Conv
from detector.nn.repconv import RepConv
from detector.registry import BLOCKS

RESAMPLE = ("none", "down", "up")


def depth_to_blocks(depth: float) -> int:
    """Blocks per CSP node: ``round(3 * depth)`` with Python's rounding (depth 1.5 -> 4, as the authors)."""
    n = round(3 * depth)
    if n < 1:
        raise ValueError(f"depth {depth} gives {n} blocks per node; use depth >= 0.17")
    return n


class RepNeckBlock(nn.Module):
    """RepConv 3x3 (c -> c*hidden, act) -> Conv3x3 (-> c, act) -> + input. Shapes: (B, c, H, W) -> same."""

    def __init__(self, c: int, hidden: float = 1.0, act: str = "relu") -> None:
        super().__init__()
        mid = int(c * hidden)
        self.rep = RepConv(c, mid, 3, 1, act=act)
        self.conv = Conv(mid, c, 3, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.rep(x))


@BLOCKS.register()
class RepCSPStage(Block):
    """ELAN-style CSP stage: 1x1 -> out/2 (kept); 1x1 -> out - out/2 -> n RepNeckBlocks, every output kept;
    concat(kept, block 1..n) -> 1x1 -> out.

    Args:
        c1: input channels. out: output channels. n: blocks (or give ``depth``: n = round(3 * depth)).
        hidden: width ratio inside each block. act: activation.
    Shapes: (B, c1, H, W) -> (B, out, H, W).
    """

    def __init__(
        self, c1: int, out: int, n: int | None = None, depth: float = 1.0, hidden: float = 1.0, act: str = "relu"
    ) -> None:
        super().__init__()
        n = depth_to_blocks(depth) if n is None else n
        first = out // 2
        mid = out - first
        self.cv1 = Conv(c1, first, 1, act=act)
        self.cv2 = Conv(c1, mid, 1, act=act)
        self.blocks = nn.ModuleList(RepNeckBlock(mid, hidden, act) for _ in range(n))
        self.cv3 = Conv(first + n * mid, out, 1, act=act)
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        ys = [self.cv1(x)]
        y = self.cv2(x)
        for block in self.blocks:
            y = block(y)
            ys.append(y)
        return self.cv3(torch.cat(ys, 1))


@BLOCKS.register()
class GFPNNode(Block):
    """One RepGFPN fusion node: resample each input to the first input's stride, concat, RepCSPStage.

    Args:
        c1: widths of the inputs (``from`` is a list; the first input sits at the node's own stride).
        resample: per input, "none", "down" (Conv3x3 s2 keeping the width) or "up" (nearest x2).
        out: output width; default the first input's width. depth, hidden, act: as RepCSPStage.
    Shapes: [(B, c1[i], H_i, W_i)] -> (B, out, H_0, W_0).
    """

    def __init__(
        self,
        c1: list[int],
        resample: list[str],
        out: int | None = None,
        depth: float = 1.0,
        hidden: float = 1.0,
        act: str = "relu",
    ) -> None:
        super().__init__()
        if not isinstance(c1, list):
            raise ValueError("GFPNNode fuses several inputs: give `from` as a list")
        if len(resample) != len(c1):
            raise ValueError(f"GFPNNode has {len(c1)} inputs but {len(resample)} `resample` entries")
        bad = [r for r in resample if r not in RESAMPLE]
        if bad:
            raise ValueError(f"GFPNNode resample {bad[0]!r} is not one of {RESAMPLE}")
        if resample[0] != "none":
            raise ValueError("GFPNNode's first input defines the output stride; its resample must be 'none'")
        self.modes = list(resample)
        self.resamplers = nn.ModuleList(_resampler(c, mode, act) for c, mode in zip(c1, resample))
        self.stage = RepCSPStage(sum(c1), c1[0] if out is None else out, depth=depth, hidden=hidden, act=act)
        self.c2 = self.stage.c2

    def out_stride(self, in_strides: list[float]) -> float:
        factor = {"none": 1.0, "down": 2.0, "up": 0.5}
        target = in_strides[0]
        for i, (s, mode) in enumerate(zip(in_strides, self.modes)):
            if s * factor[mode] != target:
                raise ValueError(
                    f"GFPNNode input {i} has stride {s:g}; with resample {mode!r} it would be "
                    f"{s * factor[mode]:g}, not the node's stride {target:g}"
                )
        return target

    def forward(self, xs: list[Tensor]) -> Tensor:
        return self.stage(torch.cat([r(x) for r, x in zip(self.resamplers, xs)], 1))


def _resampler(c: int, mode: str, act: str) -> nn.Module:
    if mode == "down":
        return Conv(c, c, 3, 2, act=act)
    if mode == "up":
        return nn.Upsample(scale_factor=2, mode="nearest")
    return nn.Identity()
