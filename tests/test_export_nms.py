"""End-to-end NMS in the graph: the ONNX NonMaxSuppression variant returns PyTorch NMS's detections on real
images; the TensorRT variant is a valid ONNX graph holding the EfficientNMS_TRT plugin node as specified."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from deploy_testing import assert_same_detections, bccd_images, lively_model

from deploy import load_runner
from deploy.errors import DeployError
from deploy.metadata import NMS_OUTPUTS
from deploy.preprocess import preprocess
from detector.export import export
from detector.export_nms import TRT_DOMAIN, TRT_PLUGIN
from detector.ops import NMSConfig
from detector.ops.nms import non_max_suppression

IMGSZ = 160
CONF, IOU = 0.25, 0.6


def torch_multilabel_nms(pred: torch.Tensor, conf: float, iou: float, max_det: int) -> list[torch.Tensor]:
    """Reference: the framework's own PyTorch NMS, multi-label (every (box, class) above ``conf``, per-class
    suppression), which is what both in-graph variants compute: ONNX NonMaxSuppression over a class axis and
    TensorRT's EfficientNMS both suppress per class and may keep one box for several classes."""
    return non_max_suppression(pred, NMSConfig(conf, iou, max_det, multi_label=True))


@pytest.fixture(scope="module")
def lively():
    return lively_model("gelan-t", imgsz=IMGSZ, seed=1)


@pytest.fixture(scope="module")
def onnx_nms_model(lively, tmp_path_factory):
    out = tmp_path_factory.mktemp("nms") / "nms.onnx"
    return export(lively, imgsz=IMGSZ, dynamic=True, nms="onnx", conf=CONF, iou=IOU, max_det=300, out=out)


def test_onnx_nms_equals_torch_nms_on_real_images(lively, onnx_nms_model):
    runner = load_runner(onnx_nms_model, device="cpu")
    assert runner.has_nms and runner.output_names == list(NMS_OUTPUTS)
    x, _, _ = preprocess(bccd_images(4, 100), IMGSZ)
    out = runner(x)
    assert out["num_dets"].shape == (4, 1) and out["num_dets"].dtype == np.int32
    assert out["det_boxes"].shape == (4, 300, 4) and out["det_scores"].shape == (4, 300)
    assert out["det_classes"].dtype == np.int32
    with torch.no_grad():
        pred = copy.deepcopy(lively).to_deploy()(torch.from_numpy(x))["main"]
    refs = torch_multilabel_nms(pred, CONF, IOU, 300)
    counts = [len(r) for r in refs]
    assert min(counts) >= 5 and len(set(counts)) > 1  # real work, different per image
    for i, ref in enumerate(refs):
        n = int(out["num_dets"][i, 0])
        assert n == len(ref)
        got = np.concatenate(
            [out["det_boxes"][i, :n], out["det_scores"][i, :n, None], out["det_classes"][i, :n, None]], 1
        )
        assert np.all(np.diff(got[:, 4]) <= 0)  # best first
        assert_same_detections(got, ref.numpy())
        assert not out["det_boxes"][i, n:].any() and not out["det_scores"][i, n:].any()  # zero padding


def test_onnx_nms_caps_at_max_det(lively, tmp_path):
    path = export(lively, imgsz=IMGSZ, nms="onnx", conf=0.05, iou=IOU, max_det=7, out=tmp_path / "cap.onnx")
    x, _, _ = preprocess(bccd_images(1, 7), IMGSZ)
    out = load_runner(path, device="cpu")(x)
    with torch.no_grad():
        ref = torch_multilabel_nms(copy.deepcopy(lively).to_deploy()(torch.from_numpy(x))["main"], 0.05, IOU, 7)[0]
    assert out["det_boxes"].shape == (1, 7, 4) and int(out["num_dets"][0, 0]) == len(ref) == 7
    got = np.concatenate([out["det_boxes"][0], out["det_scores"][0, :, None], out["det_classes"][0, :, None]], 1)
    assert_same_detections(got, ref.numpy())


@pytest.mark.parametrize("dynamic", [False, True])
def test_trt_nms_graph_holds_the_plugin(lively, tmp_path, dynamic):
    path = export(
        lively,
        imgsz=IMGSZ,
        batch=2,
        dynamic=dynamic,
        nms="trt",
        conf=0.3,
        iou=0.45,
        max_det=50,
        out=tmp_path / "t.onnx",
    )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=False)
    (node,) = [n for n in proto.graph.node if n.op_type == TRT_PLUGIN]
    assert node.domain == TRT_DOMAIN and any(o.domain == TRT_DOMAIN for o in proto.opset_import)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["score_threshold"] == pytest.approx(0.3) and attrs["iou_threshold"] == pytest.approx(0.45)
    assert (attrs["max_output_boxes"], attrs["background_class"], attrs["score_activation"]) == (50, -1, 0)
    assert (attrs["class_agnostic"], attrs["box_coding"], attrs["plugin_version"]) == (0, 0, b"1")
    assert list(node.output) == list(NMS_OUTPUTS) == [o.name for o in proto.graph.output]
    batch = "batch" if dynamic else 2
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    anchors = sum((IMGSZ // s) ** 2 for s in (8, 16, 32))
    assert shapes[node.input[0]] == [batch, anchors, 4] and shapes[node.input[1]] == [batch, anchors, 3]
    assert shapes["num_dets"] == [batch, 1] and shapes["det_boxes"] == [batch, 50, 4]
    types = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert types == {
        "num_dets": onnx.TensorProto.INT32,
        "det_boxes": onnx.TensorProto.FLOAT,
        "det_scores": onnx.TensorProto.FLOAT,
        "det_classes": onnx.TensorProto.INT32,
    }
    with pytest.raises(DeployError, match="EfficientNMS_TRT.*TensorRT engine"):
        load_runner(path, device="cpu")
