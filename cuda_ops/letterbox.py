"""Fused input: uint8 HWC BGR frames of any sizes -> letterboxed RGB CHW in 0..1 (fp16/fp32), one kernel.

The geometry is the project's letterbox (``deploy/preprocess.py``), computed on
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

import numpy as np
import torch
from torch import Tensor

from cuda_ops._triton import CompileSpec, cdiv, jit_kernels, program_block
from cuda_ops.availability import kernel_runs_on, use_kernel

tl = None  # triton.language, bound on first kernel use (see cuda_ops._triton)

BLOCK = 256  # output pixels per program
PAD_VALUE = 114
COEF_SCALE = 2048  # OpenCV's INTER_LINEAR weights for uint8: 11-bit fixed point (INTER_RESIZE_COEF_BITS)
AREA_MIN_OVERLAP = 1e-3  # cv2 INTER_AREA ignores a partial source pixel covering this little of a footprint
N_PARAMS = 10  # per image: offset, h, w, row_stride, rh, rw, top, left, taps_y, taps_x


def letterbox_geometry(
    h: int, w: int, size: tuple[int, int], scaleup: bool = True, center: bool = True
) -> tuple[float, int, int, int, int]:
    """``(r, rh, rw, top, left)`` of an ``h x w`` frame letterboxed into ``size = (H, W)``.

    The same arithmetic as ``deploy.preprocess.letterbox`` (``auto=False``); ``center=False`` puts the
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

    ``frames``: a list of ``uint8 (h_i, w_i, 3)`` tensors or numpy arrays (concatenated into one buffer), or one
    padded batch ``uint8 (B, Hmax, Wmax, 3)`` (used in place) whose true sizes are ``sizes`` (default: the full
    frame).
    """
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = torch.from_numpy(frames)
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
    frames = [torch.from_numpy(f) if isinstance(f, np.ndarray) else f for f in frames]
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
    """Per-image kernel parameters ``int64 (B, 10)`` and ``meta float32 (B, 4) = (r, left, top, r)`` (CPU)."""
    params, meta = [], []
    for offset, h, w, stride in layout:
        r, rh, rw, top, left = letterbox_geometry(h, w, size, scaleup, center)
        params.append((offset, h, w, stride, rh, rw, top, left, *_taps_per_axis(h, w, rh, rw)))
        meta.append((r, left, top, r))
    return torch.tensor(params, dtype=torch.int64), torch.tensor(meta, dtype=torch.float32)


def _taps_per_axis(h: int, w: int, rh: int, rw: int) -> tuple[int, int]:
    """Source taps per output pixel and axis: 2 for bilinear, ceil(scale) + 1 for an area footprint."""
    if rw < w or rh < h:
        return -(-h // rh) + 1, -(-w // rw) + 1
    return 2, 2


def _area_weights(n_src: int, n_dst: int) -> Tensor:
    """``float64 (n_dst, n_src)``: OpenCV's INTER_AREA weights, the overlap of source pixel ``[s, s+1)`` with the
    footprint ``[d * scale, (d + 1) * scale)`` over the footprint's in-image width (slivers dropped)."""
    scale = n_src / n_dst
    d = torch.arange(n_dst, dtype=torch.float64)[:, None]
    s = torch.arange(n_src, dtype=torch.float64)[None, :]
    lo, hi = d * scale, (d + 1) * scale
    overlap = torch.minimum(s + 1, hi) - torch.maximum(s, lo)
    overlap = torch.where(overlap > AREA_MIN_OVERLAP, overlap, 0)  # OpenCV drops slivers, unrenormalised
    return overlap / torch.clamp(n_src - lo, max=scale)


def _linear_coeffs(n_src: int, n_dst: int, clamp_frac: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """OpenCV's INTER_LINEAR taps along one axis: source indices ``i0, i1`` and 11-bit weights ``c0, c1``.

    Pixel centres ``f = (d + 0.5) * scale - 0.5`` (double, then float32, as OpenCV); columns (``clamp_frac``)
    outside the first/last centre take the border pixel with weight 1, rows keep their fraction and read the
    border row twice, which differs after OpenCV's fixed-point rounding.
    """
    f = ((torch.arange(n_dst, dtype=torch.float64) + 0.5) * (n_src / n_dst) - 0.5).float()
    i0 = f.floor()
    frac = f - i0
    if clamp_frac:
        frac = torch.where((i0 < 0) | (i0 >= n_src - 1), torch.zeros_like(frac), frac)
        i0 = i0.clamp(0, n_src - 1)
    c1, c0 = (frac * COEF_SCALE).round().long(), ((1 - frac) * COEF_SCALE).round().long()  # half to even
    i0 = i0.long()
    return i0.clamp(0, n_src - 1), (i0 + 1).clamp(0, n_src - 1), c0, c1


def _bilinear_reference(img: Tensor, rh: int, rw: int) -> Tensor:
    """``uint8 (h, w, 3)`` -> ``(rh, rw, 3)`` int levels exactly as cv2.resize INTER_LINEAR (its SIMD rounding):
    horizontal sums with 11-bit weights, then ``((h0 >> 4) * c0 >> 16) + ((h1 >> 4) * c1 >> 16) + 2 >> 2``."""
    h, w, _ = img.shape
    x0, x1, a0, a1 = (t.to(img.device) for t in _linear_coeffs(w, rw, clamp_frac=True))
    y0, y1, b0, b1 = (t.to(img.device) for t in _linear_coeffs(h, rh, clamp_frac=False))
    s = img.long()
    hsum = s[:, x0] * a0[None, :, None] + s[:, x1] * a1[None, :, None]  # (h, rw, 3)
    v = ((hsum[y0] >> 4) * b0[:, None, None] >> 16) + ((hsum[y1] >> 4) * b1[:, None, None] >> 16)
    return ((v + 2) >> 2).clamp(0, 255)


def letterbox_reference(
    src: Tensor, params: Tensor, out_h: int, out_w: int, dtype: torch.dtype, pad_value: int = PAD_VALUE
) -> Tensor:
    """Pure-PyTorch twin of the kernel: OpenCV's resize, pad, BGR->RGB, /255.

    ``src``: flat uint8 buffer; ``params int64 (B, 10)`` from :func:`letterbox_params`. Returns ``(B, 3, H, W)``.
    """
    out = torch.full((params.shape[0], 3, out_h, out_w), pad_value / 255.0, dtype=torch.float32, device=src.device)
    for i, (offset, h, w, stride, rh, rw, top, left, _, _) in enumerate(params.tolist()):
        img = src[offset : offset + h * stride].view(h, stride)[:, : w * 3].reshape(h, w, 3)
        if rw < w or rh < h:  # shrinking: INTER_AREA in float, separable
            resized = (
                _area_weights(h, rh).to(src.device)
                @ img.permute(2, 0, 1).double()
                @ _area_weights(w, rw).to(src.device).t()
            )
            # whole uint8 levels as cv2 stores them: half to even, but half up in OpenCV's exact 2x2 area path
            resized = (resized + 0.5).floor() if (h, w) == (2 * rh, 2 * rw) else resized.round()
        else:  # enlarging (or same size): INTER_LINEAR in OpenCV's fixed point
            resized = _bilinear_reference(img, rh, rw).permute(2, 0, 1).double()
        resized = resized.clamp(0, 255)
        out[i, :, top : top + rh, left : left + rw] = resized.flip(0).float() / 255.0
    return out.to(dtype)


# ---------------------------------------------------------------------------------------------------- kernels
def _area_tap(d, i, n_src, n_dst):
    """INTER_AREA: source index and weight of tap ``i`` of destination indices ``d`` along one axis."""
    scale = n_src.to(tl.float32) / n_dst.to(tl.float32)
    lo = d.to(tl.float32) * scale
    idx = tl.floor(lo).to(tl.int32) + i
    ovl = tl.minimum(idx.to(tl.float32) + 1.0, lo + scale) - tl.maximum(idx.to(tl.float32), lo)
    ovl = tl.where(ovl > 1e-3, ovl, 0.0)  # AREA_MIN_OVERLAP: OpenCV drops slivers, unrenormalised
    wgt = ovl / tl.maximum(tl.minimum(n_src.to(tl.float32) - lo, scale), 1e-6)
    return tl.minimum(idx, n_src - 1), tl.where(idx < n_src, wgt, 0.0)


def _rint(v):
    """Round half to even (as OpenCV's saturate_cast)."""
    r = tl.floor(v + 0.5)
    return tl.where((r - v == 0.5) & (r - 2.0 * tl.floor(r * 0.5) == 1.0), r - 1.0, r)


def _linear_taps(d, n_src, n_dst, CLAMP_FRAC: tl.constexpr):
    """INTER_LINEAR taps of destination indices ``d``: see the reference ``_linear_coeffs``."""
    f = ((d.to(tl.float64) + 0.5) * (n_src.to(tl.float64) / n_dst.to(tl.float64)) - 0.5).to(tl.float32)
    fl = tl.floor(f)
    frac = f - fl
    i0 = fl.to(tl.int32)
    if CLAMP_FRAC:
        frac = tl.where((i0 < 0) | (i0 >= n_src - 1), 0.0, frac)
    c1 = _rint(frac * 2048.0).to(tl.int32)
    c0 = _rint((1.0 - frac) * 2048.0).to(tl.int32)
    i1 = tl.minimum(tl.maximum(i0 + 1, 0), n_src - 1)
    return tl.minimum(tl.maximum(i0, 0), n_src - 1), i1, c0, c1


def _bilinear(row0, row1, x0, x1, a0, a1, b0, b1, m, ch):
    """One channel of OpenCV's fixed-point bilinear resize (SIMD rounding), as a float level."""
    h0 = tl.load(row0 + x0 * 3 + ch, mask=m, other=0).to(tl.int32) * a0
    h0 += tl.load(row0 + x1 * 3 + ch, mask=m, other=0).to(tl.int32) * a1
    h1 = tl.load(row1 + x0 * 3 + ch, mask=m, other=0).to(tl.int32) * a0
    h1 += tl.load(row1 + x1 * 3 + ch, mask=m, other=0).to(tl.int32) * a1
    v = (((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16)
    return tl.minimum(tl.maximum((v + 2) >> 2, 0), 255).to(tl.float32)


def _to_level(v, half_up):
    """Round an area average to a whole uint8 level, clamped to 0..255, as cv2.resize stores it: half to even,
    except half up in OpenCV's exact 2x2 area path."""
    r = tl.where(half_up != 0, tl.floor(v + 0.5), _rint(v))
    return tl.minimum(tl.maximum(r, 0.0), 255.0)


def _letterbox(src_ptr, params_ptr, out_ptr, OH, OW, PAD, NP: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (cdiv(OH*OW, BLOCK), B): one block of output pixels of image ``b``, all three channels."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    prm = params_ptr + b * NP
    offset = tl.load(prm + 0)
    h = tl.load(prm + 1).to(tl.int32)
    w = tl.load(prm + 2).to(tl.int32)
    stride = tl.load(prm + 3)
    rh = tl.load(prm + 4).to(tl.int32)
    rw = tl.load(prm + 5).to(tl.int32)
    top = tl.load(prm + 6).to(tl.int32)
    left = tl.load(prm + 7).to(tl.int32)
    taps_y = tl.load(prm + 8).to(tl.int32)
    taps_x = tl.load(prm + 9).to(tl.int32)
    area = (rw < w) | (rh < h)
    p = pid * BLOCK + tl.arange(0, BLOCK)
    pm = p < OH * OW
    cy = p // OW - top
    cx = p % OW - left
    inside = pm & (cy >= 0) & (cy < rh) & (cx >= 0) & (cx < rw)
    if area:  # shrinking: INTER_AREA, float weights over the footprint
        acc_b = tl.zeros((BLOCK,), dtype=tl.float32)
        acc_g = tl.zeros((BLOCK,), dtype=tl.float32)
        acc_r = tl.zeros((BLOCK,), dtype=tl.float32)
        for i in range(0, taps_y):
            sy, wy = _area_tap(cy, i, h, rh)
            row = src_ptr + offset + sy.to(tl.int64) * stride
            for j in range(0, taps_x):
                sx, wx = _area_tap(cx, j, w, rw)
                wgt = wy * wx
                m = inside & (wgt > 0.0)
                px = row + sx * 3
                acc_b += wgt * tl.load(px, mask=m, other=0).to(tl.float32)
                acc_g += wgt * tl.load(px + 1, mask=m, other=0).to(tl.float32)
                acc_r += wgt * tl.load(px + 2, mask=m, other=0).to(tl.float32)
        half_up = ((h == 2 * rh) & (w == 2 * rw)).to(tl.int32)
        lv_r = _to_level(acc_r, half_up)
        lv_g = _to_level(acc_g, half_up)
        lv_b = _to_level(acc_b, half_up)
    else:  # enlarging: INTER_LINEAR in OpenCV's 11-bit fixed point
        x0, x1, a0, a1 = _linear_taps(cx, w, rw, True)
        y0, y1, b0, b1 = _linear_taps(cy, h, rh, False)
        row0 = src_ptr + offset + y0.to(tl.int64) * stride
        row1 = src_ptr + offset + y1.to(tl.int64) * stride
        lv_r = _bilinear(row0, row1, x0, x1, a0, a1, b0, b1, inside, 2)
        lv_g = _bilinear(row0, row1, x0, x1, a0, a1, b0, b1, inside, 1)
        lv_b = _bilinear(row0, row1, x0, x1, a0, a1, b0, b1, inside, 0)
    pad = PAD.to(tl.float32)
    r = tl.where(inside, lv_r, pad) / 255.0
    g = tl.where(inside, lv_g, pad) / 255.0
    bl = tl.where(inside, lv_b, pad) / 255.0
    plane = OH * OW
    base = out_ptr + b.to(tl.int64) * 3 * plane + p
    ty = out_ptr.dtype.element_ty
    tl.store(base, r.to(ty), mask=pm)
    tl.store(base + plane, g.to(ty), mask=pm)
    tl.store(base + 2 * plane, bl.to(ty), mask=pm)


@functools.cache
def _kernels():
    return jit_kernels(
        sys.modules[__name__], (_letterbox,), helpers=(_area_tap, _rint, _linear_taps, _bilinear, _to_level)
    )


def letterbox_kernel(
    src: Tensor, params: Tensor, out_h: int, out_w: int, dtype: torch.dtype, pad_value: int = PAD_VALUE
) -> Tensor:
    """Triton letterbox of the packed frames; same arguments and result as :func:`letterbox_reference`."""
    b = params.shape[0]
    out = torch.empty((b, 3, out_h, out_w), dtype=dtype, device=src.device)
    if b and out_h * out_w:
        block = program_block(BLOCK, src.device)
        grid = (cdiv(out_h * out_w, block), b)
        params = params.to(src.device)  # the kernel reads it; a no-op when the caller keeps it there
        _kernels().letterbox[grid](src, params, out, out_h, out_w, pad_value, NP=N_PARAMS, BLOCK=block)
    return out


def compile_specs() -> list[CompileSpec]:
    """The specialisations compiled ahead of time for sm_90 by the tests (fp16 and fp32 output)."""
    sig = {"src_ptr": "*u8", "params_ptr": "*i64", "OH": "i32", "OW": "i32", "PAD": "i32"}
    return [
        CompileSpec(
            f"letterbox_{ty}",
            _letterbox,
            {**sig, "out_ptr": f"*{ty}"},
            {"NP": N_PARAMS, "BLOCK": BLOCK},
            4,
            ("OH", "OW"),
        )
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


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """Host -> CUDA through pinned memory without blocking the host; anything else as ``.to``."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def letterbox_frames(
    frames: Sequence[Tensor] | Tensor,
    size: int | tuple[int, int],
    dtype: torch.dtype = torch.float16,
    pad_value: int = PAD_VALUE,
    scaleup: bool = True,
    center: bool = True,
    sizes: Sequence[tuple[int, int]] | None = None,
    device: str | torch.device | None = None,
    impl: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Letterbox uint8 BGR frames into one model batch.

    Args:
        frames: a list of ``uint8 (h_i, w_i, 3)`` BGR tensors (on one device) or numpy arrays, or one padded
            batch ``uint8 (B, Hmax, Wmax, 3)`` whose true frame sizes are ``sizes`` (default: the full frames).
        size: output ``(H, W)`` (an int means square).
        dtype: output dtype (fp16 or fp32).
        pad_value: padding level (0..255) of all three channels.
        scaleup: allow enlarging (False only shrinks, as validation does).
        center: centre the content (the project's letterbox) or put it top-left.
        device: where to letterbox (default: where the frames are); host frames are packed into one pinned
            buffer and sent in one asynchronous copy, so only uint8 bytes cross the bus.

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
    device = src.device if device is None else torch.device(device)
    src, params, meta = (_to_device(t, device) for t in (src, params, meta))
    if use_kernel("letterbox_frames", impl, src.device):
        return torch.ops.cuda_ops.letterbox(src, params, out_h, out_w, dtype, int(pad_value)), meta
    return letterbox_reference(src, params, out_h, out_w, dtype, int(pad_value)), meta
