"""The trainer's shape: callbacks run by declared order, own their state through the checkpoint, and leave
nothing on the trainer; the loop's own attributes are a short fixed list."""

from __future__ import annotations

from pathlib import Path

import pytest
from _engine_kit import bccd_subset, single_thread, tiny_config

from detector.checkpoint import load_checkpoint
from detector.engine import callbacks as cb
from detector.engine.trainer import Trainer, parse_train_args

LOOP_ATTRIBUTES = {
    "cfg", "user_callbacks", "finish_reason", "start_epoch", "epoch", "iteration", "batch_index", "batch",
    "rng_states", "last_step", "_lock", "_verbose_before", "parts", "step", "losses", "callbacks",
}  # fmt: skip


class EpochCounter(cb.Callback):
    """A user callback with state of its own, placed between the evaluator and early stopping."""

    order = 25

    def __init__(self, stop_after: int | None = None) -> None:
        self.seen, self.stop_after, self.restored = 0, stop_after, None

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.restored = dict(state)
        self.seen = state["seen"]

    def after_epoch(self, trainer) -> None:
        self.seen += 1


class Crash(cb.Callback):
    def after_epoch(self, trainer) -> None:
        if trainer.epoch == 0:
            raise RuntimeError("killed")  # after epoch 1's checkpoint (order 100 > Checkpointer's 50)


@pytest.fixture(scope="module")
def data4(tmp_path_factory) -> Path:
    return bccd_subset(tmp_path_factory.mktemp("bccd4"), 4)


def test_callbacks_run_by_order_and_their_state_survives_a_resume(tmp_path, data4):
    single_thread()
    counter = EpochCounter()
    trainer = Trainer(tiny_config(tmp_path, data4, imgsz=64), callbacks=[Crash(), counter])
    with pytest.raises(RuntimeError, match="killed"):
        trainer.train()
    kinds = [type(c).__name__ for c in trainer.callbacks]
    assert kinds == ["ProgressBar", "Evaluator", "EpochCounter", "EarlyStopping", "ResultsLogger", "Checkpointer",
                     "Crash"]  # fmt: skip
    assert set(vars(trainer)) == LOOP_ATTRIBUTES  # no callback left anything on the trainer
    last = tmp_path / "runs" / "exp" / "weights" / "last.pt"
    states = load_checkpoint(last)["callbacks"]
    assert states["EpochCounter"] == {"seen": 1} and states["ResultsLogger"] == {"rows": 1}
    assert states["Evaluator"]["best_epoch"] == 0
    resumed = EpochCounter()
    Trainer(parse_train_args([f"resume={last}"]), callbacks=[resumed]).train()
    assert resumed.restored == {"seen": 1} and resumed.seen == 2
    assert load_checkpoint(last)["callbacks"]["EpochCounter"] == {"seen": 2}
