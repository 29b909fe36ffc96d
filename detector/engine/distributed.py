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


def select_device(device: str, local_rank: int = 0) -> torch.device:
    """``""`` -> cuda (this rank's GPU) if available else cpu; ``"cpu"``, ``"0"``, ``"cuda:1"`` as given.

    Several GPUs (``"0,1"``) need ``torchrun``: each process then takes the GPU of its local rank.
    """
    d = str(device).strip().lower().replace("cuda:", "")
    if d in ("", "auto"):
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if d in ("cpu", "mps"):
        return torch.device(d)
    ids = [s for s in d.split(",") if s]
    if not all(s.isdigit() for s in ids):
        raise DetectorError(f"device={device!r}: expected '', 'cpu', a GPU index like '0' or 'cuda:0', or '0,1'")
    if not torch.cuda.is_available():
        raise DetectorError(f"device={device!r}: CUDA is not available on this machine; use device=cpu")
    if len(ids) > 1:
        if int(os.environ.get("WORLD_SIZE", "1")) != len(ids):
            raise DetectorError(
                f"device={device!r} names {len(ids)} GPUs: run under torchrun, e.g. "
                f"`torchrun --nproc_per_node {len(ids)} -m detector train ...`"
            )
        idx = int(ids[local_rank])
    else:
        idx = int(ids[0])
    if idx >= torch.cuda.device_count():
        raise DetectorError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device("cuda", idx)


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
