"""ONNX export: what ONNX Runtime computes equals the PyTorch deploy form on real images, for one model of every
family, at batch 1, 3 and 8 from one dynamic export; static shapes; dynamic H/W; metadata; fp16; the CLI."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from deploy_testing import bccd_images, family_models, lively_model, tiny_model

from deploy import load_runner
from deploy.errors import DeployError
from deploy.metadata import ModelMetadata
from deploy.preprocess import preprocess
from detector import __version__
from detector.checkpoint import save_checkpoint
from detector.config import ConfigError
from detector.export import cli_export, export

IMGSZ = 128


def assert_same_predictions(got: np.ndarray, ref: np.ndarray) -> None:
    """Within 1e-4 relative. Box coordinates are pixels: their error is relative to the coordinate scale (the
    largest coordinate), since a coordinate near 0 carries the same float32 rounding as one near the image
    edge; scores keep an absolute floor of 1e-6."""
    assert got.shape == ref.shape
    scale = float(np.abs(ref[:, :4]).max())
    np.testing.assert_allclose(got[:, :4], ref[:, :4], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(got[:, 4:], ref[:, 4:], rtol=1e-4, atol=1e-6)


def torch_deploy_output(model, x: np.ndarray) -> np.ndarray:
    """The PyTorch deploy form's eval output ``(B, 4 + nc, A)`` for a preprocessed batch."""
    deploy_form = copy.deepcopy(model).to_deploy()
    with torch.no_grad():
        return deploy_form(torch.from_numpy(x))["main"].numpy()


@pytest.fixture(scope="module", params=family_models())
def family_export(request, tmp_path_factory):
    model = lively_model(request.param, imgsz=IMGSZ)
    path = export(model, imgsz=IMGSZ, dynamic=True, out=tmp_path_factory.mktemp("fam") / f"{request.param}.onnx")
    return model, path


def test_onnx_equals_torch_on_real_images_dynamic_batch(family_export):
    model, path = family_export
    runner = load_runner(path, device="cpu")
    assert runner.input_shape == (None, 3, IMGSZ, IMGSZ)
    anchors = sum((IMGSZ // int(s)) ** 2 for s in model.strides)
    for batch, start in ((1, 0), (3, 5), (8, 20)):
        x, _, _ = preprocess(bccd_images(batch, start), IMGSZ)
        got = runner(x)["output0"]
        ref = torch_deploy_output(model, x)
        assert got.shape == ref.shape == (batch, 4 + model.nc, anchors)
        assert_same_predictions(got, ref)
        assert ref[:, 4:].std() > 0.05  # a real test: scores vary across anchors and images


def test_static_batch_is_enforced(tmp_path):
    path = export(tiny_model(), imgsz=64, batch=2, out=tmp_path / "static.onnx")
    runner = load_runner(path, device="cpu")
    assert runner.input_shape == (2, 3, 64, 64) and runner.fixed_batch == 2
    x, _, _ = preprocess(bccd_images(2), 64)
    assert_same_predictions(runner(x)["output0"], torch_deploy_output(tiny_model(), x))
    with pytest.raises(DeployError, match="batch is 3 but the model was exported with 2"):
        runner(np.concatenate([x, x[:1]]))


def test_dynamic_hw(tmp_path):
    model = tiny_model()
    path = export(model, imgsz=128, dynamic=True, dynamic_hw=True, out=tmp_path / "hw.onnx")
    runner = load_runner(path, device="cpu")
    assert runner.input_shape == (None, 3, None, None) and runner.input_hw == (128, 128)
    for hw in ((96, 128), (64, 160)):
        x, _, _ = preprocess(bccd_images(2), hw)
        assert_same_predictions(runner(x)["output0"], torch_deploy_output(model, x))


def test_metadata_round_trip(tmp_path):
    path = export(tiny_model(), imgsz=(64, 96), nms="onnx", conf=0.3, iou=0.5, max_det=20, out=tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    meta = ModelMetadata.from_props(props)
    assert meta.names == {0: "RBC", 1: "WBC", 2: "Platelets"}
    assert meta.strides == [8.0, 16.0, 32.0] and meta.stride == 32
    assert meta.imgsz == (64, 96) and meta.batch == 1 and not meta.dynamic
    assert (meta.nms, meta.conf, meta.iou, meta.max_det) == ("onnx", 0.3, 0.5, 20)
    assert (meta.input_dtype, meta.precision, meta.task) == ("float32", "fp32", "detect")
    assert (meta.version, meta.framework, meta.model, meta.opset) == (__version__, "detector", "tiny", 17)
    assert ModelMetadata.from_props(meta.to_props()) == meta
    runner = load_runner(path, device="cpu")
    assert runner.metadata == meta and runner.has_nms
    with pytest.raises(DeployError, match="metadata `nms`"):
        ModelMetadata.from_props({**props, "nms": "fast"})


def test_fp16_export_keeps_float32_input(tmp_path):
    model = lively_model("gelan-t", imgsz=IMGSZ)
    path = export(model, imgsz=IMGSZ, half=True, dynamic=True, out=tmp_path / "half.onnx")
    proto = onnx.load(str(path))
    weights = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(weights) > 0.9 * len([i for i in proto.graph.initializer if len(i.dims) == 4])
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    runner = load_runner(path, device="cpu")
    assert runner.input_dtype == np.float32 and runner.metadata.input_dtype == "float32"
    assert runner.metadata.precision == "fp16"
    x, _, _ = preprocess(bccd_images(2, 3), IMGSZ)
    got, ref = runner(x)["output0"], torch_deploy_output(model, x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got[:, :4], ref[:, :4], rtol=0.02, atol=1.0)  # fp16 body: ~1% of box size
    np.testing.assert_allclose(got[:, 4:], ref[:, 4:], atol=0.02)
    assert np.abs(got - ref).max() > 1e-6  # it really computed in half precision


def test_runner_feeds_the_dtype_the_graph_declares(tmp_path):
    """A float16-input graph: the runner converts the float32 batch itself and says so."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["images"], ["output0"], to=TensorProto.FLOAT)],
        "half_input",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT16, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 3, 32, 32])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = ModelMetadata(input_dtype="float16", imgsz=(32, 32))
    for k, v in meta.to_props().items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(proto, str(tmp_path / "h.onnx"))
    runner = load_runner(tmp_path / "h.onnx", device="cpu")
    assert runner.input_dtype == np.float16
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(runner(x)["output0"], x.astype(np.float16).astype(np.float32))
    del proto.metadata_props[:]
    for k, v in ModelMetadata(input_dtype="float32").to_props().items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(proto, str(tmp_path / "lying.onnx"))
    with pytest.raises(DeployError, match="metadata says input dtype float32 but the graph's 'images' is float16"):
        load_runner(tmp_path / "lying.onnx", device="cpu")


def test_export_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="multiples of the model's stride 32"):
        export(tiny_model(), imgsz=100, out=tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="nms='fast'"):
        export(tiny_model(), nms="fast", out=tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="opset >= 11"):
        export(tiny_model(), nms="onnx", opset=10, out=tmp_path / "x.onnx")


def test_cli_exports_a_checkpoint(tmp_path, capsys):
    model = tiny_model(seed=3)
    ckpt = tmp_path / "best.pt"
    save_checkpoint({"model": model.state_dict(), "model_yaml": model.yaml, "names": ["a", "b", "c"]}, ckpt)
    assert cli_export([f"model={ckpt}", "imgsz=64", "dynamic=True", "nms=onnx"]) == 0
    out = tmp_path / "best.onnx"
    assert f"exported {out}" in capsys.readouterr().out
    runner = load_runner(out, device="cpu")
    assert runner.metadata.names == {0: "a", 1: "b", 2: "c"} and runner.metadata.nms == "onnx"
    assert runner.input_shape == (None, 3, 64, 64)
    with pytest.raises(ConfigError, match="unknown key 'imgz'; did you mean 'imgsz'"):
        cli_export([f"model={ckpt}", "imgz=64"])
    with pytest.raises(ConfigError, match="name a model"):
        cli_export(["imgsz=64"])
