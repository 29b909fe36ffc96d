"""GPU buffers and streams for the TensorRT runner, through NVIDIA's ``cuda-python`` runtime bindings.

Why cuda-python (``cuda.bindings.runtime``) and not cupy or torch: it is NVIDIA's own thin binding of the CUDA
runtime API (the one TensorRT's Python samples use), has no torch dependency, and is a small wheel; we only
need malloc/free, async copies and a stream, not an array library. Every call returns ``(error, *values)``,
which ``check`` turns into a ``DeployError``.
"""

from __future__ import annotations

import ctypes
import importlib
from types import ModuleType

import numpy as np

from deploy.errors import GPU_EXTRA, DeployError, MissingDependencyError

_RUNTIME: ModuleType | None = None


def cuda_runtime() -> ModuleType:
    """The CUDA runtime bindings module (``cuda.bindings.runtime``; ``cuda.cudart`` in cuda-python < 12.6)."""
    global _RUNTIME
    if _RUNTIME is None:
        for name in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                _RUNTIME = importlib.import_module(name)
                break
            except ImportError:
                continue
        else:
            raise MissingDependencyError(
                f"the TensorRT runner needs NVIDIA's CUDA Python bindings (module cuda.bindings); install with: {GPU_EXTRA}"
            )
    return _RUNTIME


def check(result: tuple, what: str):
    """Unpack a cuda-python call result ``(err, *values)``; raise ``DeployError`` unless ``err`` is success."""
    rt = cuda_runtime()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise DeployError(f"CUDA {what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class CudaStream:
    """A CUDA stream; ``handle`` is the integer TensorRT's ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        self._stream = check(cuda_runtime().cudaStreamCreate(), "cudaStreamCreate")

    @property
    def handle(self) -> int:
        return int(self._stream)

    @property
    def raw(self):
        return self._stream

    def synchronize(self) -> None:
        check(cuda_runtime().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        if self._stream is not None:
            check(cuda_runtime().cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None


class DeviceBuffer:
    """``nbytes`` of device memory at integer address ``ptr``; ``ensure`` regrows it when a call needs more."""

    def __init__(self, nbytes: int = 0) -> None:
        self.ptr = 0
        self.nbytes = 0
        self.ensure(nbytes)

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        self.ptr = int(check(cuda_runtime().cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes} bytes)"))
        self.nbytes = int(nbytes)

    def free(self) -> None:
        if self.ptr:
            check(cuda_runtime().cudaFree(self.ptr), "cudaFree")
        self.ptr, self.nbytes = 0, 0

    def copy_from_host(self, host: np.ndarray, stream: CudaStream) -> None:
        """Async host -> device copy of the C-contiguous ``host`` array (at most ``nbytes``)."""
        if host.nbytes > self.nbytes:
            raise DeployError(f"device buffer of {self.nbytes} bytes cannot take {host.nbytes}")
        rt = cuda_runtime()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(rt.cudaMemcpyAsync(self.ptr, host.ctypes.data, host.nbytes, kind, stream.raw), "cudaMemcpyAsync H2D")

    def copy_to_host(self, host: np.ndarray, stream: CudaStream) -> None:
        """Async device -> host copy into the C-contiguous ``host`` array; synchronise before reading it."""
        rt = cuda_runtime()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(rt.cudaMemcpyAsync(host.ctypes.data, self.ptr, host.nbytes, kind, stream.raw), "cudaMemcpyAsync D2H")


class HostBuffer:
    """Page-locked (pinned) host memory: copies from it to the GPU are true asynchronous DMA, where pageable
    numpy memory makes the driver stage every copy through its own pinned bounce buffer first. ``view`` gives
    a numpy array over the first bytes; ``ensure`` regrows it (the old contents are dropped)."""

    def __init__(self, nbytes: int = 0) -> None:
        self.ptr = 0
        self.nbytes = 0
        self.ensure(nbytes)

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        self.ptr = int(check(cuda_runtime().cudaMallocHost(max(int(nbytes), 1)), f"cudaMallocHost({nbytes} bytes)"))
        self.nbytes = int(nbytes)

    def view(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A writable numpy array of ``shape``/``dtype`` over this memory (no copy)."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        if n > self.nbytes:
            raise DeployError(f"pinned buffer of {self.nbytes} bytes cannot hold {shape} {dtype}")
        return np.frombuffer((ctypes.c_char * n).from_address(self.ptr), dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            check(cuda_runtime().cudaFreeHost(self.ptr), "cudaFreeHost")
        self.ptr, self.nbytes = 0, 0


def device_count() -> int:
    """CUDA GPUs visible to this process (0 when the driver reports none)."""
    rt = cuda_runtime()
    err, count = rt.cudaGetDeviceCount()
    return int(count) if err == rt.cudaError_t.cudaSuccess else 0


def use_device(index: int) -> None:
    """Make GPU ``index`` current for this thread (TensorRT deserialises and runs on the current device)."""
    visible = device_count()
    if not 0 <= index < visible:
        from deploy.device import DeviceError

        raise DeviceError(f"device=cuda:{index}: only {visible} CUDA GPU(s) are visible")
    check(cuda_runtime().cudaSetDevice(int(index)), f"cudaSetDevice({index})")
