"""``BatchGroups``: which training batch each image is in this epoch, so mosaic partners come from the same batch.

A mosaic sample needs three partner images besides its own. Drawn from the whole dataset, each partner is one
more JPEG decode unless the worker happens to have decoded it recently. Drawn from the sample's own batch, every
partner is an image the worker building that batch decodes anyway (the recent-image store keeps it), so a
batch of B mosaics costs B decodes instead of up to 4B.

The batches are the sampler's: its epoch order (this rank's share) cut into runs of ``batch``, the same cut the
loader makes. The sampler writes the order here in the main process when an epoch starts; the table lives in
shared memory, so persistent workers read the new epoch's batches. A sample then depends on the seed, the
epoch, its index and the batch size (the members of its batch), never on the number of workers or which one
builds it. Batches are reshuffled every epoch, so an image's partners change every epoch too (without
shuffling, the batches stay the same and an image's partners come from the same 15 or so images every epoch,
drawn anew each time).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class BatchGroups:
    """The current epoch's batches of ``n`` dataset images, ``batch`` per batch (the last one may be shorter).

    ``members(index)`` is the batch holding ``index`` (ndarray of dataset indices, ``index`` included), or None
    before the first epoch's order arrived or for an image this rank does not load this epoch.
    """

    def __init__(self, n: int, batch: int) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.n, self.batch = n, batch
        # shared memory: written by the sampler in the main process, read by the loader workers
        self._order = torch.full((n,), -1, dtype=torch.int64).share_memory_()  # this rank's epoch order
        self._where = torch.full((n,), -1, dtype=torch.int64).share_memory_()  # index -> position in the order
        self._length = torch.zeros(1, dtype=torch.int64).share_memory_()

    def assign(self, order: Sequence[int]) -> None:
        """Take a new epoch order (dataset indices, this rank's share, as the sampler yields them).

        An index listed twice (a distributed sampler pads ranks to equal length with repeats) belongs to the
        batch of its last occurrence.
        """
        idx = torch.as_tensor(list(order), dtype=torch.int64)
        if len(idx) > self.n or (len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.n)):
            raise ValueError(f"an epoch order of {len(idx)} indices must hold indices of 0..{self.n - 1}, each once")
        self._where.fill_(-1)
        self._order[: len(idx)] = idx
        self._where[idx] = torch.arange(len(idx))
        self._length[0] = len(idx)

    def members(self, index: int) -> np.ndarray | None:
        pos = int(self._where[index])
        if pos < 0:
            return None
        start = pos - pos % self.batch
        return self._order[start : min(start + self.batch, int(self._length[0]))].numpy()


def draw_partners(index: int, n: int, k: int, rng: np.random.Generator, pool: np.ndarray | None) -> list[int]:
    """``k`` partner indices for image ``index`` of ``n``: distinct members of ``pool`` other than ``index`` when
    it has at least ``k`` of them (its batch), else ``k`` draws from the whole dataset (as without a pool)."""
    if pool is not None:
        others = pool[pool != index]
        if len(others) >= k:
            return others[rng.choice(len(others), size=k, replace=False)].tolist()
    return rng.integers(n, size=k).tolist()
