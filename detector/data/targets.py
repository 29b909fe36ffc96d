"""``Targets``: the boxes of one sample while it is being augmented."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Targets:
    """Boxes travelling with an image through augmentation.

    Attributes:
        cls (ndarray[N] int64): class indices.
        boxes (ndarray[N, 4] float32): ``(x1, y1, x2, y2)`` pixels of the current image.
        ref_area (ndarray[N] float64): the area each box would have now had nothing been cropped away; the
            ratio ``area / ref_area`` says how much of the object is still visible.
    """

    cls: np.ndarray
    boxes: np.ndarray
    ref_area: np.ndarray

    @classmethod
    def of(cls_, cls: np.ndarray, boxes: np.ndarray) -> Targets:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        return cls_(np.asarray(cls, dtype=np.int64).reshape(-1), boxes, box_area(boxes).astype(np.float64))

    def __len__(self) -> int:
        return len(self.cls)

    def scaled(self, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> Targets:
        """Boxes under ``x -> sx * x + dx``, ``y -> sy * y + dy`` (a resize, shift or both)."""
        b = self.boxes * np.array([sx, sy, sx, sy], dtype=np.float32) + np.array([dx, dy, dx, dy], dtype=np.float32)
        return Targets(self.cls, b, self.ref_area * abs(sx * sy))

    def clipped(self, x1: float, y1: float, x2: float, y2: float) -> Targets:
        """Boxes cut to the window ``(x1, y1, x2, y2)`` (``ref_area`` keeps the uncut size)."""
        lo = np.array([x1, y1, x1, y1], dtype=self.boxes.dtype)
        hi = np.array([x2, y2, x2, y2], dtype=self.boxes.dtype)
        return Targets(self.cls, np.clip(self.boxes, lo, hi), self.ref_area)

    def select(self, keep: np.ndarray) -> Targets:
        return Targets(self.cls[keep], self.boxes[keep], self.ref_area[keep])

    @staticmethod
    def concat(parts: list[Targets]) -> Targets:
        return Targets(
            np.concatenate([p.cls for p in parts]).astype(np.int64),
            np.concatenate([p.boxes for p in parts]).astype(np.float32).reshape(-1, 4),
            np.concatenate([p.ref_area for p in parts]).astype(np.float64),
        )

    def usable(self, min_size: float, min_area_ratio: float) -> Targets:
        """Drop boxes narrower or lower than ``min_size`` px, or with less than ``min_area_ratio`` left visible."""
        w = self.boxes[:, 2] - self.boxes[:, 0]
        h = self.boxes[:, 3] - self.boxes[:, 1]
        keep = (w >= min_size) & (h >= min_size) & (w * h >= min_area_ratio * self.ref_area)
        return self.select(keep)


def box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
