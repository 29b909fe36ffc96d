"""One training step: ``TrainStep(parts)(batch, epoch, iteration, last_in_epoch) -> StepResult``.

lr schedule, forward (autocast), loss over every head (float32), backward; every ``accumulate`` batches, and at
the end of each epoch, an optimiser step: unscale, clip, step, zero, EMA update. The accumulation phase
(``last_opt_step``) is the step's resumable state. Another step with the same call signature can replace this
one: the loop only calls it. ``engine.train_step.CapturedTrainStep`` (``graph=True``) overrides the two phases,
``forward_backward`` and ``optimizer_step``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from detector.engine.build import TrainParts
from detector.engine.memory_format import to_channels_last
from detector.losses.rank_normalizer import across_ranks
from detector.losses.targets import PaddedTargets, pad_targets


@dataclass
class StepResult:
    """What one batch left behind: ``items`` (P,) detached loss parts on the device, whether the optimiser
    stepped, and how many boxes the batch had."""

    items: Tensor
    stepped: bool
    instances: int


class TrainStep:
    """The default step (see the module docstring); ``after_backward`` is called between backward and the
    optimiser step (the trainer passes its event there)."""

    def __init__(self, parts: TrainParts, after_backward: Callable[[], None] = lambda: None) -> None:
        self.parts = parts
        self.after_backward = after_backward
        self.last_opt_step = -1

    def __call__(self, batch: dict, epoch: int, iteration: int, last_in_epoch: bool) -> StepResult:
        p = self.parts
        p.schedule.apply(p.optimizer, epoch, iteration)
        will_step = iteration - self.last_opt_step >= self.accumulation(iteration) or last_in_epoch
        items = self.forward_backward(batch, defer_sync=p.dist.enabled and not will_step)
        self.after_backward()
        if will_step:
            self.optimizer_step()
            self.last_opt_step = iteration
        return StepResult(items, will_step, int(batch["cls"].shape[0]))

    def forward_backward(self, batch: dict, defer_sync: bool = False) -> Tensor:
        """Forward, loss, scaled backward (gradients accumulate); ``defer_sync`` skips DDP's all-reduce.
        Returns every head's detached loss parts. Targets are padded on the host from the loader's CPU tensors,
        so the losses never make the device wait (see ``detector.losses``)."""
        p = self.parts
        targets = host_targets(batch, p.loss.nc)
        images, batch = to_device(batch, p.device)
        batch["targets"] = targets.to(p.device, non_blocking=p.device.type == "cuda")
        with p.model.no_sync() if defer_sync else contextlib.nullcontext():  # type: ignore[operator]
            with torch.autocast(p.device.type, dtype=p.amp_dtype, enabled=p.amp_dtype is not None):
                outputs = p.model(images)
            with across_ranks(p.dist.enabled):  # loss normalisers over the whole batch, as one process has it
                loss, items = p.loss(outputs, batch)
            # DDP averages gradients over ranks; the loss is per rank-batch, so scale back to the full batch
            p.scaler.scale(loss * p.dist.world_size).backward()
        return items

    def accumulation(self, iteration: int) -> int:
        """Batches per optimiser step: ramps from 1 to ``nbs / batch`` during warmup."""
        p = self.parts
        if iteration < p.warmup_iters:
            nominal = p.cfg.optim.nbs / p.cfg.batch
            return max(1, round(float(np.interp(iteration, [0, p.warmup_iters], [1, nominal]))))
        return p.accumulate

    def optimizer_step(self) -> None:
        p = self.parts
        p.scaler.unscale_(p.optimizer)
        if p.cfg.optim.clip_grad > 0:
            nn.utils.clip_grad_norm_(p.model.parameters(), max_norm=p.cfg.optim.clip_grad)
        p.scaler.step(p.optimizer)
        p.scaler.update()
        p.optimizer.zero_grad(set_to_none=True)
        p.ema.update(p.model)

    def state_dict(self) -> dict:
        return {"last_opt_step": self.last_opt_step, "warmup_iters": self.parts.warmup_iters}

    def load_state_dict(self, state: dict) -> None:
        self.last_opt_step = int(state["last_opt_step"])


def host_targets(batch: dict, nc: int, max_boxes: int | None = None) -> PaddedTargets:
    """The batch's ground truth padded on the host to ``(B, M)``, ``M = max_boxes`` or the largest count."""
    cpu = {k: batch[k].cpu() for k in ("cls", "bboxes", "batch_idx")}
    return pad_targets(cpu, len(batch["img"]), nc, torch.device("cpu"), max_boxes)


def to_device(batch: dict, device: torch.device) -> tuple[Tensor, dict]:
    """uint8 images -> float 0..1 on the device; target tensors moved alongside."""
    nb = device.type == "cuda"
    images = to_channels_last(batch["img"].to(device, non_blocking=nb).float().div_(255), device)
    moved = {
        k: (v.to(device, non_blocking=nb) if isinstance(v, Tensor) and k != "img" else v) for k, v in batch.items()
    }
    return images, moved
