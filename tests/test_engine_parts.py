"""Engine building blocks: parameter groups, optimiser choice, warmup/schedules, EMA, run dirs, csv rows."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detector.engine.callbacks import write_csv_row
from detector.engine.ema import ModelEMA
from detector.engine.optim import LRSchedule, build_optimizer, lr_factor, parameter_groups, resolve_optimizer
from detector.engine.runs import increment_run_dir, latest_checkpoint, run_dir_of_checkpoint
from detector.engine.settings import OptimConfig
from detector.errors import DetectorError


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1, bias=True), nn.GroupNorm(2, 4))


def test_parameter_groups_split_norm_weights_weights_and_biases():
    net = small_net()
    norm_w, weights, biases = parameter_groups(net)
    assert {id(p) for p in norm_w} == {id(net[1].weight), id(net[3].weight)}
    assert {id(p) for p in weights} == {id(net[0].weight), id(net[2].weight)}
    assert {id(p) for p in biases} == {id(net[0].bias), id(net[1].bias), id(net[2].bias), id(net[3].bias)}


def test_only_weights_decay_and_decay_scales_with_batch():
    opt = resolve_optimizer(OptimConfig(optimizer="SGD", weight_decay=5e-4), 1, batch=16, accumulate=4)
    assert opt.weight_decay == pytest.approx(5e-4)
    opt = resolve_optimizer(OptimConfig(optimizer="SGD", weight_decay=5e-4), 1, batch=8, accumulate=4)
    assert opt.weight_decay == pytest.approx(2.5e-4)  # 32 of the nominal 64 per step
    sgd = build_optimizer(small_net(), opt)
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.0, pytest.approx(2.5e-4), 0.0]
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.937


def test_auto_picks_adamw_for_short_runs_and_sgd_for_long():
    short = resolve_optimizer(OptimConfig(), 9_999, 16, 4)
    long = resolve_optimizer(OptimConfig(), 10_000, 16, 4)
    assert (short.name, short.lr0, short.momentum) == ("AdamW", 0.002, 0.9)
    assert (long.name, long.lr0, long.momentum, long.warmup_bias_lr) == ("SGD", 0.01, 0.937, 0.1)
    explicit = resolve_optimizer(OptimConfig(optimizer="AdamW", lr0=0.005), 1, 16, 4)
    assert explicit.lr0 == 0.005
    assert isinstance(build_optimizer(small_net(), short), torch.optim.AdamW)


def test_warmup_then_schedule():
    cfg = OptimConfig(optimizer="SGD")
    opt = resolve_optimizer(cfg, 1, 64, 1)
    sgd = build_optimizer(small_net(), opt)
    sched = LRSchedule(cfg, opt, epochs=10, warmup_iters=100)
    sched.apply(sgd, epoch=0, iteration=0)
    assert [g["lr"] for g in sgd.param_groups] == [0.0, 0.0, pytest.approx(0.1)]  # bias lr starts high
    assert sgd.param_groups[0]["momentum"] == pytest.approx(0.8)
    sched.apply(sgd, epoch=0, iteration=50)
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.005)
    assert sgd.param_groups[2]["lr"] == pytest.approx(0.055)
    assert sgd.param_groups[0]["momentum"] == pytest.approx(0.8685)
    sched.apply(sgd, epoch=5, iteration=500)
    assert [g["lr"] for g in sgd.param_groups] == [pytest.approx(0.01 * (0.5 * 0.99 + 0.01))] * 3
    assert sgd.param_groups[1]["momentum"] == 0.937


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_run_from_one_to_lrf(schedule):
    f = [lr_factor(schedule, e, 100, 0.01) for e in range(101)]
    assert f[0] == pytest.approx(1.0) and f[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(f, f[1:]))
    assert f[50] == pytest.approx(0.505)  # both pass the midpoint at half time


def test_ema_ramp_and_update():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(net, decay=0.9999, tau=2000)
    before = ema.ema[0].weight.clone()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net[1].num_batches_tracked += 7
    ema.update(net)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    assert torch.allclose(ema.ema[0].weight, d * before + (1 - d) * net[0].weight)
    assert int(ema.ema[1].num_batches_tracked) == 7  # integer buffers are copied
    assert ema.state_dict() == {"updates": 1}
    assert all(not p.requires_grad for p in ema.ema.parameters())


def _old_ema_update(ema_model: nn.Module, model: nn.Module, d: float) -> None:
    """The per-tensor formula the foreach EMA replaced, kept as the reference."""
    src = model.state_dict()
    with torch.no_grad():
        for k, v in ema_model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k], alpha=1 - d)
            else:
                v.copy_(src[k])


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_foreach_ema_equals_the_per_tensor_formula_in_two_launches():
    import copy

    from detector.model import build_model

    torch.manual_seed(0)
    model = build_model("gelan-t", nc=3).train()
    reference = copy.deepcopy(model).eval()
    ema = ModelEMA(model, decay=0.99, tau=2.0)
    n_tensors = len(model.state_dict())
    for step in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        model(torch.rand(2, 3, 64, 64))  # moves BN statistics and num_batches_tracked
        counter = _CountOps()
        with counter:
            ema.update(model)
        _old_ema_update(reference, model, ema.current_decay())
        # two foreach launches, whatever the number of tensors (the old loop made ~2 per tensor)
        assert counter.ops == ["aten._foreach_lerp_.Scalar", "aten._foreach_copy_.default"], (step, counter.ops[:5])
    assert n_tensors > 200
    got, want = ema.ema.state_dict(), reference.state_dict()
    for k in want:
        if want[k].dtype.is_floating_point:
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(got[k], want[k]), k


def test_run_dirs_increment(tmp_path):
    assert increment_run_dir(tmp_path, "exp") == tmp_path / "exp"
    assert increment_run_dir(tmp_path, "exp") == tmp_path / "exp2"
    assert increment_run_dir(tmp_path, "exp") == tmp_path / "exp3"
    assert increment_run_dir(tmp_path, "exp", exist_ok=True) == tmp_path / "exp"
    assert increment_run_dir(tmp_path, "bccd") == tmp_path / "bccd"
    assert all((tmp_path / n).is_dir() for n in ("exp", "exp2", "exp3", "bccd"))


def test_latest_checkpoint(tmp_path):
    with pytest.raises(DetectorError, match="no run with weights/last.pt"):
        latest_checkpoint(tmp_path)
    for i, name in enumerate(["exp", "exp2"]):
        p = tmp_path / name / "weights" / "last.pt"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
        import os

        os.utime(p, (1000 + i, 1000 + i))
    assert latest_checkpoint(tmp_path) == tmp_path / "exp2" / "weights" / "last.pt"
    assert run_dir_of_checkpoint(tmp_path / "exp2" / "weights" / "last.pt") == (tmp_path / "exp2").resolve()


def test_csv_rows_grow_columns(tmp_path):
    p = tmp_path / "results.csv"
    write_csv_row(p, {"epoch": 1, "train/box": 1.5})
    write_csv_row(p, {"epoch": 2, "train/box": 1.25, "mAP50": 0.5})
    lines = p.read_text().splitlines()
    assert lines == ["epoch,train/box,mAP50", "1,1.5,", "2,1.25,0.5"]


def test_early_stopping_after_patience_epochs_without_improvement():
    """EarlyStopping reads the evaluator it was given and asks the trainer to stop; it writes nothing onto it."""
    from types import SimpleNamespace

    from detector.engine.callbacks import EarlyStopping

    class FakeTrainer(SimpleNamespace):
        def request_stop(self, reason: str) -> None:
            self.reasons.append(reason)

    evaluator = SimpleNamespace(best_epoch=4)
    t = FakeTrainer(epoch=6, reasons=[])
    EarlyStopping(evaluator, patience=3).after_epoch(t)
    assert t.reasons == []
    t.epoch = 7
    EarlyStopping(evaluator, patience=3).after_epoch(t)
    assert len(t.reasons) == 1 and "no improvement for 3 epochs (best epoch 5)" in t.reasons[0]
    t = FakeTrainer(epoch=100, reasons=[])
    EarlyStopping(SimpleNamespace(best_epoch=0), patience=0).after_epoch(t)
    assert t.reasons == []


def test_copy_checkpoint_is_a_byte_copy_and_reports_a_full_disk(tmp_path, monkeypatch):
    import errno
    import shutil

    from detector.checkpoint import NoSpaceError, copy_checkpoint, load_checkpoint, save_checkpoint

    save_checkpoint(
        {"model": {"w": torch.arange(3.0)}, "model_yaml": {}, "names": [], "epoch": 4}, tmp_path / "last.pt"
    )
    copy_checkpoint(tmp_path / "last.pt", tmp_path / "best.pt")
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 4

    def full(src, dst, length=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(NoSpaceError, match="the previous best.pt is intact"):
        copy_checkpoint(tmp_path / "last.pt", tmp_path / "best.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary left
