"""Multi-process training under ``torchrun``: process group, device per rank, and small collective helpers.

``detector train ...`` under ``torchrun --nproc_per_node N`` (any number of nodes) reads RANK, LOCAL_RANK and
WORLD_SIZE from the environment; NCCL on CUDA, gloo on CPU. Nothing here starts processes itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from deploy.device import DeviceError, parse_device, pick_gpu
from detector.errors import DetectorError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(device: str | int | None, local_rank: int = 0) -> torch.device:
    """``device`` in any of the forms of ``deploy.device`` -> the ``torch.device`` this process uses.

    ``""`` -> this rank's GPU if there is one, else the CPU; ``"cuda"`` -> this rank's GPU (GPU 0 outside
    torchrun); ``"cuda:N"``/``"N"`` -> GPU N; ``"N,M"`` needs ``torchrun``: each process takes the GPU of its
    local rank. What the machine lacks raises ``DetectorError`` with one message.
    """
    if isinstance(device, torch.device):
        return device
    spec = parse_device(device)
    visible = torch.cuda.device_count() if spec.kind in ("auto", "cuda") and torch.cuda.is_available() else 0
    try:
        index = pick_gpu(spec, visible, local_rank, int(os.environ.get("WORLD_SIZE", "1")))
    except DeviceError as e:
        raise DetectorError(str(e)) from None
    if index is None:
        return torch.device("mps" if spec.kind == "mps" else "cpu")
    return torch.device("cuda", index)


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; returns this process's rank info and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)
    dev = select_device(device, info.local_rank)
    if info.enabled and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # long timeout: the other ranks wait while rank 0 validates and writes checkpoints
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo",
            timeout=timedelta(hours=3),
            device_id=dev if dev.type == "cuda" else None,
        )
    return info, dev


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (a no-op in a single process)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean over every rank of ``values`` (same shape on each rank; a no-op in a single process)."""
    if not info.enabled:
        return values
    out = values.detach().clone()
    dist.all_reduce(out)
    return out / info.world_size
