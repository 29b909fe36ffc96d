"""cuda_ops.letterbox_frames: geometry equal to the project's letterbox, pixels equal to cv2's (within one uint8
level) on real BCCD crops of odd sizes, kernel equal to reference, boxes restored exactly; opcheck."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
from cuda_ops_kit import CROPS, DEVICE, bccd_crop, needs_kernel

import cuda_ops
from cuda_ops.letterbox import letterbox_geometry, letterbox_kernel, letterbox_params, letterbox_reference, pack_frames
from deploy.contract import PreprocessSpec
from deploy.preprocess import letterbox as deploy_letterbox
from detector.ops.boxes import scale_boxes

SIZES = [(64, 80), (96, 96)]


def letterbox(img: np.ndarray, size: tuple[int, int], scaleup: bool = True) -> tuple[np.ndarray, float, tuple]:
    """The project's one letterbox (``deploy.preprocess``) padded to ``size``: image, ratio, (left, top)."""
    boxed, plan = deploy_letterbox(img, PreprocessSpec(size, auto=False, scaleup=scaleup))
    return boxed, plan.ratio, plan.pad


def cv2_batch(frames: list[np.ndarray], size: tuple[int, int]) -> tuple[torch.Tensor, list]:
    """The project's letterbox + RGB + /255 + CHW, per frame (the oracle)."""
    out, ratio_pads = [], []
    for f in frames:
        boxed, r, pad = letterbox(f, size)
        out.append(torch.from_numpy(cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255)
        ratio_pads.append((r, pad))
    return torch.stack(out), ratio_pads


def test_geometry_equals_project_letterbox() -> None:
    for (h, w), size, scaleup in itertools.product(
        [(37, 53), (480, 640), (101, 67), (64, 64), (1, 999)], SIZES + [(64, 64), (33, 97)], (True, False)
    ):
        r, rh, rw, top, left = letterbox_geometry(h, w, size, scaleup)
        img = np.zeros((h, w, 3), np.uint8)
        for fn in (letterbox,):
            boxed, r_ref, (left_ref, top_ref) = fn(img, size, scaleup=scaleup)
            assert (r, left, top) == (r_ref, left_ref, top_ref) and boxed.shape[:2] == size
            assert (size[0] - rh - top, size[1] - rw - left) == (size[0] - rh - top_ref, size[1] - rw - left_ref)


@pytest.mark.parametrize("size", SIZES)
def test_reference_equals_cv2_on_bccd(size) -> None:
    frames = [bccd_crop(*c)[0] for c in CROPS]
    ref, ratio_pads = cv2_batch(frames, size)
    got, meta = cuda_ops.letterbox_frames(frames, size, torch.float32, impl="reference")  # numpy frames
    diff = (got - ref).abs() * 255
    assert diff.max() <= 1.0 + 1e-3
    for i, (r, (pw, ph)) in enumerate(ratio_pads):
        assert meta[i].tolist() == pytest.approx([r, pw, ph, r], rel=1e-6)
        # enlarging: OpenCV's fixed-point bilinear, emulated bit for bit; shrinking (INTER_AREA, float): the same
        # level but for exact .5 ties that the order of float additions decides
        assert (diff[i] > 0.5).float().mean() < (1e-4 if r >= 1 else 5e-3)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_reference_and_cv2(dtype) -> None:
    crops = [bccd_crop(*c) for c in CROPS]
    frames = [torch.from_numpy(f).to(DEVICE) for f, _ in crops]
    for size, batch in ((SIZES[0], frames), (SIZES[1], frames[:1])):  # batch > 1 of mixed sizes, and batch 1
        src, layout = pack_frames(batch)
        params, _ = letterbox_params(layout, size)
        out = letterbox_kernel(src, params, *size, dtype)
        ref = letterbox_reference(src, params, *size, torch.float32)
        assert out.dtype == dtype and torch.isfinite(out).all()
        # float rounding ties may land one level apart; everything else is the same level
        level = (out.float() - ref).abs() * 255
        assert level.max() <= 1.0 + 0.5 and (level > 0.5).float().mean() < 1e-3
        oracle, _ = cv2_batch([f for f, _ in crops[: len(batch)]], size)
        level = (out.float().cpu() - oracle).abs() * 255
        assert level.max() <= 1.5 and (level > 0.5).float().mean() < 5e-3


@needs_kernel
def test_kernel_padded_batch_options() -> None:
    frames = [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8) for h, w in [(23, 41), (40, 17)]]
    padded = torch.zeros(2, 40, 41, 3, dtype=torch.uint8)
    for i, f in enumerate(frames):
        padded[i, : f.shape[0], : f.shape[1]] = f
    padded = padded.to(DEVICE)
    sizes = [tuple(f.shape[:2]) for f in frames]
    for kw in (dict(), dict(center=False), dict(scaleup=False), dict(pad_value=0)):
        got, meta = cuda_ops.letterbox_frames(padded, (48, 32), torch.float32, sizes=sizes, impl="kernel", **kw)
        ref, meta_ref = cuda_ops.letterbox_frames(frames, (48, 32), torch.float32, impl="reference", **kw)
        assert ((got.cpu() - ref).abs() * 255).max() <= 1.5 and torch.equal(meta.cpu(), meta_ref)
    _, meta = cuda_ops.letterbox_frames(frames, (48, 32), center=False, impl="reference")
    assert meta[:, 1:3].abs().sum() == 0
    low, _ = cuda_ops.letterbox_frames(frames, (48, 32), torch.float32, scaleup=False, impl="reference")
    pad = torch.tensor(114 / 255, dtype=torch.float32)
    # the 40x17 frame is not enlarged: content at rows 4..43, columns 7..23, padding around it
    assert (low[1, :, :, :7] == pad).all() and (low[1, :, :, 24:] == pad).all() and (low[1, :, :4] == pad).all()
    assert (low[1, :, 4:44, 7:24] != pad).float().mean() > 0.9


def test_boxes_restore_exactly_on_bccd() -> None:
    """A box mapped into the letterboxed frame with meta, and back with the project's scale_boxes, is unchanged:
    GPU pre-processing never shifts boxes."""
    for crop, size in itertools.product(CROPS, SIZES):
        frame, boxes = bccd_crop(*crop)
        assert len(boxes), f"no boxes in crop {crop}"
        _, meta = cuda_ops.letterbox_frames([torch.from_numpy(frame)], size, impl="reference")
        r, pw, ph, _ = meta[0].double().tolist()
        _, r_ref, pad_ref = letterbox(frame, size)
        boxed = torch.from_numpy(boxes).double() * r + torch.tensor([pw, ph, pw, ph], dtype=torch.float64)
        back = scale_boxes(boxed, (r_ref, pad_ref), frame.shape[:2])
        torch.testing.assert_close(back, torch.from_numpy(boxes).double(), rtol=0, atol=1e-4)


def test_bad_frames_name_the_frame() -> None:
    with pytest.raises(ValueError, match="frame 1 must be a uint8 BGR tensor"):
        cuda_ops.letterbox_frames([torch.zeros(4, 4, 3, dtype=torch.uint8), torch.zeros(4, 4, 3)], 32)
    with pytest.raises(ValueError, match="no frames"):
        cuda_ops.letterbox_frames([], 32)
    with pytest.raises(ValueError, match="sizes"):
        cuda_ops.letterbox_frames(torch.zeros(1, 4, 4, 3, dtype=torch.uint8), 32, sizes=[(5, 4)])


def test_opcheck() -> None:
    frames = [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8) for h, w in [(9, 14), (20, 7)]]
    src, layout = pack_frames([f.to(DEVICE) for f in frames])
    params, _ = letterbox_params(layout, (16, 24))
    torch.library.opcheck(torch.ops.cuda_ops.letterbox.default, (src, params.to(DEVICE), 16, 24, torch.float16, 114))
