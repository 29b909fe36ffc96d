"""ONNX Runtime runner: CUDA execution provider when onnxruntime-gpu has it, CPU otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploy.errors import EXPORT_EXTRA, GPU_EXTRA, DeployError, import_optional
from deploy.metadata import ModelMetadata
from deploy.runner import Runner

ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
}
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


def choose_providers(available: list[str], device: str) -> list:
    """Execution providers for ``device``: "auto" prefers CUDA when present, "cuda"/"cuda:N" require it,
    "cpu" never uses it."""
    if device == "cpu":
        return [CPU_EP]
    if device in ("auto", "cuda") or device.startswith("cuda:"):
        if CUDA_EP in available:
            gpu = int(device.partition(":")[2] or 0)
            return [(CUDA_EP, {"device_id": gpu}), CPU_EP]
        if device != "auto":
            raise DeployError(
                f"device={device!r}: this onnxruntime has no CUDA provider (has {available}); "
                f"install the GPU build with: {GPU_EXTRA}"
            )
        return [CPU_EP]
    raise DeployError(f"device={device!r}: expected auto, cpu or cuda")


class OnnxRunner(Runner):
    """Run an exported ``.onnx`` with onnxruntime. ``runner(images) -> {output name: ndarray}``."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        ort = import_optional("onnxruntime", "running .onnx models", f"{EXPORT_EXTRA} (or {GPU_EXTRA} for CUDA)")
        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        providers = choose_providers(ort.get_available_providers(), device)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
            if "EfficientNMS_TRT" in str(e):
                raise DeployError(
                    f"{self.path}: this graph ends in TensorRT's EfficientNMS_TRT plugin (nms=trt), which only "
                    "TensorRT runs: build a TensorRT engine from it, or export with nms=onnx for ONNX Runtime"
                ) from None
            raise DeployError(f"{self.path}: onnxruntime cannot load this model ({e})") from None
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise DeployError(f"{self.path}: expected one image input, found {[i.name for i in inputs]}")
        inp = inputs[0]
        if inp.type not in ORT_TYPES:
            raise DeployError(f"{self.path}: input {inp.name!r} has unsupported type {inp.type}")
        self.input_name = inp.name
        self.input_dtype = np.dtype(ORT_TYPES[inp.type])
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ModelMetadata.from_props(props, origin=str(self.path)) if props else self._guess_metadata()
        if self.metadata.input_dtype != self.input_dtype.name:
            # the graph is the authority on what it accepts; metadata that disagrees means a hand-edited file
            raise DeployError(
                f"{self.path}: metadata says input dtype {self.metadata.input_dtype} but the graph's "
                f"{self.input_name!r} is {self.input_dtype.name}"
            )

    def _guess_metadata(self) -> ModelMetadata:
        """Metadata for an ONNX file exported elsewhere: sizes from the input, class count from the output."""
        out = self.session.get_outputs()[0]
        nc = out.shape[1] - 4 if len(out.shape) == 3 and isinstance(out.shape[1], int) else 0
        h, w = (d if isinstance(d, int) else 640 for d in self.input_shape[2:4])
        return ModelMetadata(
            names={i: str(i) for i in range(nc)},
            imgsz=(h, w),
            input_dtype=self.input_dtype.name,
            nms="none" if not self.has_nms else "onnx",
        )

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: images})
        return dict(zip(self.output_names, outs))
