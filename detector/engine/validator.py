"""Evaluation: ``Validator(loader, ...)(model) -> ValResult`` and ``detector val model=CKPT data=DATA``.

The model runs in eval mode with ``decode=False`` so one forward gives the main head's raw maps (for the val
loss) and, decoded by that head, the boxes (for NMS and metrics). Auxiliary (PGI) heads never run here.
Predictions are scaled back to the original images and moved to the CPU batch by batch, so memory stays flat.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from detector.engine.coco_crosscheck import EvaluatedImage, cross_check
from detector.engine.exported_val import EXPORTED_SUFFIXES, exported_val_inputs
from detector.engine.memory_format import model_to_channels_last, to_channels_last
from detector.engine.settings import ValConfig, ValRunConfig
from detector.engine.stage_timer import StageTimer
from detector.errors import DetectorError
from detector.metrics import COCOEvaluator, ConfusionMatrix, DetectionMetrics, ImageDetections, ImageGroundTruth
from detector.ops.boxes import scale_boxes
from detector.ops.nms import non_max_suppression
from detector.progress import bar, quiet

LOGGER = logging.getLogger("detector")
TABLE_COLUMNS = ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")


@dataclass
class ValResult:
    """One evaluation: ``stats`` (the 12 COCO stats by name), mean P and R, ``per_class`` rows, val losses."""

    stats: dict[str, float]
    precision: float
    recall: float
    per_class: list[dict] = field(default_factory=list)
    losses: dict[str, float] = field(default_factory=dict)
    images: int = 0
    instances: int = 0
    speed_ms: dict[str, float] = field(default_factory=dict)
    reference: dict = field(default_factory=dict)  # faster-coco-eval on the saved JSON (save_json only)

    curves: DetectionMetrics | None = None  # the full metrics (PR curves), for plots

    @classmethod
    def from_metrics(cls, m: DetectionMetrics, names: list[str], images: int) -> ValResult:
        stats = {k: float(v) for k, v in m.stats.items()}
        return cls(stats=stats, precision=m.mean_precision, recall=m.mean_recall, per_class=m.table(names),
                   images=images, instances=int(m.instances.sum()), curves=m)  # fmt: skip

    @property
    def fitness(self) -> float:
        """What "best" means for checkpoints and early stopping: 0.1 mAP50 + 0.9 mAP50-95 (0 without ground truth)."""
        return 0.1 * max(self.stats["mAP50"], 0.0) + 0.9 * max(self.stats["mAP50-95"], 0.0)

    def summary(self) -> dict[str, float]:
        """The per-epoch numbers of ``results.csv``: val losses, P, R, mAP50, mAP50-95."""
        out = {f"val/{k}": v for k, v in self.losses.items()}
        out.update(P=self.precision, R=self.recall, mAP50=self.stats["mAP50"])
        out["mAP50-95"] = self.stats["mAP50-95"]
        return out

    def table(self) -> str:
        """The val table: an ``all`` row, then one row per class that has ground truth."""
        head = ("%22s" + "%11s" * 6) % TABLE_COLUMNS
        row = "%22s" + "%11i" * 2 + "%11.3g" * 4
        lines = [head, row % ("all", self.images, self.instances, self.precision, self.recall,
                              self.stats["mAP50"], self.stats["mAP50-95"])]  # fmt: skip
        for r in self.per_class:
            lines.append(row % (r["class"], r["images"], r["instances"], r["P"], r["R"], r["mAP50"], r["mAP50-95"]))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "stats": self.stats, "P": self.precision, "R": self.recall, "images": self.images,
            "instances": self.instances, "losses": self.losses, "per_class": self.per_class, "speed_ms": self.speed_ms,
            "faster_coco_eval": self.reference,
        }  # fmt: skip


class Validator:
    """Evaluates a model on one split. ``loss`` (the main head's loss object) adds val losses.

    ``loader`` yields the batches of ``detector.data`` (letterboxed uint8 images, xyxy pixel targets,
    ``ratio_pad``, ``ori_shapes``, ``image_ids``).
    """

    def __init__(
        self,
        loader,
        names: list[str],
        cfg: ValConfig,
        device: torch.device,
        *,
        run_dir: Path,
        loss=None,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        self.loader, self.names, self.cfg, self.device = loader, list(names), cfg, device
        self.run_dir, self.loss, self.amp_dtype = Path(run_dir), loss, amp_dtype

    def __call__(self, model, *, plots: bool = False, save_json: bool = False) -> ValResult:
        """Evaluate ``model`` (a ``DetectionModel``, train or deploy form); prints and returns the result."""
        # validation must not move the training RNG streams (resume exactness): fork and restore them
        devices = [self.device] if self.device.type == "cuda" else []
        was_training, tuned = model.training, torch.backends.cudnn.benchmark
        try:
            # rectangular batches (and the last partial one) change shape every few batches: cuDNN's
            # autotuner would re-benchmark each new shape, costing more than it wins in one pass
            torch.backends.cudnn.benchmark = False
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                result = self._run(model.eval(), plots=plots, save_json=save_json)
        finally:
            model.train(was_training)
            torch.backends.cudnn.benchmark = tuned
        LOGGER.info(result.table())
        return result

    def _run(self, model, *, plots: bool, save_json: bool) -> ValResult:
        tag, nms = model.main_tag, self.cfg.nms()
        evaluator = COCOEvaluator()
        confusion = ConfusionMatrix(len(self.names)) if plots else None
        predictions: list[dict] | None = [] if save_json else None
        evaluated: list[EvaluatedImage] = []  # what the evaluator saw, for the cross-check (save_json only)
        category_ids = dataset_category_ids(self.loader.dataset, len(self.names))
        loss_sum: Tensor | None = None
        n_batches = n_images = 0
        timer = StageTimer(self.device)  # CUDA events on a GPU: the forward is not billed to a later stage
        non_blocking = self.device.type == "cuda"
        batches = bar(self.loader, f"validating {self.cfg.split}", total=len(self.loader), unit="batch", leave=False)
        for bi, batch in enumerate(batches):
            timer.mark()
            images = batch["img"].to(self.device, non_blocking=non_blocking).float().div_(255)
            images = to_channels_last(images, self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                raw = model(images, decode=False)[tag]
            maps = [m.float() for m in raw]
            timer.mark("inference")
            if self.loss is not None:
                targets = {k: (v.to(self.device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
                items = self.loss(maps, targets)[1].detach().float()
                loss_sum = items if loss_sum is None else loss_sum + items
            timer.mark("loss")
            dets = non_max_suppression(model.decode(maps), nms)
            dets = to_host(dets)  # one device-to-host copy per batch; results leave the device: flat memory
            timer.mark("postprocess")
            n_batches += 1
            n_images += len(dets)
            gt_idx, gt_cls, gt_boxes = batch["batch_idx"], batch["cls"], batch["bboxes"].float()
            for j, det in enumerate(dets):
                sel = gt_idx == j
                ori, rp = batch["ori_shapes"][j], batch["ratio_pad"][j]
                found = ImageDetections(scale_boxes(det[:, :4], rp, ori), det[:, 4], det[:, 5])
                ignore = batch["ignore"][j] if "ignore" in batch else None
                truth = image_truth(scale_boxes(gt_boxes[sel], rp, ori), gt_cls[sel], ignore)
                evaluator.update(found, truth)
                if confusion is not None:
                    confusion.update(found, truth)
                if predictions is not None:
                    predictions += coco_results(batch["image_ids"][j], found, category_ids)
                    evaluated.append(EvaluatedImage(batch["image_ids"][j], batch["im_files"][j], ori, truth))
            if plots and bi < 3:
                self._plot_batch(batch, dets, bi)
        if n_images == 0:
            raise DetectorError(f"validation split {self.cfg.split!r} has no images")
        result = ValResult.from_metrics(evaluator.compute(), self.names, n_images)
        if loss_sum is not None:
            result.losses = dict(zip(self.loss.names, (loss_sum / n_batches).tolist()))
        totals = timer.totals_ms()
        result.speed_ms = {k: round(totals.get(k, 0.0) / n_images, 3) for k in ("inference", "loss", "postprocess")}
        if plots:
            self._plot_summary(confusion, result)
        if predictions is not None:
            self._save_json(predictions, result, evaluated, category_ids)
        return result

    # -- outputs ---------------------------------------------------------------------------------------------
    def _plot_batch(self, batch: dict, dets: list[Tensor], bi: int) -> None:
        from detector.engine.plots import plot_batch

        plot_batch(batch["img"], batch["batch_idx"], batch["cls"], batch["bboxes"], self.names,
                   self.run_dir / f"val_batch{bi}_labels.jpg")  # fmt: skip
        idx = torch.cat([torch.full((len(d),), j) for j, d in enumerate(dets)])
        det = torch.cat(dets)
        plot_batch(batch["img"], idx, det[:, 5], det[:, :4], self.names, self.run_dir / f"val_batch{bi}_pred.jpg",
                   scores=det[:, 4])  # fmt: skip

    def _plot_summary(self, confusion: ConfusionMatrix | None, result: ValResult) -> None:
        from detector.engine.plots import plot_confusion_matrix, plot_pr_curves

        if confusion is not None:
            plot_confusion_matrix(confusion.matrix, self.names, self.run_dir / "confusion_matrix.png")
        m = result.curves
        if m is not None and len(m.classes):
            from detector.metrics import RECALL_POINTS

            precision = np.clip(m.precision_curve[0, :, :, 0, -1].T, 0, 1)  # IoU 0.5, all areas, 100 dets: (K, 101)
            names = [self.names[int(c)] for c in m.classes]
            plot_pr_curves(RECALL_POINTS, precision, names, m.ap50.tolist(), self.run_dir / "PR_curve.png")

    def _save_json(
        self, predictions: list[dict], result: ValResult, evaluated: list[EvaluatedImage], category_ids: list[int]
    ) -> None:
        with open(self.run_dir / "predictions.json", "w") as f:
            json.dump(predictions, f)
        result.reference = cross_check(self.run_dir, evaluated, category_ids, self.names, result.stats)
        with open(self.run_dir / "metrics.json", "w") as f:
            json.dump(result.to_json(), f, indent=1)
        LOGGER.info(
            f"saved predictions.json ({len(predictions)} boxes), ground_truth.json and metrics.json to {self.run_dir}"
        )


def image_truth(boxes, classes, ignore: tuple | None) -> ImageGroundTruth:
    """One image's ground truth for the evaluator: ``boxes (M, 4)`` xyxy and ``classes (M,)``, then its ignore
    regions ``ignore = (boxes (K, 4), cls (K,), crowd (K,) bool)`` flagged ``iscrowd`` (COCO crowd) or
    ``ignore`` (VOC difficult), both in original pixels."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.float64).reshape(-1)
    if ignore is None or len(ignore[0]) == 0:
        return ImageGroundTruth(boxes, classes)
    regions, region_cls, crowd = (np.asarray(a) for a in ignore)
    crowd = crowd.astype(bool).reshape(-1)
    regular = np.zeros(len(boxes), bool)
    return ImageGroundTruth(
        np.concatenate([boxes, regions.reshape(-1, 4)]),
        np.concatenate([classes, region_cls.astype(np.float64).reshape(-1)]),
        iscrowd=np.concatenate([regular, crowd]),
        ignore=np.concatenate([regular, ~crowd]),
    )


def to_host(dets: list[Tensor]) -> list[Tensor]:
    """Per-image ``(n_i, 6)`` detections -> float32 CPU tensors through one copy (one sync) for the batch."""
    sizes = [len(d) for d in dets]
    return list(torch.cat(dets).float().cpu().split(sizes)) if dets else []


def dataset_category_ids(dataset, nc: int) -> list[int]:
    """COCO category id of each class index: the dataset's own ids for COCO data, else the index itself."""
    ids = list(getattr(dataset, "category_ids", None) or [])
    return [int(i) for i in ids] if len(ids) == nc else list(range(nc))


def coco_results(image_id, det: ImageDetections, category_ids: list[int]) -> list[dict]:
    """COCO results format, one ``{image_id, category_id, bbox: [x, y, w, h], score}`` per detection."""
    xywh = det.boxes.copy()
    xywh[:, 2:] -= xywh[:, :2]
    return [
        {"image_id": image_id, "category_id": category_ids[c], "bbox": [round(v, 3) for v in b], "score": s}
        for b, s, c in zip(xywh.tolist(), det.scores.tolist(), det.classes.tolist())
    ]


# -- detector val --------------------------------------------------------------------------------------------
def validate_checkpoint(cfg: ValRunConfig) -> ValResult:
    """Evaluate checkpoint ``cfg.model`` on ``cfg.data`` (default: the data it was trained on); outputs go to
    ``runs/val/NAME``; ``verbose=False`` hides the progress bars. An exported ``.onnx``/``.engine`` is evaluated
    through its deploy runner (``data=`` needed)."""
    with quiet(not cfg.verbose):
        return _validate_checkpoint(cfg)


def _validate_checkpoint(cfg: ValRunConfig) -> ValResult:
    from detector.checkpoint import load_checkpoint, model_from_checkpoint
    from detector.data import build_dataloader
    from detector.data.labels import class_names
    from detector.data.loader import auto_workers
    from detector.engine.amp import amp_dtype
    from detector.engine.distributed import DistInfo, select_device
    from detector.engine.logs import report_problems, setup_logging
    from detector.engine.runs import increment_run_dir

    if not cfg.model:
        raise DetectorError(
            "val: give the checkpoint to evaluate, e.g. detector val model=runs/train/exp/weights/best.pt"
        )
    device = select_device(cfg.device)
    exported = Path(cfg.model).suffix in EXPORTED_SUFFIXES  # an ONNX / TensorRT export (detector.engine.exported_val)
    if exported:
        if not cfg.data:
            raise DetectorError(f"val: {cfg.model} is an exported model; say which data to evaluate on with data=DATA")
        model, imgsz, rect, names = exported_val_inputs(cfg.model, cfg.imgsz, device)
        data = cfg.data
    else:
        if not Path(cfg.model).is_file() and not cfg.model.endswith(".pt"):
            raise DetectorError(f"val: model={cfg.model} is not a checkpoint file; evaluate trained weights (.pt)")
        ckpt = load_checkpoint(cfg.model)
        trained = ckpt.get("config") or {}
        data = cfg.data or trained.get("data")
        if not data:
            raise DetectorError(
                f"{cfg.model}: the checkpoint does not say which data it was trained on; pass data=DATA"
            )
        imgsz, rect = cfg.imgsz or int(trained.get("imgsz", 640)), True
        names = [str(n) for n in ckpt["names"]]
    loader, dataset = build_dataloader(
        data, cfg.split, imgsz=imgsz, batch=cfg.batch, augment=None, workers=auto_workers(cfg.workers, device.type, "val"), shuffle=False, seed=0,
        rank=-1, world_size=1, cache=None, rect=rect,
    )  # fmt: skip
    data_names = class_names(dataset.names)
    if len(data_names) != len(names):
        raise DetectorError(
            f"{cfg.model} predicts {len(names)} classes {names[:5]} but {data} has {len(data_names)} "
            f"{data_names[:5]}; evaluate it on the data it was trained for"
        )
    run_dir = increment_run_dir(cfg.project, cfg.name, cfg.exist_ok)
    setup_logging(DistInfo(), run_dir, "val.log")
    report_problems(dataset, cfg.split, run_dir)
    if data_names != names:
        LOGGER.warning(f"class names differ: model {names}, data {data_names}; using the model's")
    if not exported:
        model = model_to_channels_last(model_from_checkpoint(cfg.model, deploy=True).to(device), device)
    val_cfg = ValConfig(split=cfg.split, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det, multi_label=cfg.multi_label,
                        agnostic=cfg.agnostic, classes=cfg.classes, batch=cfg.batch, save_json=cfg.save_json,
                        plots=cfg.plots)  # fmt: skip
    validator = Validator(loader, names, val_cfg, device, run_dir=run_dir, amp_dtype=amp_dtype(device, True))
    LOGGER.info(f"validating {cfg.model} on {data} ({cfg.split}, {len(dataset)} images, imgsz {imgsz})")
    result = validator(model, plots=cfg.plots, save_json=cfg.save_json)
    LOGGER.info(f"speed per image (ms): {result.speed_ms}; results in {run_dir}")
    return result


def cli_val(argv: list[str]) -> int:
    """``detector val model=CKPT [data=DATA] [split=val] [save_json=True] [imgsz=] [batch=] [conf=] [iou=]``."""
    from detector.cli_args import mode_args

    cfg = mode_args("val", argv)
    if cfg is not None:
        validate_checkpoint(cfg)
    return 0
