"""Inference backends behind ``Detector``: each turns a float batch into decoded predictions.

A backend knows nothing about files, letterboxing or NMS; ``Detector`` does those once for all backends, so
every backend returns the same ``Results`` for the same model. Backends are chosen by the model file's suffix
(``BACKENDS``); anything else is a zoo name or a model YAML built with fresh weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from detector.errors import DetectorError


class Backend(Protocol):
    """What ``Detector`` needs from a backend."""

    names: dict[int, str]
    stride: int
    device: torch.device
    fixed_shape: tuple[int, int] | None  # (H, W) the model only accepts, e.g. a static ONNX export
    dtype: torch.dtype

    def __call__(self, images: Tensor) -> Tensor:
        """``images (Tensor[B, 3, H, W])`` float RGB 0..1 -> ``(B, 4 + nc, A)`` xyxy pixels + scores."""
        ...


def select_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available else CPU; ``"0"`` -> ``cuda:0``; otherwise as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str) and device.isdigit():
        device = f"cuda:{device}"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DetectorError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return dev


class TorchBackend:
    """A ``DetectionModel`` in eval mode (deploy form unless ``deploy=False``), optionally fp16 on CUDA."""

    fixed_shape = None

    def __init__(self, model, device: torch.device, half: bool = False) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.half = bool(half and device.type == "cuda")
        self.dtype = torch.float16 if self.half else torch.float32
        if self.half:
            self.model.half()
        self.names = dict(model.names)
        self.stride = int(max(model.strides))

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> Tensor:
        return self.model(images.to(self.device, self.dtype))["main"].float()


def load_torch_checkpoint(path: Path, device: torch.device, half: bool, deploy: bool) -> TorchBackend:
    from detector.checkpoint import model_from_checkpoint

    return TorchBackend(model_from_checkpoint(path, deploy=deploy), device, half)


def load_torch_architecture(name: str | Path, device: torch.device, half: bool, deploy: bool, nc=None) -> TorchBackend:
    from detector.model import build_model

    model = build_model(name, nc=nc)
    if deploy:
        model.to_deploy()
    return TorchBackend(model.eval(), device, half)


BACKENDS: dict[str, Callable[..., Backend]] = {".pt": load_torch_checkpoint}
"""File suffix -> loader ``(path, device, half, deploy) -> Backend``; exported formats add theirs here."""


def load_backend(model: str | Path, device=None, half: bool = False, deploy: bool = True, nc=None) -> Backend:
    """Pick the backend for ``model`` (checkpoint, exported file, zoo name or YAML)."""
    dev = select_device(device)
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
