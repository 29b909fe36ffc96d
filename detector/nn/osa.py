"""VoVNet blocks: One-Shot Aggregation (V1, arXiv 1904.09730) and its V2 form with eSE and identity residuals
(CenterMask, arXiv 1911.06667).

Every conv is ``detector.nn.conv.Conv`` (conv -> BN -> ReLU) with PyTorch's BatchNorm defaults (eps 1e-5,
momentum 0.1, as in the authors' code), so ``fuse()`` folds each BN into its conv. The depthwise variants use
a separable layer: DW3x3 (no BN) -> PW1x1 -> BN -> ReLU; the BN folds into the PW conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detector.nn.block import Block
from detector.nn.conv import Conv
from detector.registry import BLOCKS

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def conv_bn_relu(c1: int, c2: int, k: int = 1, s: int = 1) -> Conv:
    """VoVNet's basic layer: ``k x k`` conv (no bias) -> BN (PyTorch defaults) -> ReLU."""
    return Conv(c1, c2, k, s, act="relu", eps=BN_EPS, momentum=BN_MOMENTUM)


def _conv3x3(c1: int, c2: int, k: int, s: int) -> Conv:
    return conv_bn_relu(c1, c2, k, s)


def init_kaiming(module: nn.Module) -> None:
    """He-normal init of every conv weight (fan-in), the authors' choice for VoVNet."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)


class SeparableConv(nn.Module):
    """Depthwise ``k x k`` conv (stride ``s``, no BN) -> pointwise conv -> BN -> ReLU.

    Shapes: (B, c1, H, W) -> (B, c2, H/s, W/s).
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c1, c1, k, s, k // 2, groups=c1, bias=False)
        self.pw = conv_bn_relu(c1, c2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class EffectiveSE(nn.Module):
    """eSE channel attention: global average pool -> biased 1x1 conv C->C -> hard-sigmoid -> scale the input.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return x * F.hardsigmoid(self.fc(x.mean((2, 3), keepdim=True)))


@BLOCKS.register()
class OSA(Block):
    """One-Shot Aggregation module.

    ``layers`` chained 3x3 layers of ``mid`` channels; ``concat(input, f1..fn)`` -> Conv1x1-BN-ReLU -> ``out``;
    then eSE (``ese``) and an identity residual (``residual``, only possible when ``c1 == out``).
    With ``dw`` each layer is DW3x3 -> PW1x1-BN-ReLU, preceded by one Conv1x1-BN-ReLU reduction ``c1 -> mid``
    when the widths differ; the aggregation still concatenates the unreduced input.

    Shapes: (B, c1, H, W) -> (B, out, H, W).
    """

    def __init__(
        self,
        c1: int,
        out: int,
        mid: int,
        layers: int = 5,
        ese: bool = True,
        residual: bool = False,
        dw: bool = False,
    ) -> None:
        super().__init__()
        if residual and c1 != out:
            raise ValueError(f"OSA residual needs equal widths, got c1={c1}, out={out}")
        self.reduce = conv_bn_relu(c1, mid, 1) if dw and c1 != mid else nn.Identity()
        c = mid if dw else c1
        convs = []
        for _ in range(layers):
            convs.append(SeparableConv(c, mid, 3) if dw else conv_bn_relu(c, mid, 3))
            c = mid
        self.convs = nn.ModuleList(convs)
        self.aggregate = conv_bn_relu(c1 + layers * mid, out, 1)
        self.ese = EffectiveSE(out) if ese else nn.Identity()
        self.residual = residual
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        y = self.reduce(x)
        for conv in self.convs:
            y = conv(y)
            feats.append(y)
        y = self.ese(self.aggregate(torch.cat(feats, 1)))
        return y + x if self.residual else y


@BLOCKS.register()
class OSAStage(Block):
    """A VoVNet stage: optional max-pool 3x3 s2 (ceil mode), then ``blocks`` OSA modules.

    The first module maps ``c1 -> out``; the following ones map ``out -> out`` and carry the identity
    residual when ``residual`` (VoVNetV2). eSE goes in every module when ``ese`` is True (our V2 choice; the
    authors' detectron2 code does the same), only in the stage's last module when ``ese="last"`` (timm's
    ``ese_vovnet*b`` models, whose ImageNet weights convert into that form), nowhere when False.

    Shapes: (B, c1, H, W) -> (B, out, ceil((H - 3) / 2) + 1, ...) with ``pool``, else (B, out, H, W).
    """

    def __init__(
        self,
        c1: int,
        out: int,
        mid: int,
        layers: int = 5,
        blocks: int = 1,
        pool: bool = True,
        ese: bool | str = True,
        residual: bool = True,
        dw: bool = False,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"OSAStage needs blocks >= 1, got {blocks}")
        if ese not in (True, False, "last"):
            raise ValueError(f"OSAStage ese must be true, false or 'last', got {ese!r}")
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True) if pool else nn.Identity()
        self.blocks = nn.Sequential(
            *(
                OSA(
                    c1 if i == 0 else out,
                    out,
                    mid,
                    layers,
                    ese=ese is True or (ese == "last" and i == blocks - 1),
                    residual=residual and i > 0,
                    dw=dw,
                )
                for i in range(blocks)
            )
        )
        init_kaiming(self)
        self.c2 = out
        self.stride_factor = 2.0 if pool else 1.0

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.pool(x))


@BLOCKS.register()
class VoVStem(Block):
    """VoVNet stem: Conv3x3 s2 -> ``mid``, 3x3 -> ``mid``, 3x3 s2 -> ``out`` (conv-BN-ReLU each).

    With ``dw`` the last two are separable (DW3x3 -> PW1x1-BN-ReLU), as in the V-19-dw models (64/64/64).
    Shapes: (B, c1, H, W) -> (B, out, H/4, W/4).
    """

    stride_factor = 4.0

    def __init__(self, c1: int, out: int = 128, mid: int = 64, dw: bool = False) -> None:
        super().__init__()
        layer = SeparableConv if dw else _conv3x3
        self.conv1 = conv_bn_relu(c1, mid, 3, 2)
        self.conv2 = layer(mid, mid, 3, 1)
        self.conv3 = layer(mid, out, 3, 2)
        init_kaiming(self)
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.conv2(self.conv1(x)))
