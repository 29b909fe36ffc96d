"""Small stand-ins for the ``tensorrt`` module and cuda-python's runtime bindings, so the TensorRT builder and
runner logic (shapes, profiles, flags, bindings, dtypes, copies) runs on a machine without a GPU.

The fake "device" memory is ordinary host memory (ctypes buffers), so bytes really travel through the
runner's copies; the fake engine computes a known function of its input and writes it to the output address.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types

import numpy as np

# ---------------------------------------------------------------- CUDA runtime (cuda.bindings.runtime) -------


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1


class CudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class FakeStream:
    def __init__(self, ident: int) -> None:
        self.ident = ident

    def __int__(self) -> int:
        return self.ident


def make_cuda_runtime() -> types.ModuleType:
    """A module answering the calls ``deploy.cuda_memory`` makes; it records allocations and copies."""
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaError_t, rt.cudaMemcpyKind = CudaError, CudaMemcpyKind
    rt.allocations = {}  # ptr -> ctypes buffer (device memory)
    rt.pinned = {}  # ptr -> ctypes buffer (page-locked host memory)
    rt.copies = []  # (kind, nbytes)
    rt.copy_pinned = []  # per copy: was its host side page-locked memory?
    rt.synchronized = 0
    rt.device_count, rt.current_device = 2, 0

    def cudaMalloc(n):
        buf = ctypes.create_string_buffer(int(n))
        rt.allocations[ctypes.addressof(buf)] = buf
        return CudaError.cudaSuccess, ctypes.addressof(buf)

    def cudaFree(ptr):
        if rt.allocations.pop(int(ptr), None) is None:
            return (CudaError.cudaErrorInvalidValue,)
        return (CudaError.cudaSuccess,)

    def cudaMemcpyAsync(dst, src, n, kind, stream):
        device = dst if kind == CudaMemcpyKind.cudaMemcpyHostToDevice else src
        buf = rt.allocations.get(int(device))
        if buf is None or len(buf) < n or not isinstance(stream, FakeStream):
            return (CudaError.cudaErrorInvalidValue,)
        ctypes.memmove(int(dst), int(src), int(n))
        rt.copies.append((kind, int(n)))
        host = int(src) if kind == CudaMemcpyKind.cudaMemcpyHostToDevice else int(dst)
        rt.copy_pinned.append(any(base <= host < base + len(b) for base, b in rt.pinned.items()))
        return (CudaError.cudaSuccess,)

    def cudaMallocHost(n):
        buf = ctypes.create_string_buffer(int(n))
        rt.pinned[ctypes.addressof(buf)] = buf
        return CudaError.cudaSuccess, ctypes.addressof(buf)

    def cudaFreeHost(ptr):
        if rt.pinned.pop(int(ptr), None) is None:
            return (CudaError.cudaErrorInvalidValue,)
        return (CudaError.cudaSuccess,)

    def cudaGetDeviceCount():
        return CudaError.cudaSuccess, rt.device_count

    def cudaSetDevice(index):
        if not 0 <= int(index) < rt.device_count:
            return (CudaError.cudaErrorInvalidValue,)
        rt.current_device = int(index)
        return (CudaError.cudaSuccess,)

    def cudaStreamCreate():
        return CudaError.cudaSuccess, FakeStream(1234)

    def cudaStreamSynchronize(stream):
        rt.synchronized += 1
        return (CudaError.cudaSuccess,)

    def cudaStreamDestroy(stream):
        return (CudaError.cudaSuccess,)

    for f in (
        cudaMalloc, cudaFree, cudaMemcpyAsync, cudaStreamCreate, cudaStreamSynchronize, cudaStreamDestroy,
        cudaMallocHost, cudaFreeHost, cudaGetDeviceCount, cudaSetDevice,
    ):  # fmt: skip
        setattr(rt, f.__name__, f)
    return rt


# ---------------------------------------------------------------- tensorrt ------------------------------------


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT32 = "int32"
    INT8 = "int8"
    UINT8 = "uint8"


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


def device_array(ptr: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A numpy view of fake device memory at ``ptr``."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    return np.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=dtype).reshape(shape)


def engine_spec(
    input_shape=(-1, 3, 64, 64), input_dtype="FLOAT", profile=((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64)), nc=3
) -> bytes:
    """Serialized fake engine: one image input and ``output0 (B, 4 + nc, H * W / 64)`` float32."""
    return json.dumps({"input_shape": input_shape, "input_dtype": input_dtype, "profile": profile, "nc": nc}).encode()


def expected_output(images: np.ndarray, nc: int) -> np.ndarray:
    """What the fake engine computes: per image mean + channel index + anchor index / 1000."""
    b, _, h, w = images.shape
    a = h * w // 64
    mean = images.astype(np.float32).mean((1, 2, 3))
    return (mean[:, None, None] + np.arange(4 + nc)[None, :, None] + np.arange(a)[None, None, :] / 1000).astype(
        np.float32
    )


class FakeEngine:
    def __init__(self, spec: dict, trt) -> None:
        self.spec, self.trt = spec, trt
        self.names = ["images", "output0"]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == "images" else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> list[int]:
        b, _, h, w = self.spec["input_shape"]
        return list(self.spec["input_shape"]) if name == "images" else [b, 4 + self.spec["nc"], -1]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self.spec["input_dtype"]] if name == "images" else DataType.FLOAT

    def get_tensor_profile_shape(self, name: str, index: int):
        assert name == "images" and index == 0
        return [list(s) for s in self.spec["profile"]]

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.input_shape = None
        self.addresses = {}
        self.received = []  # every input batch the "GPU" saw, as a numpy copy

    def set_input_shape(self, name: str, shape) -> bool:
        lo, _, hi = self.engine.spec["profile"]
        ok = name == "images" and all(a <= s <= b for a, s, b in zip(lo, shape, hi))
        self.input_shape = tuple(shape) if ok else None
        return ok

    def get_tensor_shape(self, name: str) -> list[int]:
        b, _, h, w = self.input_shape
        return list(self.input_shape) if name == "images" else [b, 4 + self.engine.spec["nc"], h * w // 64]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert stream_handle == 1234 and set(self.addresses) == set(self.engine.names) and self.input_shape
        dtype = np.dtype(DataType[self.engine.spec["input_dtype"]].value)
        images = device_array(self.addresses["images"], self.input_shape, dtype).copy()
        self.received.append(images)
        out = expected_output(images, self.engine.spec["nc"])
        device_array(self.addresses["output0"], out.shape, np.float32)[...] = out
        return True


class FakeLayer:
    def __init__(self, dtype: DataType) -> None:
        self.num_outputs = 1
        self._out = types.SimpleNamespace(dtype=dtype)

    def get_output(self, i: int):
        return self._out


class FakeNetwork:
    def __init__(self, trt) -> None:
        self.trt = trt
        self.inputs = []
        self.layers = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int):
        return self.inputs[i]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int):
        return self.layers[i]


class FakeParser:
    def __init__(self, network: FakeNetwork, logger) -> None:
        self.network, self.errors = network, []

    def parse(self, data: bytes) -> bool:
        trt = self.network.trt
        trt.calls.append("parse")
        if data.startswith(b"broken"):
            self.errors = ["node Conv_3: unsupported attribute"]
            return False
        self.network.inputs = [types.SimpleNamespace(name="images", shape=list(trt.network_input_shape))]
        self.network.layers = [FakeLayer(DataType[d]) for d in trt.network_layer_dtypes]
        if b"QuantizeLinear" in data:  # an explicitly quantized ONNX: its Q layers output INT8, as in TensorRT
            self.network.layers.append(FakeLayer(DataType.INT8))
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


class FakeProfile:
    def __init__(self) -> None:
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi) -> None:
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class FakeConfig:
    def __init__(self) -> None:
        self.pools, self.flags, self.profiles = {}, set(), []

    def set_memory_pool_limit(self, pool, nbytes: int) -> None:
        self.pools[pool] = nbytes

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class FakeBuilder:
    def __init__(self, trt, logger) -> None:
        self.trt = trt

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self.trt.calls.append(f"create_network({flags})")
        return FakeNetwork(self.trt)

    def create_builder_config(self) -> FakeConfig:
        self.trt.last_config = FakeConfig()
        return self.trt.last_config

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network, config):
        self.trt.calls.append("build")
        return None if self.trt.fail_build else bytearray(b"serialized-engine")


def make_tensorrt(major: int = 10) -> types.ModuleType:
    """A ``tensorrt`` module of the given major version: 10 has ``BuilderFlag.FP16`` and the STRONGLY_TYPED
    network flag, 11 neither."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = f"{major}.4.0"
    trt.calls = []
    trt.network_input_shape = (-1, 3, 64, 64)
    trt.network_layer_dtypes = ["FLOAT"]
    trt.fail_build = False
    trt.last_config = None
    trt.DataType, trt.TensorIOMode = DataType, TensorIOMode
    flags = {"TF32": "tf32"} if major >= 11 else {"FP16": "fp16", "TF32": "tf32"}
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    if major < 11:  # TensorRT 11 networks are always strongly typed
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.Logger = type("Logger", (), {"WARNING": 2, "INFO": 3, "__init__": lambda self, level=2: None})
    trt.nptype = lambda dt: np.dtype(dt.value).type
    trt.init_libnvinfer_plugins = lambda logger, namespace: trt.calls.append(f"init_plugins({namespace!r})")

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            trt.calls.append("deserialize")
            try:
                return FakeEngine(json.loads(bytes(data)), trt)
            except ValueError:
                return None

    trt.Runtime = Runtime
    trt.Builder = lambda logger: FakeBuilder(trt, logger)
    trt.OnnxParser = FakeParser
    return trt


# ---------------------------------------------------------------- tensorrt.plugin (Python plugin API) ---------


class FakeTensorDesc:
    """``tensorrt.plugin.TensorDesc``: a shape (here plain ints stand for shape expressions) and a dtype."""

    def __init__(self, shape, dtype) -> None:
        self.shape_expr, self.dtype = tuple(shape), dtype

    def like(self) -> FakeTensorDesc:
        return FakeTensorDesc(self.shape_expr, self.dtype)


def make_tensorrt_plugin() -> types.ModuleType:
    """A ``tensorrt.plugin`` module whose decorators record what was registered in ``plugins[plugin_id]``.

    Like TensorRT it refuses a second ``register`` of one id and an ``impl``/``autotune`` for an id never
    registered, and it checks that ``impl`` takes a subset of ``register``'s attributes plus outputs and stream.
    """
    import inspect

    trtp = types.ModuleType("tensorrt.plugin")
    trtp.plugins = {}
    trtp.TensorDesc, trtp.Tensor = FakeTensorDesc, object
    trtp.from_shape_expr = lambda shape, dtype: FakeTensorDesc(shape, dtype)
    trtp.AutoTuneCombination = lambda spec="": types.SimpleNamespace(spec=spec)

    def register(plugin_id: str, lazy_register: bool = False):
        def wrap(fn):
            if plugin_id in trtp.plugins:
                raise ValueError(f"plugin {plugin_id} is already registered")
            if "::" not in plugin_id:
                raise ValueError(f"plugin id {plugin_id!r} must be namespace::name")
            params = inspect.signature(fn).parameters
            missing = [n for n, p in params.items() if p.annotation is inspect.Parameter.empty]
            if missing:
                raise TypeError(f"{plugin_id}: register needs type hints on {missing}")
            trtp.plugins[plugin_id] = {"desc": fn, "params": list(params)}
            return fn

        return wrap

    def attach(kind: str, plugin_id: str, trailing: tuple[str, ...]):
        def wrap(fn):
            if plugin_id not in trtp.plugins:
                raise ValueError(f"{kind} for {plugin_id}, which is not registered")
            names = list(inspect.signature(fn).parameters)
            assert names[-len(trailing) :] == list(trailing), f"{plugin_id}: {kind} must end with {trailing}"
            assert set(names[: -len(trailing)]) <= set(trtp.plugins[plugin_id]["params"]), names
            trtp.plugins[plugin_id][kind] = fn
            return fn

        return wrap

    trtp.register = register
    trtp.impl = lambda plugin_id: attach("impl", plugin_id, ("outputs", "stream"))
    trtp.autotune = lambda plugin_id: attach("autotune", plugin_id, ("outputs",))
    return trtp
