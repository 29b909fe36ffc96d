"""Training augmentation: ``AugmentConfig`` and the per-sample pipeline that applies it.

Order: mosaic (or letterbox) -> one random warp -> mixup -> drop boxes that became too small -> photometric
extras (albumentations: blur, median blur, gray, CLAHE, each with a small probability) -> HSV jitter -> flips.

Geometry is hand-written with OpenCV because it measured much faster than the albumentations equivalent:
with BCCD images at 640 on one core, albumentations ``Mosaic(target 2S) + Affine + CenterCrop`` ran at
35 img/s against 76 img/s for ``mosaic4`` + one ``warpAffine`` from the 2S canvas straight to S x S (the
albumentations version must warp the full 2S canvas). The warp is drawn before the canvas is built, so only
what it shows is built: for a warp that only zooms and shifts, the crop that one ``cv2.resize`` scales
(``resize_warp``, ``crop_resize``); otherwise the part of the full-size canvas ``warpAffine`` reads (a third of
it on average with ``scale`` 0.5; same pixels as the whole canvas). Photometric extras come from albumentations.

Every random draw comes from the ``numpy.random.Generator`` passed in, so a sample is a pure function of
``(seed, epoch, index)`` whatever worker computes it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import albumentations as A
import cv2
import numpy as np

from detector.config import Range, check_limits
from detector.data.batch_groups import draw_partners
from detector.data.crop_resize import crop_box, is_zoom_shift, paste, resize_crop
from detector.data.geometry import PAD_VALUE, source_window, warp, warp_matrix
from detector.data.mosaic import mixup, mosaic_centre, mosaic_into
from detector.data.targets import Targets
from detector.ops import PreprocessSpec
from detector.ops.letterbox import letterbox

Loader = Callable[[int], tuple[np.ndarray, Targets]]
"""``load(index) -> (image resized to the training size, its targets)``."""


@dataclass
class AugmentConfig:
    """Training augmentation settings (defaults: the YOLOv9 recipe for small models).

    Probabilities are in 0..1; ``hsv_*`` are gains (fractions); ``degrees``/``shear`` maximum angles;
    ``translate`` a fraction of the image size; ``scale`` 0.5 draws zoom factors in [0.5, 1.5];
    ``close_mosaic`` turns mosaic and mixup off for that many final epochs. ``mosaic_partners``: where mosaic
    and mixup take their other images from: ``batch`` (the sample's own training batch, so the worker building
    it decodes each image once; see ``detector/data/batch_groups.py``) or ``dataset`` (anywhere; up to four
    decodes per sample). ``resize_warp``: a warp that only zooms and shifts (``degrees``, ``shear``,
    ``perspective`` 0) is one crop and one ``cv2.resize``, 3-5x faster than ``cv2.warpAffine``, with zoom and
    shift rounded to whole source pixels (``detector/data/crop_resize.py``); False: always ``warpAffine``.
    ``min_box_size`` (px) and ``min_box_area`` (visible fraction) drop boxes that augmentation made degenerate.
    """

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    fliplr: float = 0.5
    flipud: float = 0.0
    mosaic: float = 1.0
    mixup: float = 0.0
    close_mosaic: int = 15
    mosaic_partners: Literal["batch", "dataset"] = "batch"
    resize_warp: bool = True
    blur: float = 0.01
    median_blur: float = 0.01
    to_gray: float = 0.01
    clahe: float = 0.01
    min_box_size: float = 2.0
    min_box_area: float = 0.1

    limits: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("fliplr", "flipud", "mosaic", "mixup", "blur", "median_blur", "to_gray", "clahe"), Range(0, 1)),
        **dict.fromkeys(("hsv_h", "hsv_s", "hsv_v", "degrees", "shear", "perspective", "close_mosaic"), Range(0)),
        "translate": Range(0, 1, open_high=True), "scale": Range(0, 1, open_high=True), "min_box_size": Range(0),
        "min_box_area": Range(0, 1),
    }  # fmt: skip

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all (training samples are only letterboxed)."""
        keep = ("min_box_size", "min_box_area", "mosaic_partners", "resize_warp")
        return cls(**{f.name: 0 for f in fields(cls) if f.name not in keep})


class TrainAugment:
    """The training pipeline of the module docstring, for output size ``imgsz`` (square) or a given shape."""

    def __init__(self, cfg: AugmentConfig, imgsz: int, bgr: bool = False) -> None:
        check_limits(cfg, "augment")
        self.cfg = cfg
        self.imgsz = imgsz
        self.bgr = bgr  # channel order of the images ``load`` returns (and of the output)
        self.extras = [
            (p, t)
            for p, t in (
                (cfg.blur, A.Blur(blur_limit=(3, 7), p=1.0)),
                (cfg.median_blur, A.MedianBlur(blur_limit=(3, 7), p=1.0)),
                (cfg.to_gray, A.ToGray(p=1.0)),
                (cfg.clahe, A.CLAHE(clip_limit=(1, 4), p=1.0)),
            )
            if p > 0
        ]

    def __call__(
        self,
        load: Loader,
        index: int,
        n: int,
        rng: np.random.Generator,
        *,
        mosaic: bool = True,
        shape: tuple[int, int] | None = None,
        pool: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Targets]:
        """One augmented ``(img (ndarray[H, W, 3]) uint8, targets)`` for dataset item ``index`` of ``n``, in the
        channel order of the loaded images (RGB, or BGR with ``bgr``); loaded images may be read-only.

        ``mosaic`` False (closed for the last epochs, or rectangular training) turns mosaic and mixup off;
        ``shape`` ``(h, w)`` overrides the square output (rectangular training batches); ``pool`` (dataset
        indices: the sample's batch) is where mosaic and mixup partners come from, None for anywhere in ``n``.
        """
        cfg = self.cfg
        out_shape = shape or (self.imgsz, self.imgsz)
        square = out_shape[0] == out_shape[1]
        img, t = self._geometric(load, index, n, rng, mosaic and square, out_shape, pool)
        if mosaic and cfg.mixup > 0 and rng.random() < cfg.mixup:
            other = self._geometric(load, draw_partners(index, n, 1, rng, pool)[0], n, rng, True, out_shape, pool)
            img, t = mixup((img, t), other, rng)
        for p, transform in self.extras:
            if rng.random() < p:
                transform.set_random_state(rng, random.Random(int(rng.integers(2**31))))
                img = self._in_rgb(transform, img)
        if not img.flags.writeable:  # a loaded image passed through unchanged (exact size, identity warp)
            img = img.copy()
        hsv_jitter(img, cfg.hsv_h, cfg.hsv_s, cfg.hsv_v, rng, bgr=self.bgr)
        if rng.random() < cfg.fliplr:
            img, t = flip_lr(img, t)
        if rng.random() < cfg.flipud:
            img, t = flip_ud(img, t)
        return img, t

    def _in_rgb(self, transform: A.BasicTransform, img: np.ndarray) -> np.ndarray:
        """Apply an albumentations transform (which assumes RGB: gray weights, CLAHE's colour space)."""
        if not self.bgr:
            return transform(image=img)["image"]
        out = transform(image=np.ascontiguousarray(img[..., ::-1]))["image"]
        return np.ascontiguousarray(out[..., ::-1])

    def _geometric(
        self,
        load: Loader,
        index: int,
        n: int,
        rng: np.random.Generator,
        mosaic: bool,
        out_shape: tuple[int, int],
        pool: np.ndarray | None,
    ) -> tuple[np.ndarray, Targets]:
        cfg = self.cfg
        parts = None  # the warp is drawn before the mosaic is built, so only what it shows is built
        if mosaic and cfg.mosaic > 0 and rng.random() < cfg.mosaic:
            parts = [load(index)] + [load(j) for j in draw_partners(index, n, 3, rng, pool)]
            centre = mosaic_centre(self.imgsz, rng)
            h = w = 2 * self.imgsz
        else:
            img, t = letterbox_sample(*load(index), out_shape)
            h, w = img.shape[:2]
        m = warp_matrix(
            (w / 2, h / 2),
            out_shape,
            rng,
            degrees=cfg.degrees,
            translate=cfg.translate,
            scale=cfg.scale,
            shear=cfg.shear,
            perspective=cfg.perspective,
        )
        if parts is not None:
            img, t = warp_mosaic(parts, self.imgsz, centre, m, out_shape, cfg.resize_warp)
        else:
            img, t = warp_image(img, t, m, out_shape, cfg.resize_warp)
        return img, t.usable(cfg.min_box_size, cfg.min_box_area)


def warp_mosaic(
    parts: list[tuple[np.ndarray, Targets]],
    size: int,
    centre: tuple[int, int],
    m: np.ndarray,
    out_shape: tuple[int, int],
    resize_warp: bool,
) -> tuple[np.ndarray, Targets]:
    """The mosaic of ``parts`` around ``centre`` (``mosaic4`` canvas, ``2 * size`` square) warped by ``m`` into
    ``out_shape``, building only the part of the canvas the warp shows: the crop a zoom-and-shift resizes
    (``resize_warp``), or the part of a full-size canvas ``warpAffine`` reads."""
    if resize_warp and is_zoom_shift(m):
        x1, y1, x2, y2 = box = crop_box(m, out_shape)
        crop = np.empty((y2 - y1, x2 - x1, 3), dtype=np.uint8)
        return resize_crop(crop, mosaic_into(crop, (x1, y1), parts, size, centre), box, out_shape)
    canvas = np.empty((2 * size, 2 * size, 3), dtype=np.uint8)
    x1, y1, x2, y2 = source_window(m, out_shape, canvas.shape[:2])
    t = mosaic_into(canvas[y1:y2, x1:x2], (x1, y1), parts, size, centre)
    return warp(canvas, t, m, out_shape)


def warp_image(
    img: np.ndarray, t: Targets, m: np.ndarray, out_shape: tuple[int, int], resize_warp: bool
) -> tuple[np.ndarray, Targets]:
    """``img`` and its boxes warped by ``m`` into ``out_shape``: a crop (a view when inside the image, else padded)
    and a resize for a zoom-and-shift with ``resize_warp``, else ``warp``."""
    if not (resize_warp and is_zoom_shift(m)):
        return warp(img, t, m, out_shape)
    x1, y1, x2, y2 = box = crop_box(m, out_shape)
    h, w = img.shape[:2]
    if x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h:
        crop = img[y1:y2, x1:x2]
    else:
        crop = np.full((y2 - y1, x2 - x1, 3), PAD_VALUE, dtype=np.uint8)
        paste(crop, (x1, y1), img, (0, 0))
    return resize_crop(crop, t, box, out_shape)


def letterbox_sample(img: np.ndarray, t: Targets, shape: tuple[int, int]) -> tuple[np.ndarray, Targets]:
    """Letterbox ``img`` into ``shape`` ``(h, w)`` and move its boxes with it."""
    out, plan = letterbox(img, PreprocessSpec(shape, auto=False))
    return out, t.scaled(plan.ratio, plan.ratio, *plan.pad)


def hsv_jitter(
    img: np.ndarray, hgain: float, sgain: float, vgain: float, rng: np.random.Generator, bgr: bool = False
) -> None:
    """Random hue/saturation/value gains on ``img (ndarray[H, W, 3])`` uint8 RGB (or BGR), in place, via lookup
    tables."""
    if not (hgain or sgain or vgain):
        return
    r = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    x = np.arange(256, dtype=np.float32)
    lut = np.empty((256, 1, 3), dtype=np.uint8)  # one table per channel, applied in a single pass
    lut[:, 0, 0] = (x * r[0]) % 180  # OpenCV's 8-bit hue runs 0..179
    lut[:, 0, 1] = np.clip(x * r[1], 0, 255)
    lut[:, 0, 2] = np.clip(x * r[2], 0, 255)
    to_hsv, from_hsv = (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR) if bgr else (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
    hsv = cv2.LUT(cv2.cvtColor(img, to_hsv), lut)
    cv2.cvtColor(hsv, from_hsv, dst=img)


def flip_lr(img: np.ndarray, t: Targets) -> tuple[np.ndarray, Targets]:
    """Mirror left-right; ``x -> w - x`` for the boxes."""
    w = img.shape[1]
    b = t.boxes.copy()
    b[:, [0, 2]] = w - t.boxes[:, [2, 0]]
    return cv2.flip(img, 1), Targets(t.cls, b, t.ref_area)


def flip_ud(img: np.ndarray, t: Targets) -> tuple[np.ndarray, Targets]:
    """Mirror top-bottom; ``y -> h - y`` for the boxes."""
    h = img.shape[0]
    b = t.boxes.copy()
    b[:, [1, 3]] = h - t.boxes[:, [3, 1]]
    return cv2.flip(img, 0), Targets(t.cls, b, t.ref_area)
