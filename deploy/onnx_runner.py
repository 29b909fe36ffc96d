"""ONNX Runtime runner: CUDA execution provider when onnxruntime-gpu has it, CPU otherwise.

The provider the session really uses is checked after it is created (``session.get_providers()``): ONNX
Runtime drops a CUDA provider that fails to start without raising.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from deploy.device import DeviceError, parse_device
from deploy.errors import GPU_EXTRA, ORT_EXTRA, DeployError, import_optional
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
LOG = logging.getLogger("deploy")


def choose_providers(available: list[str], device: str = "auto") -> list:
    """Execution providers for ``device`` (any form of ``deploy.device``): "auto" prefers CUDA when present,
    "cuda"/"cuda:N"/"N" require it (on GPU N), "cpu" never uses it."""
    spec = parse_device(device)
    if spec.kind in ("cpu", "mps"):
        return [CPU_EP]
    if len(spec.indices) > 1:
        raise DeviceError(f"device={device!r}: one ONNX Runtime session runs on one GPU; name one, e.g. cuda:0")
    if CUDA_EP in available:
        return [(CUDA_EP, {"device_id": spec.indices[0] if spec.indices else 0}), CPU_EP]
    if spec.kind == "cuda":
        raise DeviceError(
            f"device={device!r}: this onnxruntime has no CUDA provider (has {available}); "
            f"install the GPU build with: {GPU_EXTRA} {ort_conflict_hint()}".rstrip()
        )
    return [CPU_EP]


def ort_conflict_hint() -> str:
    """Why CUDA may be missing although onnxruntime-gpu is installed: both wheels provide the module
    ``onnxruntime``, and whichever was installed last wins (often the CPU one)."""
    from importlib import metadata

    installed = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    if len(installed) < 2:
        return ""
    return (
        f"(both {' and '.join(installed)} are installed and share one module: "
        "pip uninstall -y onnxruntime onnxruntime-gpu, then install onnxruntime-gpu alone)"
    )


def check_providers(session_providers: list[str], requested: list, device: str, path: Path) -> None:
    """ONNX Runtime silently falls back to the CPU when the CUDA provider cannot start (missing CUDA/cuDNN
    libraries, a GPU index that does not exist): asking for CUDA and getting the CPU is an error here, and
    "auto" says so in the log."""
    wanted_cuda = any((p[0] if isinstance(p, tuple) else p) == CUDA_EP for p in requested)
    if not wanted_cuda or CUDA_EP in session_providers:
        return
    why = (
        f"{path}: ONNX Runtime was asked for {CUDA_EP} but the session runs on {session_providers}: the CUDA "
        "provider failed to start (CUDA or cuDNN libraries not found, or the GPU index does not exist; "
        f"ONNX Runtime's log above says which) {ort_conflict_hint()}"
    ).rstrip()
    if parse_device(device).kind == "cuda":
        raise DeviceError(why)
    LOG.warning("%s; running on the CPU", why)


class OnnxRunner(Runner):
    """Run an exported ``.onnx`` with onnxruntime. ``runner(images) -> {output name: ndarray}``."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        ort = import_optional("onnxruntime", "running .onnx models", f"{ORT_EXTRA} (or {GPU_EXTRA} for CUDA)")
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
        check_providers(self.providers, providers, device, self.path)
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
