"""Experiment loggers as trainer callbacks: TensorBoard and MLflow, chosen with ``loggers=tensorboard,mlflow``.

Both are optional (``pip install 'detector[log]'``) and log exactly the per-epoch row ``results.csv`` gets
(``ResultsLogger.last_row``: train losses, P, R, mAP50, mAP50-95, val losses, each group's lr) with the epoch
as the step, so the CSV, the plots and the dashboards never disagree. They take the ``ResultsLogger`` as a
constructor argument (what they read is named) and run after it and after the checkpoints (``order`` 60), on
rank 0 only, like every other output.

* ``tensorboard``: event files in the run folder (``tensorboard --logdir runs/train``).
* ``mlflow``: one MLflow run per training run, in experiment ``project``, named after the run folder, with the
  resolved config as parameters and ``results.csv``, ``args.yaml`` and ``weights/best.pt`` as artifacts at the
  end. The tracking store is ``$MLFLOW_TRACKING_URI`` when set (a server, ``sqlite:///mlflow.db``, ...), else a
  local file store ``PROJECT/mlruns`` (``mlflow ui --backend-store-uri runs/train/mlruns``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from detector.config import ConfigError, to_dict
from detector.engine.callbacks import Callback, ResultsLogger

if TYPE_CHECKING:
    from detector.engine.trainer import Trainer

LOGGER = logging.getLogger("detector")


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


class _EpochRowLogger(Callback):
    """Base of the loggers: reads the epoch row of ``results``."""

    order = 60

    def __init__(self, results: ResultsLogger) -> None:
        self.results = results


class TensorBoardLogger(_EpochRowLogger):
    """Scalars of every epoch row into TensorBoard event files in the run folder."""

    def before_train(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(trainer.run_dir))
        LOGGER.info(f"tensorboard: tensorboard --logdir {trainer.run_dir.parent}")

    def after_epoch(self, trainer: Trainer) -> None:
        for key, value in self.results.last_row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, trainer.epoch + 1)
        self.writer.flush()

    def after_train(self, trainer: Trainer) -> None:
        self.writer.close()


class MLflowLogger(_EpochRowLogger):
    """Params once, metrics every epoch, artifacts at the end, into one MLflow run."""

    def before_train(self, trainer: Trainer) -> None:
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            store = Path(trainer.cfg.project).resolve() / "mlruns"
            # the local file store is what needs no server or database; MLflow 3 asks for an explicit opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = store.as_uri()
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        name = Path(trainer.cfg.project).name or "detector"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=trainer.run_dir.name).info.run_id
        for key, value in _flat(to_dict(trainer.cfg)).items():
            self.client.log_param(self.run_id, key, value[:6000])
        self.uri = uri
        LOGGER.info(f"mlflow: run {self.run_id} in experiment {name!r} at {uri}")

    def after_epoch(self, trainer: Trainer) -> None:
        from mlflow.entities import Metric

        step, row = trainer.epoch + 1, self.results.last_row
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, step) for k, v in row.items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics)

    def after_train(self, trainer: Trainer) -> None:
        for name, folder in (("results.csv", None), ("args.yaml", None), ("weights/best.pt", "weights")):
            path = trainer.run_dir / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path), folder)
        self.client.set_terminated(self.run_id)


LOGGERS: dict[str, tuple[type[_EpochRowLogger], str]] = {
    "tensorboard": (TensorBoardLogger, "tensorboard"),
    "mlflow": (MLflowLogger, "mlflow"),
}
"""``loggers=`` name -> (callback, the module it needs)."""


def build_loggers(names: list[str], results: ResultsLogger) -> list[Callback]:
    """The callbacks for ``loggers=...``, reading ``results``' rows; an unknown name or a missing library is a
    ``ConfigError``."""
    import importlib.util

    out = []
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"loggers: unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
        cls, module = LOGGERS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"loggers={name} needs the {module} package: pip install 'detector[log]'")
        out.append(cls(results))
    return out
