"""Images -> model input, in numpy/OpenCV: letterbox, BGR -> RGB, 0..1 float CHW, batching.

``letterbox`` is the numpy twin of ``detector.data.letterbox.letterbox`` (a test checks they agree), so a model
sees the same pixels in training, in ``detector`` prediction and behind a deploy runner.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from deploy.errors import DeployError

PAD_VALUE = 114
RatioPad = tuple[float, tuple[int, int]]


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    stride: int = 32,
    auto: bool = False,
    scaleup: bool = True,
    color: int | tuple[int, int, int] = PAD_VALUE,
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize ``img (ndarray[H, W, C])`` keeping its aspect ratio and pad it to ``new_shape`` (H, W).

    ``auto=True`` pads only up to the next multiple of ``stride`` (rectangular inference); ``scaleup=False``
    never enlarges. Shrinking uses area interpolation, enlarging bilinear. Returns ``(img, ratio, (padw,
    padh))``: the left/top padding in whole pixels, so ``original = (letterboxed - pad) / ratio``.
    """
    h0, w0 = img.shape[:2]
    nh, nw = (new_shape, new_shape) if isinstance(new_shape, int) else (int(new_shape[0]), int(new_shape[1]))
    r = min(nh / h0, nw / w0)
    if not scaleup:
        r = min(r, 1.0)
    rw, rh = max(1, round(w0 * r)), max(1, round(h0 * r))
    dw, dh = nw - rw, nh - rh
    if auto:
        dw, dh = dw % stride, dh % stride
    if (rw, rh) != (w0, h0):
        img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    left, top = dw // 2, dh // 2
    if dw or dh:
        value = (color,) * 3 if isinstance(color, int) else tuple(color)
        img = cv2.copyMakeBorder(img, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=value)
    return img, r, (left, top)


def to_tensor_layout(img_rgb: np.ndarray, dtype: np.dtype | str = np.float32) -> np.ndarray:
    """``uint8 (H, W, 3)`` RGB -> ``(3, H, W)`` in 0..1 of ``dtype``; for a ``uint8`` model input (one that
    normalises inside its graph) the raw pixels 0..255."""
    if np.dtype(dtype) == np.uint8:
        return np.ascontiguousarray(img_rgb.transpose(2, 0, 1))
    chw = np.ascontiguousarray(img_rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
    return chw.astype(dtype, copy=False)  # divide in float32 first, as the torch side does, then narrow


def preprocess(
    images: Sequence[np.ndarray],
    imgsz: int | tuple[int, int],
    stride: int = 32,
    dtype: np.dtype | str = np.float32,
) -> tuple[np.ndarray, list[RatioPad], list[tuple[int, int]]]:
    """BGR ``uint8 (H_i, W_i, 3)`` images -> ``batch (ndarray[B, 3, H, W])`` RGB 0..1 of ``dtype``.

    Every image is letterboxed to the same ``imgsz`` so they stack into one batch. Also returns each image's
    ``(ratio, (padw, padh))`` and original ``(h0, w0)`` for ``postprocess.scale_boxes``.
    """
    if len(images) == 0:
        raise DeployError("preprocess: no images given")
    batch, ratio_pads, shapes = [], [], []
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            what = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
            raise DeployError(f"preprocess: image {i} must be a uint8 BGR array of shape (H, W, 3), got {what}")
        boxed, ratio, pad = letterbox(im, imgsz, stride=stride, auto=False)
        batch.append(to_tensor_layout(cv2.cvtColor(boxed, cv2.COLOR_BGR2RGB), dtype))
        ratio_pads.append((ratio, pad))
        shapes.append(im.shape[:2])
    return np.stack(batch), ratio_pads, shapes
