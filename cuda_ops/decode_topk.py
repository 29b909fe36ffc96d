"""Fused head post-processing: raw DFL maps -> per-image top-K decoded candidates, never the full prediction.

Input is the raw head layout (``DFLHead.forward_raw``): one map per level, ``(B, 4 * reg_max + nc, H_i, W_i)``,
channels ``[0, 4 * reg_max)`` the four side distributions (left, top, right, bottom; ``reg_max`` bins each),
then ``nc`` class logits; anchors are level-major, row-major cells ``(x + offset, y + offset) * stride``.

Two kernels with ``torch.topk`` between them, so only ``(B, A)`` scores and ``(B, K, ...)`` candidates ever
reach memory instead of the ``(B, 4 + nc, A)`` decoded tensor:

1. ``class_max`` (one launch per level): per anchor the best class logit (classes outside ``keep`` excluded) ->
   ``score = sigmoid(max)`` (float32) and its class -> the ``(B, A)`` buffers at the level's offset;
2. ``torch.topk`` of the scores -> the ``K = min(max_candidates, A)`` best anchors per image;
3. ``gather_decode`` (one launch per level): for the selected anchors of that level, DFL softmax-expectation of
   the four sides -> xyxy pixel boxes, and (multi-label) the sigmoid scores of all classes;
4. multi-label only: ``torch.topk`` over those ``K * nc`` (anchor, class) pairs. The best ``K`` pairs always
   lie in the ``K`` anchors with the best class maximum, so this equals a top-K over all ``A * nc`` pairs.

The result is exactly what ``decode`` + the score threshold + top-K of ``detector.ops.nms`` select
(up to the order of equal scores), decoded in float32. :func:`batched_nms` turns it into the per-image
``(n, 6)`` detections of ``non_max_suppression``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

import torch
from torch import Tensor

from cuda_ops._triton import CompileSpec, cdiv, jit_kernels, next_pow2, program_block
from cuda_ops.availability import kernel_runs_on, use_kernel

tl = None  # triton.language, bound on first kernel use (see cuda_ops._triton)

BLOCK_A = 128  # anchors per program (class_max)
BLOCK_K = 32  # candidates per program (gather_decode)
NC_CHUNK = 32  # classes loaded at a time (class_max)


def check_maps(maps: Sequence[Tensor], strides: Sequence[float], reg_max: int) -> int:
    """Validate the raw maps; returns ``nc``."""
    if len(maps) == 0 or len(maps) != len(strides):
        raise ValueError(f"decode_topk: need one stride per map, got {len(maps)} maps and {len(strides)} strides")
    b, c = maps[0].shape[:2]
    nc = c - 4 * reg_max
    for i, m in enumerate(maps):
        if m.dim() != 4 or m.shape[:2] != (b, c) or m.dtype != maps[0].dtype or m.device != maps[0].device:
            raise ValueError(
                f"decode_topk: map {i} is {m.dtype} {tuple(m.shape)}, want ({b}, {c}, H, W) like map 0 ({maps[0].dtype})"
            )
    if nc < 1:
        raise ValueError(f"decode_topk: {c} channels leave no class channels after 4 * reg_max = {4 * reg_max}")
    return nc


def _keep_mask(nc: int, classes: Sequence[int] | None, device) -> Tensor:
    keep = torch.ones(nc, dtype=torch.bool, device=device)
    if classes is not None:
        keep.zero_()
        keep[torch.as_tensor(list(classes), dtype=torch.long, device=device)] = True
    return keep


# ------------------------------------------------------------------------------------------------ references
def class_max_reference(maps: list[Tensor], reg_max: int, keep: Tensor) -> tuple[Tensor, Tensor]:
    """``(score float32 (B, A), cls int32 (B, A))``: sigmoid of the best kept class logit per anchor (0 if none)."""
    b = maps[0].shape[0]
    logits = torch.cat([m[:, 4 * reg_max :].reshape(b, m.shape[1] - 4 * reg_max, -1) for m in maps], 2).float()
    logits = logits.masked_fill(~keep[None, :, None], float("-inf"))
    best, cls = logits.max(1)
    return best.sigmoid(), cls.int()


def _level_of(index: Tensor, maps: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Level, local cell index and level start of flat anchor indices."""
    sizes = torch.tensor([m.shape[2] * m.shape[3] for m in maps], device=index.device)
    ends = sizes.cumsum(0)
    level = torch.bucketize(index, ends, right=True)
    start = ends[level] - sizes[level]
    return level, index - start, start


def gather_decode_reference(
    maps: list[Tensor], index: Tensor, strides: list[float], reg_max: int, offset: float, with_scores: bool
) -> tuple[Tensor, Tensor]:
    """Decode the anchors ``index (int64 (B, K))``: ``boxes float32 (B, K, 4)`` xyxy pixels and, with
    ``with_scores``, ``scores float32 (B, K, nc)`` (sigmoid of every class; else an empty ``(B, K, 0)``)."""
    b, c = maps[0].shape[:2]
    flat = torch.cat([m.reshape(b, c, -1) for m in maps], 2)  # the reference may; the kernel never does
    raw = flat.gather(2, index[:, None, :].expand(b, c, index.shape[1])).float()  # (B, C, K)
    dist = raw[:, : 4 * reg_max].view(b, 4, reg_max, -1).softmax(2)
    dist = (dist * torch.arange(reg_max, dtype=torch.float32, device=raw.device)[None, None, :, None]).sum(2)
    level, local, _ = _level_of(index, maps)
    widths = torch.tensor([m.shape[3] for m in maps], device=index.device)[level]
    stride = torch.tensor(strides, dtype=torch.float32, device=index.device)[level]
    px = (local % widths).float() + offset
    py = torch.div(local, widths, rounding_mode="floor").float() + offset
    boxes = torch.stack((px - dist[:, 0], py - dist[:, 1], px + dist[:, 2], py + dist[:, 3]), -1) * stride[..., None]
    scores = raw[:, 4 * reg_max :].transpose(1, 2).sigmoid() if with_scores else raw.new_zeros(b, index.shape[1], 0)
    return boxes, scores


# ---------------------------------------------------------------------------------------------------- kernels
def _class_max(
    map_ptr,
    keep_ptr,
    score_ptr,
    cls_ptr,
    HW,
    A,
    a_start,
    NC,
    reg_max,
    s_b,
    s_c,
    s_p,
    BLOCK: tl.constexpr,
    NCB: tl.constexpr,
):
    """Grid (cdiv(HW, BLOCK), B): best kept class of a block of one level's cells, streaming NCB classes at a
    time. Element (b, c, cell) of the map is at ``b * s_b + c * s_c + cell * s_p`` (NCHW or channels-last)."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    p = pid * BLOCK + tl.arange(0, BLOCK)
    pm = p < HW
    base = map_ptr + b * s_b + (4 * reg_max) * s_c
    best = tl.full((BLOCK,), float("-inf"), dtype=tl.float32)
    best_c = tl.zeros((BLOCK,), dtype=tl.int32)
    for c0 in range(0, NC, NCB):
        c = c0 + tl.arange(0, NCB)
        cm = c < NC
        keep = tl.load(keep_ptr + c, mask=cm, other=0) != 0
        v = tl.load(
            base + c[:, None] * s_c + p[None, :] * s_p, mask=(cm & keep)[:, None] & pm[None, :], other=float("-inf")
        )
        v = v.to(tl.float32)
        m = tl.max(v, axis=0)
        # first class reaching the maximum, as torch.max reports it
        mc = tl.min(tl.where(v == m[None, :], c[:, None], NC + NCB), axis=0)
        better = m > best
        best_c = tl.where(better, mc, best_c)
        best = tl.where(better, m, best)
    out = b * A + a_start + p
    tl.store(score_ptr + out, 1.0 / (1.0 + tl.exp(-best)), mask=pm)
    tl.store(cls_ptr + out, best_c, mask=pm)


def _gather_decode(
    map_ptr,
    index_ptr,
    boxes_ptr,
    scores_ptr,
    K,
    HW,
    W,
    a_start,
    NC,
    reg_max,
    stride,
    offset,
    s_b,
    s_c,
    s_p,
    RMP: tl.constexpr,
    NCP: tl.constexpr,
    WITH_SCORES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Grid (cdiv(K, BLOCK), B): decode the candidates of image ``b`` that fall in this level."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    k = pid * BLOCK + tl.arange(0, BLOCK)
    km = k < K
    idx = tl.load(index_ptr + b * K + k, mask=km, other=-1) - a_start
    mine = km & (idx >= 0) & (idx < HW)
    cell = tl.where(mine, idx, 0)
    base = map_ptr + b * s_b + cell.to(tl.int64) * s_p
    r = tl.arange(0, RMP)
    rm = r < reg_max
    px = (cell % W).to(tl.float32) + offset
    py = (cell // W).to(tl.float32) + offset
    for side in tl.static_range(4):
        v = tl.load(base[:, None] + (side * reg_max + r[None, :]) * s_c, mask=mine[:, None] & rm[None, :], other=0.0)
        v = tl.where(rm[None, :], v.to(tl.float32), float("-inf"))  # padding bins only: rows stay finite
        e = tl.exp(v - tl.max(v, axis=1)[:, None])
        d = tl.sum(e * r[None, :].to(tl.float32), axis=1) / tl.sum(e, axis=1)
        if side == 0:
            coord = px - d
        elif side == 1:
            coord = py - d
        elif side == 2:
            coord = px + d
        else:
            coord = py + d
        tl.store(boxes_ptr + (b * K + k) * 4 + side, coord * stride, mask=mine)
    if WITH_SCORES:
        c = tl.arange(0, NCP)
        cm = c < NC
        v = tl.load(base[:, None] + (4 * reg_max + c[None, :]) * s_c, mask=mine[:, None] & cm[None, :], other=0.0)
        s = 1.0 / (1.0 + tl.exp(-v.to(tl.float32)))
        tl.store(scores_ptr + (b * K + k)[:, None] * NC + c[None, :], s, mask=mine[:, None] & cm[None, :])


@functools.cache
def _kernels():
    return jit_kernels(sys.modules[__name__], (_class_max, _gather_decode))


def _flat_cells(m: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """``m (B, C, H, W)`` and its (batch, channel, cell) strides, the cells ``y * W + x`` one stride apart: true
    for NCHW-contiguous and channels-last maps alike, so neither is copied; anything else is made contiguous."""
    sb, sc, sy, sx = m.stride()
    if sy != m.shape[3] * sx and m.shape[2] > 1:
        m = m.contiguous()
        sb, sc, sy, sx = m.stride()
    return m, (sb, sc, sx)


def class_max_kernel(maps: list[Tensor], reg_max: int, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Triton :func:`class_max_reference`."""
    b, c = maps[0].shape[:2]
    nc = c - 4 * reg_max
    a = sum(m.shape[2] * m.shape[3] for m in maps)
    score = torch.empty((b, a), dtype=torch.float32, device=maps[0].device)
    cls = torch.empty((b, a), dtype=torch.int32, device=maps[0].device)
    keep = keep.to(torch.int8)
    start, block = 0, program_block(BLOCK_A, maps[0].device, 1024)
    for m in maps:
        hw = m.shape[2] * m.shape[3]
        if b and hw:
            grid = (cdiv(hw, block), b)
            m, strides = _flat_cells(m)
            _kernels().class_max[grid](
                m, keep, score, cls, hw, a, start, nc, reg_max, *strides, BLOCK=block, NCB=NC_CHUNK
            )
        start += hw
    return score, cls


def gather_decode_kernel(
    maps: list[Tensor], index: Tensor, strides: list[float], reg_max: int, offset: float, with_scores: bool
) -> tuple[Tensor, Tensor]:
    """Triton :func:`gather_decode_reference`."""
    b, c = maps[0].shape[:2]
    nc, k = c - 4 * reg_max, index.shape[1]
    dev = maps[0].device
    boxes = torch.empty((b, k, 4), dtype=torch.float32, device=dev)
    scores = torch.empty((b, k, nc if with_scores else 0), dtype=torch.float32, device=dev)
    index = index.contiguous()
    start, block = 0, program_block(BLOCK_K, dev, 1024)
    for m, s in zip(maps, strides):
        hw = m.shape[2] * m.shape[3]
        if b and k and hw:
            m, map_strides = _flat_cells(m)
            _kernels().gather_decode[(cdiv(k, block), b)](
                m,
                index,
                boxes,
                scores,
                k,
                hw,
                m.shape[3],
                start,
                nc,
                reg_max,
                float(s),
                float(offset),
                *map_strides,
                RMP=next_pow2(reg_max),
                NCP=next_pow2(nc),
                WITH_SCORES=with_scores,
                BLOCK=block,
            )
        start += hw
    return boxes, scores


def compile_specs() -> list[CompileSpec]:
    """The specialisations compiled ahead of time for sm_90 by the tests: fp16 NCHW maps and fp32 channels-last
    maps (a unit stride is a constexpr at run time, as Triton specialises it), nc 80, reg_max 16."""
    specs = []
    for ty, layout in (("fp16", "nchw"), ("fp32", "nhwc")):
        unit, other = ("s_p", "s_c") if layout == "nchw" else ("s_c", "s_p")
        cm = {"map_ptr": f"*{ty}", "keep_ptr": "*i8", "score_ptr": "*fp32", "cls_ptr": "*i32"}
        cm.update({n: "i32" for n in ("HW", "A", "a_start", "NC", "reg_max", "s_b", other)})
        const = {unit: 1, "BLOCK": BLOCK_A, "NCB": NC_CHUNK}
        specs.append(CompileSpec(f"class_max_{ty}_{layout}", _class_max, cm, const, 4, ("HW", "A", "s_b", other)))
        gd = {"map_ptr": f"*{ty}", "index_ptr": "*i64", "boxes_ptr": "*fp32", "scores_ptr": "*fp32"}
        gd.update({n: "i32" for n in ("K", "HW", "W", "a_start", "NC", "reg_max", "s_b", other)})
        gd.update({"stride": "fp32", "offset": "fp32"})
        ws = ty == "fp16"  # multi-label scores in one, boxes only in the other
        const = {unit: 1, "RMP": 16, "NCP": 128, "WITH_SCORES": ws, "BLOCK": BLOCK_K}
        specs.append(CompileSpec(f"gather_decode_{ty}_{layout}", _gather_decode, gd, const))
    return specs


# ---------------------------------------------------------------------------------------------- custom ops
@torch.library.custom_op("cuda_ops::class_max", mutates_args=())
def class_max_op(maps: list[Tensor], reg_max: int, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Per-anchor best kept class: ``(score float32 (B, A), cls int32 (B, A))``."""
    if kernel_runs_on(maps[0].device):
        return class_max_kernel(maps, reg_max, keep)
    return class_max_reference(maps, reg_max, keep)


@class_max_op.register_fake
def _(maps: list[Tensor], reg_max: int, keep: Tensor) -> tuple[Tensor, Tensor]:
    a = sum(m.shape[2] * m.shape[3] for m in maps)
    b = maps[0].shape[0]
    return maps[0].new_empty((b, a), dtype=torch.float32), maps[0].new_empty((b, a), dtype=torch.int32)


@torch.library.custom_op("cuda_ops::gather_decode", mutates_args=())
def gather_decode_op(
    maps: list[Tensor], index: Tensor, strides: list[float], reg_max: int, offset: float, with_scores: bool
) -> tuple[Tensor, Tensor]:
    """Decoded boxes ``(B, K, 4)`` (and class scores ``(B, K, nc)`` with ``with_scores``) of anchors ``index``."""
    if kernel_runs_on(maps[0].device):
        return gather_decode_kernel(maps, index, strides, reg_max, offset, with_scores)
    return gather_decode_reference(maps, index, strides, reg_max, offset, with_scores)


@gather_decode_op.register_fake
def _(
    maps: list[Tensor], index: Tensor, strides: list[float], reg_max: int, offset: float, with_scores: bool
) -> tuple[Tensor, Tensor]:
    b, c = maps[0].shape[:2]
    nc = c - 4 * reg_max if with_scores else 0
    k = index.shape[1]
    return maps[0].new_empty((b, k, 4), dtype=torch.float32), maps[0].new_empty((b, k, nc), dtype=torch.float32)


def decode_topk(
    maps: Sequence[Tensor],
    strides: Sequence[float],
    reg_max: int = 16,
    conf: float = 0.25,
    max_candidates: int = 30000,
    multi_label: bool = False,
    classes: Sequence[int] | None = None,
    offset: float = 0.5,
    impl: str = "auto",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Raw DFL head maps -> each image's best ``K`` (box, class) candidates, best first.

    Args:
        maps: raw maps ``(B, 4 * reg_max + nc, H_i, W_i)`` per level (``DFLHead.forward_raw``), one dtype.
        strides: each level's stride in input pixels.
        conf: a candidate is valid when its score is strictly above this.
        max_candidates: ``K``, at most this many candidates per image (as ``non_max_suppression``'s cap).
        multi_label: candidates are (anchor, class) pairs, else one per anchor with its best class.
        classes: keep only these class ids.
        offset: anchor offset in cells (0.5 for DFL heads).

    Returns:
        ``boxes (float32 (B, K, 4))`` xyxy in input pixels, ``scores (float32 (B, K))`` descending,
        ``labels (int64 (B, K))`` and ``valid (bool (B, K))`` = ``scores > conf`` (a prefix of each row);
        ``K = min(max_candidates, A)`` (``A * nc`` pairs when ``multi_label``).
    """
    maps = list(maps)
    nc = check_maps(maps, strides, reg_max)
    strides = [float(s) for s in strides]
    keep = _keep_mask(nc, classes, maps[0].device)
    kernel = use_kernel("decode_topk", impl, maps[0].device)
    if kernel:
        score, cls = torch.ops.cuda_ops.class_max(maps, reg_max, keep)
    else:
        score, cls = class_max_reference(maps, reg_max, keep)
    top, index = score.topk(min(max_candidates, score.shape[1]), dim=1)  # (B, K1)
    if kernel:
        boxes, cls_scores = torch.ops.cuda_ops.gather_decode(maps, index, strides, reg_max, offset, multi_label)
    else:
        boxes, cls_scores = gather_decode_reference(maps, index, strides, reg_max, offset, multi_label)
    if not multi_label:
        return boxes, top, cls.gather(1, index).long(), top > conf
    b, k1, _ = cls_scores.shape
    pairs = (cls_scores * keep).reshape(b, k1 * nc)  # index = slot * nc + class, as the reference flattens
    top, pair = pairs.topk(min(max_candidates, k1 * nc), dim=1)
    slot = torch.div(pair, nc, rounding_mode="floor")
    return boxes.gather(1, slot[..., None].expand(-1, -1, 4)), top, pair % nc, top > conf


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    valid: Tensor,
    iou: float = 0.7,
    max_det: int = 300,
    agnostic: bool = False,
) -> list[Tensor]:
    """:func:`decode_topk`'s candidates -> per-image ``Tensor[n, 6]`` (x1, y1, x2, y2, score, class), as
    ``detector.ops.non_max_suppression`` returns them (torchvision's batched NMS per image)."""
    from torchvision.ops import batched_nms as tv_batched_nms

    out = []
    for bx, sc, lb, ok in zip(boxes, scores, labels, valid):
        bx, sc, lb = bx[ok], sc[ok], lb[ok]
        keep = tv_batched_nms(bx, sc, torch.zeros_like(lb) if agnostic else lb, iou)[:max_det]
        out.append(torch.cat((bx[keep], sc[keep, None], lb[keep, None].float()), 1))
    return out
