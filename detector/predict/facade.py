"""The modes of ``Detector`` beyond ``predict``: ``train``, ``val``, ``export``, ``info``, ``benchmark``, callbacks.

The shape Ultralytics users type (``Detector("gelan-t").train(data="bccd", epochs=10, imgsz=320)``), each method
building the same typed config the command line builds and calling the same function the CLI mode calls, so
both return and write the same things: ``train`` and ``val`` a ``ValResult`` (and a run folder), ``export`` the
written file, ``info`` the summary dict, ``benchmark`` the rows of the table (and its CSV).

After ``train``, the ``Detector`` holds the run's ``best.pt``, so ``predict``/``val``/``export`` use the trained
weights, as in Ultralytics.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.engine.callbacks import Callback
from detector.errors import DetectorError

if TYPE_CHECKING:
    from detector.benchmark import Row
    from detector.engine.validator import ValResult

EVENTS = ("before_train", "before_epoch", "before_step", "after_backward", "after_step", "after_epoch", "after_train")
ULTRALYTICS_EVENTS = {
    "on_pretrain_routine_start": "before_train",
    "on_train_start": "before_train",
    "on_train_epoch_start": "before_epoch",
    "on_train_batch_start": "before_step",
    "on_before_zero_grad": "after_backward",
    "on_train_batch_end": "after_step",
    "on_train_epoch_end": "after_epoch",
    "on_fit_epoch_end": "after_epoch",
    "on_model_save": "after_epoch",
    "on_train_end": "after_train",
}
"""Ultralytics' callback names -> the trainer event that fires at the same point."""
TRAINABLE_SUFFIXES = ("", ".yaml", ".yml", ".pt", ".pth", ".ckpt")


class FunctionCallback(Callback):
    """Calls ``fn(trainer)`` on one trainer event."""

    def __init__(self, event: str, fn: Callable[[Any], None]) -> None:
        self.event, self.fn = event, fn

    def _fire(self, event: str, trainer) -> None:
        if event == self.event:
            self.fn(trainer)

    def before_train(self, trainer) -> None:
        self._fire("before_train", trainer)

    def before_epoch(self, trainer) -> None:
        self._fire("before_epoch", trainer)

    def before_step(self, trainer) -> None:
        self._fire("before_step", trainer)

    def after_backward(self, trainer) -> None:
        self._fire("after_backward", trainer)

    def after_step(self, trainer) -> None:
        self._fire("after_step", trainer)

    def after_epoch(self, trainer) -> None:
        self._fire("after_epoch", trainer)

    def after_train(self, trainer) -> None:
        self._fire("after_train", trainer)


def _nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr0": 0.01}`` -> ``{"optim": {"lr0": 0.01}}``; plain keys and dict values pass through."""
    from detector.config import deep_merge

    out: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node: dict[str, Any] = {leaf: value}
        for p in reversed(parents):
            node = {p: node}
        out = deep_merge(out, node)
    return out


class ModelModes:
    """Mixed into ``Detector``, which sets ``_device_arg``, ``_half``, ``_deploy``, ``_callbacks`` and calls ``_load``."""

    model_path: str
    backend: Any
    _callbacks: list[Callback]
    _device_arg: str | None
    _half: bool
    _deploy: bool

    def add_callback(self, event: str, fn: Callable[[Any], None]) -> ModelModes:
        """Call ``fn(trainer)`` on ``event`` of every later ``train``: one of ``EVENTS`` or an Ultralytics name
        (``on_train_epoch_end`` ...). Returns ``self``."""
        name = ULTRALYTICS_EVENTS.get(event, event)
        if name not in EVENTS:
            import difflib

            close = difflib.get_close_matches(event, [*EVENTS, *ULTRALYTICS_EVENTS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; events: {', '.join(EVENTS)}"
            raise DetectorError(f"add_callback: unknown event {event!r}{hint}")
        self._callbacks.append(FunctionCallback(name, fn))
        return self

    def _need(self, what: str, suffixes: tuple[str, ...]) -> str:
        if Path(self.model_path).suffix.lower() not in suffixes:
            raise DetectorError(f"Detector({self.model_path!r}).{what}: needs a zoo name, model YAML or .pt checkpoint")
        return self.model_path

    def _with_device(self, overrides: dict[str, Any]) -> dict[str, Any]:
        if self._device_arg not in (None, "", "auto") and "device" not in overrides:
            overrides["device"] = str(self._device_arg)
        return overrides

    def train(self, data: str | Path | None = None, recipe: str | Path | None = None, **overrides: Any) -> ValResult:
        """Train this model (fresh weights for a zoo name / YAML, starting from the weights of a ``.pt``).

        Keys are those of ``detector train --help`` (``epochs=10, imgsz=320, batch=8, device="cpu"``; nested as
        ``optim={"lr0": 0.01}`` or ``**{"optim.lr0": 0.01}``); ``recipe`` names a file in ``configs/`` to start
        from. Returns the ``ValResult`` of ``best.pt``, and this ``Detector`` then runs ``best.pt``.
        """
        from detector.config import load
        from detector.engine.settings import TrainConfig
        from detector.engine.trainer import Trainer
        from detector.zoo import CONFIGS_DIR, find_yaml

        over = self._with_device(_nested(overrides))
        over.setdefault("model", self._need("train", TRAINABLE_SUFFIXES))
        if data is not None:
            over["data"] = str(data)
        files = [find_yaml(recipe, CONFIGS_DIR, "recipe")] if recipe else []
        cfg = load(TrainConfig, files, over)
        self.trainer = Trainer(cfg, callbacks=list(self._callbacks))
        result = self.trainer.train()
        best = self.trainer.run_dir / "weights" / "best.pt"
        if best.is_file():
            self._load(best)
        return result

    def val(self, data: str | Path | None = None, **overrides: Any) -> ValResult:
        """Evaluate the checkpoint this ``Detector`` holds (keys of ``detector val --help``); returns a ``ValResult``."""
        from detector.config import load
        from detector.engine.settings import ValRunConfig
        from detector.engine.validator import validate_checkpoint

        if Path(self.model_path).suffix.lower() not in (".pt", ".pth", ".ckpt"):
            raise DetectorError(
                f"Detector({self.model_path!r}).val: validation needs trained weights; train first "
                "(det.train(data=...)) or open a .pt checkpoint"
            )
        over = self._with_device(_nested(overrides))
        over["model"] = self.model_path
        if data is not None:
            over["data"] = str(data)
        return validate_checkpoint(load(ValRunConfig, [], over))

    def export(self, format: str = "onnx", **kwargs: Any) -> Path:
        """Export the weights this ``Detector`` runs (keys of ``detector export --help``); returns the file."""
        from detector.export import export

        source: Any = self._need("export", TRAINABLE_SUFFIXES)
        model = getattr(self.backend, "model", None)
        if Path(source).suffix.lower() in ("", ".yaml", ".yml") and model is not None:
            source = model  # fresh weights: export these very weights, not a second random draw
        return export(source, format=format, **kwargs)

    def info(self, imgsz: int = 640, verbose: bool = True) -> dict:
        """Params and GFLOPs of the train and deploy forms (``detector info``); prints the layer table too."""
        from detector.benchmark import load_train_form
        from detector.info import format_info, model_summary

        model = load_train_form(self._need("info", TRAINABLE_SUFFIXES))
        summary = model_summary(model, imgsz)
        if verbose:
            print(format_info(model, imgsz, summary))
        return summary

    def benchmark(self, verbose: bool = True, **overrides: Any) -> list[Row]:
        """Latency per backend and batch (keys of ``detector benchmark --help``); writes the same CSV."""
        from detector.benchmark import BenchmarkArgs, run_benchmark
        from detector.config import load

        over = _nested(overrides)
        over["model"] = self._need("benchmark", TRAINABLE_SUFFIXES)
        if self._device_arg not in (None, "", "auto") and "device" not in over:
            over["device"] = "cpu" if str(self._device_arg) == "cpu" else "cuda"
        return run_benchmark(load(BenchmarkArgs, [], over), verbose=verbose)

    def _load(self, model: str | Path) -> None:
        """Open ``model`` (zoo name, YAML, checkpoint, export) with this Detector's device/half/deploy settings."""
        from detector.predict.backends import load_backend

        self.backend = load_backend(model, self._device_arg, self._half, self._deploy)
        self.model_path = str(model)

    def __repr__(self) -> str:
        b = self.backend
        runner = getattr(b, "runner", None)
        if runner is not None:
            kind = f"{type(runner).__name__} ({'in-graph NMS' if b.has_nms else 'NMS after'})"
        else:
            kind = f"torch ({'deploy' if self._deploy else 'train'} form, {str(b.dtype).removeprefix('torch.')})"
        return f"Detector(model={self.model_path!r}, backend={kind}, device={b.device}, classes={len(b.names)})"
