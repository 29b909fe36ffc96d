"""``build_dataloader``: the one call the engine makes to get batches of a split."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from detector.config import ConfigError, build
from detector.data.augment import AugmentConfig
from detector.data.collate import collate
from detector.data.dataset import DetectionDataset
from detector.data.load import load_split
from detector.data.samplers import EpochSampler, RectBatchSampler
from detector.data.spec import DatasetSpec

LOG = logging.getLogger("detector.data")


class DetectionLoader(DataLoader):
    """A ``DataLoader`` that moves load-time problems out of each batch into ``dataset.problems`` (and the log)."""

    def __iter__(self):
        for batch in super().__iter__():
            for p in batch.pop("problems", []):
                LOG.warning("%s: %s", p["file"], p["problem"])
                self.dataset.problems.append(p)
            yield batch


def build_dataloader(
    data: str | Path | dict | DatasetSpec,
    split: str,
    *,
    imgsz: int,
    batch: int,
    augment: AugmentConfig | dict | None = None,
    workers: int = 2,
    shuffle: bool | None = None,
    seed: int = 0,
    rank: int = -1,
    world_size: int = 1,
    cache: str | None = None,
    rect: bool | None = None,
) -> tuple[DataLoader, DetectionDataset]:
    """Batches of split ``split`` of ``data`` (dataset YAML, mapping, VOC folder or config name).

    Args:
        imgsz: square training size / longer side for validation (multiple of 32).
        augment: training augmentation; None means validation samples (letterbox only, exact ``ratio_pad``).
        workers: loader processes (0 = load in the calling process; -1 = ``auto_workers`` for the CPU);
            persistent across epochs. Callers that know their device resolve -1 with ``auto_workers`` first.
        shuffle: default True for training, False for validation.
        seed: same seed -> same batches (order and augmentation), whatever the number of workers.
        rank, world_size: this process's share under DistributedDataParallel (rank -1 = not distributed).
        cache: ``"ram"`` or ``"disk"`` to keep decoded resized images, or None.
        rect: rectangular batches grouped by aspect ratio (default: True for validation, False for training).

    Returns:
        ``(loader, dataset)``; call ``dataset.set_epoch(epoch, total_epochs)`` at the start of each epoch
        (order, augmentation draws, close-mosaic). ``dataset.names``, ``.labels``, ``.problems`` describe the data.
    """
    if isinstance(augment, dict):
        augment = build(AugmentConfig, augment, "augment")
    if cache not in (None, "ram", "disk"):
        raise ConfigError(f"cache must be 'ram', 'disk' or None, got {cache!r}")
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    rect = augment is None if rect is None else rect
    shuffle = augment is not None if shuffle is None else shuffle
    rank = max(rank, 0)
    labels = load_split(data, split)
    dataset = DetectionDataset(labels, imgsz=imgsz, augment=augment, rect=rect, batch=batch, seed=seed, cache=cache)
    workers = auto_workers(workers, "cpu", "train" if augment is not None else "val")
    common = dict(
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        worker_init_fn=_init_worker,
        generator=torch.Generator().manual_seed(seed),
    )
    if rect:
        sampler = RectBatchSampler(
            dataset.order,
            batch,
            shuffle=shuffle,
            seed=seed,
            rank=rank,
            world_size=world_size,
            on_epoch=dataset._apply_epoch,
        )
        loader = DetectionLoader(dataset, batch_sampler=sampler, **common)
    else:
        groups = dataset.batch_groups  # the loader cuts the sampler's order into batches; so do the groups
        sampler = EpochSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, on_epoch=dataset._apply_epoch,
            on_order=groups.assign if groups is not None else None,
        )  # fmt: skip
        loader = DetectionLoader(dataset, batch_size=batch, sampler=sampler, drop_last=False, **common)
    dataset.sampler = sampler
    return loader, dataset


CPU_WORKERS = {"train": 4, "val": 2}
"""Workers when the model runs on the CPU: the loader competes with the model for the same cores."""


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and schedulers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_workers(workers: int, device_type: str, role: str = "train", cores: int | None = None) -> int:
    """Loader processes to use: ``workers`` as given when >= 0 (at most the cores); -1 picks from the machine.

    On CUDA the model does not need the CPU, and one worker makes ~150 mosaic images/s at 640: training takes the
    usable cores minus two (the main process and the GPU feeder), shared by the processes of this node
    (torchrun's ``LOCAL_WORLD_SIZE``); validation (letterbox only, run between epochs) half of that. On the
    CPU ``CPU_WORKERS``.
    """
    cores = usable_cores() if cores is None else cores
    if workers >= 0:
        return min(workers, cores)
    if device_type != "cuda":
        return min(CPU_WORKERS.get(role, 2), cores)
    per_process = max(1, (cores - 2) // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1))
    return per_process if role == "train" else max(1, per_process // 2)


def _init_worker(worker_id: int) -> None:
    """Per worker: OpenCV single-threaded (the workers are the parallelism) and library RNGs seeded."""
    cv2.setNumThreads(0)
    cv2.ocl.setUseOpenCL(False)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
