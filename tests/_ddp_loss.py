"""Worker for the exact DDP loss-normalisation test: each of 2 gloo ranks computes a head's loss on its half of
one batch of raw maps; the test compares the mean over ranks with one process on the whole batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from detector.losses.rank_normalizer import across_ranks
from detector.registry import LOSSES


def loss_inputs(model_name: str, seed: int = 0):
    """(head, maps for 4 images, targets) with a few boxes per image; maps scaled so scores are low (the
    clamp regime of an untrained model)."""
    import detector.losses  # noqa: F401  (registers the losses)
    from detector.model import build_model

    torch.manual_seed(seed)
    model = build_model(model_name, nc=3)
    head = model.main_head
    maps = [torch.randn(4, head.no, s, s) * 0.5 - 1.0 for s in (8, 4, 2)]
    boxes, cls, idx = [], [], []
    for i in range(4):
        for _ in range(2 + i):
            x, y = torch.rand(2) * 40
            boxes.append(torch.stack((x, y, x + 8 + torch.rand(()) * 16, y + 8 + torch.rand(()) * 16)))
            cls.append(float(torch.randint(0, 3, ())))
            idx.append(float(i))
    batch = {"bboxes": torch.stack(boxes), "cls": torch.tensor(cls), "batch_idx": torch.tensor(idx)}
    return head, maps, batch


def half_batch(maps, batch, rank: int):
    keep = (batch["batch_idx"] >= 2 * rank) & (batch["batch_idx"] < 2 * rank + 2)
    part = {k: v[keep] for k, v in batch.items()}
    part["batch_idx"] = part["batch_idx"] - 2 * rank
    return [m[2 * rank : 2 * rank + 2] for m in maps], part


def run(rank: int, port: int, model_name: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    head, maps, batch = loss_inputs(model_name)
    loss_fn = LOSSES.get(head.loss)(head, {})
    maps, part = half_batch(maps, batch, rank)
    with across_ranks(True):
        _, items = loss_fn(maps, part)
    _, plain = loss_fn(maps, part)  # outside the context: this rank alone, as before the fix
    both = torch.stack((items, plain))
    dist.all_reduce(both)
    if rank == 0:
        torch.save(both / 2, out)
    dist.destroy_process_group()
