"""One device parser for every surface, ONNX Runtime's provider check and where exports trace, on a CPU machine:
CUDA availability and GPU counts are faked, ONNX Runtime sessions too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deploy_testing import tiny_model

from deploy import load_runner
from deploy.device import DeviceError, DeviceSpec, parse_device, pick_gpu
from deploy.errors import DeployError
from detector.engine.distributed import select_device
from detector.errors import DetectorError

NO_GPU = "no CUDA GPU is visible on this machine; use device=cpu"


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize(
    "text, spec",
    [
        ("", DeviceSpec("auto", (), "")),
        (None, DeviceSpec("auto", (), "")),
        ("auto", DeviceSpec("auto", (), "auto")),
        ("cpu", DeviceSpec("cpu", (), "cpu")),
        ("CUDA", DeviceSpec("cuda", (), "CUDA")),
        ("cuda:1", DeviceSpec("cuda", (1,), "cuda:1")),
        ("1", DeviceSpec("cuda", (1,), "1")),
        (0, DeviceSpec("cuda", (0,), "0")),
        ("0,1", DeviceSpec("cuda", (0, 1), "0,1")),
        ("cuda:0,1", DeviceSpec("cuda", (0, 1), "cuda:0,1")),
    ],
)
def test_parse_device_forms(text, spec):
    assert parse_device(text) == spec


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "1;2", "-1", "cuda:"])
def test_parse_device_rejects_with_the_accepted_forms(bad):
    with pytest.raises(DeviceError, match=r"expected '', 'cpu', 'cuda', 'cuda:N', 'N' or 'N,M'"):
        parse_device(bad)


def test_select_device_with_two_fake_gpus(two_gpus, monkeypatch):
    assert select_device("") == torch.device("cuda", 0)
    assert select_device("cuda") == torch.device("cuda", 0)  # was rejected: only "cuda:" was stripped
    assert select_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda:1") == select_device("1") == select_device(1) == torch.device("cuda", 1)
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(DetectorError, match="GPU 2 asked for, but only 2 CUDA GPU"):
        select_device("cuda:2")
    with pytest.raises(DetectorError, match="names 2 GPUs: run under torchrun"):
        select_device("0,1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert select_device("0,1", local_rank=1) == torch.device("cuda", 1)


def test_pick_gpu_is_torch_free_and_counts_what_it_is_told():
    assert pick_gpu(parse_device(""), visible=0) is None
    assert pick_gpu(parse_device("cuda"), visible=4, local_rank=3, world_size=4) == 3
    with pytest.raises(DeviceError, match=NO_GPU):
        pick_gpu(parse_device("cuda:0"), visible=0)


def test_every_surface_reads_devices_alike_without_a_gpu(no_gpu, tmp_path):
    """Detector, train, val and benchmark all accept "cuda"/"0" and refuse them with one message here."""
    from detector.benchmark import BenchmarkArgs, _check
    from detector.predict.detector import Detector

    for device in ("cuda", "0", "cuda:0"):
        with pytest.raises(DetectorError, match=NO_GPU):
            Detector("gelan-t", device=device)
        with pytest.raises(DetectorError, match=NO_GPU):
            _check(BenchmarkArgs(model="gelan-t", device=device))  # benchmark used to reject "0" outright
        with pytest.raises(DetectorError, match=NO_GPU):
            select_device(device)
    _check(BenchmarkArgs(model="gelan-t", device="cpu"))
    assert Detector("gelan-t", device="").backend.device == torch.device("cpu")
    from detector.export import export

    with pytest.raises(DetectorError, match=NO_GPU):
        export(tiny_model(), imgsz=64, half=True, device="cuda", out=tmp_path / "x.onnx")


def test_exported_backend_passes_the_gpu_index_to_the_runner(monkeypatch, tmp_path):
    import deploy
    from detector.predict.backends import ExportedBackend

    asked = []

    def fake_load_runner(path, device="auto"):
        asked.append(device)
        raise DeployError("stop here")

    monkeypatch.setattr(deploy, "load_runner", fake_load_runner)
    for dev, want in (
        (torch.device("cuda", 1), "cuda:1"),
        (torch.device("cuda"), "cuda:0"),
        (torch.device("cpu"), "cpu"),
    ):
        with pytest.raises(DetectorError, match="stop here"):
            ExportedBackend(tmp_path / "m.onnx", dev)
        assert asked[-1] == want


def test_benchmark_accepts_a_gpu_index(two_gpus):
    from detector.benchmark import BenchmarkArgs, _check

    _check(BenchmarkArgs(model="gelan-t", device="1"))
    with pytest.raises(DetectorError, match="only 2 CUDA GPU"):
        _check(BenchmarkArgs(model="gelan-t", device="3"))


# ----------------------------------------------------------------------------- ONNX Runtime providers ----


class FakeSession:
    """Stands in for ``onnxruntime.InferenceSession``: records the providers asked for and reports ``uses``."""

    uses: list[str] = ["CPUExecutionProvider"]
    asked: list = []

    def __init__(self, path, sess_options=None, providers=None) -> None:
        FakeSession.asked = list(providers)
        self._real = FakeSession.real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    def get_providers(self) -> list[str]:
        return list(FakeSession.uses)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def fake_ort_gpu(monkeypatch, tmp_path):
    """onnxruntime claiming a CUDA provider; sessions run the real CPU session underneath."""
    import onnxruntime as ort

    from detector.export import export

    FakeSession.real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    return export(tiny_model(), imgsz=64, out=tmp_path / "tiny.onnx")


def test_asking_for_cuda_and_getting_the_cpu_is_an_error(fake_ort_gpu):
    FakeSession.uses = ["CPUExecutionProvider"]  # the CUDA provider failed to start: ORT dropped it silently
    with pytest.raises(DeployError, match=r"asked for CUDAExecutionProvider but the session runs on \['CPU"):
        load_runner(fake_ort_gpu, device="cuda:1")
    assert FakeSession.asked[0] == ("CUDAExecutionProvider", {"device_id": 1})  # the GPU index is honoured
    runner = load_runner(fake_ort_gpu, device="auto")  # auto may fall back, and says so in the log
    assert runner.providers == ["CPUExecutionProvider"]


def test_cuda_session_that_really_uses_cuda_passes(fake_ort_gpu):
    FakeSession.uses = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    runner = load_runner(fake_ort_gpu, device="1")
    assert FakeSession.asked[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert runner.providers[0] == "CUDAExecutionProvider"
    assert runner(np.zeros((1, 3, 64, 64), np.float32))["output0"].shape[:2] == (1, 7)
    with pytest.raises(DeployError, match="one ONNX Runtime session runs on one GPU"):
        load_runner(fake_ort_gpu, device="0,1")


def test_missing_cuda_provider_names_both_wheels_when_both_are_installed(monkeypatch):
    from importlib import metadata

    from deploy.onnx_runner import choose_providers

    monkeypatch.setattr(metadata, "version", lambda dist: "1.20.0")  # both onnxruntime and -gpu "installed"
    with pytest.raises(DeployError, match=r"both onnxruntime 1.20.0 and onnxruntime-gpu 1.20.0 are installed"):
        choose_providers(["CPUExecutionProvider"], "cuda")


def test_extras_never_install_both_onnxruntime_wheels():
    from pathlib import Path

    import tomllib

    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    def names(extra):
        return {req.split(">")[0].split("=")[0].split("[")[0].strip() for req in extras[extra]}

    for a in extras:
        for b in extras:
            together = names(a) | names(b)
            if {"onnxruntime", "onnxruntime-gpu"} <= together:
                assert {a, b} in ({"test", "gpu"}, {"test", "gpu-test"}, {"ort", "gpu"}, {"ort", "gpu-test"}), (a, b)
    assert "onnxruntime" in names("test") and "onnxruntime-gpu" in names("gpu")
    assert not names("export") & {"onnxruntime", "onnxruntime-gpu"}


# ----------------------------------------------------------------------------- where exports trace ----


def test_trace_plan_device_and_batch(two_gpus):
    from detector.export_trace import plan_trace

    assert plan_trace(half=True, batch=16, dynamic=True) == plan_trace(half=True, batch=1, dynamic=True)
    plan = plan_trace(half=True, batch=16, dynamic=True)
    assert plan.device == torch.device("cuda", 0) and plan.batch == 1  # fp16 on the GPU, symbolic batch: 1
    plan = plan_trace(half=False, batch=8, dynamic=False)
    assert plan.device == torch.device("cpu") and plan.batch == 8  # a static batch traces at its size
    assert plan_trace(half=False, batch=4, dynamic=False, device="cuda:1").device == torch.device("cuda", 1)


def test_export_traces_where_the_plan_says(monkeypatch, tmp_path):
    """The sample handed to the tracer has the planned device and batch (a fake plan: CPU, batch 1)."""
    import detector.export as export_mod
    from detector.export_trace import TracePlan

    seen = {}
    real = export_mod.torch_to_onnx

    def spy(graph, sample, opset, dynamic, dynamic_hw):
        seen["sample"] = (tuple(sample.shape), sample.dtype, sample.device)
        seen["weights"] = next(graph.parameters()).device
        return real(graph, sample, opset, dynamic, dynamic_hw)

    monkeypatch.setattr(export_mod, "torch_to_onnx", spy)
    monkeypatch.setattr(
        export_mod, "plan_trace", lambda half, batch, dynamic, device: TracePlan(torch.device("cpu"), 1)
    )
    path = export_mod.export(tiny_model(), imgsz=64, batch=8, dynamic=True, out=tmp_path / "d.onnx")
    assert seen["sample"] == ((1, 3, 64, 64), torch.float32, torch.device("cpu"))
    assert seen["weights"] == torch.device("cpu")
    runner = load_runner(path, device="cpu")
    assert runner.metadata.batch == 8 and runner.input_shape[0] is None  # still exported for batches up to 8
    assert runner(np.zeros((3, 3, 64, 64), np.float32))["output0"].shape[0] == 3


def test_uint8_input_export_normalises_inside_the_graph(tmp_path):
    from deploy.predict import predict
    from detector.export import export

    model = tiny_model()
    f32 = load_runner(export(model, imgsz=64, out=tmp_path / "f.onnx"), device="cpu")
    u8 = load_runner(export(model, imgsz=64, input_dtype="uint8", out=tmp_path / "u.onnx"), device="cpu")
    assert u8.input_dtype == np.uint8 and u8.metadata.input_dtype == "uint8"
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, 64, 64), dtype=np.uint8)
    np.testing.assert_allclose(
        u8(pixels)["output0"], f32(pixels.astype(np.float32) / 255)["output0"], rtol=1e-5, atol=1e-4
    )
    with pytest.raises(DeployError, match="takes uint8 pixels"):
        u8(pixels.astype(np.float32) / 255)
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    a, b = predict(f32, [image], conf=0.0), predict(u8, [image], conf=0.0)  # deploy's preprocess feeds both
    np.testing.assert_allclose(a[0].scores, b[0].scores, rtol=1e-4, atol=1e-5)


def test_detector_feeds_pixels_to_a_uint8_graph(tmp_path):
    from detector.export import export
    from detector.predict.detector import Detector

    model = tiny_model()
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    f32 = Detector(str(export(model, imgsz=64, out=tmp_path / "f.onnx")), device="cpu").predict(image, conf=0.0)
    u8 = Detector(str(export(model, imgsz=64, input_dtype="uint8", out=tmp_path / "u.onnx")), device="cpu")
    got = u8.predict(image, conf=0.0)
    assert len(got[0].scores) == len(f32[0].scores) > 0
    np.testing.assert_allclose(got[0].scores, f32[0].scores, rtol=1e-4, atol=1e-5)
