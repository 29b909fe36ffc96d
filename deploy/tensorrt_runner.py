"""TensorRT runner (TensorRT 10/11 named-tensor API), with device buffers from ``deploy.cuda_memory``.

Each call: set the input shape on the execution context, read every output's shape back from the context,
(re)grow device buffers, copy in, ``set_tensor_address`` for every I/O tensor, ``execute_async_v3`` on our
stream, copy out, synchronise. Metadata comes from the ``NAME.engine.json`` sidecar written by the exporter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploy.cuda_memory import CudaStream, DeviceBuffer, cuda_runtime
from deploy.engine_builder import import_tensorrt
from deploy.errors import DeployError
from deploy.metadata import ModelMetadata, sidecar_path
from deploy.runner import Runner


class TensorRTRunner(Runner):
    """Run a serialized engine. ``runner(images) -> {output name: ndarray}``; CUDA GPU required."""

    def __init__(self, path: str | Path) -> None:
        trt = import_tensorrt()
        cuda_runtime()  # fail early, with the install hint, if the CUDA bindings are missing
        self.trt = trt
        self.path = Path(path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")  # before deserialising: engines may hold EfficientNMS_TRT
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise DeployError(
                f"{self.path}: TensorRT {trt.__version__} cannot deserialise this engine; engines only run on the "
                "TensorRT version and GPU that built them: rebuild it here with `detector export ... format=engine`"
            )
        self.context = self.engine.create_execution_context()
        self.stream = CudaStream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise DeployError(f"{self.path}: expected one image input, the engine has {inputs}")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n != self.input_name]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.input_dtype = self.dtypes[self.input_name]
        self.input_shape = tuple(None if d < 0 else int(d) for d in self.engine.get_tensor_shape(self.input_name))
        self.profile = None  # (min, opt, max) of the input for dynamic engines
        if None in self.input_shape:
            self.profile = tuple(
                tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0)
            )
        self.buffers = {n: DeviceBuffer() for n in names}
        self.metadata = self._read_metadata()

    def _read_metadata(self) -> ModelMetadata:
        side = sidecar_path(self.path)
        if side.is_file():
            meta = ModelMetadata.read_json(side)
        else:  # an engine built elsewhere: what the engine itself tells
            out = self.engine.get_tensor_shape(self.output_names[0])
            nc = int(out[1]) - 4 if not self.has_nms and len(out) == 3 and out[1] > 4 else 0
            h, w = self.profile[2][2:] if self.profile else self.input_shape[2:]
            meta = ModelMetadata(
                names={i: str(i) for i in range(nc)}, imgsz=(h, w), nms="trt" if self.has_nms else "none"
            )
        meta.input_dtype = self.input_dtype.name  # the engine is the authority on what it accepts
        return meta

    @property
    def max_batch(self) -> int | None:
        return self.profile[2][0] if self.profile else self.fixed_batch

    def check_input(self, images: np.ndarray) -> np.ndarray:
        images = super().check_input(images)
        if self.profile:
            lo, _, hi = self.profile
            for axis in (0, 2, 3):
                if not lo[axis] <= images.shape[axis] <= hi[axis]:
                    raise DeployError(
                        f"{self.path.name}: input shape {images.shape} is outside the engine's profile "
                        f"{lo} .. {hi} (axis {axis})"
                    )
        return images

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        ctx = self.context
        if not ctx.set_input_shape(self.input_name, images.shape):
            raise DeployError(f"{self.path.name}: TensorRT rejected input shape {images.shape}")
        self.buffers[self.input_name].ensure(images.nbytes)
        self.buffers[self.input_name].copy_from_host(images, self.stream)
        outputs = {}
        for name in self.output_names:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise DeployError(f"{self.path.name}: output {name!r} has a data-dependent shape {shape}")
            outputs[name] = np.empty(shape, dtype=self.dtypes[name])
            self.buffers[name].ensure(outputs[name].nbytes)
        for name, buf in self.buffers.items():
            ctx.set_tensor_address(name, buf.ptr)
        if not ctx.execute_async_v3(self.stream.handle):
            raise DeployError(f"{self.path.name}: TensorRT execution failed (see the TensorRT log)")
        for name, host in outputs.items():
            self.buffers[name].copy_to_host(host, self.stream)
        self.stream.synchronize()
        return outputs

    def close(self) -> None:
        """Free device memory and the stream (also safe to call twice)."""
        for buf in getattr(self, "buffers", {}).values():
            buf.free()
        if getattr(self, "stream", None) is not None:
            self.stream.close()
            self.stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the CUDA bindings may already be gone
            pass

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
