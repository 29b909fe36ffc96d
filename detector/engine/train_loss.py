"""The training loss over every head of a model, and the running per-epoch mean of its parts.

``TrainLoss(model, loss_cfg)(outputs, batch)`` sums ``head.loss_weight * loss`` over the heads (main head
first) in float32; ``LossMeter`` accumulates the detached parts on the device, so reading them is the only
host sync.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import detector.losses  # noqa: F401  (registers every loss in LOSSES)
from detector.engine.distributed import DistInfo, mean_over_ranks
from detector.errors import DetectorError
from detector.registry import LOSSES


class TrainLoss:
    """Every head's loss; ``names`` are the parts of all heads (main head as ``box``, others as ``aux_box``)."""

    def __init__(self, model: nn.Module, loss_cfg: dict) -> None:
        heads = model.heads()
        self.main_tag = model.main_tag
        self.heads = dict(sorted(heads.items(), key=lambda th: th[0] != self.main_tag))  # main head first
        self.losses = {tag: LOSSES.get(head.loss)(head, loss_cfg) for tag, head in self.heads.items()}
        self.main = self.losses[self.main_tag]
        self.nc = int(self.heads[self.main_tag].nc)
        self.main_names = list(self.main.names)
        self.names = [n if t == self.main_tag else f"{t}_{n}" for t in self.heads for n in self.losses[t].names]

    def __call__(self, outputs: dict[str, list[Tensor]], batch: dict) -> tuple[Tensor, Tensor]:
        """``(total loss (scaled by batch size, as the losses return it), every head's detached parts (P,))``."""
        total: Tensor | float = 0.0
        parts = []
        for tag, head in self.heads.items():
            maps = [m.float() for m in outputs[tag]]
            loss, items = self.losses[tag](maps, batch)
            # ties every output map into the graph: with no foreground in a batch the box branch would get no
            # gradient, which DDP (find_unused_parameters=False) treats as an error
            anchor = sum(m.sum() for m in maps) * 0.0
            total = total + head.loss_weight * loss + anchor
            parts.append(items.detach().float())
        return total, torch.cat([p.to(parts[0].device) for p in parts])  # type: ignore[return-value]


class LossMeter:
    """Sum and count of the loss parts of this epoch's batches, kept on the device."""

    def __init__(self, names: list[str], main_names: list[str], device: torch.device) -> None:
        self.names, self.main_names, self.device = names, main_names, device
        self.reset()

    def reset(self) -> None:
        self.sum = torch.zeros(len(self.names), device=self.device)
        self.count = 0

    def add(self, items: Tensor) -> None:
        self.sum += items.to(self.device)
        self.count += 1

    def average_over_ranks(self, info: DistInfo) -> None:
        """Make this epoch's means the mean over ranks of each rank's mean: what one process would report
        (every rank must call it at the same batch)."""
        if info.enabled and self.count:
            self.sum = mean_over_ranks(self.sum / self.count, info) * self.count

    def main_mean(self) -> Tensor:
        """(len(main_names),) mean of each main-head part so far (on the device)."""
        return self.sum[: len(self.main_names)] / max(self.count, 1)

    def as_dict(self) -> dict[str, float]:
        """Every head's parts averaged over the epoch so far, by name."""
        return dict(zip(self.names, (self.sum / max(self.count, 1)).tolist()))


def check_finite(losses: list[float], where: str, hint: str) -> None:
    """Stop with a message (``where``: epoch and batch; ``hint``: what to try) when a loss is NaN or infinite."""
    if not all(math.isfinite(v) for v in losses):
        raise DetectorError(f"training diverged: loss {losses} at {where}. {hint}")
