"""Exponential moving average of model weights, the weights that are validated and saved."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """``ema = d * ema + (1 - d) * model`` after every optimiser step, with the ramp
    ``d = decay * (1 - exp(-updates / tau))`` so early, fast-changing weights are not averaged in for long.

    Every floating-point entry of the state dict is averaged (BN running statistics included); integer
    buffers (``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = unwrap(model).state_dict()
        ema_float, model_float = [], []
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                ema_float.append(v)
                model_float.append(src[k].detach())
            else:
                v.copy_(src[k])
        torch._foreach_mul_(ema_float, d)
        torch._foreach_add_(ema_float, model_float, alpha=1 - d)

    def state_dict(self) -> dict:
        """What a checkpoint keeps besides the EMA weights themselves (saved as the checkpoint's ``model``)."""
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
