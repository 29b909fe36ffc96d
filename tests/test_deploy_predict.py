"""deploy.predict end to end on real photos, with and without in-graph NMS, against the PyTorch pipeline; and
the whole deploy path in a Python process where importing torch fails."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from deploy_testing import ROOT, assert_same_detections, bccd_images, lively_model

from deploy import load_runner, predict
from deploy.errors import DeployError
from deploy.preprocess import preprocess
from detector.export import export
from detector.ops import NMSConfig, PreprocessSpec
from detector.ops.boxes import scale_boxes
from detector.ops.letterbox import letterbox
from detector.ops.nms import non_max_suppression

IMGSZ = 128
CONF, IOU = 0.3, 0.6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = lively_model("gelan-t", imgsz=IMGSZ, seed=2)
    folder = tmp_path_factory.mktemp("predict")
    raw = export(model, imgsz=IMGSZ, dynamic=True, out=folder / "raw.onnx")
    with_nms = export(model, imgsz=IMGSZ, batch=2, nms="onnx", conf=CONF, iou=IOU, out=folder / "nms.onnx")
    return model, raw, with_nms


def photos() -> list[np.ndarray]:
    """Real photos of different sizes: full 640x480, a portrait crop, a small crop."""
    a, b, c = bccd_images(3, 30)
    return [a, np.ascontiguousarray(b[:, 100:400]), np.ascontiguousarray(c[100:260, 200:520])]


def torch_pipeline(model, images: list[np.ndarray]) -> list[np.ndarray]:
    """The same job done by detector's torch side: its letterbox, the deploy form, its NMS and scale_boxes."""
    deploy_form = copy.deepcopy(model).to_deploy()
    out = []
    for img in images:
        boxed, plan = letterbox(img, PreprocessSpec(IMGSZ, auto=False))  # the exports have a fixed size
        x = torch.from_numpy(np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
        with torch.no_grad():
            (det,) = non_max_suppression(deploy_form.infer(x), NMSConfig(CONF, IOU, multi_label=True))
        det[:, :4] = scale_boxes(det[:, :4], plan.ratio_pad, img.shape[:2])
        out.append(det.numpy())
    return out


def as_rows(dets) -> list[np.ndarray]:
    return [np.concatenate([d.boxes, d.scores[:, None], d.class_ids[:, None]], 1) for d in dets]


def test_predict_matches_torch_pipeline_with_and_without_graph_nms(exported):
    model, raw, with_nms = exported
    imgs = photos()
    ref = torch_pipeline(model, imgs)
    assert all(len(r) >= 3 for r in ref)
    raw_runner, nms_runner = load_runner(raw, device="cpu"), load_runner(with_nms, device="cpu")
    numpy_nms = predict(raw_runner, imgs, conf=CONF, iou=IOU, multi_label=True)
    graph_nms = predict(nms_runner, imgs)  # static batch 2: three photos -> two calls, the last one padded
    for got_a, got_b, r, img in zip(as_rows(numpy_nms), as_rows(graph_nms), ref, imgs):
        assert_same_detections(got_a, r, box_atol=2e-3)
        assert_same_detections(got_b, r, box_atol=2e-3)
        assert (got_a[:, [2, 3]] <= [img.shape[1], img.shape[0]]).all()
    assert numpy_nms[0].labels[0] in {"class0", "class1", "class2"}
    fewer = predict(nms_runner, imgs[:1], conf=0.6, classes=[1])[0]  # graph NMS: conf/classes filter further
    assert len(fewer) < len(graph_nms[0]) and (fewer.scores > 0.6).all() and (fewer.class_ids == 1).all()


def test_predict_accepts_one_image_and_checks_input(exported):
    _, raw, _ = exported
    runner = load_runner(raw, device="cpu")
    (det,) = predict(runner, bccd_images(1)[0])
    assert det.boxes.shape[1] == 4 and det.boxes.dtype == np.float32
    with pytest.raises(DeployError, match=r"input must be an array \(B, 3, H, W\)"):
        runner(np.zeros((3, IMGSZ, IMGSZ), np.float32))
    with pytest.raises(DeployError, match="height is 96 but the model was exported with 128"):
        runner(np.zeros((1, 3, 96, IMGSZ), np.float32))


BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"torch is blocked in this process (tried to import {name})")
            return None

    sys.meta_path.insert(0, NoTorch())
    """
)

DEPLOY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import cv2
    try:
        import torch  # noqa: F401
        raise SystemExit("the torch blocker does not work")
    except ImportError:
        pass
    import deploy
    from deploy import load_runner, predict
    from deploy.postprocess import non_max_suppression
    from deploy.preprocess import preprocess

    onnx_path, out_path, *image_paths = sys.argv[1:]
    imgs = [cv2.imread(p) for p in image_paths]
    runner = load_runner(onnx_path, device="auto")
    dets = predict(runner, imgs, conf=0.3, iou=0.6, multi_label=True)
    x, _, _ = preprocess(imgs, runner.input_spec())
    raw = runner(x)["output0"]
    rows = {f"det{i}": np.concatenate([d.boxes, d.scores[:, None], d.class_ids[:, None]], 1) for i, d in enumerate(dets)}
    np.savez(out_path, raw=raw, **rows)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
    print("TORCH_MODULES", loaded)
    """
)


def test_deploy_runs_where_torch_cannot_be_imported(exported, tmp_path):
    _, raw, _ = exported
    images = [str(p) for p in sorted((ROOT / "datasets/bccd/JPEGImages").glob("*.jpg"))[30:33]]
    script = tmp_path / "no_torch.py"
    script.write_text(BLOCK_TORCH + DEPLOY_SCRIPT)
    res = subprocess.run(
        [sys.executable, str(script), str(raw), str(tmp_path / "out.npz"), *images],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "TORCH_MODULES []" in res.stdout
    got = np.load(tmp_path / "out.npz")
    runner = load_runner(raw, device="cpu")
    imgs = bccd_images(3, 30)
    np.testing.assert_array_equal(got["raw"], runner(preprocess(imgs, runner.input_spec())[0])["output0"])
    for i, det in enumerate(as_rows(predict(runner, imgs, conf=CONF, iou=IOU, multi_label=True))):
        assert len(det) > 0
        np.testing.assert_array_equal(got[f"det{i}"], det)
