"""Index order: shuffled per epoch and split over ranks (``EpochSampler``), or rectangular batches of images
of similar aspect ratio (``RectBatchSampler``), also split over ranks.

Both take ``set_epoch(epoch)``; without it they move to the next epoch by themselves each time iteration
starts again, so a trainer that forgets it still gets a new order every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

from detector.ops import PreprocessSpec

EpochHook = Callable[[int], None]
OrderHook = Callable[[list[int]], None]


class _EpochCounter:
    """The epoch bookkeeping both samplers share."""

    epoch: int

    def _init_epochs(self, on_epoch: EpochHook | None) -> None:
        self.epoch = 0
        self._pinned = False
        self._started = False
        self.on_epoch = on_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._pinned = True

    def _next_epoch(self) -> int:
        if self._started and not self._pinned:
            self.epoch += 1
        self._started, self._pinned = True, False
        if self.on_epoch is not None:
            self.on_epoch(self.epoch)
        return self.epoch


class EpochSampler(_EpochCounter, DistributedSampler):
    """``DistributedSampler`` (also for one process) that advances its epoch on its own and tells the dataset.

    ``on_epoch(epoch)``, then ``on_order(indices)`` (this rank's order for the epoch) run in the main process
    when iteration starts, before any index is handed out.
    """

    def __init__(
        self,
        dataset,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        on_epoch: EpochHook | None = None,
        on_order: OrderHook | None = None,
    ) -> None:
        DistributedSampler.__init__(
            self, dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self._init_epochs(on_epoch)
        self.on_order = on_order

    def __iter__(self) -> Iterator[int]:
        self._next_epoch()
        order = list(DistributedSampler.__iter__(self))
        if self.on_order is not None:
            self.on_order(order)
        return iter(order)


def rect_shapes(
    shapes: list[tuple[int, int]], batch: int, spec: PreprocessSpec
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Group images of similar aspect ratio into batches with the least padding.

    Args:
        shapes: original ``(h, w)`` per image. spec: the letterbox (``auto`` minimal padding).
    Returns:
        ``order`` (ndarray[N]): image indices sorted by ``h / w``; consecutive runs of ``batch`` form batches.
        ``batch_shape`` per image index: the ``(h, w)`` its batch is padded to, ``spec.batch_canvas`` of the
        batch (the largest image after scaling by ``spec``, rounded up to a multiple of ``spec.stride``), the
        same shape ``Detector`` gives the same images batched together.
    """
    hw = np.array(shapes, dtype=np.float64).reshape(-1, 2)
    order = np.argsort(hw[:, 0] / hw[:, 1], kind="stable")
    per_image: list[tuple[int, int]] = [(0, 0)] * len(hw)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        canvas = spec.batch_canvas([shapes[i] for i in idx])
        for i in idx:
            per_image[i] = canvas
    return order, per_image


class RectBatchSampler(_EpochCounter, Sampler[list[int]]):
    """Batches of consecutive images in aspect-ratio order; rank ``r`` of ``world`` takes batches r, r+world, ...

    With ``shuffle`` the order of whole batches changes per epoch (seeded); images never change batch, so each
    keeps the padded shape ``rect_shapes`` gave it. No batch is repeated to even out ranks (validation
    results stay exact); ranks may get one batch less.
    """

    def __init__(
        self,
        order: np.ndarray,
        batch: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        on_epoch: EpochHook | None = None,
    ) -> None:
        self.batches = [order[i : i + batch].tolist() for i in range(0, len(order), batch)]
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self._init_epochs(on_epoch)

    def __len__(self) -> int:
        return len(range(self.rank, len(self.batches), self.world_size))

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self._next_epoch()
        ids = list(range(len(self.batches)))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            ids = torch.randperm(len(ids), generator=g).tolist()
        for k in ids[self.rank :: self.world_size]:
            yield self.batches[k]
