"""Optimiser with three parameter groups, the ``auto`` optimiser choice, warmup and the lr schedules.

Groups, by name: ``norm`` = normalisation weights (no weight decay), ``weight`` = every other weight (decay),
``bias`` = biases (no decay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from detector.engine.settings import OptimConfig

# Defaults per optimiser: (lr0, momentum / beta1, warmup bias lr start).
# AdamW's bias warmup starts at 0: Adam-style updates at lr 0.1 would wreck the freshly initialised head.
OPTIMISER_DEFAULTS = {"SGD": (0.01, 0.937, 0.1), "AdamW": (0.002, 0.9, 0.0)}
AUTO_SGD_ITERATIONS = 10_000


@dataclass(frozen=True)
class ResolvedOptim:
    """The optimiser actually used, after ``auto`` and the per-optimiser defaults were applied."""

    name: str
    lr0: float
    momentum: float
    warmup_bias_lr: float
    weight_decay: float

    def describe(self) -> str:
        return (
            f"{self.name}(lr0={self.lr0:g}, momentum={self.momentum:g}, weight_decay={self.weight_decay:g}) "
            "with parameter groups: norm weights (no decay), weights (decay), biases (no decay)"
        )


def resolve_optimizer(cfg: OptimConfig, iterations: int, batch: int, accumulate: int) -> ResolvedOptim:
    """Pick SGD/AdamW (``auto``: AdamW below 10k iterations, SGD above) and fill unset lr0/momentum.

    ``iterations`` is the planned number of optimiser steps of the run; weight decay is scaled by
    ``batch * accumulate / nbs`` so it acts per nominal batch.
    """
    name = cfg.optimizer
    if name == "auto":
        name = "AdamW" if iterations < AUTO_SGD_ITERATIONS else "SGD"
    lr0, momentum, bias_lr = OPTIMISER_DEFAULTS[name]
    return ResolvedOptim(
        name=name,
        lr0=cfg.lr0 if cfg.lr0 is not None else lr0,
        momentum=cfg.momentum if cfg.momentum is not None else momentum,
        warmup_bias_lr=cfg.warmup_bias_lr if cfg.warmup_bias_lr is not None else bias_lr,
        weight_decay=cfg.weight_decay * batch * accumulate / cfg.nbs,
    )


def parameter_groups(model: nn.Module) -> tuple[list, list, list]:
    """(normalisation weights, other weights, biases): every trainable parameter lands in exactly one group."""
    norm_types = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))
    norm_w, weights, biases = [], [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname == "bias":
                biases.append(p)
            elif isinstance(module, norm_types):
                norm_w.append(p)
            else:
                weights.append(p)
    return norm_w, weights, biases


def build_optimizer(model: nn.Module, opt: ResolvedOptim) -> torch.optim.Optimizer:
    """The optimiser over the three groups, named ``norm``, ``weight`` (the only one with weight decay) and
    ``bias``; code that treats a group specially finds it by its ``name``, never by position."""
    norm_w, weights, biases = parameter_groups(model)
    groups = [
        {"params": norm_w, "weight_decay": 0.0, "name": "norm"},
        {"params": weights, "weight_decay": opt.weight_decay, "name": "weight"},
        {"params": biases, "weight_decay": 0.0, "name": "bias"},
    ]
    if opt.name == "SGD":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=opt.lr0, momentum=opt.momentum, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=opt.lr0, betas=(opt.momentum, 0.999))
    return optimizer


def lr_factor(schedule: str, epoch: int, epochs: int, lrf: float) -> float:
    """Epoch-level lr multiplier: 1 at epoch 0 falling to ``lrf`` at the last epoch (linear or cosine)."""
    x = epoch / max(epochs, 1)
    if schedule == "cosine":
        return ((1 - math.cos(x * math.pi)) / 2) * (lrf - 1) + 1
    return (1 - x) * (1.0 - lrf) + lrf


class LRSchedule:
    """Per-iteration lr and momentum: linear warmup over ``warmup_iters``, then the epoch schedule.

    During warmup the bias group's lr falls from ``warmup_bias_lr`` and the others rise from 0 towards the
    scheduled lr, while SGD momentum / Adam beta1 rises from ``warmup_momentum``.
    """

    def __init__(self, cfg: OptimConfig, opt: ResolvedOptim, epochs: int, warmup_iters: int) -> None:
        self.cfg, self.opt, self.epochs, self.warmup_iters = cfg, opt, epochs, warmup_iters

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, iteration: int) -> None:
        """Set every group's lr (and momentum in warmup) for global ``iteration`` within ``epoch``."""
        target = self.opt.lr0 * lr_factor(self.cfg.schedule, epoch, self.epochs, self.cfg.lrf)
        warm = iteration < self.warmup_iters
        for g in optimizer.param_groups:
            if warm:
                start = self.opt.warmup_bias_lr if g.get("name") == "bias" else 0.0
                g["lr"] = float(np.interp(iteration, [0, self.warmup_iters], [start, target]))
                momentum = float(
                    np.interp(iteration, [0, self.warmup_iters], [self.cfg.warmup_momentum, self.opt.momentum])
                )
            else:
                g["lr"] = target
                momentum = self.opt.momentum
            if "betas" in g:
                g["betas"] = (momentum, g["betas"][1])
            else:
                g["momentum"] = momentum
