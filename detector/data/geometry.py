"""Random geometric warp (scale, translation, rotation, shear, perspective) as one matrix and one resampling.

All five are composed into a single 3x3 matrix and applied with one ``cv2.warpAffine`` (or
``warpPerspective`` when perspective is on), so the image is interpolated once. Boxes are moved by mapping
their four corners and taking the enclosing axis-aligned box, which is exact for scale/translation/flip and
encloses the object under rotation and shear.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from detector.data.targets import Targets

PAD_VALUE = 114


def warp_matrix(
    in_center: tuple[float, float],
    out_shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    perspective: float = 0.0,
) -> np.ndarray:
    """A random 3x3 matrix taking ``in_center`` ``(x, y)`` near the centre of an ``out_shape`` ``(h, w)`` image.

    ``scale`` 0.5 draws a zoom in [0.5, 1.5]; ``translate`` 0.1 moves by up to 10 % of the output size;
    ``degrees`` and ``shear`` are maximum angles; ``perspective`` the largest projective coefficient.
    """
    oh, ow = out_shape
    center = np.eye(3)
    center[:2, 2] = -in_center[0], -in_center[1]
    persp = np.eye(3)
    persp[2, :2] = rng.uniform(-perspective, perspective, 2)
    rot = np.eye(3)
    angle, zoom = rng.uniform(-degrees, degrees), rng.uniform(1 - scale, 1 + scale)
    rot[:2] = cv2.getRotationMatrix2D((0, 0), angle, zoom)
    sh = np.eye(3)
    sh[0, 1], sh[1, 0] = (math.tan(math.radians(a)) for a in rng.uniform(-shear, shear, 2))
    move = np.eye(3)
    move[:2, 2] = rng.uniform(0.5 - translate, 0.5 + translate, 2) * (ow, oh)
    return move @ sh @ rot @ persp @ center


def warp(img: np.ndarray, targets: Targets, m: np.ndarray, out_shape: tuple[int, int]) -> tuple[np.ndarray, Targets]:
    """Apply ``m (ndarray[3, 3])`` to ``img`` and its boxes; output ``out_shape`` ``(h, w)``, boxes clipped to it."""
    oh, ow = out_shape
    border = (PAD_VALUE,) * 3
    if _close(m[2], (0, 0, 1)):
        if not (_close(m[:2], (1, 0, 0, 0, 1, 0)) and img.shape[:2] == (oh, ow)):
            img = cv2.warpAffine(img, m[:2], (ow, oh), flags=cv2.INTER_LINEAR, borderValue=border)
    else:
        img = cv2.warpPerspective(img, m, (ow, oh), flags=cv2.INTER_LINEAR, borderValue=border)
    return img, transform_targets(targets, m).clipped(0, 0, ow, oh)


def source_window(
    m: np.ndarray, out_shape: tuple[int, int], in_shape: tuple[int, int], margin: int = 2
) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)``: the part of an ``in_shape`` ``(h, w)`` image that ``warp`` by the affine ``m`` into
    ``out_shape`` reads (bilinear neighbours and ``margin`` pixels more), clipped to the image; the whole image
    for a perspective ``m`` (the inverse image of the output need not be bounded by its corners there)."""
    ih, iw = in_shape
    if not _close(m[2], (0, 0, 1)):
        return 0, 0, iw, ih
    oh, ow = out_shape
    (a, b, c), (d, e, f) = m[:2].tolist()  # plain floats: a handful of scalar operations, no numpy overhead
    det = a * e - b * d
    if det == 0:
        return 0, 0, iw, ih
    xs, ys = [], []
    for x, y in ((0, 0), (ow - 1, 0), (0, oh - 1), (ow - 1, oh - 1)):  # output corners -> source
        xs.append((e * (x - c) - b * (y - f)) / det)
        ys.append((a * (y - f) - d * (x - c)) / det)
    x1 = min(max(math.floor(min(xs)) - margin, 0), iw - 1)
    y1 = min(max(math.floor(min(ys)) - margin, 0), ih - 1)
    x2 = min(max(math.ceil(max(xs)) + margin + 1, x1 + 1), iw)
    y2 = min(max(math.ceil(max(ys)) + margin + 1, y1 + 1), ih)
    return x1, y1, x2, y2


def _close(a: np.ndarray, b: tuple[float, ...]) -> bool:
    """``np.allclose(a, b)`` (same tolerances) for a tiny array and the flat values ``b``, on plain floats."""
    return all(abs(x - y) <= 1e-8 + 1e-5 * abs(y) for x, y in zip(a.ravel().tolist(), b, strict=True))


def transform_targets(targets: Targets, m: np.ndarray) -> Targets:
    """Boxes under the 3x3 matrix ``m``: corners mapped, enclosing box taken, ``ref_area`` scaled by |det|."""
    n = len(targets)
    if n == 0:
        return targets
    (a, b01, c), (b10, e, f), persp = m.tolist()
    if b01 == 0 and b10 == 0 and persp == [0, 0, 1]:
        # scale and shift only (no rotation, shear or perspective): the mapped box is its own enclosing box
        mapped = targets.boxes.astype(np.float64) * np.array([a, e, a, e]) + np.array([c, f, c, f])
        lo, hi = np.minimum(mapped[:, :2], mapped[:, 2:]), np.maximum(mapped[:, :2], mapped[:, 2:])
        return Targets(targets.cls, np.concatenate([lo, hi], axis=1).astype(np.float32), targets.ref_area * abs(a * e))
    b = targets.boxes.astype(np.float64)
    corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1).reshape(-1, 2)  # (4N, 2)
    xyz = np.concatenate([corners, np.ones((4 * n, 1))], axis=1) @ m.T
    xy = (xyz[:, :2] / xyz[:, 2:3]).reshape(n, 4, 2)
    boxes = np.concatenate([xy.min(1), xy.max(1)], axis=1).astype(np.float32)
    area_scale = abs(np.linalg.det(m[:2, :2]))
    return Targets(targets.cls, boxes, targets.ref_area * area_scale)
