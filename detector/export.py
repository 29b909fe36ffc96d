"""Export a model's deploy form to ONNX (optionally with NMS inside) or to a TensorRT engine.

The exported graph takes ``images (B, 3, H, W)`` float32 RGB in 0..1 (or, with ``input_dtype="uint8"``, the
raw pixels, normalised inside the graph: a quarter of the bytes to copy to a GPU) and returns ``output0 (B, 4 + nc, A)``:
xyxy boxes in input pixels, then class scores (the model's eval output), or with ``nms`` the four tensors
``num_dets``/``det_boxes``/``det_scores``/``det_classes`` (see ``detector.export_nms``). Class names,
strides, size, version, NMS mode and input dtype go into the ONNX ``metadata_props`` (``deploy.metadata``).

fp16 (``half=True``): weights and every layer up to the head's raw maps run in float16; the graph keeps a
float32 ``images`` input (a Cast follows it) and decodes boxes in float32, so ``output0`` stays float32.
One input dtype for fp32 and fp16 graphs and for TensorRT 10 and 11 engines avoids the classic trap of feeding
float32 to an engine that wants float16, and pixel coordinates keep float32 precision. The metadata records
``input_dtype: float32`` and ``precision: fp16``; runners read the dtype from the graph itself.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from detector import __version__
from detector.config import ConfigError
from detector.errors import DetectorError
from detector.export_trace import INPUT_DTYPES, plan_trace
from detector.model import DetectionModel
from detector.quantize.options import Int8Options, resolve_int8

if TYPE_CHECKING:
    import onnx

LOG = logging.getLogger("detector.export")
FORMATS = {"onnx": ".onnx", "engine": ".engine"}
NMS_CHOICES = ("none", "onnx", "trt")
DEFAULT_OPSET = 17
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


class DeployGraph(nn.Module):
    """What gets traced: ``images (Tensor[B, 3, H, W])`` float32 -> ``(Tensor[B, 4 + nc, A])`` float32.

    The body runs in ``model``'s dtype (float16 for half exports); the head's decode (DFL expectation,
    anchors, sigmoid) runs in float32.
    """

    def __init__(self, model: DetectionModel, uint8_input: bool = False) -> None:
        super().__init__()
        self.model = model
        self.uint8_input = uint8_input
        self.dtype = next(model.parameters()).dtype

    def forward(self, images: Tensor) -> Tensor:
        if self.uint8_input:  # raw pixels in, normalised inside the graph (on the GPU for TensorRT)
            images = images.float() / 255.0
        return self.model.infer(images.to(self.dtype))  # decode in float32 (DetectionModel.decode)


def load_deploy_model(model_or_ckpt: str | Path | nn.Module) -> DetectionModel:
    """A ``DetectionModel`` in deploy form (aux dropped, fused, eval, CPU float32) from a model object (copied,
    the caller's is untouched), a checkpoint path, or a zoo name / YAML (fresh weights)."""
    if isinstance(model_or_ckpt, DetectionModel):
        model = copy.deepcopy(model_or_ckpt).cpu().float()
    elif isinstance(model_or_ckpt, nn.Module):
        raise DetectorError(f"export: expected a DetectionModel, got {type(model_or_ckpt).__name__}")
    else:
        from detector.checkpoint import model_from_checkpoint
        from detector.model import build_model

        src = Path(model_or_ckpt)
        if src.suffix in CHECKPOINT_SUFFIXES:
            model = model_from_checkpoint(src, deploy=True)
        else:
            model = build_model(model_or_ckpt)
    return model.to_deploy().eval()


def _hw(imgsz: int | tuple[int, int] | list[int], stride: int) -> tuple[int, int]:
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    if h % stride or w % stride or h <= 0 or w <= 0:
        raise ConfigError(f"export: imgsz {h}x{w} must be positive multiples of the model's stride {stride}")
    return int(h), int(w)


def _check_args(format: str, nms: str, batch: int, opset: int) -> None:
    if format not in FORMATS:
        raise ConfigError(f"export: format={format!r}; choose one of {list(FORMATS)}")
    if nms not in NMS_CHOICES:
        raise ConfigError(f"export: nms={nms!r}; choose one of {list(NMS_CHOICES)}")
    if batch < 1:
        raise ConfigError(f"export: batch ({batch}) must be >= 1")
    from detector.export_nms import MIN_OPSET

    if nms == "onnx" and opset < MIN_OPSET:
        raise ConfigError(f"export: nms=onnx needs opset >= {MIN_OPSET}, got opset={opset}")


def _default_out(model_or_ckpt, model: DetectionModel, suffix: str, int8: bool = False) -> Path:
    tag = "_int8" if int8 else ""
    if isinstance(model_or_ckpt, (str, Path)) and Path(model_or_ckpt).suffix in CHECKPOINT_SUFFIXES:
        return Path(model_or_ckpt).with_name(f"{Path(model_or_ckpt).stem}{tag}{suffix}")
    return Path("runs/export") / f"{model.yaml.get('name', 'model')}{tag}{suffix}"


def torch_to_onnx(graph: nn.Module, sample: Tensor, opset: int, dynamic: bool, dynamic_hw: bool) -> onnx.ModelProto:
    """Trace ``graph`` with the TorchScript-based exporter (the dynamo exporter needs onnxscript, which we do
    not require) into an in-memory ``onnx.ModelProto`` with input ``images`` and output ``output0``."""
    import onnx

    axes: dict[str, dict[int, str]] = {"images": {}, "output0": {}}
    if dynamic:
        axes["images"][0] = axes["output0"][0] = "batch"
    if dynamic_hw:
        axes["images"].update({2: "height", 3: "width"})
        axes["output0"][2] = "anchors"
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the graph is checked afterwards
        torch.onnx.export(
            graph,
            (sample,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=["output0"],
            dynamic_axes={k: v for k, v in axes.items() if v} or None,
            do_constant_folding=True,
        )
    return onnx.load_model_from_string(buf.getvalue())


def simplify_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim (constant folding, dead-node and redundant-op removal); on failure keep the graph as is."""
    import onnxslim

    try:
        return onnxslim.slim(model)
    except Exception as e:  # noqa: BLE001 - simplification is an optimisation, never a reason to fail an export
        LOG.warning("onnxslim could not simplify the graph (%s: %s); keeping it unsimplified", type(e).__name__, e)
        return model


def export(
    model_or_ckpt: str | Path | nn.Module,
    format: str = "onnx",
    imgsz: int | tuple[int, int] = 640,
    batch: int = 1,
    dynamic: bool = False,
    half: bool = False,
    simplify: bool = True,
    nms: str = "none",
    opset: int | None = None,
    workspace: float | None = 4,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    out: str | Path | None = None,
    dynamic_hw: bool = False,
    multi_label: bool | None = None,
    agnostic: bool | None = None,
    classes: list[int] | None = None,
    device: str | None = None,
    input_dtype: str = "float32",
    verbose: bool = True,
    int8: bool | Int8Options = False,
    data: str | None = None,
    calib: int | str = 200,
    plugins: bool = False,
) -> Path:
    """Export the deploy form of a model, checkpoint or zoo name; returns the written file.

    ``imgsz``: int or (H, W), multiples of the model stride. ``batch``: the batch (static), or the largest
    batch of a TensorRT engine's profile when ``dynamic``. ``dynamic``: variable batch; ``dynamic_hw``:
    variable H/W as well. ``half``: fp16 weights and compute (float32 input/output, see the module doc).
    ``nms``: "none" (``output0``), "onnx" (NonMaxSuppression op) or "trt" (EfficientNMS_TRT plugin), with
    thresholds ``conf``/``iou`` and ``max_det`` boxes per image (unset: the prediction defaults of
    ``NMSConfig.predict``). The NMS options and the letterbox (``PreprocessSpec``) are written into the metadata
    (``detector.export_contract``), where ``deploy`` and ``Detector`` read them. ``format="engine"`` also writes the ONNX
    beside the engine and a metadata sidecar ``NAME.engine.json``; ``workspace`` is the TensorRT builder's
    memory pool in GiB. ``out``: target path (default beside a checkpoint, else ``runs/export/NAME.onnx``).
    ``device``: where to trace (default: CUDA for ``half`` when present, else CPU; see ``detector.export_trace``).
    ``input_dtype``: "float32" (RGB 0..1) or "uint8" (raw pixels 0..255, normalised inside the graph).
    ``verbose``: a progress bar over the stages (trace, simplify, NMS, check and save, engine build).
    ``plugins``: SKA and the post-processing as custom nodes for our TensorRT plugins (``detector.export_plugins``).
    ``int8``: post-training INT8 quantization into a QDQ graph (``detector.quantize``), calibrated on ``calib``
    images of ``data``'s train split or, with ``calib="free"``, on images synthesised from BatchNorm statistics;
    pass an ``Int8Options`` for the finer settings. The default name then ends in ``_int8``.
    """
    from detector.progress import quiet, stages

    steps = ["trace", *(["simplify"] * simplify), *(["nms"] * (nms != "none")), "check and save"]
    steps += ["tensorrt engine"] * (format == "engine")
    with quiet(not verbose), stages("export", steps) as stage:
        return _export(stage, model_or_ckpt, format, imgsz, batch, dynamic, half, simplify, nms, opset, workspace,
                       conf, iou, max_det, out, dynamic_hw, multi_label, agnostic, classes, int8, data, calib, device,
                       input_dtype, plugins)  # fmt: skip


def _export(stage, model_or_ckpt, format, imgsz, batch, dynamic, half, simplify, nms, opset, workspace, conf, iou,
            max_det, out, dynamic_hw, multi_label, agnostic, classes, int8, data, calib, device,
            input_dtype, plugins=False) -> Path:  # fmt: skip
    """The body of ``export``; ``stage(name)`` advances its progress bar."""
    import onnx

    from deploy.metadata import ModelMetadata
    from detector.export_contract import export_nms, export_preprocess
    from detector.export_nms import add_nms

    opset = DEFAULT_OPSET if opset is None else int(opset)
    _check_args(format, nms, batch, opset)
    q = resolve_int8(int8, data, calib, half)
    if plugins and q is not None:  # calibration runs the graph in ONNX Runtime, which has no kernel for the nodes
        raise ConfigError("export: plugins=True and int8=True cannot be combined; export one or the other")
    nms_cfg = export_nms(nms, conf, iou, max_det, multi_label, agnostic, classes)
    if input_dtype not in INPUT_DTYPES:
        raise ConfigError(f"export: input_dtype={input_dtype!r}; choose one of {list(INPUT_DTYPES)}")
    model = load_deploy_model(model_or_ckpt)
    h, w = _hw(imgsz, int(max(model.strides)))
    plan = plan_trace(half, batch, dynamic, device)
    model.to(plan.device, torch.float16 if half else torch.float32)
    graph = DeployGraph(model, uint8_input=input_dtype == "uint8").eval()
    sample = plan.sample(h, w, input_dtype)
    if plugins:  # custom nodes for our TensorRT plugins; output0 holds the top-K candidates
        from detector import export_plugins

        if input_dtype != "float32":
            raise ConfigError("export: plugins=True takes input_dtype=float32 (the plugin graph has no uint8 input)")
        graph = export_plugins.plugin_graph(model, nms_cfg)
    target = Path(out) if out is not None else _default_out(model_or_ckpt, model, FORMATS[format], q is not None)
    if format == "engine" and target.suffix == ".onnx":
        raise ConfigError(f"export: out={target} is the ONNX name; give the engine a name like {target.stem}.engine")
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = target if format == "onnx" else target.with_suffix(".onnx")

    stage("trace")
    try:
        proto = torch_to_onnx(graph, sample, opset, dynamic, dynamic_hw)
    except Exception as e:  # noqa: BLE001 - report which model and opset failed, not a 40-frame trace
        raise DetectorError(
            f"export: torch.onnx could not export {model.yaml.get('name')} at opset {opset}: {e}"
        ) from e
    if simplify:
        stage("simplify")
        proto = simplify_onnx(proto)
    if plugins:
        export_plugins.declare_plugin_graph(proto, None if dynamic else batch, model.nc)
    if q is not None:  # float graph -> calibrated QDQ graph (detector.quantize), before any in-graph NMS
        from detector.quantize.ptq import quantize_proto

        quant = quantize_proto(proto, model_or_ckpt, q, imgsz=(h, w), stride=int(max(model.strides)),
                               batch=1 if dynamic else batch, nc=len(model.names), target=format)  # fmt: skip
        proto = quant.model
    if nms != "none":
        stage("nms")
        add_nms(proto, nms, nms_cfg.conf, nms_cfg.iou, nms_cfg.max_det, opset)
    stage("check and save")
    meta = ModelMetadata(
        names={int(i): str(n) for i, n in model.names.items()},
        strides=[float(s) for s in model.strides],
        imgsz=(h, w),
        batch=batch,
        dynamic=dynamic,
        dynamic_hw=dynamic_hw,
        nms=nms,
        input_dtype=input_dtype,
        precision="int8" if q is not None else "fp16" if half else "fp32",
        quantization=quant.summary() if q is not None else None,
        preprocess=export_preprocess((h, w), int(max(model.strides)), dynamic_hw),
        postprocess=nms_cfg,
        model=str(model.yaml.get("name", "")),
        version=__version__,
        opset=opset,
    )
    del proto.metadata_props[:]
    for k, v in meta.to_props().items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    proto.producer_name, proto.producer_version = "detector", __version__
    if plugins:
        export_plugins.add_plugin_metadata(proto)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise DetectorError(f"export: the exported graph fails onnx.checker: {e}") from None
    onnx.save(proto, str(onnx_path))
    LOG.info("wrote %s", onnx_path)
    if format == "onnx":
        return onnx_path
    stage("tensorrt engine")
    if plugins:
        export_plugins.register_for_engine()
    return _build_engine(onnx_path, target, meta, half, workspace)


def _build_engine(onnx_path: Path, engine_path: Path, meta, half: bool, workspace: float | None) -> Path:
    """ONNX -> TensorRT engine through ``deploy.engine_builder``, plus the metadata sidecar."""
    from deploy.engine_builder import build_engine
    from deploy.errors import DeployError
    from deploy.metadata import sidecar_path

    try:
        build_engine(
            onnx_path,
            engine_path,
            half=half,
            int8=meta.precision == "int8",
            workspace_gib=workspace,
            max_batch=meta.batch,
            imgsz=meta.imgsz,
            min_hw=int(max(meta.strides)),
        )
    except DeployError as e:
        raise DetectorError(f"export: {e}") from None
    meta.write_json(sidecar_path(engine_path))
    return engine_path


@dataclass
class ExportArgs:
    """``detector export`` keys (see ``export`` for their meaning)."""

    model: str = ""  # .pt checkpoint, zoo name or model YAML (fresh weights)
    format: Literal["onnx", "engine"] = "onnx"  # engine = TensorRT (needs a GPU and tensorrt)
    imgsz: int | list[int] = 640  # N or [H, W], multiples of the model stride
    batch: int = 1  # static batch, or the largest batch of a dynamic engine
    dynamic: bool = False  # variable batch
    dynamic_hw: bool = False  # variable height/width too
    half: bool = False  # fp16 weights and compute (float32 input/output)
    simplify: bool = True  # onnxslim the graph
    nms: Literal["none", "onnx", "trt"] = "none"  # NMS inside the graph: ONNX op or TensorRT plugin
    opset: int | None = None  # ONNX opset (default 17)
    workspace: float | None = 4.0  # TensorRT builder memory pool, GiB
    conf: float | None = None  # in-graph NMS score threshold (None: the prediction defaults, NMSConfig.predict)
    iou: float | None = None  # in-graph NMS IoU threshold
    max_det: int | None = None  # in-graph NMS boxes per image
    multi_label: bool | None = None  # in-graph NMS: a box may carry several classes
    agnostic: bool | None = None  # in-graph NMS across classes
    classes: list[int] | None = None  # keep only these class ids
    out: str | None = None  # target file (default beside the checkpoint, else runs/export/NAME.onnx)
    device: str = ""  # where to trace ("" = CUDA for half when present, else CPU)
    input_dtype: Literal["float32", "uint8"] = "float32"  # uint8: raw pixels, normalised inside the graph
    verbose: bool = True  # progress bar over the export stages
    int8: bool = False  # post-training INT8 quantization (QDQ ONNX), needs data= or calib=free
    data: str | None = None  # dataset whose train split calibrates int8
    calib: int | str = 200  # calibration images, or "free" (synthesised from BatchNorm statistics)
    calib_method: Literal["minmax", "entropy", "percentile"] = "minmax"  # activation range calibration
    keep_float: int = 4  # int8: also keep this many most quantization-sensitive convs in float
    clip_weights: float = 0.0  # int8: per-channel weight clipping at K standard deviations (0 = off)
    plugins: bool = False  # SKA and the post-processing as custom nodes for our TensorRT plugins


def cli_export(argv: list[str]) -> int:
    """``detector export model=CKPT_OR_NAME format=onnx|engine [imgsz=640] [batch=1] [dynamic=True] ...``."""
    from detector.cli_args import mode_args

    args = mode_args("export", argv)
    if args is None:
        return 0
    if not args.model:
        raise ConfigError("detector export: name a model, e.g. `detector export model=runs/train/exp/best.pt`")
    imgsz = args.imgsz if isinstance(args.imgsz, int) else tuple(args.imgsz)
    if not isinstance(imgsz, int) and len(imgsz) != 2:
        raise ConfigError(f"detector export: imgsz must be one number or [H, W], got {args.imgsz}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = export(
        args.model,
        format=args.format,
        imgsz=imgsz,
        batch=args.batch,
        dynamic=args.dynamic,
        half=args.half,
        simplify=args.simplify,
        nms=args.nms,
        opset=args.opset,
        workspace=args.workspace,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        out=args.out,
        dynamic_hw=args.dynamic_hw,
        multi_label=args.multi_label,
        agnostic=args.agnostic,
        classes=args.classes,
        device=args.device or None,
        input_dtype=args.input_dtype,
        verbose=args.verbose,
        int8=args.int8
        and Int8Options(method=args.calib_method, keep_float=args.keep_float, clip_weights=args.clip_weights),
        data=args.data,
        calib=args.calib,
        plugins=args.plugins,
    )
    print(f"exported {path}")
    return 0
