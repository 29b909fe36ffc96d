"""TensorRT runner (TensorRT 10/11 named-tensor API), with buffers from ``deploy.cuda_memory``.

Each call: set the input shape on the execution context, read every output's shape back from the context,
grow (only when a call needs more) the persistent device buffers and their pinned host twins, write the batch
into the pinned input buffer, copy in, ``set_tensor_address`` for every I/O tensor, ``execute_async_v3``,
copy out, synchronise once; everything on the runner's one stream. Pinned memory makes both copies true
asynchronous DMA (pageable numpy memory is staged by the driver). An engine built with a ``uint8`` input
(``detector export input_dtype=uint8``: normalisation inside the graph, on the GPU) gets raw pixels, a
quarter of the float32 bytes. The runner works on GPU ``device`` (``load_runner(device="cuda:1")``).
Metadata comes from the ``NAME.engine.json`` sidecar written by the exporter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploy.cuda_memory import CudaStream, DeviceBuffer, HostBuffer, cuda_runtime, use_device
from deploy.engine_builder import import_tensorrt
from deploy.errors import DeployError
from deploy.metadata import ModelMetadata, sidecar_path
from deploy.runner import Runner


class TensorRTRunner(Runner):
    """Run a serialized engine on GPU ``device``. ``runner(images) -> {output name: ndarray}`` (fresh arrays,
    copied out of the pinned buffers, so they stay valid after the next call); CUDA GPU required."""

    def __init__(self, path: str | Path, device: int = 0) -> None:
        trt = import_tensorrt()
        cuda_runtime()  # fail early, with the install hint, if the CUDA bindings are missing
        self.device = int(device)
        use_device(self.device)  # the engine, its context, stream and buffers all live on this GPU
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
        self.host = {n: HostBuffer() for n in names}  # pinned twins of the device buffers
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

    def _check_profile(self, images: np.ndarray) -> np.ndarray:
        if self.profile:
            lo, _, hi = self.profile
            for axis in (0, 2, 3):
                if not lo[axis] <= images.shape[axis] <= hi[axis]:
                    raise DeployError(
                        f"{self.path.name}: input shape {images.shape} is outside the engine's profile "
                        f"{lo} .. {hi} (axis {axis})"
                    )
        return images

    def check_input(self, images: np.ndarray) -> np.ndarray:
        return self._check_profile(super().check_input(images))

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        ctx = self.context
        use_device(self.device)  # the current device is per thread: a runner may be called from another one
        if not ctx.set_input_shape(self.input_name, images.shape):
            raise DeployError(f"{self.path.name}: TensorRT rejected input shape {images.shape}")
        shapes = {self.input_name: tuple(images.shape)}
        for name in self.output_names:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise DeployError(f"{self.path.name}: output {name!r} has a data-dependent shape {shape}")
            shapes[name] = shape
        views = {}
        for name, shape in shapes.items():
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            self.buffers[name].ensure(nbytes)
            self.host[name].ensure(nbytes)
            views[name] = self.host[name].view(shape, self.dtypes[name])
            ctx.set_tensor_address(name, self.buffers[name].ptr)
        np.copyto(views[self.input_name], images)
        self.buffers[self.input_name].copy_from_host(views[self.input_name], self.stream)
        if not ctx.execute_async_v3(self.stream.handle):
            raise DeployError(f"{self.path.name}: TensorRT execution failed (see the TensorRT log)")
        for name in self.output_names:
            self.buffers[name].copy_to_host(views[name], self.stream)
        self.stream.synchronize()
        return {name: views[name].copy() for name in self.output_names}

    def close(self) -> None:
        """Free device memory and the stream (also safe to call twice)."""
        for buf in [*getattr(self, "buffers", {}).values(), *getattr(self, "host", {}).values()]:
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
