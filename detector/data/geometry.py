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
        if not (_close(m[:2], np.eye(2, 3)) and img.shape[:2] == (oh, ow)):
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
    inv = cv2.invertAffineTransform(m[:2])
    corners = np.array([[0, 0, 1], [ow - 1, 0, 1], [0, oh - 1, 1], [ow - 1, oh - 1, 1]], dtype=np.float64) @ inv.T
    (x1, y1), (x2, y2) = np.floor(corners.min(0)) - margin, np.ceil(corners.max(0)) + margin + 1
    x1, y1 = int(min(max(x1, 0), iw - 1)), int(min(max(y1, 0), ih - 1))
    return x1, y1, int(min(max(x2, x1 + 1), iw)), int(min(max(y2, y1 + 1), ih))


def _close(a: np.ndarray, b) -> bool:
    """``np.allclose(a, b)`` (same tolerances) without its overhead, for the few tiny arrays of one warp."""
    b = np.asarray(b, dtype=np.float64)
    return bool(np.all(np.abs(a - b) <= 1e-8 + 1e-5 * np.abs(b)))


def transform_targets(targets: Targets, m: np.ndarray) -> Targets:
    """Boxes under the 3x3 matrix ``m``: corners mapped, enclosing box taken, ``ref_area`` scaled by |det|."""
    n = len(targets)
    if n == 0:
        return targets
    b = targets.boxes.astype(np.float64)
    corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1).reshape(-1, 2)  # (4N, 2)
    xyz = np.concatenate([corners, np.ones((4 * n, 1))], axis=1) @ m.T
    xy = (xyz[:, :2] / xyz[:, 2:3]).reshape(n, 4, 2)
    boxes = np.concatenate([xy.min(1), xy.max(1)], axis=1).astype(np.float32)
    area_scale = abs(np.linalg.det(m[:2, :2]))
    return Targets(targets.cls, boxes, targets.ref_area * area_scale)
