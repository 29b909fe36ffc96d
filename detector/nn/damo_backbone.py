"""DAMO-YOLO backbones (arXiv 2211.15444): the MAE-NAS searched ResNet-like (T/S) and CSP-like (M/L) stages.

A backbone is a Focus stem followed by five searched stages, written in YAML one stage per layer. Each stage
is a chain of ``NasResBlock``s: conv1 (1x1 for "k1kx", kxk for "kxkx") -> act -> RepConv kxk without act ->
add the shortcut (projected by a 1x1 conv-BN when widths differ, none on a stride-2 block) -> act.

* ``NasResStage`` (T/S): the blocks run at the stage width; the first one carries the stride.
* ``NasCSPStage`` (M/L): a 3x3 stride-2 conv, then a CSP split: one 1x1 branch passes through, the other
  runs the blocks at half width; both are concatenated and mixed by a 1x1 conv.

The deepest stage adds ``SPPBottleneck`` (max-pools 5/9/13) after its first block (Res) or after its
downsampling conv (CSP).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detector.nn.block import Block
from detector.nn.conv import Conv, make_act
from detector.nn.repconv import RepConv
from detector.registry import BLOCKS

BLOCK_KINDS = ("k1kx", "kxkx")


@BLOCKS.register()
class Focus(Block):
    """Space-to-depth by 2 (each 2x2 patch's pixels become channels), then Conv kxk.

    The four sub-grids are stacked in the order (even row, even col), (odd row, even col), (even row, odd col),
    (odd row, odd col), the order the published DAMO-YOLO weights expect.
    Shapes: (B, c1, H, W) -> (B, out, H/2, W/2); H and W must be even.
    """

    stride_factor = 2.0

    def __init__(self, c1: int, out: int, k: int = 3, act: str | None = "relu") -> None:
        super().__init__()
        self.conv = Conv(4 * c1, out, k, 1, act=act)
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1)
        return self.conv(x)


@BLOCKS.register()
class SPPBottleneck(Block):
    """Conv1x1 -> c1/2, parallel max-pools (5, 9, 13) stride 1, concat with the input -> Conv1x1 -> out.

    Shapes: (B, c1, H, W) -> (B, out, H, W).
    """

    def __init__(self, c1: int, out: int | None = None, k: tuple[int, ...] = (5, 9, 13), act: str = "silu") -> None:
        super().__init__()
        out = c1 if out is None else out
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, act=act)
        self.pools = nn.ModuleList(nn.MaxPool2d(size, 1, size // 2) for size in k)
        self.cv2 = Conv(hidden * (len(k) + 1), out, 1, act=act)
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [pool(x) for pool in self.pools], 1))


class NasResBlock(nn.Module):
    """The searched residual block: conv1-BN -> act -> RepConv (no act) -> + shortcut -> act.

    Args:
        c1, c2: input/output channels. btn: bottleneck width. k: kernel of the RepConv (3).
        s: stride (a stride-2 block has no shortcut). kind: "k1kx" (conv1 is 1x1) or "kxkx" (conv1 is kxk).
    Shapes: (B, c1, H, W) -> (B, c2, H/s, W/s).
    """

    def __init__(self, c1: int, c2: int, btn: int, k: int = 3, s: int = 1, kind: str = "k1kx", act: str = "relu"):
        super().__init__()
        if kind not in BLOCK_KINDS:
            raise ValueError(f"unknown NAS block kind {kind!r}; choose one of {BLOCK_KINDS}")
        self.conv1 = Conv(c1, btn, 1 if kind == "k1kx" else k, 1, act=None)
        self.conv2 = RepConv(btn, c2, k, s, act=None)
        self.act = make_act(act)
        self.has_shortcut = s == 1
        self.proj = Conv(c1, c2, 1, 1, act=None) if self.has_shortcut and c1 != c2 else None

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.act(self.conv1(x)))
        if self.has_shortcut:
            y = y + (x if self.proj is None else self.proj(x))
        return self.act(y)


@BLOCKS.register()
class NasResStage(Block):
    """ResNet-like searched stage (DAMO-YOLO T/S): ``n`` NasResBlocks, the first with stride ``s``.

    Args:
        c1: input channels. out: stage width. btn: bottleneck width. n: blocks. s: stride of the first block.
        k: kernel. kind: "k1kx" or "kxkx". act: block activation.
        spp: insert an SPPBottleneck after the first block. spp_act: its activation (the authors' SPP uses SiLU
        even in the ReLU backbones).
    Shapes: (B, c1, H, W) -> (B, out, H/s, W/s).
    """

    def __init__(
        self,
        c1: int,
        out: int,
        btn: int,
        n: int = 1,
        s: int = 2,
        k: int = 3,
        kind: str = "k1kx",
        act: str = "relu",
        spp: bool = False,
        spp_act: str = "silu",
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"NasResStage needs at least one block, got n={n}")
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(NasResBlock(c1 if i == 0 else out, out, btn, k, s if i == 0 else 1, kind, act))
            if i == 0 and spp:
                layers.append(SPPBottleneck(out, out, act=spp_act))
        self.blocks = nn.Sequential(*layers)
        self.c2 = out
        self.stride_factor = float(s)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


@BLOCKS.register()
class NasCSPStage(Block):
    """CSP-like searched stage (DAMO-YOLO M/L), always stride 2.

    Conv3x3 s2 (c1 -> out) [-> SPPBottleneck]; branch a: Conv1x1 -> out/2 -> n NasResBlocks at out/2;
    branch b: Conv1x1 -> out/2; concat(a, b) -> Conv1x1 -> out.

    Args:
        c1: input channels. out: stage width. btn: bottleneck width of the blocks. n: blocks (0 = only the
        downsampling conv). k, kind, act: as NasResBlock. join_act: activation of the four plain convs around
        the blocks (the authors' wrapper uses ReLU there even in the SiLU backbones).
        spp: SPPBottleneck after the downsampling conv, with activation ``spp_act``.
    Shapes: (B, c1, H, W) -> (B, out, H/2, W/2).
    """

    stride_factor = 2.0

    def __init__(
        self,
        c1: int,
        out: int,
        btn: int,
        n: int = 1,
        k: int = 3,
        kind: str = "kxkx",
        act: str = "silu",
        join_act: str = "relu",
        spp: bool = False,
        spp_act: str = "silu",
    ) -> None:
        super().__init__()
        if out % 2:
            raise ValueError(f"NasCSPStage width must be even, got out={out}")
        half = out // 2
        self.down = Conv(c1, out, 3, 2, act=join_act)
        self.spp = SPPBottleneck(out, out, act=spp_act) if spp else nn.Identity()
        self.n = n
        if n > 0:
            self.start = Conv(out, half, 1, act=join_act)
            self.shortcut = Conv(out, half, 1, act=join_act)
            self.blocks = nn.Sequential(*(NasResBlock(half, half, btn, k, 1, kind, act) for _ in range(n)))
            self.merge = Conv(out, out, 1, act=join_act)
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        x = self.spp(self.down(x))
        if self.n == 0:
            return x
        return self.merge(torch.cat((self.blocks(self.start(x)), self.shortcut(x)), 1))
