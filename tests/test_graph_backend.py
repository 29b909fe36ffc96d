"""The graph backend on CPU: its eager path (letterbox_frames -> model -> decode_topk -> batched NMS through the
kernels' references) gives the torch backend's detections on real BCCD images; its capture/replay logic against a
fake CUDA graph; the clear error without CUDA; the real-CUDA equality test is gpu-marked."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from deploy_testing import bccd_images, lively_model
from graph_fakes import FakeGraphOps
from tiny_models import tiny_detector, tiny_lsnet_detector

from detector import Detector
from detector.errors import DetectorError
from detector.nn.kernel_swap import DwPw, LSConvWith
from detector.ops import PreprocessSpec
from detector.predict.backends import TorchBackend
from detector.predict.cli import cli_predict
from detector.predict.graph_backend import GraphBackend

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gelan():
    return lively_model("gelan-t", imgsz=160)


@pytest.fixture(scope="module")
def frames():
    imgs = bccd_images(3)
    odd = np.ascontiguousarray(imgs[2][37:400, 11:523])  # 363 x 512: an odd size, not the others' shape
    return imgs[:2], [imgs[0], odd]


def _torch(model) -> Detector:
    return Detector(TorchBackend(copy.deepcopy(model).to_deploy(), CPU))


def _graph(model, **kw) -> Detector:
    kw.setdefault("capture", False)
    return Detector(GraphBackend(copy.deepcopy(model).to_deploy(), CPU, **kw))


def _assert_same(got, want, box_atol: float = 0.5, score_atol: float = 2e-3) -> int:
    """Equal detections, each matched one-to-one to the nearest of the same class, up to the letterbox
    kernel's 1-level (1/255) difference from OpenCV's resize. Returns how many were compared."""
    total = 0
    for g, w in zip(got, want):
        assert len(g) == len(w), (len(g), len(w))
        assert g.orig_shape == w.orig_shape
        free = np.ones(len(w), bool)
        for box, score, cls in zip(g.xyxy, g.scores, g.cls):
            dist = np.abs(w.xyxy - box).max(1) + np.where((w.cls == cls) & free, 0, np.inf)
            j = int(np.argmin(dist))
            assert dist[j] <= box_atol, (box, w.xyxy[j], dist[j])
            assert abs(w.scores[j] - score) <= score_atol, (score, w.scores[j])
            free[j] = False
        total += len(g)
    return total


@pytest.mark.parametrize("multi_label", [False, True])
def test_eager_graph_path_equals_torch_backend_on_bccd(gelan, frames, multi_label):
    same_shape, mixed = frames
    ref, det = _torch(gelan), _graph(gelan)
    for batch in (same_shape, mixed):  # one shape, and mixed shapes padded to the largest canvas
        want = ref.predict(batch, imgsz=160, conf=0.25, batch=len(batch), multi_label=multi_label)
        got = det.predict(batch, imgsz=160, conf=0.25, batch=len(batch), multi_label=multi_label)
        assert _assert_same(got, want) > 0


def test_graph_without_kernels_and_with_classes_equals_torch(gelan, frames):
    same_shape, _ = frames
    want = _torch(gelan).predict(same_shape, imgsz=160, conf=0.25, classes=[1, 2])
    assert _assert_same(_graph(gelan, kernels=False).predict(same_shape, imgsz=160, conf=0.25, classes=[1, 2]), want)
    assert _assert_same(_graph(gelan).predict(same_shape, imgsz=160, conf=0.25, classes=[1, 2]), want) > 0
    assert all(set(r.cls.astype(int)) <= {1, 2} for r in want)


def test_letterbox_geometry_is_the_contracts_plan(gelan):
    """The GPU letterbox takes ``PreprocessSpec.plan``'s geometry for the batch canvas (ratio from the spec's
    size, centred padding) and matches ``Detector.preprocess`` (OpenCV) pixel for pixel up to 1 level, also for
    sizes where fitting each image into the canvas would give another ratio (57x284, 85x141) and for batches of
    mixed shapes padded to their largest canvas."""
    backend = GraphBackend(copy.deepcopy(gelan).to_deploy(), CPU, capture=False)
    ref = _torch(gelan)
    photo = bccd_images(1)[0]
    crops = [np.ascontiguousarray(photo[:h, :w]) for h, w in ((480, 640), (363, 512), (57, 284), (85, 141), (333, 100))]
    fixed = PreprocessSpec(160, 32, auto=False)
    for spec in (backend.input_spec(160), fixed, PreprocessSpec((96, 160), 32, scaleup=False)):
        for batch in [[c] for c in crops] + [crops[:3], crops[2:]]:
            got, got_plans = backend.letterbox(batch, spec)
            want, want_plans = ref.preprocess(batch, spec)
            canvas = spec.batch_canvas([c.shape[:2] for c in batch])
            assert got_plans == want_plans == [spec.plan(*c.shape[:2], canvas) for c in batch]
            assert got.shape == want.shape and got.shape[2:] == canvas
            assert (got - want).abs().max() <= 1.01 / 255, (spec, [c.shape for c in batch])
    # the cases are real: fitting into the minimal canvas itself would change the ratio
    plan = backend.input_spec(160).plan(57, 284)
    assert PreprocessSpec(plan.canvas, 32, auto=False).plan(57, 284).resized != plan.resized


def test_lsnet_blocks_run_through_cuda_ops_ska_and_dw_pw(frames):
    model = lively_model(tiny_lsnet_detector(), imgsz=96)
    backend = GraphBackend(copy.deepcopy(model).to_deploy(), CPU, capture=False)
    assert sum(isinstance(m, LSConvWith) for m in backend.model.modules()) == 2
    assert sum(isinstance(m, DwPw) for m in backend.model.modules()) == 2  # the two stage transitions
    assert backend.n_swapped == 4
    x = torch.rand(2, 3, 96, 96)
    torch.testing.assert_close(backend(x), TorchBackend(copy.deepcopy(model).to_deploy(), CPU)(x), atol=1e-4, rtol=1e-4)
    same_shape, _ = frames
    want = _torch(model).predict(same_shape, imgsz=96, conf=0.25)
    assert (
        _assert_same(Detector(backend).predict(same_shape, imgsz=96, conf=0.25), want, box_atol=1.0, score_atol=5e-3)
        > 0
    )


def test_capture_and_replay_through_a_fake_graph(gelan, frames):
    same_shape, mixed = frames
    ops = FakeGraphOps()
    det = Detector(GraphBackend(copy.deepcopy(gelan).to_deploy(), CPU, capture=True, graph_ops=ops))
    eager = _graph(gelan)
    first = det.predict(same_shape, imgsz=160, conf=0.25, batch=2)
    assert ops.captures == 1 and ops.log[-1] == ("replay", (2, 3, 128, 160))  # 480x640 -> minimal padding 120 -> 128
    again = det.predict(same_shape, imgsz=160, conf=0.25, batch=2)
    assert ops.captures == 1, "same (batch, H, W) and settings: replay only"
    _assert_same(again, first, box_atol=0, score_atol=0)
    _assert_same(first, eager.predict(same_shape, imgsz=160, conf=0.25, batch=2), box_atol=0, score_atol=0)
    det.predict(mixed, imgsz=160, conf=0.25, batch=2)  # mixed shapes share the largest canvas, 128 x 160: replay
    assert ops.captures == 1
    det.predict(mixed, imgsz=192, conf=0.25, batch=2)  # 144 x 192 and 136 x 192 -> 160 x 192: a new graph
    det.predict(same_shape, imgsz=160, conf=0.4, batch=2)  # a new threshold: a new graph
    det.predict(same_shape[:1], imgsz=160, conf=0.25, batch=1)  # a new batch size: a new graph
    assert ops.captures == 4
    assert [entry for entry in ops.log if entry[0] == "capture"] == [
        ("capture", (2, 3, 128, 160)),
        ("capture", (2, 3, 160, 192)),
        ("capture", (2, 3, 128, 160)),
        ("capture", (1, 3, 128, 160)),
    ]


def test_graph_backend_needs_cuda(tmp_path, capsys):
    with pytest.raises(DetectorError, match=r"^the graph backend replays CUDA graphs and needs a CUDA GPU"):
        Detector(tiny_yaml(tmp_path), device="cpu", backend="graph")
    from detector.cli import main

    assert (
        main(
            [
                "predict",
                f"model={tiny_yaml(tmp_path)}",
                "source=datasets/bccd/JPEGImages",
                "backend=graph",
                "device=cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0]
    with pytest.raises(DetectorError, match="backend='grpah'"):
        Detector(tiny_yaml(tmp_path), device="cpu", backend="grpah")
    assert cli_predict  # the CLI entry the call above went through


def tiny_yaml(tmp_path):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in tiny_detector().items() if k != "name"}))
    return str(path)


@pytest.mark.gpu
def test_real_cuda_graph_backend_equals_torch_backend(gelan, frames):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cuda = torch.device("cuda")
    same_shape, mixed = frames
    ref = Detector(TorchBackend(copy.deepcopy(gelan).to_deploy(), cuda, half=True))
    det = Detector(GraphBackend(copy.deepcopy(gelan).to_deploy(), cuda, half=True, kernels=True))
    for batch in (same_shape, mixed):
        want = ref.predict(batch, imgsz=160, conf=0.25, batch=len(batch))
        for _ in range(2):  # capture, then replay
            got = det.predict(batch, imgsz=160, conf=0.25, batch=len(batch))
            assert _assert_same(got, want, box_atol=1.0, score_atol=1e-2) > 0


def test_dense_graph_without_kernels_captures_once_per_shape(gelan, frames):
    same_shape, _ = frames
    ops = FakeGraphOps()
    backend = GraphBackend(copy.deepcopy(gelan).to_deploy(), CPU, kernels=False, graph_ops=ops)
    got = Detector(backend).predict(same_shape, imgsz=160, conf=0.25, batch=2)
    Detector(backend).predict(same_shape, imgsz=160, conf=0.1, batch=2)  # the dense graph has no threshold in it
    assert ops.captures == 1 and backend.n_swapped == 0
    _assert_same(got, _graph(gelan, kernels=False).predict(same_shape, imgsz=160, conf=0.25, batch=2), 0, 0)
    (dense,) = backend.replay(backend.prepare(torch.rand(2, 3, 128, 160)))
    assert dense.shape == (2, 4 + 3, 16 * 20 + 8 * 10 + 4 * 5)


def test_benchmark_graph_rows_say_why_they_skip_on_cpu(tmp_path):
    from detector.benchmark import BenchmarkArgs, benchmark, load_train_form

    args = BenchmarkArgs(model=tiny_yaml(tmp_path), backends=["graph", "graph-ref"], batch=[1], imgsz=64, runs=1)
    rows = benchmark(load_train_form(args.model), args)
    assert [(r.backend, r.status) for r in rows] == [
        (name, "skipped: the graph backend replays CUDA graphs: it needs device=cuda")
        for name in ("graph", "graph-ref")
    ]


def test_graph_backend_refuses_exported_files_and_missing_checkpoints(tmp_path):
    from detector.predict.graph_backend import load_graph_backend

    cuda = torch.device("cuda")  # the file checks come before anything touches the device
    with pytest.raises(DetectorError, match=r"m.onnx: the graph backend runs a PyTorch model .* use backend=auto"):
        load_graph_backend(str(tmp_path / "m.onnx"), cuda)
    with pytest.raises(DetectorError, match="model file not found"):
        load_graph_backend(str(tmp_path / "missing.pt"), cuda)


def test_graph_backend_with_the_triton_kernels_under_the_interpreter(frames):
    """kernels=True on CPU runs every Triton kernel (letterbox, SKA, dw_pw, decode_topk) through Triton's
    interpreter: the backend wires the kernels, not only their references, to the torch backend's detections."""
    import cuda_ops

    if not cuda_ops.status().interpret:
        pytest.skip("needs TRITON_INTERPRET=1 before triton is imported (tests/conftest.py sets it without CUDA)")
    model = lively_model(tiny_lsnet_detector(), imgsz=64)
    backend = GraphBackend(copy.deepcopy(model).to_deploy(), CPU, kernels=True, capture=False)
    assert backend.impl == "kernel" and backend.n_swapped == 4
    same_shape, _ = frames
    want = _torch(model).predict(same_shape[:1], imgsz=64, conf=0.25)
    got = Detector(backend).predict(same_shape[:1], imgsz=64, conf=0.25)
    assert _assert_same(got, want, box_atol=1.5, score_atol=5e-3) > 0
