"""``Boxes``: the detections of one image in the shape Ultralytics users know (``r.boxes.xyxy``, ``.conf``, ``.cls``).

Backed by one ``(N, 6)`` float32 numpy array ``x1, y1, x2, y2, conf, cls`` in original-image pixels, so every
view is a cheap slice and indexing returns ``Boxes`` again. There is no torch tensor inside: ``.numpy()`` and
``.cpu()`` return the object itself, so code written for either library's habits keeps working.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


class Boxes:
    """Detections of one image.

    Args:
        data (ndarray[N, 6]): x1, y1, x2, y2 (pixels of the original image), confidence, class id.
        orig_shape: (height, width) of the original image, for the normalised views.
    """

    def __init__(self, data: np.ndarray, orig_shape: tuple[int, int]) -> None:
        data = np.asarray(data, dtype=np.float32)
        if data.ndim == 1:
            data = data.reshape(-1, 6)
        if data.ndim != 2 or data.shape[1] != 6:
            raise ValueError(f"Boxes: expected an (N, 6) array of x1, y1, x2, y2, conf, cls, got {data.shape}")
        self.data = data
        self.orig_shape = (int(orig_shape[0]), int(orig_shape[1]))

    @classmethod
    def from_parts(cls, xyxy: Any, conf: Any, classes: Any, orig_shape: tuple[int, int]) -> Boxes:
        """From ``xyxy (N, 4)``, ``conf (N,)`` and ``classes (N,)``."""
        xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        conf = np.asarray(conf, dtype=np.float32).reshape(-1, 1)
        classes = np.asarray(classes, dtype=np.float32).reshape(-1, 1)
        if not len(xyxy) == len(conf) == len(classes):
            raise ValueError(f"Boxes: {len(xyxy)} boxes, {len(conf)} scores and {len(classes)} classes differ")
        return cls(np.concatenate((xyxy, conf, classes), 1), orig_shape)

    # -- views -----------------------------------------------------------------------------------------------------
    @property
    def xyxy(self) -> np.ndarray:
        """(N, 4) corners x1, y1, x2, y2 in pixels."""
        return self.data[:, :4]

    @property
    def conf(self) -> np.ndarray:
        """(N,) confidence in 0..1."""
        return self.data[:, 4]

    @property
    def cls(self) -> np.ndarray:
        """(N,) class ids as float32 (the ``data`` column, as Ultralytics gives them); ``Results.cls`` is int64."""
        return self.data[:, 5]

    @property
    def id(self) -> None:
        """Track ids: none (no tracker runs here)."""
        return None

    is_track = False

    @property
    def xywh(self) -> np.ndarray:
        """(N, 4) centre x, centre y, width, height in pixels."""
        b = self.xyxy
        return np.stack(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1)

    def _per_side(self) -> np.ndarray:
        h, w = self.orig_shape
        return np.array([w, h, w, h], dtype=np.float32)

    @property
    def xyxyn(self) -> np.ndarray:
        """(N, 4) corners divided by the original width/height."""
        return self.xyxy / self._per_side()

    @property
    def xywhn(self) -> np.ndarray:
        """(N, 4) centre/size divided by the original width/height (the YOLO label format)."""
        return self.xywh / self._per_side()

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]

    # -- container -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> Boxes:
        """An int, slice, boolean mask or index array -> ``Boxes`` (one row stays 2-D)."""
        return Boxes(self.data[index].reshape(-1, 6), self.orig_shape)

    def __iter__(self) -> Iterator[Boxes]:
        return (self[i] for i in range(len(self)))

    def numpy(self) -> Boxes:
        """Already numpy: returns ``self``."""
        return self

    cpu = numpy

    def tolist(self) -> list[list[float]]:
        return self.data.tolist()

    def __repr__(self) -> str:
        return f"Boxes({len(self)} detections, orig_shape={self.orig_shape})\n{self.data!r}"
