"""Inference backends behind ``Detector``: each turns a float batch into decoded predictions.

A backend knows nothing about files, letterboxing or NMS; ``Detector`` does those once for all backends, so
every backend returns the same ``Results`` for the same model. What a backend does declare is its side of the
inference contract: ``input_spec(imgsz)`` (the ``PreprocessSpec`` its inputs need) and ``nms`` (the
``NMSConfig`` defaults for its raw outputs). Backends are chosen by the model file's suffix
(``BACKENDS``); anything else is a zoo name or a model YAML built with fresh weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from detector.engine.memory_format import model_to_channels_last, to_channels_last
from detector.errors import DetectorError
from detector.ops import NMSConfig, PreprocessSpec

DEFAULT_IMGSZ = 640
"""Letterbox size of PyTorch backends when ``imgsz`` is not given (exported models use their export size)."""


class Backend(Protocol):
    """What ``Detector`` needs from a backend."""

    names: dict[int, str]
    stride: int
    device: torch.device
    fixed_shape: tuple[int, int] | None  # (H, W) the model only accepts, e.g. a static ONNX export
    dtype: torch.dtype
    has_nms: bool  # True: __call__ returns final detections (NMS ran inside the model)
    nms: NMSConfig  # defaults for the NMS options the caller leaves unset

    def input_spec(self, imgsz: int | tuple[int, int] | None) -> PreprocessSpec:
        """How to letterbox inputs at ``imgsz`` (None: the model's own size); raises ``DetectorError`` when the
        model cannot take that size."""
        ...

    def __call__(self, images: Tensor) -> Tensor | list[Tensor]:
        """``images (Tensor[B, 3, H, W])`` float RGB 0..1 -> ``(B, 4 + nc, A)`` xyxy pixels + scores, or, when
        ``has_nms``, one ``Tensor[n, 6]`` (x1, y1, x2, y2, score, class) per image."""
        ...


def model_input_spec(stride: int, imgsz: int | tuple[int, int] | None) -> PreprocessSpec:
    """A PyTorch model takes any multiple of its stride: minimal padding (as validation's rect batches)."""
    from deploy.contract import MIN_PAD_MULTIPLE

    try:
        return PreprocessSpec(imgsz or DEFAULT_IMGSZ, max(int(stride), MIN_PAD_MULTIPLE), auto=True)
    except ValueError as e:
        raise DetectorError(f"predict: imgsz={imgsz}: {e}") from None


def select_device(device: str | torch.device | None) -> torch.device:
    """``None``/``""``/``"auto"`` -> the first GPU when there is one, else CPU; otherwise any form of
    ``deploy.device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"1"``), read as the trainer reads it."""
    from detector.engine.distributed import select_device as engine_device

    return engine_device(device)


class TorchBackend:
    """A ``DetectionModel`` in eval mode (deploy form unless ``deploy=False``), optionally fp16 on CUDA."""

    fixed_shape = None
    has_nms = False
    nms = NMSConfig.predict()

    def __init__(self, model, device: torch.device, half: bool = False) -> None:
        self.model = model_to_channels_last(model.to(device).eval(), device)
        self.device = device
        self.half = bool(half and device.type == "cuda")
        self.dtype = torch.float16 if self.half else torch.float32
        if self.half:
            self.model.half()
        self.names = dict(model.names)
        self.stride = int(max(model.strides))

    def input_spec(self, imgsz: int | tuple[int, int] | None) -> PreprocessSpec:
        return model_input_spec(self.stride, imgsz)

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> Tensor:
        images = to_channels_last(images.to(self.device, self.dtype), self.device)
        return self.model.infer(images)  # decoded in float32, also for half


def load_torch_checkpoint(path: Path, device: torch.device, half: bool, deploy: bool) -> TorchBackend:
    from detector.checkpoint import model_from_checkpoint

    return TorchBackend(model_from_checkpoint(path, deploy=deploy), device, half)


def load_torch_architecture(name: str | Path, device: torch.device, half: bool, deploy: bool, nc=None) -> TorchBackend:
    from detector.model import build_model

    model = build_model(name, nc=nc)
    if deploy:
        model.to_deploy()
    return TorchBackend(model.eval(), device, half)


class ExportedBackend:
    """An exported ONNX model or TensorRT engine, run by ``deploy``'s runner (numpy in, numpy out).

    The runner reads the model's metadata (class names, strides, input size and dtype, NMS mode); a static
    batch size is honoured by splitting larger batches.
    """

    dtype = torch.float32

    def __init__(self, path: Path, device: torch.device, half: bool = False, deploy: bool = True) -> None:
        from deploy import load_runner
        from deploy.errors import DeployError

        try:
            self.runner = load_runner(path, device=f"cuda:{device.index or 0}" if device.type == "cuda" else "cpu")
        except DeployError as e:
            raise DetectorError(str(e)) from None
        meta = self.runner.metadata
        self.names = dict(meta.names)
        self.stride = meta.stride
        self.device = torch.device("cpu")  # the runner moves data itself
        self.fixed_shape = self.runner.fixed_hw
        self.has_nms = self.runner.has_nms
        self.nms = meta.postprocess

    def input_spec(self, imgsz: int | tuple[int, int] | None) -> PreprocessSpec:
        from deploy.errors import DeployError

        try:
            return self.runner.input_spec(imgsz)
        except (DeployError, ValueError) as e:
            raise DetectorError(str(e)) from None

    def __call__(self, images: Tensor) -> Tensor | list[Tensor]:
        from deploy.postprocess import from_nms_outputs

        step = self.runner.fixed_batch or self.runner.max_batch or len(images)
        if self.runner.input_dtype == "uint8":  # a graph that normalises itself takes the pixels back (exact)
            images = images.mul(255).round_().to(torch.uint8)
        chunks = [self._pad(images[i : i + step].numpy(), step) for i in range(0, len(images), step)]
        outs = [(self.runner(x), n) for x, n in chunks]
        if self.has_nms:
            return [torch.from_numpy(d) for out, n in outs for d in from_nms_outputs(out)[:n]]
        return torch.cat([torch.from_numpy(out["output0"][:n]).float() for out, n in outs])

    def _pad(self, x, step: int):
        """A static-batch model takes exactly ``fixed_batch`` images: pad the last chunk with zeros."""
        import numpy as np

        n = len(x)
        if self.runner.fixed_batch and n < step:
            x = np.concatenate([x, np.zeros((step - n, *x.shape[1:]), x.dtype)])
        return x, n


BACKENDS: dict[str, Callable[..., Backend]] = {
    ".pt": load_torch_checkpoint,
    ".onnx": ExportedBackend,
    ".engine": ExportedBackend,
    ".plan": ExportedBackend,
}
"""File suffix -> loader ``(path, device, half, deploy) -> Backend``; exported formats add theirs here."""


def _graph_backend(model: str | Path, device: torch.device, half: bool) -> Backend:
    from detector.predict.graph_backend import load_graph_backend

    return load_graph_backend(model, device)  # always fp16: the graph runtime's deploy form


RUNTIMES: dict[str, Callable[..., Backend]] = {"graph": _graph_backend}
"""``backend=`` name -> loader ``(model, device, half) -> Backend`` for runtimes chosen by name, not by suffix."""


def load_backend(
    model: str | Path, device=None, half: bool = False, deploy: bool = True, nc=None, backend: str = "auto"
) -> Backend:
    """Pick the backend for ``model`` (checkpoint, exported file, zoo name or YAML); ``backend`` names a runtime
    of ``RUNTIMES`` ("graph") instead of the one the model's file type implies ("auto")."""
    dev = select_device(device)
    if backend not in ("auto", *RUNTIMES):
        raise DetectorError(f"backend={backend!r}: choose 'auto' or one of {', '.join(RUNTIMES)}")
    if backend != "auto":
        return RUNTIMES[backend](model, dev, half)
    suffix = Path(str(model)).suffix.lower()
    if suffix in BACKENDS:
        path = Path(model)
        if not path.is_file():
            raise DetectorError(f"{path}: model file not found")
        return BACKENDS[suffix](path, dev, half, deploy)
    if suffix and suffix not in (".yaml", ".yml"):
        raise DetectorError(
            f"{model}: unsupported model file type {suffix!r}; use a .pt checkpoint, an exported "
            f"{'/'.join(s for s in BACKENDS if s != '.pt') or '.onnx'} file, a model YAML or a zoo name"
        )
    return load_torch_architecture(model, dev, half, deploy, nc)
