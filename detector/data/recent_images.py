"""A bounded store of the images a loader process decoded last, so mosaic's partner images are often reused.

A mosaic sample loads its own image and three random others, so without a store every sample decodes four
JPEGs. Keeping the most recently decoded (already resized) images of this process lets many of those be
reused. Values are identical either way: the store only skips repeated decoding, never changes pixels (the
mosaic partners stay drawn from the whole dataset by the sample's own seed, so a sample is still the same
whatever worker builds it).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

BUDGET_BYTES = 512 * 2**20
"""At most this much memory per process (each loader worker has its own store)."""


def recent_capacity(n_images: int, batch: int, imgsz: int) -> int:
    """How many images to keep: eight batches' worth, at most the dataset and ``BUDGET_BYTES`` of square images."""
    return max(0, min(n_images, 8 * batch, BUDGET_BYTES // (imgsz * imgsz * 3)))


class RecentImages:
    """Least-recently-used store ``index -> (image (ndarray[h, w, 3]) uint8, ratio)`` of at most ``capacity``.

    Stored images are made read-only and handed out as they are (no copy): a pipeline that writes in place must
    copy a read-only image first (``TrainAugment`` does), and a forgotten copy fails loudly instead of
    corrupting the store.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, tuple[np.ndarray, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, index: int) -> tuple[np.ndarray, float] | None:
        item = self._items.get(index)
        if item is None:
            return None
        self._items.move_to_end(index)
        return item

    def put(self, index: int, img: np.ndarray, ratio: float) -> None:
        if self.capacity <= 0:
            return
        img.flags.writeable = False
        self._items[index] = (img, ratio)
        self._items.move_to_end(index)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
