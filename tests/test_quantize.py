"""INT8 export (``detector export int8=True``): a tiny model trained here on real BCCD images is quantized
into a QDQ ONNX; Q/DQ sit where expected and nowhere in the float-kept tail, detections match the float
model's, a corrupt calibration image is skipped and reported, and the TensorRT path builds from the QDQ graph.
"""

from __future__ import annotations

import logging
import shutil
import sys

import numpy as np
import onnx
import pytest
import torch
from _engine_kit import BCCD, bccd_subset, tiny_config
from trt_fakes import make_tensorrt

from deploy.metadata import ModelMetadata
from detector import Detector
from detector.config import ConfigError
from detector.engine.trainer import Trainer
from detector.export import export
from detector.quantize import Int8Options
from detector.quantize.graph import QDQ_OPS, downstream, float_tail, prediction_convs
from detector.quantize.sensitivity import output_error

IMGSZ = 128
VAL_IMAGES = sorted((BCCD / "JPEGImages").glob("*.jpg"))[-6:]  # not among the 8 training images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny GELAN (RepNCSPELAN4 blocks, so fused re-parameterised convs) trained on 8 BCCD images, plus
    a corrupt ninth image in its train split."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("int8")
    data = bccd_subset(tmp / "bccd", 8)
    root = tmp / "bccd"
    ids = (root / "ImageSets" / "Main" / "subset.txt").read_text().split()
    (root / "JPEGImages" / "broken.jpg").write_bytes((BCCD / "JPEGImages" / f"{ids[0]}.jpg").read_bytes()[:700])
    shutil.copy(root / "Annotations" / f"{ids[0]}.xml", root / "Annotations" / "broken.xml")
    (root / "ImageSets" / "Main" / "subset.txt").write_text("\n".join([*ids, "broken"]) + "\n")
    cfg = tiny_config(tmp, data, epochs=60, imgsz=IMGSZ, batch=2)
    cfg.optim.optimizer, cfg.optim.lr0 = "AdamW", 0.01  # high rate: confident boxes within 240 steps
    Trainer(cfg).train()
    return tmp / "runs" / "exp" / "weights" / "last.pt", data


@pytest.fixture(scope="module")
def exported(trained, caplog_module):
    ckpt, data = trained
    fp32 = export(ckpt, imgsz=IMGSZ, out=ckpt.with_name("fp32.onnx"))
    opts = Int8Options(keep_float=2, sensitivity_images=4)
    int8 = export(ckpt, imgsz=IMGSZ, int8=opts, data=str(data), calib=16)
    return fp32, int8, caplog_module


@pytest.fixture(scope="module")
def caplog_module():
    """Log records of the module's exports (pytest's caplog is function-scoped)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("detector.quantize")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old)


def _weight_is_quantized(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return node.input[1] in dq_out


def test_qdq_nodes_where_expected_and_none_in_the_float_tail(exported):
    fp32_path, int8_path, _ = exported
    assert int8_path.name == "last_int8.onnx"
    fp32, int8 = onnx.load(str(fp32_path)), onnx.load(str(int8_path))
    meta = ModelMetadata.from_props({p.key: p.value for p in int8.metadata_props})
    assert meta.precision == "int8" and meta.quantization["images"] == 8
    kept = set(meta.quantization["sensitivity_kept"])
    assert len(kept) == 2

    heads = {n.name for n in prediction_convs(int8.graph)}
    assert len(heads) == 6  # box and class prediction conv at each of the 3 levels
    tail = set(float_tail(int8.graph))
    assert any(n.op_type == "Softmax" for n in int8.graph.node if n.name in tail)  # the DFL is in the tail
    # nothing of the tail is quantized: no Q/DQ node downstream of the prediction convs, their weights float
    after = downstream(int8.graph, [n for n in int8.graph.node if n.name in heads])
    assert not [n.name for n in after if n.op_type in QDQ_OPS]
    convs = {n.name: n for n in int8.graph.node if n.op_type == "Conv"}
    assert len(convs) == sum(n.op_type == "Conv" for n in fp32.graph.node)
    for name, conv in convs.items():
        assert _weight_is_quantized(int8.graph, conv) == (name not in heads | kept), name
    assert sum(n.op_type == "QuantizeLinear" for n in int8.graph.node) > len(convs) // 2
    weights = [t for t in int8.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(weights) == len(convs) - len(heads) - len(kept)  # per-channel int8 weights, one per quantized conv


def _recall(ref, got, iou_thr: float = 0.5) -> tuple[int, float]:
    """Share of the reference detections that a same-class detection of ``got`` overlaps at IoU >= iou_thr."""
    import torchvision

    hits = total = 0
    for a, b in zip(ref, got):
        total += len(a)
        if len(a) and len(b):
            iou = torchvision.ops.box_iou(torch.from_numpy(a.xyxy), torch.from_numpy(b.xyxy)).numpy()
            hits += int(((iou >= iou_thr) & (a.cls[:, None] == b.cls[None])).any(1).sum())
    return total, hits / max(total, 1)


def test_int8_detections_overlap_the_float_models(exported):
    fp32, int8, _ = exported
    ref = Detector(fp32, device="cpu").predict(VAL_IMAGES, imgsz=IMGSZ, conf=0.25)
    got = Detector(int8, device="cpu").predict(VAL_IMAGES, imgsz=IMGSZ, conf=0.25)
    total, recall = _recall(ref, got)
    assert total >= 20, f"the trained tiny model should find cells on real images, found {total}"
    assert recall >= 0.9, f"int8 found {recall:.1%} of the {total} float detections"
    assert got[0].names == ref[0].names and got[0].orig_shape == ref[0].orig_shape


def test_corrupt_calibration_image_is_skipped_and_reported(exported):
    _, int8, records = exported
    meta = ModelMetadata.from_props({p.key: p.value for p in onnx.load(str(int8)).metadata_props})
    assert meta.quantization["skipped"] == 1
    lines = [r.getMessage() for r in records if "skipped" in r.getMessage()]
    assert lines and "broken.jpg" in lines[0] and "8 images" in lines[0], lines


def test_int8_without_data_stops_with_one_sentence(trained):
    ckpt, _ = trained
    with pytest.raises(ConfigError, match=r"int8=True needs calibration images: pass data=") as e:
        export(ckpt, imgsz=IMGSZ, int8=True)
    assert str(e.value).count(". ") == 0 and "\n" not in str(e.value)
    from detector.cli import main

    assert main(["export", f"model={ckpt}", "int8=True"]) == 2


def test_int8_with_half_or_bad_calib_is_refused(trained):
    ckpt, data = trained
    with pytest.raises(ConfigError, match="exclude each other"):
        export(ckpt, int8=True, data=str(data), half=True)
    with pytest.raises(ConfigError, match="calib='some'"):
        export(ckpt, int8=True, data=str(data), calib="some")


def test_output_error_weights_confident_anchors():
    ref = np.zeros((1, 6, 3), np.float32)
    ref[0, :4] = [[0, 0, 0], [0, 0, 0], [10, 100, 10], [10, 100, 10]]  # boxes 10, 100, 10 px
    ref[0, 4:] = [[0.9, 0.9, 0.01], [0.0, 0.0, 0.0]]
    got = ref.copy()
    got[0, 0, 1] += 10  # 10 px on the 100 px box: 10 % of its size on a quarter of the sides
    assert output_error(ref, got, 2) == pytest.approx(0.9 * 0.025 / (0.9 + 0.9 + 0.01))
    moved_bg = ref.copy()
    moved_bg[0, 4, 2] = 0.5  # a background anchor's score moves a lot: weighted by its 0.01
    assert output_error(ref, moved_bg, 2) < 0.01


def test_data_free_images_match_batchnorm_statistics(trained):
    from detector.checkpoint import model_from_checkpoint
    from detector.quantize.data_free import BNStatLoss, synthesize

    ckpt, _ = trained
    model = model_from_checkpoint(ckpt, deploy=False).eval()
    stats = BNStatLoss(model)
    with torch.no_grad():
        model(torch.rand(4, 3, IMGSZ, IMGSZ), decode=False)
    noise_loss = stats.take().item()
    stats.remove()
    images = synthesize(model, 4, (IMGSZ, IMGSZ), steps=40, batch=4)
    assert images.shape == (4, 3, IMGSZ, IMGSZ) and images.min() >= 0 and images.max() <= 1
    stats = BNStatLoss(model)
    with torch.no_grad():
        model(torch.from_numpy(images), decode=False)
    assert stats.take().item() < 0.5 * noise_loss


def test_data_free_export_needs_no_data(trained):
    ckpt, _ = trained
    opts = Int8Options(calib="free", keep_float=0, free_images=4, free_steps=20)
    path = export(ckpt, imgsz=IMGSZ, int8=opts, out=ckpt.with_name("free_int8.onnx"))
    meta = ModelMetadata.from_props({p.key: p.value for p in onnx.load(str(path)).metadata_props})
    assert meta.precision == "int8" and meta.quantization["calibration"].startswith("calib=free")
    r = Detector(path, device="cpu").predict(VAL_IMAGES[:2], imgsz=IMGSZ, conf=0.25)
    assert all(np.isfinite(x.xyxy).all() for x in r)


@pytest.mark.parametrize("major", [10, 11])
def test_engine_int8_builds_from_the_qdq_graph(monkeypatch, trained, major):
    ckpt, data = trained
    trt = make_tensorrt(major)
    trt.network_input_shape = (1, 3, IMGSZ, IMGSZ)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    engine = export(ckpt, format="engine", imgsz=IMGSZ, int8=Int8Options(keep_float=0), data=str(data), calib=4,
                    out=ckpt.with_name(f"trt{major}_int8.engine"))  # fmt: skip
    assert engine.read_bytes() == b"serialized-engine"
    # TensorRT 10: strongly typed network (flag bit 1); 11: always strongly typed; never a precision flag
    assert trt.calls[1] == ("create_network(2)" if major == 10 else "create_network(0)")
    assert not trt.last_config.flags
    qdq = onnx.load(str(engine.with_suffix(".onnx")))
    assert any(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    # the TensorRT profile: float biases (TensorRT has no int32 dequantize), every quantized input its own pair
    assert not [t for t in qdq.graph.initializer if t.data_type == onnx.TensorProto.INT32]
    assert ModelMetadata.read_json(engine.with_name(engine.name + ".json")).precision == "int8"


def test_engine_int8_refuses_a_float_onnx(monkeypatch, trained, tmp_path):
    from deploy.engine_builder import build_engine
    from deploy.errors import DeployError

    ckpt, _ = trained
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(10))
    fp32 = export(ckpt, imgsz=IMGSZ, out=tmp_path / "f.onnx")
    with pytest.raises(DeployError, match="no quantized"):
        build_engine(fp32, tmp_path / "f.engine", int8=True)


def test_benchmark_lists_onnx_int8(trained):
    from _engine_kit import TINY_MODEL

    from detector.benchmark import BenchmarkArgs, benchmark
    from detector.model import build_model

    _, data = trained
    model = build_model(TINY_MODEL).eval()
    args = BenchmarkArgs(model=TINY_MODEL, backends=["onnx", "onnx-int8"], batch=[1], imgsz=64, runs=2, warmup=1)
    rows = benchmark(model, args)
    assert [r.status for r in rows] == ["ok", "skipped: needs calibration images: data=DATASET (or calib=free)"]
    args.data, args.calib = str(data), 2
    int8 = benchmark(model, args)[1]
    assert int8.backend == "onnx-int8" and int8.status == "ok" and int8.median_ms > 0
