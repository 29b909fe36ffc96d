"""The interface every deploy runner answers, and ``load_runner`` which picks one from the file type.

A runner is called with a preprocessed batch ``images (ndarray[B, 3, H, W])`` and returns ``{output name:
ndarray}``: ``output0 (B, 4 + nc, A)`` for a raw graph, or ``num_dets``/``det_boxes``/``det_scores``/
``det_classes`` for a graph with NMS inside. It casts the batch to the dtype the model declares.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from deploy.contract import PreprocessSpec
from deploy.errors import DeployError
from deploy.metadata import NMS_OUTPUTS, ModelMetadata


class Runner(ABC):
    """Base class: holds the metadata and the input's name, dtype and shape; subclasses run the model.

    ``input_shape`` has ``None`` for dynamic dimensions; ``max_batch`` is the largest batch the model takes
    (``None``: unbounded); ``fixed_batch`` is the only batch a static-batch model takes (else ``None``).
    """

    path: Path
    metadata: ModelMetadata
    input_name: str
    input_dtype: np.dtype
    input_shape: tuple[int | None, ...]
    output_names: list[str]

    @property
    def has_nms(self) -> bool:
        """True when the graph ends in NMS (its outputs are the four ``det_*``/``num_dets`` tensors)."""
        return set(NMS_OUTPUTS) <= set(self.output_names)

    @property
    def fixed_batch(self) -> int | None:
        b = self.input_shape[0]
        return b if isinstance(b, int) else None

    @property
    def max_batch(self) -> int | None:
        return self.fixed_batch

    @property
    def input_hw(self) -> tuple[int, int]:
        """(H, W) of the largest input: the fixed input size, or the export size for dynamic H/W (``input_spec``
        says how images are letterboxed)."""
        h, w = self.input_shape[2:4]
        return (h or self.metadata.imgsz[0], w or self.metadata.imgsz[1])

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        """(H, W) of a graph exported for one input size, else None."""
        h, w = self.input_shape[2:4]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None

    def input_spec(self, imgsz: int | tuple[int, int] | None = None) -> PreprocessSpec:
        """How to letterbox images for this model: the exported ``metadata.preprocess``, at ``imgsz`` when given.

        A graph with a fixed input size takes only that size: asking for another ``imgsz`` raises
        ``DeployError`` (re-export with ``dynamic_hw=True``, or at that size) instead of silently using its own.
        """
        spec = self.metadata.preprocess
        fixed = self.fixed_hw
        if fixed is not None:
            if imgsz is not None and PreprocessSpec(imgsz, auto=False).size != fixed:
                raise DeployError(
                    f"{self.path.name} was exported for a fixed {fixed[0]}x{fixed[1]} input and cannot run at "
                    f"imgsz={imgsz}; leave imgsz unset, or re-export with dynamic_hw=True (or at that imgsz)"
                )
            return PreprocessSpec(fixed, spec.stride, spec.pad_value, auto=False, scaleup=spec.scaleup)
        try:
            return spec if imgsz is None else spec.with_size(imgsz)
        except ValueError as e:
            raise DeployError(f"{self.path.name}: imgsz={imgsz}: {e}") from None

    def check_input(self, images: np.ndarray) -> np.ndarray:
        """Validate the batch against the model's input and cast it to ``input_dtype`` (C-contiguous)."""
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1] != 3:
            got = images.shape if isinstance(images, np.ndarray) else type(images).__name__
            raise DeployError(f"{self.path.name}: input must be an array (B, 3, H, W), got {got}")
        for axis, (want, have) in enumerate(zip(self.input_shape, images.shape)):
            if want is not None and want != have:
                what = ("batch", "channels", "height", "width")[axis]
                raise DeployError(
                    f"{self.path.name}: input {what} is {have} but the model was exported with {want}"
                    + (" (export with dynamic=True to vary it)" if axis != 1 else "")
                )
        if self.input_dtype == np.uint8 and images.dtype.kind == "f":
            raise DeployError(
                f"{self.path.name}: this model takes uint8 pixels 0..255 (it normalises inside the graph), got "
                f"{images.dtype}; pass the letterboxed uint8 batch (deploy.preprocess does so for such a model)"
            )
        if self.max_batch is not None and images.shape[0] > self.max_batch:
            raise DeployError(f"{self.path.name}: batch {images.shape[0]} exceeds the model's maximum {self.max_batch}")
        return np.ascontiguousarray(images, dtype=self.input_dtype)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return self.run(self.check_input(images))

    @abstractmethod
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run a checked batch (already of ``input_dtype``) and return every output by name."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path.name}, input {self.input_name} {self.input_shape} "
            f"{np.dtype(self.input_dtype).name}, nms={self.metadata.nms})"
        )


ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def load_runner(path: str | Path, device: str = "auto") -> Runner:
    """Open an exported model: ``.onnx`` -> ``OnnxRunner``, ``.engine``/``.plan`` -> ``TensorRTRunner`` (CUDA
    only). ``device``: any form of ``deploy.device`` ("auto", "cpu", "cuda", "cuda:1", "1"); a GPU index is
    honoured by both runners."""
    from deploy.device import DeviceError, parse_device

    path = Path(path)
    if not path.is_file():
        raise DeployError(f"{path}: model file not found")
    spec = parse_device(device)
    if path.suffix == ".onnx":
        from deploy.onnx_runner import OnnxRunner

        return OnnxRunner(path, device=device)
    if path.suffix in ENGINE_SUFFIXES:
        if spec.kind in ("cpu", "mps"):
            raise DeployError(f"{path}: a TensorRT engine runs on a CUDA GPU only; use the .onnx file for CPU")
        if len(spec.indices) > 1:
            raise DeviceError(f"device={device!r}: a TensorRT runner uses one GPU; name one, e.g. cuda:0")
        from deploy.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path, device=spec.indices[0] if spec.indices else 0)
    raise DeployError(f"{path}: unknown model type {path.suffix!r}; expected .onnx or {', '.join(ENGINE_SUFFIXES)}")
