"""Images -> model input, in numpy/OpenCV: letterbox, BGR -> RGB, 0..1 float CHW, batching.

The one letterbox of the project: ``detector`` (validation samples, ``Detector``) calls these functions too
(through ``detector.ops.letterbox``), so a model sees the same pixels in validation, in ``detector``
prediction and behind a deploy runner. The geometry comes from ``PreprocessSpec.plan`` (``deploy.contract``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from deploy.contract import LetterboxPlan, PreprocessSpec
from deploy.errors import DeployError

RatioPad = tuple[float, tuple[int, int]]


def apply_letterbox(img: np.ndarray, plan: LetterboxPlan, pad_value: int) -> np.ndarray:
    """Resize ``img (ndarray[H, W, C])`` to ``plan.resized`` (unless it already has that size) and pad it into
    ``plan.canvas``; area interpolation when shrinking, bilinear when enlarging."""
    (rh, rw), (ch, cw), (left, top) = plan.resized, plan.canvas, plan.pad
    if img.shape[:2] != (rh, rw):
        interp = cv2.INTER_AREA if plan.ratio < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (rw, rh), interpolation=interp)
    if (ch, cw) != (rh, rw):
        value = (int(pad_value),) * 3
        img = cv2.copyMakeBorder(img, top, ch - rh - top, left, cw - rw - left, cv2.BORDER_CONSTANT, value=value)
    return img


def letterbox(
    img: np.ndarray, spec: PreprocessSpec, canvas: tuple[int, int] | None = None
) -> tuple[np.ndarray, LetterboxPlan]:
    """Fit ``img (ndarray[H, W, C])`` into a model input as ``spec`` says; ``canvas`` (h, w) overrides the
    padded shape (a batch's common shape). Returns the letterboxed image and its ``LetterboxPlan``
    (``original = (letterboxed - plan.pad) / plan.ratio``)."""
    plan = spec.plan(img.shape[0], img.shape[1], canvas)
    return apply_letterbox(img, plan, spec.pad_value), plan


def letterbox_batch(
    images: Sequence[np.ndarray], spec: PreprocessSpec | int | tuple[int, int]
) -> tuple[np.ndarray, list[LetterboxPlan]]:
    """BGR ``uint8 (H_i, W_i, 3)`` images -> ``uint8 (B, 3, H, W)`` RGB letterboxed to one common shape (the
    largest of their own canvases with ``spec.auto``, else ``spec.size``), and each image's plan.

    A bare size instead of a spec means padding to exactly that size (what a fixed-size graph takes).
    """
    if not isinstance(spec, PreprocessSpec):
        spec = PreprocessSpec(spec, auto=False)
    if len(images) == 0:
        raise DeployError("preprocess: no images given")
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            what = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
            raise DeployError(f"preprocess: image {i} must be a uint8 BGR array of shape (H, W, 3), got {what}")
    canvas = spec.batch_canvas([im.shape[:2] for im in images])
    boxed, plans = zip(*(letterbox(im, spec, canvas) for im in images))
    batch = np.stack(boxed)[..., ::-1].transpose(0, 3, 1, 2)  # BGR HWC -> RGB CHW
    return np.ascontiguousarray(batch), list(plans)


def preprocess(
    images: Sequence[np.ndarray], spec: PreprocessSpec | int | tuple[int, int], dtype: np.dtype | str = np.float32
) -> tuple[np.ndarray, list[RatioPad], list[tuple[int, int]]]:
    """BGR ``uint8 (H_i, W_i, 3)`` images -> ``batch (ndarray[B, 3, H, W])`` RGB 0..1 of ``dtype``, letterboxed
    as ``spec`` says (``Runner.input_spec()`` gives a model's; a bare size pads to exactly that size).

    Also returns each image's ``(ratio, (padw, padh))`` and original ``(h0, w0)`` for
    ``postprocess.scale_boxes``. A ``uint8`` model input (a graph that normalises itself) gets the raw pixels.
    """
    batch, plans = letterbox_batch(images, spec)
    if np.dtype(dtype) == np.uint8:
        x = batch
    else:
        x = (batch.astype(np.float32) / np.float32(255)).astype(dtype, copy=False)  # float32 first, then narrow
    return x, [p.ratio_pad for p in plans], [im.shape[:2] for im in images]
