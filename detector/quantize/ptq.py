"""Post-training INT8 quantization of an exported float graph into an explicitly quantized (QDQ) ONNX.

We use ONNX Runtime's quantization tooling (``onnxruntime.quantization.quantize_static``) rather than
hand-written Q/DQ insertion or NVIDIA ModelOpt: it ships with the ONNX Runtime we already depend on (ModelOpt
would add a CUDA-centric dependency tree to a CPU export), it places Q/DQ pairs the way ONNX Runtime's CPU
kernels fuse them (QLinearConv etc.), it has MinMax / Entropy / Percentile calibrators, per-channel weights,
``nodes_to_exclude`` for float-kept layers and a calibration cache that lets the sensitivity pass re-quantize
single layers without recalibrating. The output is standard ONNX QuantizeLinear/DequantizeLinear, which is
also what TensorRT's strongly typed networks (TensorRT 10 and 11) take as is.

Settings: weights int8, symmetric, per output channel. Activations depend on the runtime. ONNX Runtime on x86
(``target="onnx"``): uint8 with a zero point (U8S8, what VNNI multiplies natively; symmetric int8 activations
ran 2x *slower* than fp32 on our AVX-512 VNNI CPU while U8S8 ran 1.7x faster) and int32 biases, so Conv + bias
fuse into one integer kernel. TensorRT (``target="engine"``): int8 symmetric (zero point 0, the only INT8
TensorRT runs), float biases (no int32 dequantize there) and a dedicated Q/DQ pair per consumer.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from detector.errors import DetectorError
from detector.quantize.calibration import CalibrationReport, ImageFeeds, ListFeeds, calibration_files, feeds
from detector.quantize.graph import QDQ_OPS, float_tail, name_nodes
from detector.quantize.options import Int8Options

LOG = logging.getLogger("detector.quantize")


@dataclass
class QuantResult:
    """The quantized graph and what went into it."""

    model: onnx.ModelProto
    report: CalibrationReport
    float_nodes: list[str] = field(default_factory=list)  # nodes kept in float (tail + sensitivity picks)
    sensitive: list[tuple[str, float]] = field(default_factory=list)  # the pass's ranking, worst first

    def summary(self) -> dict:
        """What goes into the exported model's metadata."""
        return {
            "calibration": self.report.source,
            "images": len(self.report.used),
            "skipped": len(self.report.skipped),
            "float_nodes": len(self.float_nodes),
            "sensitivity_kept": [n for n, _ in self.sensitive],
        }


def quant_kwargs(opts: Int8Options, target: str) -> dict:
    """``quantize_static`` keyword arguments shared by the calibration run and every sensitivity run."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    trt = target == "engine"
    extra = {
        "ActivationSymmetric": trt,
        "WeightSymmetric": True,
        "QuantizeBias": not trt,
        "DedicatedQDQPair": trt,
    }
    act = QuantType.QInt8 if trt else QuantType.QUInt8
    return dict(quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False, activation_type=act,
                weight_type=QuantType.QInt8, calibrate_method=methods[opts.method], extra_options=extra)  # fmt: skip


def _quiet_ort_logging():
    """ONNX Runtime's quantizer logs a pre-processing advice on every call through the root logger."""
    return _Silence(logging.getLogger())


class _Silence:
    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __enter__(self) -> None:
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc) -> None:
        self.logger.setLevel(self.level)


def calibrate_ranges(fp32: Path, reader, opts: Int8Options, cache: Path, target: str, chunk: int = 16) -> None:
    """Run the calibrator over ``reader`` ``chunk`` inputs at a time and write the ranges to ``cache``.

    Driven here rather than inside ``quantize_static`` so memory stays bounded: the calibrator holds every
    intermediate tensor of the inputs it has seen until it reduces them, which for 200 images would be
    gigabytes; reducing every ``chunk`` inputs (ranges merge, histograms accumulate) keeps it to a few.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    method = quant_kwargs(opts, target)["calibrate_method"]
    extra = {"symmetric": target == "engine"}  # TensorRT: zero-point 0 ranges
    if opts.method == "percentile":
        extra["percentile"] = opts.percentile
    with _quiet_ort_logging():
        calibrator = create_calibrator(fp32, sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                       augmented_model_path=str(cache.with_suffix(".augmented.onnx")),
                                       calibrate_method=method, extra_options=extra)  # fmt: skip
    seen = 0
    while True:
        batch = [x for x in (reader.get_next() for _ in range(chunk)) if x is not None]
        if not batch:
            break
        calibrator.collect_data(ListFeeds(batch))
        seen += len(batch)
        LOG.info("int8: calibrated on %d inputs", seen)
    if not seen:
        raise DetectorError("int8: no calibration input was produced")
    save_tensors_data(calibrator.compute_data(), cache)


def calibration_reader(opts: Int8Options, source, imgsz: tuple[int, int], stride: int, batch: int):
    """``(reader, report, samples)``: the calibration feed, its report, and a callable giving the inputs
    the sensitivity pass uses (available after calibration has read them)."""
    report = CalibrationReport()
    if opts.data_free:
        from detector.quantize.data_free import synthesize

        model = train_form(source)
        report.source = f"calib=free ({opts.free_images} images synthesised from BatchNorm statistics)"
        LOG.info("calib=free: synthesising %d images at %dx%d (%d steps each batch)", opts.free_images, *imgsz,
                 opts.free_steps)  # fmt: skip
        images = synthesize(model, opts.free_images, imgsz, steps=opts.free_steps, seed=opts.seed)
        report.used = [f"synthetic-{i}" for i in range(len(images))]
        keep = images[: opts.sensitivity_images]
        return ListFeeds(feeds(images, batch)), report, lambda: list(keep)
    files, rejected = calibration_files(str(opts.data), int(opts.calib), opts.seed)
    report.source = f"{opts.data} (train split)"
    report.skipped += rejected
    reader = ImageFeeds(files, imgsz, stride, batch, report, keep=opts.sensitivity_images)
    return reader, report, lambda: reader.samples


def train_form(source):
    """The model with its BatchNorm layers (checkpoint loaded unfused, or a copy of a model object)."""
    import copy

    from detector.model import DetectionModel

    if isinstance(source, DetectionModel):
        return copy.deepcopy(source).cpu().float()
    from detector.checkpoint import model_from_checkpoint
    from detector.export import CHECKPOINT_SUFFIXES

    if Path(str(source)).suffix not in CHECKPOINT_SUFFIXES:
        raise DetectorError(f"calib=free: {source} is not a trained checkpoint; give the .pt it was trained into")
    return model_from_checkpoint(source, deploy=False)


def quantize_proto(
    proto: onnx.ModelProto,
    source,
    opts: Int8Options,
    *,
    imgsz: tuple[int, int],
    stride: int,
    batch: int,
    nc: int,
    target: str = "onnx",
) -> QuantResult:
    """Float graph ``proto`` (input ``images``, output ``output0``) -> QDQ graph, calibrated per ``opts``.

    ``source`` is what was exported (checkpoint path or model), needed for ``calib="free"``.
    """
    from onnxruntime.quantization import quantize_static

    from detector.quantize.sensitivity import rank_layers

    name_nodes(proto)
    tail = float_tail(proto.graph)
    if opts.clip_weights:
        from detector.quantize.weight_clip import clip_conv_weights

        n = clip_conv_weights(proto, opts.clip_weights, set(tail))
        LOG.info("clip_weights=%g: %d conv weights clipped", opts.clip_weights, n)
    kwargs = quant_kwargs(opts, target)
    reader, report, samples = calibration_reader(opts, source, imgsz, stride, batch)
    with tempfile.TemporaryDirectory(prefix="detector-int8-") as tmp:
        fp32, out, cache = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "calibration.json"
        onnx.save(onnx.shape_inference.infer_shapes(proto), str(fp32))  # the calibrator picks tensors by type

        def quantize(src: Path, dst: Path, *, exclude=(), only=None) -> None:
            with _quiet_ort_logging():
                quantize_static(str(src), str(dst), None, nodes_to_exclude=list(exclude), nodes_to_quantize=only,
                                calibration_cache_path=str(cache), **kwargs)  # fmt: skip

        LOG.info("int8: calibrating activation ranges (%s) on %s", opts.method, report.source)
        calibrate_ranges(fp32, reader, opts, cache, target)
        quantize(fp32, out, exclude=tail)
        LOG.info(report.summary())
        ranking: list[tuple[str, float]] = []
        keep: list[str] = []
        if opts.keep_float:
            convs = [n.name for n in proto.graph.node if n.op_type == "Conv" and n.name not in set(tail)]
            LOG.info("int8: sensitivity pass over %d convs on %d images", len(convs), len(samples()))
            ranking = rank_layers(fp32, convs, feeds(np.stack(samples()), batch),
                                  lambda s, d, nodes: quantize(s, d, only=nodes), nc)  # fmt: skip
            keep = [n for n, err in ranking[: opts.keep_float] if err > 0]
            for n, err in ranking[: opts.keep_float]:
                LOG.info("int8: keeping %s in float (output error %.4g when quantized alone)", n, err)
            if keep:
                quantize(fp32, out, exclude=tail + keep)
        model = onnx.load(str(out))
    LOG.info("int8: %d Q/DQ nodes; %d nodes kept in float", count_qdq(model), len(tail) + len(keep))
    return QuantResult(model, report, tail + keep, ranking[: len(keep)])


def count_qdq(model: onnx.ModelProto) -> int:
    """Number of QuantizeLinear/DequantizeLinear nodes."""
    return sum(n.op_type in QDQ_OPS for n in model.graph.node)
