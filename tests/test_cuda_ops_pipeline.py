"""The ops composed the way a GPU runtime uses them: real BCCD frames of odd sizes -> letterbox_frames -> a
detector's raw maps -> decode_topk -> batched_nms -> boxes in original pixels, against the project's own path
(deploy preprocess -> decoded output -> non_max_suppression -> scale_boxes)."""

from __future__ import annotations

import pytest
import torch
from backbone_kit import randomize_norms
from cuda_ops_kit import CROPS, bccd_crop, needs_kernel
from tiny_models import tiny_detector

import cuda_ops
from deploy.contract import NMSConfig
from deploy.preprocess import preprocess
from detector.model import build_model
from detector.ops.boxes import scale_boxes
from detector.ops.nms import non_max_suppression

IMGSZ = 96


@pytest.mark.parametrize("impl", ["reference", pytest.param("kernel", marks=needs_kernel)])
def test_frames_to_detections_equal_the_project_path(impl) -> None:
    torch.manual_seed(0)
    model = randomize_norms(build_model(tiny_detector())).eval()
    head = model.main_head
    for cls in head.cls:  # an untrained head scores ~1e-4 everywhere: spread the scores so NMS has work to do
        cls[-1].bias.data.normal_(0.0, 1.5)
    frames = [bccd_crop(*c)[0] for c in CROPS]
    with torch.no_grad():
        batch, ratio_pads, shapes = preprocess(frames, IMGSZ)
        want = non_max_suppression(
            model(torch.from_numpy(batch))["main"], NMSConfig(conf=0.3, iou=0.6, max_det=100, multi_label=True)
        )
        images, meta = cuda_ops.letterbox_frames(frames, IMGSZ, torch.float32, impl=impl)
        maps = model(images, decode=False)["main"]
        cand = cuda_ops.decode_topk(maps, head.strides, head.reg_max, 0.3, 30000, True, impl=impl)
        got = cuda_ops.batched_nms(*cand, iou=0.6, max_det=100)
    assert ((images - torch.from_numpy(batch)).abs() * 255).max() <= 1.0 + 1e-3
    assert sum(len(w) for w in want) > 10
    for i, (g, w) in enumerate(zip(got, want)):
        assert len(g) == len(w)
        torch.testing.assert_close(g, w, rtol=0, atol=1e-3)
        r, pw, ph, _ = meta[i].tolist()
        torch.testing.assert_close(
            scale_boxes(g[:, :4], (r, (pw, ph)), shapes[i]),
            scale_boxes(w[:, :4], ratio_pads[i], shapes[i]),
            rtol=0,
            atol=2e-3,
        )
