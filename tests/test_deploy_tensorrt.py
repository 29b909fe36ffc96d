"""TensorRT path without a GPU: builder flags/profiles and runner bindings/shapes/dtypes against fakes of
``tensorrt`` and the CUDA bindings (tests/trt_fakes.py); the real-TensorRT test runs only where it can."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import trt_fakes
from trt_fakes import engine_spec, expected_output, make_cuda_runtime, make_tensorrt

from deploy import cuda_memory, load_runner
from deploy.engine_builder import build_engine, profile_shapes
from deploy.errors import DeployError, MissingDependencyError
from deploy.metadata import ModelMetadata, sidecar_path
from deploy.tensorrt_runner import TensorRTRunner


@pytest.fixture
def fake_cuda(monkeypatch):
    rt = make_cuda_runtime()
    monkeypatch.setitem(sys.modules, "cuda", type(sys)("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", type(sys)("cuda.bindings"))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    monkeypatch.setattr(cuda_memory, "_RUNTIME", None)
    return rt


def install_trt(monkeypatch, major: int = 10):
    trt = make_tensorrt(major)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"onnx-bytes")  # the fake parser reads bytes, not a graph
    return path


# ------------------------------------------------------------------------------------------------ builder ----


def test_profile_shapes():
    assert profile_shapes((-1, 3, 640, 640), 8, (640, 640)) == ((1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 640))
    assert profile_shapes((-1, 3, -1, -1), 1, (480, 640), min_hw=32) == (
        (1, 3, 32, 32),
        (1, 3, 480, 640),
        (1, 3, 480, 640),
    )
    assert profile_shapes((2, 3, -1, -1), 2, (64, 64))[0] == (2, 3, 32, 32)
    with pytest.raises(DeployError, match="only batch, height and width"):
        profile_shapes((1, -1, 64, 64), 1, (64, 64))


def test_builder_trt10_fp16_flag_workspace_and_profile(monkeypatch, onnx_file, tmp_path):
    trt = install_trt(monkeypatch, 10)
    out = build_engine(onnx_file, tmp_path / "m.engine", half=True, workspace_gib=2, max_batch=8, imgsz=(64, 64))
    assert out.read_bytes() == b"serialized-engine"
    cfg = trt.last_config
    assert cfg.flags == {"fp16"} and cfg.pools == {"workspace": 2 << 30}
    (profile,) = cfg.profiles
    assert profile.shapes == {"images": ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))}
    assert trt.calls[:3] == ["init_plugins('')", "create_network(0)", "parse"]  # plugins known before parsing


def test_builder_static_input_needs_no_profile_and_fp32_sets_no_flag(monkeypatch, onnx_file, tmp_path):
    trt = install_trt(monkeypatch, 10)
    trt.network_input_shape = (1, 3, 64, 64)
    build_engine(onnx_file, tmp_path / "m.engine", half=False, workspace_gib=None)
    assert trt.last_config.profiles == [] and trt.last_config.flags == set() and trt.last_config.pools == {}


def test_builder_trt11_takes_precision_from_the_onnx(monkeypatch, onnx_file, tmp_path):
    trt = install_trt(monkeypatch, 11)
    assert not hasattr(trt.BuilderFlag, "FP16")
    with pytest.raises(DeployError, match="no FP16 builder flag.*export it with half=True"):
        build_engine(onnx_file, tmp_path / "m.engine", half=True)
    trt.network_layer_dtypes = ["FLOAT", "HALF", "HALF"]  # what an fp16 ONNX parses into
    build_engine(onnx_file, tmp_path / "m.engine", half=True)
    assert trt.last_config.flags == set()


def test_builder_reports_parser_and_build_failures(monkeypatch, tmp_path):
    trt = install_trt(monkeypatch, 10)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"broken graph")
    with pytest.raises(DeployError, match="parser failed: node Conv_3: unsupported attribute"):
        build_engine(bad, tmp_path / "x.engine")
    good = tmp_path / "good.onnx"
    good.write_bytes(b"fine")
    trt.fail_build = True
    with pytest.raises(DeployError, match="could not build an engine"):
        build_engine(good, tmp_path / "x.engine")
    assert not (tmp_path / "x.engine").exists()


def test_missing_tensorrt_says_what_to_install(monkeypatch, onnx_file, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(MissingDependencyError, match=r'tensorrt.*pip install "detector\[gpu\]"'):
        build_engine(onnx_file, tmp_path / "m.engine")


def test_missing_cuda_bindings_say_what_to_install(monkeypatch, tmp_path):
    install_trt(monkeypatch)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(cuda_memory, "_RUNTIME", None)
    engine = tmp_path / "m.engine"
    engine.write_bytes(engine_spec())
    with pytest.raises(MissingDependencyError, match=r'CUDA Python bindings.*pip install "detector\[gpu\]"'):
        TensorRTRunner(engine)


@pytest.mark.parametrize("major", [10, 11])
def test_export_engine_writes_engine_onnx_and_sidecar(monkeypatch, tmp_path, major):
    from deploy_testing import tiny_model

    from detector.export import export

    trt = install_trt(monkeypatch, major)
    trt.network_layer_dtypes = ["HALF"]  # the fp16 ONNX parses into half layers
    path = export(
        tiny_model(),
        format="engine",
        imgsz=64,
        batch=8,
        dynamic=True,
        half=True,
        workspace=1,
        out=tmp_path / "tiny.engine",
    )
    assert path == tmp_path / "tiny.engine" and path.read_bytes() == b"serialized-engine"
    onnx_model = load_runner(tmp_path / "tiny.onnx", device="cpu")  # the fp16 ONNX stays beside the engine
    assert onnx_model.metadata.precision == "fp16"
    meta = ModelMetadata.read_json(sidecar_path(path))
    assert meta == onnx_model.metadata and meta.names == {0: "RBC", 1: "WBC", 2: "Platelets"}
    cfg = trt.last_config
    assert cfg.flags == ({"fp16"} if major == 10 else set()) and cfg.pools == {"workspace": 1 << 30}
    assert cfg.profiles[0].shapes["images"] == ((1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))


# ------------------------------------------------------------------------------------------------ runner -----


def test_runner_dynamic_batch_bindings_and_copies(monkeypatch, fake_cuda, tmp_path):
    trt = install_trt(monkeypatch)
    engine = tmp_path / "m.engine"
    engine.write_bytes(engine_spec())
    ModelMetadata(names={0: "a", 1: "b", 2: "c"}, imgsz=(64, 64), dynamic=True, batch=4).write_json(
        sidecar_path(engine)
    )
    runner = load_runner(engine)
    assert isinstance(runner, TensorRTRunner)
    assert trt.calls.index("init_plugins('')") < trt.calls.index("deserialize")
    assert runner.input_shape == (None, 3, 64, 64) and runner.max_batch == 4 and runner.fixed_batch is None
    assert runner.output_names == ["output0"] and not runner.has_nms
    assert runner.metadata.names == {0: "a", 1: "b", 2: "c"} and runner.input_dtype == np.float32
    rng = np.random.default_rng(0)
    for batch in (3, 1, 4):
        x = rng.random((batch, 3, 64, 64)).astype(np.float64)  # the runner casts to the engine's dtype
        out = runner(x)
        assert out["output0"].shape == (batch, 7, 64) and out["output0"].dtype == np.float32
        np.testing.assert_allclose(out["output0"], expected_output(x.astype(np.float32), 3), rtol=1e-6)
        assert runner.context.received[-1].dtype == np.float32
    # buffers grow to the largest call and are reused: 3 input + 3 output allocations at most, never leaked
    assert len(fake_cuda.allocations) == 2
    assert fake_cuda.synchronized == 3
    with pytest.raises(DeployError, match="exceeds the model's maximum 4"):
        runner(np.zeros((5, 3, 64, 64), np.float32))
    runner.close()
    assert fake_cuda.allocations == {}


def test_runner_feeds_float16_to_a_half_input_engine(monkeypatch, fake_cuda, tmp_path):
    install_trt(monkeypatch)
    engine = tmp_path / "h.engine"
    engine.write_bytes(engine_spec(input_shape=(2, 3, 32, 32), input_dtype="HALF", profile=((2, 3, 32, 32),) * 3))
    ModelMetadata(imgsz=(32, 32), input_dtype="float32").write_json(sidecar_path(engine))
    runner = TensorRTRunner(engine)
    assert runner.input_dtype == np.float16 and runner.metadata.input_dtype == "float16"  # engine wins
    assert runner.fixed_batch == 2 and runner.metadata.nc == 0
    x = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)
    out = runner(x)
    (received,) = runner.context.received
    assert received.dtype == np.float16
    np.testing.assert_array_equal(received, x.astype(np.float16))
    np.testing.assert_allclose(out["output0"], expected_output(x.astype(np.float16), 3), rtol=1e-6)
    with pytest.raises(DeployError, match="batch is 1 but the model was exported with 2"):
        runner(x[:1])


def test_runner_without_sidecar_reads_the_engine(monkeypatch, fake_cuda, tmp_path):
    install_trt(monkeypatch)
    engine = tmp_path / "foreign.plan"
    engine.write_bytes(
        engine_spec(profile=((1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 96, 96)), input_shape=(-1, 3, -1, -1))
    )
    runner = load_runner(engine, device="cuda")
    assert runner.metadata.nc == 3 and runner.metadata.imgsz == (96, 96) and runner.input_hw == (96, 96)
    assert runner(np.zeros((2, 3, 64, 96), np.float32))["output0"].shape == (2, 7, 96)
    with pytest.raises(DeployError, match="outside the engine's profile"):
        runner(np.zeros((1, 3, 128, 96), np.float32))


def test_runner_explains_an_engine_from_another_tensorrt(monkeypatch, fake_cuda, tmp_path):
    install_trt(monkeypatch)
    engine = tmp_path / "old.engine"
    engine.write_bytes(b"\x00 not for this version")
    with pytest.raises(DeployError, match="engines only run on the TensorRT version and GPU that built them"):
        TensorRTRunner(engine)
    with pytest.raises(DeployError, match="CUDA GPU only; use the .onnx file"):
        load_runner(engine, device="cpu")


def test_runner_uses_the_named_gpu_pinned_buffers_and_one_stream(monkeypatch, fake_cuda, tmp_path):
    trt = install_trt(monkeypatch)
    set_device = fake_cuda.cudaSetDevice
    monkeypatch.setattr(fake_cuda, "cudaSetDevice", lambda i: (trt.calls.append(f"set_device({i})"), set_device(i))[1])
    engine = tmp_path / "m.engine"
    engine.write_bytes(engine_spec())
    runner = load_runner(engine, device="cuda:1")
    assert runner.device == 1 and fake_cuda.current_device == 1
    assert trt.calls.index("set_device(1)") < trt.calls.index("deserialize")  # the engine lives on GPU 1
    rng = np.random.default_rng(0)
    x1, x2 = (rng.random((b, 3, 64, 64), dtype=np.float32) for b in (3, 4))
    out1 = runner(x1)
    fake_cuda.current_device = 0  # another library switched devices in between: the runner switches back
    out2 = runner(x2)
    assert fake_cuda.current_device == 1
    np.testing.assert_allclose(out1["output0"], expected_output(x1, 3), rtol=1e-6)  # not overwritten by call 2
    np.testing.assert_allclose(out2["output0"], expected_output(x2, 3), rtol=1e-6)
    # every copy goes through page-locked host memory, which persists (2 tensors: 2 pinned + 2 device buffers)
    assert len(fake_cuda.copy_pinned) == 4 and all(fake_cuda.copy_pinned)
    assert len(fake_cuda.pinned) == 2 and len(fake_cuda.allocations) == 2
    assert fake_cuda.synchronized == 2  # one synchronisation per call, on the runner's one stream
    runner(x1)
    assert len(fake_cuda.pinned) == 2  # a smaller batch reuses the buffers
    runner.close()
    assert fake_cuda.pinned == {} and fake_cuda.allocations == {}
    with pytest.raises(DeployError, match="only 2 CUDA GPU"):
        load_runner(engine, device="cuda:2")
    with pytest.raises(DeployError, match="one GPU"):
        load_runner(engine, device="0,1")


def test_runner_feeds_raw_pixels_to_a_uint8_engine(monkeypatch, fake_cuda, tmp_path):
    install_trt(monkeypatch)
    engine = tmp_path / "u8.engine"
    engine.write_bytes(engine_spec(input_dtype="UINT8"))
    runner = TensorRTRunner(engine)
    assert runner.input_dtype == np.uint8 and runner.metadata.input_dtype == "uint8"
    x = np.random.default_rng(2).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8)
    out = runner(x)
    (received,) = runner.context.received
    assert received.dtype == np.uint8 and np.array_equal(received, x)
    assert fake_cuda.copies[0][1] == x.nbytes  # a quarter of the float32 bytes cross the bus
    np.testing.assert_allclose(out["output0"], expected_output(x, 3), rtol=1e-6)
    with pytest.raises(DeployError, match="takes uint8 pixels"):
        runner(x.astype(np.float32) / 255)  # 0..1 floats cast to uint8 would silently be black


def test_fakes_module_is_the_one_in_use(monkeypatch):
    trt = install_trt(monkeypatch, 11)
    import tensorrt

    assert tensorrt is trt and trt_fakes.DataType.HALF.value == "float16"


# ------------------------------------------------------------------------------------------- real TensorRT ----


def _real_tensorrt_or_skip():
    try:
        import tensorrt  # noqa: F401
        from cuda.bindings import runtime

        err, count = runtime.cudaGetDeviceCount()
    except ImportError as e:
        pytest.skip(f"needs TensorRT and cuda-python ({e})")
    if int(err) != 0 or count < 1:
        pytest.skip("needs a CUDA GPU")


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("nms", ["none", "trt", "onnx"])
def test_real_engine_matches_onnxruntime(tmp_path, nms):
    _real_tensorrt_or_skip()
    from deploy_testing import bccd_images, lively_model

    from deploy import predict
    from detector.export import export

    model = lively_model("gelan-t", imgsz=160)
    reference = export(model, imgsz=160, dynamic=True, out=tmp_path / "reference.onnx")
    engine = export(model, format="engine", imgsz=160, dynamic=True, batch=4, nms=nms, out=tmp_path / "m.engine")
    runner = load_runner(engine)
    assert runner.max_batch == 4 and runner.has_nms == (nms != "none")
    imgs = bccd_images(3)
    got = predict(runner, imgs, conf=0.25, iou=0.7, multi_label=True)
    ref = predict(load_runner(reference, device="cpu"), imgs, conf=0.25, iou=0.7, multi_label=True)
    for g, r in zip(got, ref):
        assert abs(len(g) - len(r)) <= max(2, len(r) // 20)  # EfficientNMS keeps only the top 4096 scores
        if len(g) and len(r):
            assert np.abs(np.sort(g.scores)[-5:] - np.sort(r.scores)[-5:]).max() < 5e-3  # TF32 convs
