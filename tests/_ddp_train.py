"""Worker for the 2-process DDP test: ``torchrun ... _ddp_train.py OUT key=value ...``.

Trains with the real trainer and saves this rank's initial and final weights to ``OUT/rank{r}.pt``.
"""

from __future__ import annotations

import sys

import torch

from detector.engine.callbacks import Callback
from detector.engine.ema import unwrap
from detector.engine.trainer import Trainer, parse_train_args


class DumpWeights(Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def before_train(self, trainer) -> None:
        self.initial = {k: v.detach().clone() for k, v in unwrap(trainer.model).state_dict().items()}
        self.without_grad: set[str] = set()

    def after_backward(self, trainer) -> None:
        self.without_grad |= {k for k, p in unwrap(trainer.model).named_parameters() if p.grad is None}

    def after_train(self, trainer) -> None:
        final = {k: v.detach().clone() for k, v in unwrap(trainer.model).state_dict().items()}
        torch.save(
            {
                "initial": self.initial,
                "final": final,
                "steps": trainer.iteration + 1,
                "world": trainer.dist.world_size,
                "without_grad": sorted(self.without_grad),
            },
            f"{self.out}/rank{trainer.dist.rank}.pt",
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    Trainer(parse_train_args(sys.argv[2:]), callbacks=[DumpWeights(sys.argv[1])]).train()
