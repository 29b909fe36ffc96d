"""ONNX -> serialized TensorRT engine, for TensorRT 10 and 11 through one function.

Precision: TensorRT 10 builds fp16 through ``BuilderFlag.FP16``; TensorRT 11 removed that flag (networks are
strongly typed), so fp16 must come from the ONNX itself (``detector export half=True`` writes fp16 weights
and casts). ``build_engine`` detects which API it has by the flag's presence, not by version strings.

INT8 (``int8=True``) comes only from an explicitly quantized ONNX (QuantizeLinear/DequantizeLinear nodes, written
by ``detector export int8=True``): the network is created strongly typed, so TensorRT takes the Q/DQ
placement and scales as they are and runs the layers between them in the graph's own types. TensorRT 10 needs
the STRONGLY_TYPED creation flag for that; TensorRT 11 networks are always strongly typed (the implicit-INT8
calibrators and the INT8 builder flag are gone), so the flag is used where it exists.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import ModuleType

from deploy.errors import GPU_EXTRA, DeployError, import_optional

Shape = tuple[int, ...]


def import_tensorrt() -> ModuleType:
    """``tensorrt``, or a ``MissingDependencyError`` saying how to install it."""
    return import_optional("tensorrt", "building and running TensorRT engines", GPU_EXTRA)


def has_fp16_flag(trt: ModuleType) -> bool:
    """TensorRT 10 has ``BuilderFlag.FP16``; 11 does not (precision comes from the typed network)."""
    return hasattr(trt.BuilderFlag, "FP16")


def profile_shapes(
    shape: Shape, max_batch: int, imgsz: tuple[int, int], min_hw: int = 32
) -> tuple[Shape, Shape, Shape]:
    """Optimisation profile (min, opt, max) for an input ``shape`` whose dynamic dims are -1 (B, C, H, W).

    Batch: 1 .. ``max_batch``, tuned for half of it (the middle of the range serves small and large batches
    alike). H/W: ``min_hw`` .. ``imgsz``, tuned for ``imgsz``.
    """
    lo, opt, hi = list(shape), list(shape), list(shape)
    if shape[0] < 0:
        lo[0], opt[0], hi[0] = 1, max(1, max_batch // 2), max_batch
    for axis, size in ((2, imgsz[0]), (3, imgsz[1])):
        if shape[axis] < 0:
            lo[axis], opt[axis], hi[axis] = min(min_hw, size), size, size
    if any(d < 0 for d in lo):
        raise DeployError(f"input shape {shape}: only batch, height and width may be dynamic")
    return tuple(lo), tuple(opt), tuple(hi)


def network_flags(trt: ModuleType, int8: bool) -> int:
    """``create_network`` flags: STRONGLY_TYPED for a QDQ graph where the API has it (TensorRT 10), else 0."""
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 1 << int(flag) if int8 and flag is not None else 0


def _network_outputs(network, dtype) -> bool:
    """True when some layer of the parsed network outputs ``dtype`` (e.g. ``HALF`` for an fp16 ONNX under
    TensorRT 11, ``INT8`` for the QuantizeLinear layers of a QDQ ONNX)."""
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if any(layer.get_output(j).dtype == dtype for j in range(layer.num_outputs)):
            return True
    return False


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    half: bool = False,
    int8: bool = False,
    workspace_gib: float | None = 4.0,
    max_batch: int = 1,
    imgsz: tuple[int, int] = (640, 640),
    min_hw: int = 32,
    verbose: bool = False,
) -> Path:
    """Parse ``onnx_path``, build and write the serialized engine to ``engine_path``; returns it.

    Builder -> create_network() (explicit batch, the only mode) -> OnnxParser -> workspace pool limit ->
    one optimisation profile when the input has dynamic dims -> build_serialized_network.
    """
    trt = import_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # the parser resolves EfficientNMS_TRT through the plugin registry
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, int8))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeployError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors or 'no details'}")
    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if half:
        if has_fp16_flag(trt):
            config.set_flag(trt.BuilderFlag.FP16)
        elif not _network_outputs(network, trt.DataType.HALF):
            raise DeployError(
                f"{onnx_path}: TensorRT {trt.__version__} has no FP16 builder flag and this ONNX computes in "
                "float32; export it with half=True so the fp16 precision is in the graph"
            )
    if int8 and not _network_outputs(network, trt.DataType.INT8):
        raise DeployError(
            f"{onnx_path}: int8=True but this ONNX has no quantized (Q/DQ) layers; export it with int8=True"
        )
    if network.num_inputs != 1:
        raise DeployError(f"{onnx_path}: expected one image input, the network has {network.num_inputs}")
    inp = network.get_input(0)
    shape = tuple(int(d) for d in inp.shape)
    if any(d < 0 for d in shape):
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, *profile_shapes(shape, max_batch, imgsz, min_hw))
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeployError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    _atomic_write(engine_path, memoryview(serialized))
    return engine_path


def _atomic_write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
