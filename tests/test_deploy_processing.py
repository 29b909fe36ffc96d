"""deploy's numpy pre/post-processing: letterbox geometry, box scaling, NMS against torchvision, the reading of
in-graph NMS outputs, and equality with detector's torch-side twins where those exist."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torchvision
from deploy_testing import bccd_images

from deploy.contract import NMSConfig, PreprocessSpec
from deploy.errors import DeployError
from deploy.postprocess import from_nms_outputs, nms, non_max_suppression, scale_boxes
from deploy.preprocess import letterbox, preprocess


def square(size, **kw) -> PreprocessSpec:
    """Pad to the full ``size`` unless ``auto`` is asked for."""
    return PreprocessSpec(size, **{"auto": False, **kw})


def test_letterbox_geometry_on_a_real_image():
    img = bccd_images(1)[0]  # 480 x 640
    out, plan = letterbox(img, square(160))
    assert out.shape == (160, 160, 3) and plan.ratio == 0.25 and plan.pad == (0, 20)
    assert (out[:20] == 114).all() and (out[140:] == 114).all()
    np.testing.assert_array_equal(out[20:140], cv2.resize(img, (160, 120), interpolation=cv2.INTER_AREA))
    out, plan = letterbox(img, PreprocessSpec(160, stride=32, auto=True))  # pad only to the next multiple of 32
    assert out.shape == (128, 160, 3) and plan.pad == (0, 4)
    out, plan = letterbox(img[:100, :50], square(160, scaleup=False))  # never enlarges
    assert plan.ratio == 1.0 and out.shape == (160, 160, 3) and plan.pad == (55, 30)
    out, plan = letterbox(img, square((96, 160)))
    assert out.shape == (96, 160, 3) and plan.ratio == pytest.approx(0.2) and plan.pad == (16, 0)
    out, plan = letterbox(img, PreprocessSpec(160, auto=True), canvas=(160, 192))  # a batch's common shape
    assert out.shape == (160, 192, 3) and plan.pad == (16, 20)
    with pytest.raises(ValueError, match="multiple of the stride 32"):
        PreprocessSpec(100)


def test_preprocess_batches_rgb_chw_unit_range():
    imgs = bccd_images(2)
    x, ratio_pads, shapes = preprocess([imgs[0], imgs[1][:300]], square(128), dtype=np.float16)
    assert x.shape == (2, 3, 128, 128) and x.dtype == np.float16
    assert shapes == [(480, 640), (300, 640)]
    boxed = letterbox(imgs[0], square(128))[0]
    np.testing.assert_allclose(x[0, 0], (boxed[..., 2] / 255).astype(np.float16))  # channel 0 is red
    assert ratio_pads[1] == (0.2, (0, 34))
    # minimal padding: the batch takes the larger canvas of its images (96x128 and 64x128 -> 96x128)
    x, ratio_pads, _ = preprocess([imgs[0], imgs[1][:300]], PreprocessSpec(128))
    assert x.shape == (2, 3, 96, 128) and ratio_pads == [(0.2, (0, 0)), (0.2, (0, 18))]
    with pytest.raises(DeployError, match="image 1 must be a uint8 BGR array"):
        preprocess([imgs[0], imgs[1].astype(np.float32)], square(128))


def test_scale_boxes_inverts_the_letterbox():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [600, 440], (50, 2))
    orig = np.concatenate([xy, xy + rng.uniform(1, 40, (50, 2))], 1).astype(np.float32)
    _, plan = letterbox(bccd_images(1)[0], square((256, 320)))
    ratio, (padw, padh) = plan.ratio_pad
    boxed = orig * ratio + np.array([padw, padh, padw, padh], np.float32)
    back = scale_boxes(boxed, (ratio, (padw, padh)), (480, 640))
    np.testing.assert_allclose(back, np.clip(orig, 0, [640, 480, 640, 480]), rtol=1e-5, atol=1e-3)
    outside = scale_boxes(np.array([[-50.0, -5, 400, 400]]), (ratio, (padw, padh)), (480, 640))
    assert outside.min() == 0 and outside[0, 2] == 640 and outside[0, 3] == 480


def clustered_predictions(seed: int, batch: int = 3, nc: int = 4, anchors: int = 600) -> np.ndarray:
    """Decoded-output-like ``(B, 4 + nc, A)``: boxes jittered around a few objects (heavy overlap), scores."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(50, 590, (batch, 12, 2))
    sizes = rng.uniform(20, 120, (batch, 12, 2))
    pick = rng.integers(0, 12, (batch, anchors))
    c = np.take_along_axis(centres, pick[..., None], 1) + rng.normal(0, 6, (batch, anchors, 2))
    s = np.take_along_axis(sizes, pick[..., None], 1) * rng.uniform(0.8, 1.2, (batch, anchors, 2))
    boxes = np.concatenate([c - s / 2, c + s / 2], -1)
    scores = rng.beta(0.6, 2.5, (batch, anchors, nc))
    return np.concatenate([boxes, scores], -1).transpose(0, 2, 1).astype(np.float32)


def torchvision_reference(pred, conf, iou, max_det, multi_label, classes, agnostic):
    out = []
    for p in torch.from_numpy(pred):
        boxes, scores = p[:4].T, p[4:].T
        if multi_label:
            a, c = torch.nonzero(scores > conf, as_tuple=True)
            s = scores[a, c]
        else:
            s, c = scores.max(1)
            a = torch.nonzero(s > conf)[:, 0]
            s, c = s[a], c[a]
        if classes is not None:
            k = torch.isin(c, torch.tensor(classes))
            a, s, c = a[k], s[k], c[k]
        groups = torch.zeros_like(c) if agnostic else c
        keep = torchvision.ops.batched_nms(boxes[a], s, groups, iou)[:max_det]
        out.append(torch.cat([boxes[a][keep], s[keep, None], c[keep, None].float()], 1).numpy())
    return out


@pytest.mark.parametrize(
    "multi_label,agnostic,classes,max_det",
    [(False, False, None, 300), (True, False, None, 300), (False, True, None, 300), (True, False, [1, 3], 5)],
)
def test_numpy_nms_equals_torchvision(multi_label, agnostic, classes, max_det):
    for seed in range(3):
        pred = clustered_predictions(seed)
        got = non_max_suppression(pred, NMSConfig(0.25, 0.5, max_det, multi_label, agnostic, classes))
        ref = torchvision_reference(pred, 0.25, 0.5, max_det, multi_label, classes, agnostic)
        for g, r in zip(got, ref):
            assert len(r) > 3 and g.shape == r.shape
            np.testing.assert_array_equal(g, r)


def test_plain_nms_matches_torchvision_ops_nms():
    pred = clustered_predictions(7, batch=1, nc=1, anchors=2000)[0]
    boxes, scores = pred[:4].T.copy(), pred[4].copy()
    for thr in (0.3, 0.5, 0.7):
        ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).numpy()
        np.testing.assert_array_equal(nms(boxes, scores, thr), ref)


def test_from_nms_outputs_reads_only_valid_rows():
    outputs = {
        "num_dets": np.array([[2], [0]], np.int32),
        "det_boxes": np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4),
        "det_scores": np.array([[0.9, 0.8, 0.0], [0.0, 0.0, 0.0]], np.float32),
        "det_classes": np.array([[2, 0, 0], [0, 0, 0]], np.int32),
    }
    dets = from_nms_outputs(outputs)
    assert [d.shape for d in dets] == [(2, 6), (0, 6)]
    np.testing.assert_array_equal(dets[0][:, :4], outputs["det_boxes"][0, :2])
    np.testing.assert_allclose(dets[0][:, 4:], [[0.9, 2], [0.8, 0]])
    with pytest.raises(DeployError, match="lack the NMS output 'det_classes'"):
        from_nms_outputs({k: v for k, v in outputs.items() if k != "det_classes"})


def test_nms_and_scaling_equal_detector_twins():
    from detector.ops.boxes import scale_boxes as torch_scale_boxes
    from detector.ops.nms import non_max_suppression as torch_nms

    settings = [(False, None, False), (True, None, False), (True, [0, 2], False), (False, None, True)]
    for seed, (multi_label, classes, agnostic) in enumerate(settings):
        pred = clustered_predictions(11 + seed)
        cfg = NMSConfig(0.25, 0.6, 100, multi_label, agnostic, classes)
        got = non_max_suppression(pred, cfg)
        ref = torch_nms(torch.from_numpy(pred), cfg)
        for g, r in zip(got, ref):
            assert len(g) > 3
            np.testing.assert_array_equal(g, r.numpy())
    boxes = clustered_predictions(12)[0, :4].T.copy()
    ratio_pad = (0.4, (0.0, 32.0))
    np.testing.assert_allclose(
        scale_boxes(boxes, ratio_pad, (480, 640)),
        torch_scale_boxes(torch.from_numpy(boxes), ratio_pad, (480, 640)).numpy(),
        rtol=1e-6,
        atol=1e-4,
    )


def test_onnx_providers_follow_the_device():
    from deploy.onnx_runner import choose_providers

    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(gpu, "auto") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert choose_providers(gpu, "cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert choose_providers(gpu, "cpu") == ["CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"], "auto") == ["CPUExecutionProvider"]
    with pytest.raises(DeployError, match=r'no CUDA provider.*pip install "detector\[gpu\]"'):
        choose_providers(["CPUExecutionProvider"], "cuda")


def test_metadata_carries_the_contract_and_reads_older_files():
    from deploy.metadata import ModelMetadata

    meta = ModelMetadata(names={0: "a"}, imgsz=(96, 128), dynamic_hw=True, postprocess=NMSConfig.predict(iou=0.5))
    back = ModelMetadata.from_props(meta.to_props())
    assert back.preprocess == PreprocessSpec((96, 128), 32, auto=True) and back.postprocess.iou == 0.5
    assert back.conf is None  # a raw graph has no baked thresholds
    # written before `preprocess`/`postprocess` existed: derived from imgsz/dynamic_hw and conf/iou/max_det
    old = {"names": '{"0": "a"}', "imgsz": "[64, 64]", "nms": "onnx", "conf": "0.3", "iou": "0.5", "max_det": "20"}
    legacy = ModelMetadata.from_props(old)
    assert legacy.preprocess == PreprocessSpec(64, 32, auto=False)
    assert legacy.postprocess == NMSConfig(0.3, 0.5, 20, multi_label=True)
    assert (legacy.conf, legacy.iou, legacy.max_det) == (0.3, 0.5, 20)
    with pytest.raises(DeployError, match="bad preprocess/postprocess metadata"):
        ModelMetadata.from_props({**old, "postprocess": '{"conf": 7}'}, origin="m.onnx")
