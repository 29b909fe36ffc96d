"""loggers=tensorboard,mlflow: the real libraries write what results.csv holds, epoch by epoch, to local stores."""

from __future__ import annotations

import csv

import pytest
from _engine_kit import bccd_subset, tiny_config

from detector.config import ConfigError
from detector.engine.callbacks import ResultsLogger
from detector.engine.loggers import build_loggers
from detector.engine.trainer import Trainer

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two epochs of the tiny model with both loggers on; returns (run dir, results.csv rows)."""
    tmp = tmp_path_factory.mktemp("loggers")
    cfg = tiny_config(tmp, bccd_subset(tmp / "data", 4), loggers=["tensorboard", "mlflow"])
    Trainer(cfg).train()
    run_dir = tmp / "runs" / "exp"
    with open(run_dir / "results.csv", newline="") as f:
        return run_dir, list(csv.DictReader(f))


def test_tensorboard_scalars_equal_results_csv(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, rows = run
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    lr = next(t for t in sorted(tags) if t.startswith("lr/"))
    assert {"mAP50", "mAP50-95", "train/box"} <= tags
    for tag in ("mAP50-95", "train/box", lr):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [1, 2]
        assert [v for _, v in got] == pytest.approx([float(r[tag]) for r in rows], rel=1e-4, abs=1e-6)


def test_mlflow_run_holds_params_metrics_and_artifacts(run):
    import mlflow

    run_dir, rows = run
    client = mlflow.MlflowClient(tracking_uri=(run_dir.parent / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "runs"]
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "exp" and found.info.status == "FINISHED"
    assert found.data.params["imgsz"] == "96" and found.data.params["optim.nbs"] == "2"
    history = client.get_metric_history(found.info.run_id, "mAP50-95")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([float(r["mAP50-95"]) for r in rows], rel=1e-4, abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"results.csv", "args.yaml", "weights"} <= artifacts


def test_unknown_or_missing_logger_is_a_config_error(monkeypatch):
    with pytest.raises(ConfigError, match="unknown logger 'wandb'; choose from tensorboard, mlflow"):
        build_loggers(["wandb"], ResultsLogger())
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"loggers=mlflow needs the mlflow package: pip install 'detector\[log\]'"):
        build_loggers(["mlflow"], ResultsLogger())
