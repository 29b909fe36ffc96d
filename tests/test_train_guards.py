"""Bad input around a training run: out-of-range keys, a config or data that fails before the first step, a
classifier form, two runs in one folder, a full disk during a checkpoint write, leftovers of killed writes,
and Ctrl-C. Each stops with one clear message and leaves the run folder usable."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _engine_kit import REPO, TINY_MODEL, bccd_subset, single_thread, tiny_config

from detector import cli
from detector.checkpoint import load_checkpoint
from detector.config import ConfigError, load
from detector.engine.callbacks import Callback
from detector.engine.run_lock import RunDirBusy, RunLock
from detector.engine.settings import ValRunConfig
from detector.engine.trainer import Trainer, cli_train, parse_train_args
from detector.errors import DetectorError
from detector.predict.cli import PredictConfig


@pytest.fixture(scope="module")
def data4(tmp_path_factory) -> Path:
    return bccd_subset(tmp_path_factory.mktemp("bccd4"), 4)


def train_argv(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    """A tiny CPU run on the command line (two epochs of two batches at 64 px)."""
    return [f"model={TINY_MODEL}", f"data={data}", "epochs=2", "imgsz=64", "batch=2", "device=cpu", "workers=0",
            f"project={tmp_path / 'runs'}", "patience=0", "plots=False", "optim.nbs=2", "optim.warmup_min_iters=2",
            "augment.mosaic=0", "val.plots=False", *extra]  # fmt: skip


def test_out_of_range_values_are_refused_once_with_one_line_per_key(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_train_args(["epochs=-1", "imgsz=0", "val.conf=5", "val.iou=-1", "val.max_det=-5", "optim.lr0=0"])
    lines = str(e.value).splitlines()
    assert lines[0] == "command line: 6 values out of range:"
    assert lines[1:] == [
        "  key 'epochs' = -1 must be >= 1",
        "  key 'imgsz' = 0 must be >= 32",
        "  key 'optim.lr0' = 0.0 must be > 0",
        "  key 'val.conf' = 5.0 must be in [0, 1]",
        "  key 'val.iou' = -1.0 must be in [0, 1]",
        "  key 'val.max_det' = -5 must be >= 1",
    ]
    with pytest.raises(ConfigError, match=r"^command line: 4 values out of range:\n  key 'conf' = 2.0 must be in"):
        load(PredictConfig, [], ["conf=2", "iou=-1", "max_det=-5", "imgsz=0"])
    with pytest.raises(ConfigError, match=r"^command line: key 'conf' = -1.0 must be in \[0, 1\]$"):
        load(ValRunConfig, [], ["conf=-1"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("augment: {fliplr: 2}\n")
    with pytest.raises(ConfigError, match=r"r.yaml: key 'augment.fliplr' = 2.0 must be in \[0, 1\]"):
        parse_train_args([str(recipe)])


def test_failing_config_or_data_leaves_no_run_folder(tmp_path, data4):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"config: key 'epochs' = 0 must be >= 1"):  # built in Python
        Trainer(tiny_config(tmp_path, data4, epochs=0)).train()
    with pytest.raises(DetectorError, match=r"model=lsnet-t-cls is an image classifier .* trains detectors only"):
        Trainer(tiny_config(tmp_path, data4, model="lsnet-t-cls")).train()
    assert not runs.exists() or not any(runs.iterdir())
    # found only once the data is read, after the run folder was made: the folder goes again
    with pytest.raises(DetectorError, match="imgsz 100 must be a multiple of the stride 32"):
        Trainer(tiny_config(tmp_path, data4, imgsz=100)).train()
    assert list(runs.iterdir()) == []
    (runs / "keep").mkdir()  # an existing folder (exist_ok) is never removed
    with pytest.raises(DetectorError, match="imgsz 100"):
        Trainer(tiny_config(tmp_path, data4, imgsz=100, name="keep", exist_ok=True)).train()
    assert (runs / "keep").is_dir()


HOLD = "import sys, time; from detector.engine.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"  # noqa: E501


def test_second_run_in_a_locked_folder_stops_naming_the_first_and_a_killed_runs_lock_is_taken_over(
    tmp_path, data4, monkeypatch, caplog
):
    run_dir = tmp_path / "runs" / "exp"
    run_dir.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=rf"{run_dir} is in use by another run pid {holder.pid} on .*started"):
            Trainer(tiny_config(tmp_path, data4, exist_ok=True)).train()
        assert run_dir.is_dir()  # the running one's folder stays
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert str(holder.pid) in (run_dir / ".lock").read_text()  # killed: its record is still there, unlocked
    monkeypatch.setattr(logging.getLogger("detector"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="detector"):
        lock = RunLock(run_dir).acquire()
    assert f"taking over the lock of run pid {holder.pid}" in caplog.text
    assert f'"pid": {os.getpid()}' in (run_dir / ".lock").read_text()
    lock.release()
    assert (run_dir / ".lock").read_text() == ""


def test_disk_full_during_a_checkpoint_write_is_one_line_and_a_clean_exit(tmp_path, data4, monkeypatch, capsys):
    single_thread()
    real_save = torch.save
    calls = []

    def fills_the_disk(obj, f, *a, **k):
        calls.append(1)
        if len(calls) < 2:  # epoch 1 writes last.pt (best.pt is a byte copy); epoch 2's last.pt finds the disk full
            return real_save(obj, f, *a, **k)
        f.write(b"partial")
        if Path("/dev/full").exists():  # the error torch really raises when the disk fills mid-write
            with open("/dev/full", "wb") as full:
                real_save(obj, full)
                full.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", fills_the_disk)
    assert cli.main(["train", *train_argv(tmp_path, data4)]) == 2
    weights = tmp_path / "runs" / "exp" / "weights"
    err = capsys.readouterr().err
    assert "Traceback" not in err and [ln for ln in err.splitlines() if "error" in ln.lower()] == [
        f"error: no space left on {weights}; the previous last.pt is intact"
    ]
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]  # no .tmp left behind
    assert load_checkpoint(weights / "last.pt")["epoch"] == 0
    assert (weights.parent / ".lock").read_text() == ""  # released


class CtrlC(Callback):
    def before_step(self, trainer) -> None:
        if trainer.epoch == 1:
            raise KeyboardInterrupt


def test_ctrl_c_prints_the_exact_resume_command_and_stale_temporaries_are_removed(tmp_path, data4):
    single_thread()
    with pytest.raises(KeyboardInterrupt):
        Trainer(parse_train_args(train_argv(tmp_path, data4)), callbacks=[CtrlC()]).train()
    run_dir = tmp_path / "runs" / "exp"
    log = (run_dir / "train.log").read_text()
    command = log.split("resume with: ")[1].splitlines()[0]
    last = run_dir / "weights" / "last.pt"
    assert command == f"detector train resume={last}"
    stale = run_dir / "weights" / "last.pt.k3j2.tmp"  # as a write killed half-way leaves it
    stale.write_bytes(b"half a checkpoint")
    assert cli_train(command.split()[2:]) == 0  # the printed command, as a user would paste it
    assert not stale.exists()
    assert f"removed {stale}, left by a checkpoint write that was cut off" in (run_dir / "train.log").read_text()
    assert load_checkpoint(last)["finished"] == "completed 2 epochs"
