"""Data-free calibration images: inputs synthesised so every BatchNorm layer sees its training statistics.

After the idea used by ZeroQ and by "Unified Data-Free Compression: Pruning and Quantization without
Fine-Tuning" (Bai et al., ICCV 2023): a trained network's BatchNorm layers remember the mean and variance of
their inputs over the training data (``running_mean``/``running_var``). Starting from noise, we optimise a batch
of images by gradient descent so that, at every BatchNorm layer of the *train-form* model (before fusion folds
BN away), the batch mean and standard deviation per channel match the stored ones. Such images excite each
channel about as strongly as real data does, which is all activation-range calibration needs; nothing of the
user's data is required.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor, nn

from detector.errors import DetectorError

LOG = logging.getLogger("detector.quantize")


class BNStatLoss:
    """Forward hooks on every BatchNorm2d that accumulate ``sum_l (||mu_l - mu_l*|| + ||sigma_l - sigma_l*||)``
    over one forward (``mu``/``sigma``: per-channel batch statistics of the layer's input; ``*``: running)."""

    def __init__(self, model: nn.Module) -> None:
        self.norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]
        if not self.norms:
            raise DetectorError(
                "calib=free needs the BatchNorm statistics of the train-form checkpoint, and this model has no "
                "BatchNorm layer (already fused?); export from the training checkpoint (.pt)"
            )
        self.terms: list[Tensor] = []
        self._hooks = [m.register_forward_hook(self._hook) for m in self.norms]

    def _hook(self, bn: nn.BatchNorm2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        x = inputs[0]  # (B, C, H, W)
        mean = x.mean((0, 2, 3))
        std = (x.var((0, 2, 3), unbiased=False) + bn.eps).sqrt()
        self.terms.append(
            torch.linalg.vector_norm(mean - bn.running_mean)
            + torch.linalg.vector_norm(std - (bn.running_var + bn.eps).sqrt())
        )

    def take(self) -> Tensor:
        """The loss of the forward just run (mean over the layers that ran), then reset."""
        loss = torch.stack(self.terms).mean()
        self.terms = []
        return loss

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


def synthesize(
    model: nn.Module,
    n: int,
    imgsz: tuple[int, int],
    steps: int = 200,
    batch: int = 8,
    lr: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """``n`` synthetic images ``(n, 3, H, W)`` float32 in 0..1 whose BatchNorm statistics in ``model`` (a
    train-form ``DetectionModel``) match the running ones; ``steps`` Adam steps per batch of ``batch``."""
    model = model.eval().float()
    for p in model.parameters():
        p.requires_grad_(False)
    stats = BNStatLoss(model)
    gen = torch.Generator().manual_seed(seed)
    out = []
    try:
        for start in range(0, n, batch):
            b = min(batch, n - start)
            x = (0.5 + 0.2 * torch.randn(b, 3, *imgsz, generator=gen)).clamp_(0, 1).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.01)
            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                model(x, decode=False)
                loss = stats.take()
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    x.clamp_(0, 1)  # stay a valid image: the deployed model only ever sees 0..1 inputs
                if step in (0, steps - 1):
                    LOG.info("calib=free: images %d-%d step %d/%d, BN-statistics loss %.4f",
                             start, start + b - 1, step + 1, steps, loss.item())  # fmt: skip
            out.append(x.detach().numpy().astype(np.float32))
    finally:
        stats.remove()
    return np.concatenate(out)
