"""LSNet blocks ("See Large, Focus Small", CVPR 2025, arXiv 2503.23135).

A stage is a stack of blocks; block ``i`` of a stage is, for even ``i``, RepVGG-DW (DW3x3-BN + DW1x1-BN +
identity) followed by squeeze-excite, and for odd ``i`` an LS convolution (large-kernel perception + small-kernel
aggregation) or, in the last stage, multi-head self-attention with a learned relative position bias. Every block
ends with a residual FFN. Between stages: DW3x3 s2 Conv2d_BN -> 1x1 Conv2d_BN. All BatchNorms use PyTorch's
defaults (eps 1e-5, momentum 0.1), as the authors' code does.

Detection form: the stem reaches stride 8, so with the ImageNet layout the stages sit at strides 8/16/32/64. For a
stride 8/16/32 head we keep every stage and every weight shape but run the last transition with stride 1, so the
attention stage works at stride 32 (B3 = stage 1, B4 = stage 2, B5 = stage 4); ImageNet weights load unchanged.
See ``models/components/lsnet-*-backbone.yaml``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detector.nn.block import Block
from detector.nn.conv import Conv
from detector.nn.ska import ska
from detector.registry import BLOCKS


class Conv2d_BN(Conv):  # noqa: N801  (the paper's name)
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d with PyTorch defaults, no activation.

    ``bn_weight_init=0`` starts a residual branch at zero (FFN and attention outputs).
    ``fuse()`` (from ``Conv``) folds the BN into a biased conv. Shapes: (B, c1, H, W) -> (B, out, H/s, W/s).
    """

    def __init__(self, c1: int, out: int, k: int = 1, s: int = 1, g: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__(c1, out, k, s, g=g, act=None, eps=1e-5, momentum=0.1)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class RepVGGDW(Block):
    """Depthwise RepVGG: ``BN(DW3x3 x) + BN(DW1x1 x) + x``; ``fuse()`` turns it into one biased DW3x3
    (1x1 kernel zero-padded to 3x3, identity as a centre weight of 1). Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = Conv2d_BN(c, c, 3, g=c)
        self.conv1 = Conv2d_BN(c, c, 1, g=c)
        self.fused: nn.Conv2d | None = None
        self.c2 = c

    def forward(self, x: Tensor) -> Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.conv(x) + self.conv1(x) + x

    @torch.no_grad()
    def fuse(self) -> None:
        if self.fused is not None:
            return
        self.conv.fuse()
        self.conv1.fuse()
        k3, k1 = self.conv.conv, self.conv1.conv
        weight = k3.weight + F.pad(k1.weight, [1, 1, 1, 1])  # (C, 1, 3, 3)
        weight[:, 0, 1, 1] += 1.0  # identity branch
        fused = nn.Conv2d(k3.in_channels, k3.out_channels, 3, 1, 1, groups=k3.groups, bias=True)
        fused = fused.to(weight.device, weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(k3.bias + k1.bias)
        self.fused = fused
        del self.conv, self.conv1


def se_width(c: int, ratio: float = 0.25, divisor: int = 8) -> int:
    """Squeeze width: ``c * ratio`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(c * ratio + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """SE: global average pool -> biased 1x1 (C -> C/4, rounded to 8) -> ReLU -> biased 1x1 -> sigmoid -> scale.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = se_width(c, ratio)
        self.reduce = nn.Conv2d(c, hidden, 1, bias=True)
        self.expand = nn.Conv2d(hidden, c, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        s = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class FFN(nn.Module):
    """1x1 Conv2d_BN (C -> hidden) -> ReLU -> 1x1 Conv2d_BN (-> C, BN weight 0). The caller adds the residual."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.pw1 = Conv2d_BN(c, hidden)
        self.pw2 = Conv2d_BN(hidden, c, bn_weight_init=0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw2(F.relu(self.pw1(x)))


class LKP(nn.Module):
    """Large-kernel perception: predicts one ``sks x sks`` kernel per pixel for each of ``C / groups`` groups.

    1x1 Conv2d_BN (C -> C/2) -> ReLU -> DW ``lks x lks`` Conv2d_BN -> 1x1 Conv2d_BN -> ReLU -> biased 1x1
    (-> sks^2 * C/groups) -> GroupNorm (C/groups groups, i.e. per predicted kernel).
    Shapes: (B, C, H, W) -> (B, C/groups, sks^2, H, W).
    """

    def __init__(self, c: int, lks: int = 7, sks: int = 3, groups: int = 8) -> None:
        super().__init__()
        if c % groups or c % 2:
            raise ValueError(f"LKP: width {c} must be even and a multiple of groups={groups}")
        half, n_kernels = c // 2, c // groups
        self.cv1 = Conv2d_BN(c, half)
        self.cv2 = Conv2d_BN(half, half, lks, g=half)
        self.cv3 = Conv2d_BN(half, half)
        self.cv4 = nn.Conv2d(half, sks * sks * n_kernels, 1, bias=True)
        self.norm = nn.GroupNorm(n_kernels, sks * sks * n_kernels)
        self.n_kernels, self.taps = n_kernels, sks * sks

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.cv3(self.cv2(F.relu(self.cv1(x)))))
        w = self.norm(self.cv4(y))
        b, _, h, wd = w.shape
        return w.reshape(b, self.n_kernels, self.taps, h, wd)  # reshape: w may be channels_last


class LSConv(nn.Module):
    """LS convolution: ``BN(SKA(x, LKP(x))) + x`` (see ``detector.nn.ska``). Shapes: (B, C, H, W) -> same."""

    def __init__(self, c: int, lks: int = 7, sks: int = 3, groups: int = 8) -> None:
        super().__init__()
        self.lkp = LKP(c, lks, sks, groups)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(ska(x, self.lkp(x))) + x


class RelPosAttention(nn.Module):
    """Multi-head self-attention over all H*W positions with a DW3x3 on the queries and a learned relative
    position bias (LeViT style: one value per head and absolute offset ``(|dy|, |dx|)``).

    ``qkv``: 1x1 Conv2d_BN C -> 2 * heads * key_dim + heads * d, with ``d = int(C / (key_dim * heads) * key_dim)``;
    ``attn = softmax(q^T k / sqrt(key_dim) + bias)``; ``out = v attn^T`` -> ReLU -> 1x1 Conv2d_BN (BN weight 0).
    The caller adds the residual.

    Any input size: the bias table ``attention_biases (heads, R*R)`` covers offsets ``0..R-1`` (``R`` =
    ``resolution``, the map size it is trained at). For an ``H x W`` map with ``H, W <= R`` the needed offsets are
    a sub-grid of the table, used exactly; when ``H > R`` or ``W > R`` the ``(R, R)`` table is first resized
    bilinearly (corners aligned, so offset 0 keeps its value) to ``(max(H, R), max(W, R))``.
    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c: int, key_dim: int = 16, heads: int = 4, resolution: int = 7) -> None:
        super().__init__()
        self.heads, self.key_dim, self.resolution = heads, key_dim, resolution
        self.scale = key_dim**-0.5
        self.d = int(c / (key_dim * heads) * key_dim)
        self.nh_kd = key_dim * heads
        self.qkv = Conv2d_BN(c, 2 * self.nh_kd + self.d * heads)
        self.dw = Conv2d_BN(self.nh_kd, self.nh_kd, 3, g=self.nh_kd)
        self.proj = Conv2d_BN(self.d * heads, c, bn_weight_init=0.0)
        self.attention_biases = nn.Parameter(torch.zeros(heads, resolution * resolution))
        self._offsets: dict[tuple, tuple[Tensor, Tensor]] = {}

    def offsets(self, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(|dy|, |dx|)`` between every pair of the ``h * w`` positions, each ``(N, N)`` long, cached per size."""
        key = (h, w, device)
        if key not in self._offsets:
            ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            ys, xs = ys.reshape(-1), xs.reshape(-1)
            self._offsets[key] = ((ys[:, None] - ys[None, :]).abs(), (xs[:, None] - xs[None, :]).abs())
        return self._offsets[key]

    @staticmethod
    def resize_table(table: Tensor, size: tuple[int, int]) -> Tensor:
        """A bias table ``(heads, R, R')`` resized bilinearly with corners aligned (offset 0 and the largest
        offset keep their values) -> ``(heads, *size)``."""
        return F.interpolate(table[None], size=size, mode="bilinear", align_corners=True)[0]

    def position_bias(self, h: int, w: int) -> Tensor:
        """Bias ``(heads, N, N)`` for an ``h x w`` map (see the class docstring for sizes beyond the table)."""
        h, w, r = int(h), int(w), self.resolution  # static sizes, also while tracing for export
        table = self.attention_biases.view(self.heads, r, r)
        if h > r or w > r:
            table = self.resize_table(table, (max(h, r), max(w, r)))
        dy, dx = self.offsets(h, w, table.device)
        return table[:, dy, dx]

    def resize_state(self, name: str, tensor: Tensor) -> Tensor | None:
        """``attention_biases`` of a model with another ``resolution`` (``(heads, R'*R')``, e.g. an ImageNet
        checkpoint's 4x4 table going into the 20x20 table of a detection backbone) resized to this table, the way
        ``position_bias`` resizes a small table at run time: at ``resolution x resolution`` this layer then gives
        what the source layer gives on a map of that size. None for anything else (a mismatch stays an error)."""
        side = math.isqrt(tensor.shape[-1]) if tensor.dim() == 2 else 0
        if name != "attention_biases" or tensor.shape[0] != self.heads or side * side != tensor.shape[-1]:
            return None
        r = self.resolution
        return self.resize_table(tensor.reshape(self.heads, side, side).float(), (r, r)).reshape(self.heads, r * r)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        n = h * w
        q, k, v = self.qkv(x).split([self.nh_kd, self.nh_kd, self.d * self.heads], 1)
        q = self.dw(q)
        q = q.reshape(b, self.heads, self.key_dim, n)
        k = k.reshape(b, self.heads, self.key_dim, n)
        v = v.reshape(b, self.heads, self.d, n)
        attn = (q.transpose(-2, -1) @ k) * self.scale + self.position_bias(h, w)  # (B, heads, N, N)
        out = (v @ attn.softmax(-1).transpose(-2, -1)).reshape(b, self.d * self.heads, h, w)
        return self.proj(F.relu(out))


class LSBlock(nn.Module):
    """Block ``index`` of a stage: even -> RepVGG-DW + SE; odd -> LSConv, or residual attention when
    ``attention``; then ``x + FFN(x)`` with hidden width 2C. Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self, c: int, index: int, attention: bool = False, key_dim: int = 16, heads: int = 4, resolution: int = 7
    ) -> None:
        super().__init__()
        self.mixer_residual = index % 2 == 1 and attention  # LSConv and RepVGG-DW hold their own identity
        if index % 2 == 0:
            self.mixer: nn.Module = nn.Sequential(RepVGGDW(c), SqueezeExcite(c))
        elif attention:
            self.mixer = RelPosAttention(c, key_dim, heads, resolution)
        else:
            self.mixer = LSConv(c)
        self.ffn = FFN(c, 2 * c)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(x) if self.mixer_residual else self.mixer(x)
        return x + self.ffn(x)


@BLOCKS.register()
class LSNetStem(Block):
    """Conv2d_BN 3x3 s2 (-> out/4) -> ReLU -> 3x3 s2 (-> out/2) -> ReLU -> 3x3 s2 (-> out), no final activation
    (as in the authors' code). Shapes: (B, c1, H, W) -> (B, out, H/8, W/8).
    """

    stride_factor = 8.0

    def __init__(self, c1: int, out: int) -> None:
        super().__init__()
        self.conv1 = Conv2d_BN(c1, out // 4, 3, 2)
        self.conv2 = Conv2d_BN(out // 4, out // 2, 3, 2)
        self.conv3 = Conv2d_BN(out // 2, out, 3, 2)
        self.c2 = out

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


@BLOCKS.register()
class LSNetStage(Block):
    """An LSNet stage: transition (when ``s > 1`` or the width changes) then ``depth`` LSBlocks.

    Transition: DW3x3 Conv2d_BN with stride ``s`` (c1 channels) -> 1x1 Conv2d_BN (c1 -> out). ``s: 1`` with a
    width change keeps the resolution (the detection form of the last stage, see the module docstring).
    ``attention`` puts self-attention in the odd blocks (the last stage: key_dim 16, ``heads`` heads, bias table
    for a ``resolution`` x ``resolution`` map: 4 at 224 / stride 64, 20 at 640 / stride 32).
    ``depth: 0`` with no transition is an identity (LSNet-T's first stage).
    Shapes: (B, c1, H, W) -> (B, out, H/s, W/s).
    """

    def __init__(
        self,
        c1: int,
        out: int,
        depth: int,
        s: int = 2,
        attention: bool = False,
        heads: int = 4,
        key_dim: int = 16,
        resolution: int = 7,
    ) -> None:
        super().__init__()
        if s not in (1, 2):
            raise ValueError(f"LSNetStage stride must be 1 or 2, got {s}")
        layers: list[nn.Module] = []
        if s != 1 or c1 != out:
            layers += [Conv2d_BN(c1, c1, 3, s, g=c1), Conv2d_BN(c1, out)]
        layers += [LSBlock(out, i, attention, key_dim, heads, resolution) for i in range(depth)]
        self.blocks = nn.Sequential(*layers)
        self.c2 = out
        self.stride_factor = float(s)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
