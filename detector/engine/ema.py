"""Exponential moving average of model weights, the weights that are validated and saved."""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """``ema = d * ema + (1 - d) * model`` after every optimiser step, with the ramp
    ``d = decay * (1 - exp(-updates / tau))`` so early, fast-changing weights are not averaged in for long.

    Every floating-point entry of the state dict is averaged (BN running statistics included); integer
    buffers (``num_batches_tracked``) are copied. The (EMA, model) tensor pairs are found once, on the first
    update, so a step costs one ``_foreach_lerp_`` and one ``_foreach_copy_`` launch list instead of two
    ``state_dict()`` walks and a Python loop of tiny copies (~230 per step for gelan-t).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates
        self._pairs: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]] | None = None
        self._paired_with: int | None = None  # id of the model the pairs point into

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    def _pair(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """(ema float, model float, ema integer, model integer) tensors, matched by state-dict key.

        ``keep_vars=True`` holds the parameters themselves, so a later ``.to()`` of the model (which swaps
        ``param.data``) cannot leave the pairs pointing at stale storage."""
        src = model.state_dict(keep_vars=True)
        ema_f, src_f, ema_i, src_i = [], [], [], []
        for k, v in self.ema.state_dict(keep_vars=True).items():
            if v.dtype.is_floating_point:
                ema_f.append(v)
                src_f.append(src[k])
            else:
                ema_i.append(v)
                src_i.append(src[k])
        return ema_f, src_f, ema_i, src_i

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        model = unwrap(model)
        if self._pairs is None or self._paired_with != id(model):
            self._pairs, self._paired_with = self._pair(model), id(model)
        self.updates += 1
        d = self.current_decay()
        ema_f, src_f, ema_i, src_i = self._pairs
        torch._foreach_lerp_(ema_f, src_f, 1.0 - d)  # ema + (1 - d) * (model - ema) = d * ema + (1 - d) * model
        if ema_i:
            torch._foreach_copy_(ema_i, src_i)

    def state_dict(self) -> dict:
        """What a checkpoint keeps besides the EMA weights themselves (saved as the checkpoint's ``model``)."""
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
