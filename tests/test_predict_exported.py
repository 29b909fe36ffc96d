"""``Detector("model.onnx")`` gives the same Results as the PyTorch backend of the same weights."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_testing import assert_same_detections, lively_model

from detector import Detector
from detector.checkpoint import save_checkpoint
from detector.export import export

IMAGES = ["datasets/bccd/JPEGImages/BloodImage_00000.jpg", "datasets/bccd/JPEGImages/BloodImage_00001.jpg"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = lively_model("gelan-t", nc=3, imgsz=160)
    path = tmp_path_factory.mktemp("exported") / "gelan-t.pt"
    names = [model.names[i] for i in range(3)]
    save_checkpoint({"model": model.state_dict(), "model_yaml": model.yaml, "names": names}, path)
    return path


def _rows(r) -> np.ndarray:
    return np.concatenate((r.xyxy, r.scores[:, None], r.cls[:, None].astype(np.float32)), 1)


@pytest.mark.parametrize("nms", ["none", "onnx"])
def test_onnx_backend_matches_torch(ckpt, nms):
    # dynamic H/W: the exported model takes the same minimally padded inputs as the PyTorch backend
    onnx_path = export(ckpt, format="onnx", imgsz=160, batch=1, dynamic=True, dynamic_hw=True, nms=nms, conf=0.25, iou=0.7,
                       out=ckpt.with_name(f"gelan-t-{nms}.onnx"))  # fmt: skip
    torch_det, onnx_det = Detector(ckpt, device="cpu"), Detector(onnx_path, device="cpu")
    assert onnx_det.names == torch_det.names and onnx_det.backend.has_nms == (nms == "onnx")
    # in-graph NMS keeps every class above conf per box: compare with the multi-label PyTorch path
    multi = nms == "onnx"
    ref = torch_det.predict(IMAGES, imgsz=160, conf=0.25, multi_label=multi, batch=2)
    got = onnx_det.predict(IMAGES, imgsz=160, conf=0.25, multi_label=multi, batch=2)
    assert sum(len(r) for r in ref) > 0
    for a, b in zip(got, ref):
        assert a.orig_shape == b.orig_shape and a.path == b.path
        assert_same_detections(_rows(a), _rows(b))
