"""``export plugins=True``: the custom ONNX nodes and their attributes, onnx.checker, the numbers of the plugin
graph against the dense graph, and TensorRT plugin registration against fakes (real TensorRT: skip-marked)."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import torch
import trt_fakes
from deploy_testing import bccd_images, lively_model
from onnx import helper
from tiny_models import tiny_lsnet_detector

from cuda_ops.trt_plugins import ATTRIBUTES, DECODE_TOPK, NAMESPACE, SKA, plugin_id, register_plugins
from detector.export import DeployGraph, export, load_deploy_model
from detector.export_plugins import DOMAIN, PluginDeployGraph
from detector.nn.ska import ska
from detector.ops import NMSConfig
from detector.ops.nms import non_max_suppression
from detector.predict.graph_backend import DEFAULT_TOPK

PLUGIN_KEYS = {"plugin_namespace", "plugin_version"}


@pytest.fixture(scope="module")
def lsnet():
    return lively_model(tiny_lsnet_detector(), imgsz=96)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _plugin_nodes(proto: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.domain == DOMAIN and n.op_type == op]


def test_plugin_export_writes_ska_and_decode_nodes(lsnet, tmp_path):
    path = export(lsnet, imgsz=96, dynamic=True, plugins=True, conf=0.3, multi_label=True, out=tmp_path / "p.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert any(o.domain == DOMAIN and o.version == 1 for o in proto.opset_import)

    ska_nodes = _plugin_nodes(proto, SKA)
    assert len(ska_nodes) == 2  # the two LS-convs of the tiny LSNet
    for n in ska_nodes:
        attrs = _attrs(n)
        assert attrs == {"kernel_size": 3, "groups": 4, "plugin_namespace": b"detector", "plugin_version": b"1"}
        assert len(n.input) == 2 and len(n.output) == 1
        assert set(attrs) - PLUGIN_KEYS == set(ATTRIBUTES[SKA])

    (dec,) = _plugin_nodes(proto, DECODE_TOPK)
    attrs = _attrs(dec)
    assert attrs["strides"] == [8.0, 16.0, 32.0] and attrs["reg_max"] == 16 and attrs["anchor_offset"] == 0.5
    assert attrs["max_candidates"] == DEFAULT_TOPK
    assert attrs["conf_threshold"] == pytest.approx(0.3) and attrs["multi_label"] == 1
    assert attrs["plugin_namespace"] == NAMESPACE.encode() and set(attrs) - PLUGIN_KEYS == set(ATTRIBUTES[DECODE_TOPK])
    assert len(dec.input) == 3 and len(dec.output) == 4  # the three raw head maps in

    (out,) = proto.graph.output
    dims = [d.dim_value or d.dim_param for d in out.type.tensor_type.shape.dim]
    assert out.name == "output0" and dims[1:] == [4 + 3, DEFAULT_TOPK]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["plugins"]) == [DECODE_TOPK, SKA] and json.loads(meta["plugin_topk"]) == DEFAULT_TOPK
    # the dense decode is gone: no DFL Softmax, and one Sigmoid fewer (the class scores; SE keeps its own)
    dense = onnx.load(str(export(lsnet, imgsz=96, out=tmp_path / "d.onnx")))

    def count(p, op):
        return sum(n.op_type == op for n in p.graph.node)

    assert count(dense, "Softmax") == 1 and count(proto, "Softmax") == 0
    assert count(proto, "Sigmoid") == count(dense, "Sigmoid") - 1


def test_plugin_export_fewer_nodes_than_dense_and_nms_appends(lsnet, tmp_path):
    dense = onnx.load(str(export(lsnet, imgsz=96, out=tmp_path / "d.onnx")))
    for nms in ("onnx", "trt"):
        proto = onnx.load(str(export(lsnet, imgsz=96, plugins=True, nms=nms, out=tmp_path / f"{nms}.onnx")))
        onnx.checker.check_model(proto)
        assert [o.name for o in proto.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
        assert len(_plugin_nodes(proto, SKA)) == 2 and len(_plugin_nodes(proto, DECODE_TOPK)) == 1
    plain = onnx.load(str(export(lsnet, imgsz=96, plugins=True, out=tmp_path / "p.onnx")))
    assert len(plain.graph.node) < len(dense.graph.node)


def test_half_plugin_export_keeps_ska_in_fp16(lsnet, tmp_path):
    proto = onnx.load(str(export(lsnet, imgsz=96, half=True, plugins=True, out=tmp_path / "h.onnx")))
    onnx.checker.check_model(proto)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    first = _plugin_nodes(proto, SKA)[0]  # ONNX shape inference stops at the first custom node
    assert types[first.input[0]] == types[first.input[1]] == onnx.TensorProto.FLOAT16


def test_plugin_candidates_follow_the_exports_multi_label(lsnet, tmp_path):
    """nms=none takes the prediction preset (one label per box) unless told otherwise; in-graph NMS is
    multi-label by construction, and the candidates the node keeps say so."""

    def flag(**kw) -> int:
        proto = onnx.load(str(export(lsnet, imgsz=96, plugins=True, out=tmp_path / "m.onnx", **kw)))
        (dec,) = _plugin_nodes(proto, DECODE_TOPK)
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["postprocess"])["multi_label"] == bool(_attrs(dec)["multi_label"])
        return _attrs(dec)["multi_label"]

    assert (flag(), flag(multi_label=True), flag(nms="onnx")) == (0, 1, 1)


@torch.no_grad()
@pytest.mark.parametrize("multi_label", [True, False])
def test_plugin_graph_numbers_equal_the_dense_graph_after_nms(lsnet, multi_label):
    """Eagerly the nodes run the ops' references: the top-K candidates NMS'd like output0 give the same boxes."""
    x = torch.from_numpy(np.stack([im[::-1][:96, :96].transpose(2, 0, 1) for im in bccd_images(2)]) / 255.0).float()
    cfg = NMSConfig(conf=0.25, iou=0.7, max_det=300, multi_label=multi_label)
    dense = non_max_suppression(DeployGraph(load_deploy_model(lsnet))(x), cfg)
    packed = PluginDeployGraph(load_deploy_model(lsnet), conf=0.25, multi_label=multi_label)(x)
    assert packed.shape == (2, 7, DEFAULT_TOPK)
    plugin = non_max_suppression(packed, cfg)
    assert sum(len(d) for d in dense) > 0
    for a, b in zip(dense, plugin):
        assert len(a) == len(b)
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ TensorRT plugin registration ----


@pytest.fixture
def fake_trtp():
    return trt_fakes.make_tensorrt_plugin(), trt_fakes.make_tensorrt(10)


def test_register_plugins_against_fake_tensorrt(fake_trtp):
    trtp, trt = fake_trtp
    ids = register_plugins(trtp, trt, as_torch=lambda t: t)
    assert ids == [plugin_id(SKA), plugin_id(DECODE_TOPK)] == ["detector::SKA", "detector::DecodeTopK"]
    assert register_plugins(trtp, trt, as_torch=lambda t: t) == ids, "a second call registers nothing twice"
    for name in (SKA, DECODE_TOPK):
        entry = trtp.plugins[plugin_id(name)]
        assert {"desc", "impl", "autotune"} <= set(entry)
        # the attributes register declares are exactly the ONNX node's (minus the parser's plugin_* keys)
        assert [p for p in entry["params"] if p in ATTRIBUTES[name]] == list(ATTRIBUTES[name])

    half = trt.DataType.HALF
    y = trtp.plugins["detector::SKA"]["desc"](
        trt_fakes.FakeTensorDesc((2, 32, 12, 12), half), trt_fakes.FakeTensorDesc((2, 4, 9, 12, 12), half), 3, 4
    )
    assert y.shape_expr == (2, 32, 12, 12) and y.dtype == half
    f32 = trt.DataType.FLOAT
    maps = [trt_fakes.FakeTensorDesc((2, 67, s, s), half) for s in (12, 6, 3)]
    outs = trtp.plugins["detector::DecodeTopK"]["desc"](*maps, np.array([8, 16, 32], np.float32), 16, 0.25, 100, 1, 0.5)
    assert [o.shape_expr for o in outs] == [(2, 100, 4), (2, 100), (2, 100), (2,)]
    assert [o.dtype for o in outs] == [f32, f32, trt.DataType.INT32, trt.DataType.INT32]


def test_plugin_impls_compute_the_ops(fake_trtp):
    """The impl callbacks, fed torch tensors for TensorRT's buffers, write what the ops compute."""
    trtp, trt = fake_trtp
    register_plugins(trtp, trt, as_torch=lambda t: t)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 16, 6, 6, generator=g), torch.randn(2, 2, 9, 6, 6, generator=g)
    out = torch.full_like(x, float("nan"))
    trtp.plugins["detector::SKA"]["impl"](x, w, 3, 2, (out,), 0)
    torch.testing.assert_close(out, ska(x, w))
    with pytest.raises(ValueError, match="disagree"):
        trtp.plugins["detector::SKA"]["impl"](x, w, 3, 4, (out,), 0)

    import cuda_ops

    maps = [torch.randn(2, 64 + 3, s, s, generator=g) for s in (8, 4, 2)]
    k = 100  # more than the 84 anchors: the plugin pads decode_topk's min(K, A) slots to K
    outs = (
        torch.empty(2, k, 4),
        torch.empty(2, k),
        torch.empty(2, k, dtype=torch.int32),
        torch.empty(2, dtype=torch.int32),
    )
    strides = np.array([8, 16, 32], np.float32)
    trtp.plugins["detector::DecodeTopK"]["impl"](*maps, strides, 16, 0.3, k, 0, 0.5, outs, 0)
    boxes, scores, labels, valid = cuda_ops.decode_topk(maps, [8, 16, 32], 16, 0.3, k, impl="reference")
    n = int(valid.sum(1).max())
    assert 0 < n < 84 and boxes.shape[1] == 84
    torch.testing.assert_close(outs[3], valid.sum(1).int())
    for b in range(2):
        m = int(outs[3][b])
        torch.testing.assert_close(outs[0][b, :m], boxes[b, :m])
        torch.testing.assert_close(outs[1][b, :m], scores[b, :m])
        torch.testing.assert_close(outs[2][b, :m], labels[b, :m].int())
    assert (outs[1][:, 84:] == 0).all() and (outs[0][:, 84:] == 0).all()


def test_missing_tensorrt_plugin_api_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", trt_fakes.make_tensorrt(10))
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", None)  # TensorRT older than 10.6
    with pytest.raises(ImportError, match=r"TensorRT >= 10.6 .*tensorrt.plugin.*detector\[gpu\]"):
        register_plugins()


def test_engine_export_registers_plugins_before_building(monkeypatch, lsnet, tmp_path):
    trt, trtp = trt_fakes.make_tensorrt(10), trt_fakes.make_tensorrt_plugin()
    trt.plugin = trtp
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    path = export(lsnet, format="engine", imgsz=96, plugins=True, out=tmp_path / "m.engine")
    assert path.read_bytes() == b"serialized-engine" and "build" in trt.calls
    assert {"detector::SKA", "detector::DecodeTopK"} <= set(trtp.plugins)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_real_tensorrt_builds_and_runs_the_plugin_engine(lsnet, tmp_path):
    try:
        import tensorrt.plugin  # noqa: F401
    except ImportError as e:
        pytest.skip(f"needs TensorRT >= 10.6 with tensorrt.plugin ({e})")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from deploy import load_runner, predict

    engine = export(lsnet, format="engine", imgsz=96, plugins=True, multi_label=True, out=tmp_path / "p.engine")
    register_plugins()  # the serving process needs the Python plugins too (export registered them here already)
    reference = export(lsnet, imgsz=96, out=tmp_path / "r.onnx")
    imgs = bccd_images(2)
    got = predict(load_runner(engine), imgs, conf=0.25, iou=0.7, multi_label=True)
    ref = predict(load_runner(reference, device="cpu"), imgs, conf=0.25, iou=0.7, multi_label=True)
    for g, r in zip(got, ref):
        assert len(g) == len(r)
        np.testing.assert_allclose(g.boxes, r.boxes, atol=0.5)


def test_cli_export_plugins_true(tmp_path, capsys):
    import yaml

    from detector.export import cli_export

    cfg = tmp_path / "tiny-lsnet.yaml"
    cfg.write_text(yaml.safe_dump({k: v for k, v in tiny_lsnet_detector().items() if k != "name"}))
    out = tmp_path / "cli.onnx"
    assert cli_export([f"model={cfg}", "imgsz=64", "plugins=True", "nms=onnx", f"out={out}"]) == 0
    assert f"exported {out}" in capsys.readouterr().out
    proto = onnx.load(str(out))
    assert {n.op_type for n in proto.graph.node if n.domain == DOMAIN} == {SKA, DECODE_TOPK}
    assert any(n.op_type == "NonMaxSuppression" for n in proto.graph.node)


def test_model_without_ska_gets_only_the_decode_node_and_dynamic_hw_keeps_k(tmp_path):
    from deploy_testing import tiny_model

    path = export(tiny_model(), imgsz=64, dynamic=True, dynamic_hw=True, plugins=True, out=tmp_path / "t.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [n.op_type for n in proto.graph.node if n.domain == DOMAIN] == [DECODE_TOPK]
    (out,) = proto.graph.output
    dims = [d.dim_value or d.dim_param for d in out.type.tensor_type.shape.dim]
    assert dims == ["batch", 7, DEFAULT_TOPK]  # K is fixed whatever H and W: the plugin pads to it
    (images,) = proto.graph.input
    assert [d.dim_param for d in images.type.tensor_type.shape.dim][2:] == ["height", "width"]


def test_plugins_with_int8_is_refused_before_any_work(lsnet, tmp_path):
    from detector.config import ConfigError

    with pytest.raises(ConfigError, match=r"plugins=True and int8=True cannot be combined"):
        export(lsnet, imgsz=96, plugins=True, int8=True, calib="free", out=tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()
