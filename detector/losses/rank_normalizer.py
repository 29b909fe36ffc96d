"""Loss normalisers that are the same under DistributedDataParallel as in one process.

The losses divide by a batch-wide total (TAL: the sum of soft class targets; AlignedOTA: the number of
positives and the sum of box weights), clamped at 1. Under DDP each rank sees only its share of the batch,
so a per-rank total is ``1/world`` of the single-process one, and early in training (or at small image sizes)
it sits below the clamp: per-rank losses then come out ``world`` times too small, gradients too (2 ranks:
half the loss a single process reports, as a gloo run on BCCD showed: box 0.86 against 1.93).

Inside ``across_ranks(True)`` (the trainer's training step under DDP) ``normalizer`` all-reduces the total
and returns ``max(sum over ranks, 1) / world``. Then each rank's loss is ``world * part_r / max(total, 1)``:
DDP's gradient average equals the single-process gradient, and the mean over ranks of the reported losses is
the number one process prints. The all-reduce stays on the device (no host synchronisation). Outside (one
process, validation on rank 0) it is the plain clamp, with no collective.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from torch import Tensor

_ACROSS_RANKS = False


@contextmanager
def across_ranks(enabled: bool) -> Iterator[None]:
    """Normalise losses over every rank's share of the batch while inside (every rank must enter alike)."""
    global _ACROSS_RANKS
    previous, _ACROSS_RANKS = _ACROSS_RANKS, bool(enabled) and dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        _ACROSS_RANKS = previous


def normalizer(total: Tensor, floor: float = 1.0) -> Tensor:
    """``max(total, floor)`` in one process; ``max(sum of every rank's total, floor) / world`` across ranks."""
    total = total.detach().float()
    if not _ACROSS_RANKS:
        return total.clamp(min=floor)
    total = total.clone()
    dist.all_reduce(total)
    return total.clamp(min=floor) / dist.get_world_size()
