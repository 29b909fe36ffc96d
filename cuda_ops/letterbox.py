"""Fused input: uint8 HWC BGR frames of any sizes -> letterboxed RGB CHW in 0..1 (fp16/fp32), one kernel.

The geometry is the project's letterbox (``detector/data/letterbox.py``, ``deploy/preprocess.py``), computed on
the host in the same Python arithmetic: ``r = min(H / h, W / w)`` (capped at 1 without ``scaleup``), content
``round(w * r) x round(h * r)`` (Python's round, at least 1), padding ``left = (W - rw) // 2``,
``top = (H - rh) // 2`` (the odd pixel goes right/bottom), pad value 114. The resize follows OpenCV as the
letterbox calls it: ``INTER_AREA`` when shrinking (``r < 1``), ``INTER_LINEAR`` otherwise, both with OpenCV's
pixel-centre convention, and the interpolated value is rounded to a whole uint8 level as ``cv2.resize`` does
before the ``/ 255``. Tolerance against ``cv2`` (tested on real images): at most 1 level (1/255), from OpenCV's
11-bit fixed-point bilinear weights and float rounding ties; area shrinking matches to the level almost
everywhere. ``meta[b] = (r, pad_left, pad_top, r)``: ``original = (letterboxed - pad) / r`` per axis.

One program handles a block of output pixels of one image and writes all three channels; per tap it loads the
three BGR bytes. Frames of different sizes travel packed in one flat uint8 buffer with per-image parameters
(offset, size, content size, padding), so the kernel needs no pointer table.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

import torch
from torch import Tensor

from cuda_ops._triton import CompileSpec, cdiv, jit_kernels, program_block
from cuda_ops.availability import kernel_runs_on, use_kernel

tl = None  # triton.language, bound on first kernel use (see cuda_ops._triton)

BLOCK = 256  # output pixels per program
PAD_VALUE = 114
AREA_MIN_OVERLAP = 1e-3  # cv2 INTER_AREA ignores a partial source pixel covering this little of a footprint
N_PARAMS = 8  # per image: offset, h, w, row_stride, rh, rw, top, left


def letterbox_geometry(
    h: int, w: int, size: tuple[int, int], scaleup: bool = True, center: bool = True
) -> tuple[float, int, int, int, int]:
    """``(r, rh, rw, top, left)`` of an ``h x w`` frame letterboxed into ``size = (H, W)``.

    The same arithmetic as ``detector.data.letterbox.letterbox`` (``auto=False``); ``center=False`` puts the
    content at the top-left corner instead.
    """
    nh, nw = size
    r = min(nh / h, nw / w)
    if not scaleup:
        r = min(r, 1.0)
    rw, rh = max(1, round(w * r)), max(1, round(h * r))
    if not center:
        return r, rh, rw, 0, 0
    return r, rh, rw, (nh - rh) // 2, (nw - rw) // 2


def pack_frames(
    frames: Sequence[Tensor] | Tensor, sizes: Sequence[tuple[int, int]] | None = None
) -> tuple[Tensor, list[tuple[int, int, int, int]]]:
    """Frames -> ``(flat uint8 buffer, [(offset, h, w, row_stride)] per image)``.

    ``frames``: a list of ``uint8 (h_i, w_i, 3)`` tensors (concatenated into one buffer), or one padded batch
    ``uint8 (B, Hmax, Wmax, 3)`` (used in place) whose true sizes are ``sizes`` (default: the full frame).
    """
    if isinstance(frames, Tensor):
        if frames.dim() != 4 or frames.shape[3] != 3 or frames.dtype != torch.uint8:
            raise ValueError(
                f"letterbox_frames: a batch must be uint8 (B, H, W, 3), got {frames.dtype} {tuple(frames.shape)}"
            )
        b, hmax, wmax, _ = frames.shape
        sizes = [(hmax, wmax)] * b if sizes is None else [tuple(s) for s in sizes]
        if len(sizes) != b or any(not (0 < h <= hmax and 0 < w <= wmax) for h, w in sizes):
            raise ValueError(f"letterbox_frames: sizes {sizes} do not fit a batch of {b} frames of {hmax}x{wmax}")
        frames = frames.contiguous()
        plane = hmax * wmax * 3
        return frames.view(-1), [(i * plane, h, w, wmax * 3) for i, (h, w) in enumerate(sizes)]
    if len(frames) == 0:
        raise ValueError("letterbox_frames: no frames given")
    layout, offset = [], 0
    for i, f in enumerate(frames):
        if not isinstance(f, Tensor) or f.dim() != 3 or f.shape[2] != 3 or f.dtype != torch.uint8:
            what = f"{f.dtype} {tuple(f.shape)}" if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"letterbox_frames: frame {i} must be a uint8 BGR tensor (H, W, 3), got {what}")
        h, w, _ = f.shape
        if h == 0 or w == 0:
            raise ValueError(f"letterbox_frames: frame {i} is empty ({h}x{w})")
        layout.append((offset, h, w, w * 3))
        offset += h * w * 3
    flat = torch.cat([f.contiguous().view(-1) for f in frames]) if len(frames) > 1 else frames[0].contiguous().view(-1)
    return flat, layout


def letterbox_params(
    layout: list[tuple[int, int, int, int]], size: tuple[int, int], scaleup: bool = True, center: bool = True
) -> tuple[Tensor, Tensor]:
    """Per-image kernel parameters ``int64 (B, 8)`` and ``meta float32 (B, 4) = (r, left, top, r)`` (CPU)."""
    params, meta = [], []
    for offset, h, w, stride in layout:
        r, rh, rw, top, left = letterbox_geometry(h, w, size, scaleup, center)
        params.append((offset, h, w, stride, rh, rw, top, left))
        meta.append((r, left, top, r))
    return torch.tensor(params, dtype=torch.int64), torch.tensor(meta, dtype=torch.float32)


def _axis_weights(n_src: int, n_dst: int, area: bool) -> Tensor:
    """``float64 (n_dst, n_src)`` matrix of OpenCV's 1-D resize weights (INTER_AREA or INTER_LINEAR)."""
    scale = n_src / n_dst
    d = torch.arange(n_dst, dtype=torch.float64)[:, None]
    s = torch.arange(n_src, dtype=torch.float64)[None, :]
    if area:  # overlap of source pixel [s, s+1) with the footprint [d*scale, (d+1)*scale), over its in-image width
        lo, hi = d * scale, (d + 1) * scale
        overlap = torch.minimum(s + 1, hi) - torch.maximum(s, lo)
        overlap = torch.where(overlap > AREA_MIN_OVERLAP, overlap, 0)  # OpenCV drops slivers, unrenormalised
        return overlap / torch.clamp(n_src - lo, max=scale)
    f = ((d + 0.5) * scale - 0.5).clamp(min=0)  # pixel centres; left of the first centre clamps to pixel 0
    x0 = f.floor().clamp(max=n_src - 1)
    frac = torch.where(x0 >= n_src - 1, torch.zeros_like(f), f - x0)
    x1 = (x0 + 1).clamp(max=n_src - 1)
    return (s == x0) * (1 - frac) + (s == x1) * frac


def letterbox_reference(
    src: Tensor, params: Tensor, out_h: int, out_w: int, dtype: torch.dtype, pad_value: int = PAD_VALUE
) -> Tensor:
    """Pure-PyTorch twin of the kernel: separable resize weight matrices, round, pad, BGR->RGB, /255.

    ``src``: flat uint8 buffer; ``params int64 (B, 8)`` from :func:`letterbox_params`. Returns ``(B, 3, H, W)``.
    """
    out = torch.full((params.shape[0], 3, out_h, out_w), pad_value / 255.0, dtype=torch.float32, device=src.device)
    for i, (offset, h, w, stride, rh, rw, top, left) in enumerate(params.tolist()):
        img = src[offset : offset + h * stride].view(h, stride)[:, : w * 3].reshape(h, w, 3)
        area = rw < w or rh < h
        wy = _axis_weights(h, rh, area).to(src.device)
        wx = _axis_weights(w, rw, area).to(src.device)
        bgr = img.permute(2, 0, 1).double()  # (3, h, w)
        resized = wy @ bgr @ wx.t()
        # whole uint8 levels as cv2 stores them: half to even, but half up in OpenCV's exact 2x2 area path
        resized = (resized + 0.5).floor() if (h, w) == (2 * rh, 2 * rw) else resized.round()
        resized = resized.clamp(0, 255)
        out[i, :, top : top + rh, left : left + rw] = resized.flip(0).float() / 255.0
    return out.to(dtype)


# ---------------------------------------------------------------------------------------------------- kernels
def _tap(d, i, n_src, n_dst, area):
    """Source index and weight of tap ``i`` for destination indices ``d`` along one axis (OpenCV's rules)."""
    scale = n_src.to(tl.float32) / n_dst.to(tl.float32)
    lo = d.to(tl.float32) * scale
    # INTER_AREA: source pixels floor(lo) + i overlapping [lo, lo + scale), normalised by the in-image width
    a_idx = tl.floor(lo).to(tl.int32) + i
    a_ovl = tl.minimum(a_idx.to(tl.float32) + 1.0, lo + scale) - tl.maximum(a_idx.to(tl.float32), lo)
    a_ovl = tl.where(a_ovl > 1e-3, a_ovl, 0.0)  # AREA_MIN_OVERLAP: OpenCV drops slivers, unrenormalised
    a_w = a_ovl / tl.maximum(tl.minimum(n_src.to(tl.float32) - lo, scale), 1e-6)
    a_w = tl.where(a_idx < n_src, a_w, 0.0)
    # INTER_LINEAR: pixel centres, clamped at both borders
    f = tl.maximum((d.to(tl.float32) + 0.5) * scale - 0.5, 0.0)
    x0 = tl.minimum(tl.floor(f).to(tl.int32), n_src - 1)
    frac = tl.where(x0 >= n_src - 1, 0.0, f - x0.to(tl.float32))
    l_idx = tl.minimum(x0 + i, n_src - 1)
    l_w = tl.where(i == 0, 1.0 - frac, tl.where(i == 1, frac, 0.0))
    idx = tl.where(area, a_idx, l_idx)
    return tl.minimum(idx, n_src - 1), tl.where(area, a_w, l_w)


def _to_level(v, half_up):
    """Round to a whole uint8 level, clamped to 0..255, as cv2.resize stores its result: half to even, except
    half up in OpenCV's exact 2x2 area path."""
    r = tl.floor(v + 0.5)
    r = tl.where((r - v == 0.5) & (r - 2.0 * tl.floor(r * 0.5) == 1.0) & (half_up == 0), r - 1.0, r)
    return tl.minimum(tl.maximum(r, 0.0), 255.0)


def _letterbox(src_ptr, params_ptr, out_ptr, OH, OW, TY, TX, PAD, BLOCK: tl.constexpr):
    """Grid (cdiv(OH*OW, BLOCK), B): one block of output pixels of image ``b``, all three channels."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    prm = params_ptr + b * 8
    offset = tl.load(prm + 0)
    h = tl.load(prm + 1).to(tl.int32)
    w = tl.load(prm + 2).to(tl.int32)
    stride = tl.load(prm + 3)
    rh = tl.load(prm + 4).to(tl.int32)
    rw = tl.load(prm + 5).to(tl.int32)
    top = tl.load(prm + 6).to(tl.int32)
    left = tl.load(prm + 7).to(tl.int32)
    area = (rw < w) | (rh < h)
    p = pid * BLOCK + tl.arange(0, BLOCK)
    pm = p < OH * OW
    cy = p // OW - top
    cx = p % OW - left
    inside = pm & (cy >= 0) & (cy < rh) & (cx >= 0) & (cx < rw)
    acc_b = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_r = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(0, TY):
        sy, wy = _tap(cy, i, h, rh, area)
        row = src_ptr + offset + sy.to(tl.int64) * stride
        for j in range(0, TX):
            sx, wx = _tap(cx, j, w, rw, area)
            wgt = wy * wx
            m = inside & (wgt > 0.0)
            px = row + sx * 3
            acc_b += wgt * tl.load(px, mask=m, other=0).to(tl.float32)
            acc_g += wgt * tl.load(px + 1, mask=m, other=0).to(tl.float32)
            acc_r += wgt * tl.load(px + 2, mask=m, other=0).to(tl.float32)
    pad = PAD.to(tl.float32)
    half_up = ((h == 2 * rh) & (w == 2 * rw)).to(tl.int32)
    r = tl.where(inside, _to_level(acc_r, half_up), pad) / 255.0
    g = tl.where(inside, _to_level(acc_g, half_up), pad) / 255.0
    bl = tl.where(inside, _to_level(acc_b, half_up), pad) / 255.0
    plane = OH * OW
    base = out_ptr + b.to(tl.int64) * 3 * plane + p
    ty = out_ptr.dtype.element_ty
    tl.store(base, r.to(ty), mask=pm)
    tl.store(base + plane, g.to(ty), mask=pm)
    tl.store(base + 2 * plane, bl.to(ty), mask=pm)


@functools.cache
def _kernels():
    return jit_kernels(sys.modules[__name__], (_letterbox,), helpers=(_tap, _to_level))


def _max_taps(params: Tensor) -> tuple[int, int]:
    """Taps per axis the batch needs: 2 for bilinear, ceil(scale) + 1 for the widest area footprint."""
    ty = tx = 2
    for _, h, w, _, rh, rw, _, _ in params.tolist():
        if rw < w or rh < h:
            ty, tx = max(ty, -(-h // rh) + 1), max(tx, -(-w // rw) + 1)
    return ty, tx


def letterbox_kernel(
    src: Tensor, params: Tensor, out_h: int, out_w: int, dtype: torch.dtype, pad_value: int = PAD_VALUE
) -> Tensor:
    """Triton letterbox of the packed frames; same arguments and result as :func:`letterbox_reference`."""
    b = params.shape[0]
    out = torch.empty((b, 3, out_h, out_w), dtype=dtype, device=src.device)
    if b and out_h * out_w:
        ty, tx = _max_taps(params)
        block = program_block(BLOCK, src.device)
        grid = (cdiv(out_h * out_w, block), b)
        _kernels().letterbox[grid](src, params.to(src.device), out, out_h, out_w, ty, tx, pad_value, BLOCK=block)
    return out


def compile_specs() -> list[CompileSpec]:
    """The specialisations compiled ahead of time for sm_90 by the tests (fp16 and fp32 output)."""
    sig = {"src_ptr": "*u8", "params_ptr": "*i64", "OH": "i32", "OW": "i32", "TY": "i32", "TX": "i32", "PAD": "i32"}
    return [
        CompileSpec(f"letterbox_{ty}", _letterbox, {**sig, "out_ptr": f"*{ty}"}, {"BLOCK": BLOCK})
        for ty in ("fp16", "fp32")
    ]


# ---------------------------------------------------------------------------------------------- custom op
@torch.library.custom_op("cuda_ops::letterbox", mutates_args=())
def letterbox_op(src: Tensor, params: Tensor, out_h: int, out_w: int, dtype: torch.dtype, pad_value: int) -> Tensor:
    """Packed uint8 frames + per-image parameters -> ``(B, 3, out_h, out_w)`` letterboxed RGB in 0..1."""
    if kernel_runs_on(src.device):
        return letterbox_kernel(src, params, out_h, out_w, dtype, pad_value)
    return letterbox_reference(src, params, out_h, out_w, dtype, pad_value)


@letterbox_op.register_fake
def _(src: Tensor, params: Tensor, out_h: int, out_w: int, dtype: torch.dtype, pad_value: int) -> Tensor:
    return src.new_empty((params.shape[0], 3, out_h, out_w), dtype=dtype)


def letterbox_frames(
    frames: Sequence[Tensor] | Tensor,
    size: int | tuple[int, int],
    dtype: torch.dtype = torch.float16,
    pad_value: int = PAD_VALUE,
    scaleup: bool = True,
    center: bool = True,
    sizes: Sequence[tuple[int, int]] | None = None,
    impl: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Letterbox uint8 BGR frames into one model batch.

    Args:
        frames: a list of ``uint8 (h_i, w_i, 3)`` BGR tensors on one device, or one padded batch
            ``uint8 (B, Hmax, Wmax, 3)`` whose true frame sizes are ``sizes`` (default: the full frames).
        size: output ``(H, W)`` (an int means square).
        dtype: output dtype (fp16 or fp32).
        pad_value: padding level (0..255) of all three channels.
        scaleup: allow enlarging (False only shrinks, as validation does).
        center: centre the content (the project's letterbox) or put it top-left.

    Returns:
        ``images (Tensor[B, 3, H, W])`` RGB in 0..1 of ``dtype``, and ``meta (float32 Tensor[B, 4])`` on the same
        device: ``(r, pad_left, pad_top, r)``, so that ``original_xy = (letterboxed_xy - pad) / r``.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if dtype not in (torch.float16, torch.float32):
        raise ValueError(f"letterbox_frames: dtype must be float16 or float32, got {dtype}")
    if not 0 <= int(pad_value) <= 255:
        raise ValueError(f"letterbox_frames: pad_value must be 0..255, got {pad_value}")
    src, layout = pack_frames(frames, sizes)
    params, meta = letterbox_params(layout, (out_h, out_w), scaleup, center)
    params, meta = params.to(src.device), meta.to(src.device)
    if use_kernel("letterbox_frames", impl, src.device):
        return torch.ops.cuda_ops.letterbox(src, params, out_h, out_w, dtype, int(pad_value)), meta
    return letterbox_reference(src, params, out_h, out_w, dtype, int(pad_value)), meta
