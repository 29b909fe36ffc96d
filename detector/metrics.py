"""COCO-style detection metrics in numpy: the 12 COCO stats, a per-class P/R/mAP table and a confusion matrix.

``COCOEvaluator`` reproduces pycocotools' bbox evaluation (greedy matching by score, crowd and ignore handling,
area ranges, maxDets 1/10/100 per image and class, 101-point interpolated precision) so in-training numbers agree
with the reference to within 0.001; ``coco_eval_reference`` runs the reference itself for comparison.

Per-class P and R are read at one confidence for all classes: the one that maximises the mean over classes of F1
at IoU 0.5 (what the usual validation table shows); per-class mAP50 and mAP50-95 are COCO AP (area all, 100 dets).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAT_NAMES = (
    "mAP50-95",
    "mAP50",
    "mAP75",
    "mAP_small",
    "mAP_medium",
    "mAP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)
"""Keys of the 12 COCO stats, in pycocotools' ``COCOeval.stats`` order (also the keys of metrics.json)."""

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)  # same floats as pycocotools
RECALL_POINTS = np.linspace(0.0, 1.0, int(np.round(1.0 / 0.01)) + 1)
AREA_RANGES = np.array([[0.0, 1e5**2], [0.0, 32.0**2], [32.0**2, 96.0**2], [96.0**2, 1e5**2]])  # all/S/M/L
MAX_DETS = (1, 10, 100)
CONF_GRID = np.linspace(0.0, 1.0, 1001)  # confidences at which the P/R/F1 curves are read


def _array(x: Any, dtype: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    """Tensor / array / list -> numpy array of ``dtype`` with trailing shape ``shape_tail``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape((-1, *shape_tail))


@dataclass
class ImageDetections:
    """One image's detections: ``boxes (N, 4)`` xyxy pixels, ``scores (N,)``, ``classes (N,)`` ints."""

    boxes: Any
    scores: Any
    classes: Any

    def __post_init__(self) -> None:
        self.boxes = _array(self.boxes, np.float64, (4,))
        self.scores = _array(self.scores, np.float64)
        self.classes = _array(self.classes, np.float64).astype(np.int64)
        if not len(self.boxes) == len(self.scores) == len(self.classes):
            raise ValueError(
                f"detections have {len(self.boxes)} boxes, {len(self.scores)} scores, {len(self.classes)} classes"
            )

    @classmethod
    def from_nms(cls, dets: Any) -> ImageDetections:
        """From one ``non_max_suppression`` output ``(n, 6)``: x1, y1, x2, y2, score, class."""
        d = _array(dets, np.float64, (6,))
        return cls(d[:, :4], d[:, 4], d[:, 5])


@dataclass
class ImageGroundTruth:
    """One image's ground truth: ``boxes (M, 4)`` xyxy pixels and ``classes (M,)``.

    ``iscrowd (M,)``: COCO crowd regions (ignored; any number of detections may match them, IoU = inter / det area).
    ``ignore (M,)``: boxes that neither count nor penalise (e.g. VOC "difficult"); matched at most once.
    ``area (M,)``: area used for the S/M/L ranges (COCO JSON gives the mask area); default box width * height.
    """

    boxes: Any
    classes: Any
    iscrowd: Any = None
    ignore: Any = None
    area: Any = None

    def __post_init__(self) -> None:
        self.boxes = _array(self.boxes, np.float64, (4,))
        self.classes = _array(self.classes, np.float64).astype(np.int64)
        m = len(self.boxes)
        self.iscrowd = np.zeros(m, bool) if self.iscrowd is None else _array(self.iscrowd, bool)
        self.ignore = np.zeros(m, bool) if self.ignore is None else _array(self.ignore, bool)
        self.area = _box_area(self.boxes) if self.area is None else _array(self.area, np.float64)
        if not len(self.classes) == len(self.iscrowd) == len(self.ignore) == len(self.area) == m:
            raise ValueError(f"ground truth has {m} boxes but fields of another length")


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), 1)


def _box_area(boxes: np.ndarray) -> np.ndarray:
    wh = boxes[:, 2:] - boxes[:, :2]
    return wh[:, 0] * wh[:, 1]


def coco_box_iou(dets: np.ndarray, gts: np.ndarray, iscrowd: np.ndarray) -> np.ndarray:
    """IoU ``(D, G)`` of xyxy ``dets (D, 4)`` and ``gts (G, 4)`` with pycocotools' arithmetic (via xywh); for a
    crowd GT the union is the detection's area."""
    d, g = _xywh(dets)[:, None], _xywh(gts)[None]
    w = np.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3]) - np.maximum(d[..., 1], g[..., 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    area_d, area_g = d[..., 2] * d[..., 3], g[..., 2] * g[..., 3]
    union = np.where(iscrowd[None], area_d, area_d + area_g - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the final axis (pycocotools keeps a later GT on equal IoU)."""
    n = values.shape[-1]
    return n - 1 - np.argmax(values[..., ::-1], axis=-1)


def greedy_match(
    ious: np.ndarray, gt_ignore: np.ndarray, iscrowd: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' matching of score-sorted detections to GTs, for many independent groups (the classes of
    an image), every area range and every threshold at once.

    The walk over detections is inherently sequential within a group (each takes its best free GT), but
    groups are independent: step ``k`` matches the ``k``-th detection of every group together, so the Python
    loop runs ``max detections per group`` times for the whole image instead of once per detection.

    Args:
        ious (C, D, G): per group, detections sorted by descending score (padding rows/columns: -1).
        gt_ignore (C, R, G): per area range, GTs that are ignored (flagged, crowd, outside the range, padding).
        iscrowd (C, G): crowd GTs may be matched any number of times.

    Returns:
        matched (C, R, T, D) bool, and matched_ignored (C, R, T, D) bool: matched to an ignored GT.
    """
    c, d, g = ious.shape
    r, t = gt_ignore.shape[1], len(thresholds)
    matched = np.zeros((c, r, t, d), bool)
    matched_ignored = np.zeros((c, r, t, d), bool)
    if g == 0 or d == 0:
        return matched, matched_ignored
    gt_taken = np.zeros((c, r, t, g), bool)
    thr = np.minimum(thresholds, 1 - 1e-10)[None, None, :, None]  # (1, 1, T, 1)
    ignored = gt_ignore[:, :, None, :]  # (C, R, 1, G)
    crowd = iscrowd[:, None, None, :]  # (C, 1, 1, G)
    ci, ri, ti = np.ogrid[:c, :r, :t]
    for k in np.flatnonzero((ious.max(2) >= thr.min()).any(0)):  # a step where no detection can match is skipped
        row = ious[:, None, None, k, :]  # (C, 1, 1, G)
        eligible = (row >= thr) & (~gt_taken | crowd)  # (C, R, T, G)
        regular = eligible & ~ignored
        fallback = eligible & ignored
        has_regular, has_fallback = regular.any(-1), fallback.any(-1)
        best = np.where(
            has_regular,
            _last_argmax(np.where(regular, row, -1.0)),
            _last_argmax(np.where(fallback, row, -1.0)),
        )  # (C, R, T)
        hit = has_regular | has_fallback
        matched[..., k] = hit
        matched_ignored[..., k] = hit & gt_ignore[ci, ri, best]
        gt_taken[ci, ri, ti, best] |= hit
    return matched, matched_ignored


@dataclass
class _ClassRecords:
    """Matching results of one class over the images seen so far (one entry per image)."""

    scores: list[np.ndarray] = field(default_factory=list)  # (D,) per image, descending
    matched: list[np.ndarray] = field(default_factory=list)  # (R, T, D)
    ignored: list[np.ndarray] = field(default_factory=list)  # (R, T, D)
    num_gt: np.ndarray = field(default_factory=lambda: np.zeros(len(AREA_RANGES), np.int64))  # non-ignored, per R
    images: int = 0  # images with at least one non-ignored GT of this class


@dataclass
class DetectionMetrics:
    """Result of ``COCOEvaluator.compute``.

    ``stats``: the 12 COCO stats by ``STAT_NAMES`` (-1 where a stat has no ground truth, as pycocotools).
    ``classes``: class ids with ground truth, and per class ``images``, ``instances``, ``precision``, ``recall``
    (at ``conf``), ``ap50``, ``ap50_95`` arrays in that order. ``precision_curve (T, 101, K, R, 3)`` and
    ``recall_curve (T, K, R, 3)`` are pycocotools' ``eval['precision']`` / ``eval['recall']`` over ``classes``.
    """

    stats: dict[str, float]
    classes: np.ndarray
    images: np.ndarray
    instances: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ap50: np.ndarray
    ap50_95: np.ndarray
    conf: float
    precision_curve: np.ndarray
    recall_curve: np.ndarray

    @property
    def mean_precision(self) -> float:
        return float(self.precision.mean()) if len(self.precision) else 0.0

    @property
    def mean_recall(self) -> float:
        return float(self.recall.mean()) if len(self.recall) else 0.0

    def summary(self) -> dict[str, float]:
        """The values a results row needs: P, R, the 12 COCO stats."""
        return {"precision": self.mean_precision, "recall": self.mean_recall, **self.stats}

    def table(self, names: Sequence[str] | dict[int, str] | None = None) -> list[dict[str, Any]]:
        """Per-class rows (class, images, instances, P, R, mAP50, mAP50-95) for the validation table."""
        rows = []
        for i, c in enumerate(self.classes):
            rows.append(
                {
                    "class": names[int(c)] if names is not None else int(c),
                    "images": int(self.images[i]),
                    "instances": int(self.instances[i]),
                    "P": float(self.precision[i]),
                    "R": float(self.recall[i]),
                    "mAP50": float(self.ap50[i]),
                    "mAP50-95": float(self.ap50_95[i]),
                }
            )
        return rows


class COCOEvaluator:
    """Accumulates per-image matching (``update``) and turns it into COCO metrics (``compute``).

    Images are taken in ``update`` order (pycocotools sorts by image id; only ties in score across images can
    make the order matter). Detections beyond 100 per image and class are dropped, as pycocotools does.
    """

    def __init__(self) -> None:
        self._records: dict[int, _ClassRecords] = {}

    def _record(self, cls: int) -> _ClassRecords:
        if cls not in self._records:
            self._records[cls] = _ClassRecords()
        return self._records[cls]

    def update(self, detections: ImageDetections, truth: ImageGroundTruth) -> None:
        """Match one image's detections to its ground truth, every class at once (see ``greedy_match``)."""
        gt_ignore_flag = truth.ignore | truth.iscrowd
        classes = np.union1d(np.unique(detections.classes), np.unique(truth.classes))
        groups = []
        for cls in classes:
            g = truth.classes == cls
            boxes_g, area_g, crowd_g = truth.boxes[g], truth.area[g], truth.iscrowd[g]
            outside = (area_g[None] < AREA_RANGES[:, :1]) | (area_g[None] > AREA_RANGES[:, 1:])
            d = np.flatnonzero(detections.classes == cls)
            d = d[np.argsort(-detections.scores[d], kind="mergesort")][: MAX_DETS[-1]]
            boxes_d = detections.boxes[d]
            ious = coco_box_iou(boxes_d, boxes_g, crowd_g)
            groups.append((d, ious, gt_ignore_flag[g][None] | outside, crowd_g))  # gt_ignore (R, G)
        if not groups:
            return
        dmax, gmax = max(len(x[0]) for x in groups), max(len(x[3]) for x in groups)
        n = len(groups)
        ious = np.full((n, dmax, gmax), -1.0)  # padding never reaches a threshold
        gt_ignore = np.ones((n, len(AREA_RANGES), gmax), bool)
        iscrowd = np.zeros((n, gmax), bool)
        for i, (d, iou, ign, crowd_g) in enumerate(groups):
            ious[i, : len(d), : len(crowd_g)] = iou
            gt_ignore[i, :, : len(crowd_g)] = ign
            iscrowd[i, : len(crowd_g)] = crowd_g
        matched_all, matched_ignored_all = greedy_match(ious, gt_ignore, iscrowd)
        for i, (cls, (d, _, ign, _)) in enumerate(zip(classes, groups)):
            matched, matched_ignored = matched_all[i, ..., : len(d)], matched_ignored_all[i, ..., : len(d)]
            boxes_d, scores_d = detections.boxes[d], detections.scores[d]
            area_d = _box_area(boxes_d)
            outside_d = (area_d[None] < AREA_RANGES[:, :1]) | (area_d[None] > AREA_RANGES[:, 1:])  # (R, D)
            ignored = matched_ignored | (~matched & outside_d[:, None, :])

            rec = self._record(int(cls))
            rec.scores.append(scores_d)
            rec.matched.append(matched)
            rec.ignored.append(ignored)
            num_gt = (~ign).sum(1)
            rec.num_gt += num_gt
            rec.images += int(num_gt[0] > 0)

    def compute(self) -> DetectionMetrics:
        """The 12 COCO stats, per-class AP and P/R at the max-mean-F1 confidence."""
        classes = np.array(sorted(c for c, r in self._records.items() if r.num_gt[0] > 0), np.int64)
        t, r, m = len(IOU_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
        precision = -np.ones((t, len(RECALL_POINTS), len(classes), r, m))
        recall = -np.ones((t, len(classes), r, m))
        p_curves, r_curves = [], []
        for k, cls in enumerate(classes):
            rec = self._records[int(cls)]
            scores = np.concatenate(rec.scores)
            rank = np.concatenate([np.arange(len(s)) for s in rec.scores])  # position within its image
            matched = np.concatenate(rec.matched, -1)
            ignored = np.concatenate(rec.ignored, -1)
            for j, max_det in enumerate(MAX_DETS):
                keep = np.flatnonzero(rank < max_det)
                keep = keep[np.argsort(-scores[keep], kind="mergesort")]
                for a in range(r):
                    if rec.num_gt[a] == 0:
                        continue
                    precision[:, :, k, a, j], recall[:, k, a, j] = _pr_at_recall_points(
                        matched[a][:, keep], ignored[a][:, keep], rec.num_gt[a]
                    )
            keep = np.argsort(-scores, kind="mergesort")
            p, rc = _pr_vs_confidence(scores[keep], matched[0, 0, keep], ignored[0, 0, keep], rec.num_gt[0])
            p_curves.append(p)
            r_curves.append(rc)

        stats = _summarize(precision, recall)
        if len(classes):
            p_curves, r_curves = np.stack(p_curves), np.stack(r_curves)  # (K, len(CONF_GRID))
            f1 = 2 * p_curves * r_curves / np.maximum(p_curves + r_curves, 1e-16)
            best = int(np.argmax(f1.mean(0)))
            p_at, r_at, conf = p_curves[:, best], r_curves[:, best], float(CONF_GRID[best])
        else:
            p_at, r_at, conf = np.zeros(0), np.zeros(0), 0.0
        return DetectionMetrics(
            stats=stats,
            classes=classes,
            images=np.array([self._records[int(c)].images for c in classes], np.int64),
            instances=np.array([self._records[int(c)].num_gt[0] for c in classes], np.int64),
            precision=p_at,
            recall=r_at,
            ap50=precision[0, :, :, 0, -1].mean(0) if len(classes) else np.zeros(0),
            ap50_95=precision[:, :, :, 0, -1].mean((0, 1)) if len(classes) else np.zeros(0),
            conf=conf,
            precision_curve=precision,
            recall_curve=recall,
        )


def _pr_at_recall_points(matched: np.ndarray, ignored: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """101-point interpolated precision ``(T, 101)`` and final recall ``(T,)`` from score-sorted ``(T, D)`` flags."""
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    t, d = tp.shape
    if d == 0:
        return np.zeros((t, len(RECALL_POINTS))), np.zeros(t)
    rc = tp / num_gt
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
    out = np.zeros((t, len(RECALL_POINTS)))
    for i in range(t):
        idx = np.searchsorted(rc[i], RECALL_POINTS, side="left")
        ok = idx < d
        out[i, ok] = pr[i, idx[ok]]
    return out, rc[:, -1]


def _pr_vs_confidence(
    scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, num_gt: int
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at IoU 0.5 keeping detections with score >= each ``CONF_GRID`` value.

    ``scores (D,)`` descending with ``matched``/``ignored (D,)`` flags; precision is 0 where nothing is kept.
    """
    counted = ~ignored
    scores, tp = scores[counted], np.cumsum(matched[counted], dtype=np.float64)
    kept = np.searchsorted(-scores, -CONF_GRID, side="right")  # detections with score >= conf
    tp_at = np.where(kept > 0, tp[np.maximum(kept - 1, 0)] if len(tp) else 0.0, 0.0)
    precision = np.where(kept > 0, tp_at / np.maximum(kept, 1), 0.0)
    return precision, tp_at / num_gt


def _summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """pycocotools' ``summarize``: mean over entries > -1 of the selected slices, -1 if none."""

    def mean(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(x.mean()) if x.size else -1.0

    t50, t75 = 0, int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.75))[0])
    return dict(
        zip(
            STAT_NAMES,
            (
                mean(precision[:, :, :, 0, 2]),
                mean(precision[t50, :, :, 0, 2]),
                mean(precision[t75, :, :, 0, 2]),
                mean(precision[:, :, :, 1, 2]),
                mean(precision[:, :, :, 2, 2]),
                mean(precision[:, :, :, 3, 2]),
                mean(recall[:, :, 0, 0]),
                mean(recall[:, :, 0, 1]),
                mean(recall[:, :, 0, 2]),
                mean(recall[:, :, 1, 2]),
                mean(recall[:, :, 2, 2]),
                mean(recall[:, :, 3, 2]),
            ),
        )
    )


def evaluate_detections(detections: Sequence[ImageDetections], truths: Sequence[ImageGroundTruth]) -> DetectionMetrics:
    """One-shot evaluation of paired per-image detections and ground truth."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} images of detections but {len(truths)} of ground truth")
    evaluator = COCOEvaluator()
    for det, gt in zip(detections, truths):
        evaluator.update(det, gt)
    return evaluator.compute()


class ConfusionMatrix:
    """Detection confusion matrix ``(nc + 1, nc + 1)``: rows predicted class, columns true class; index ``nc`` is
    background (a missed GT is counted in row ``nc``, a false detection in column ``nc``).

    Detections below ``conf`` are dropped; each GT is paired with at most one detection and vice versa, highest
    IoU first, among pairs with IoU above ``iou`` regardless of class.
    """

    def __init__(self, nc: int, conf: float = 0.25, iou: float = 0.45) -> None:
        self.nc = nc
        self.conf = conf
        self.iou = iou
        self.matrix = np.zeros((nc + 1, nc + 1), np.int64)

    def update(self, detections: ImageDetections, truth: ImageGroundTruth) -> None:
        """Ignore regions (crowd / difficult) count neither as missed, nor, when a detection covers one and no
        real box, as a false positive."""
        keep = detections.scores >= self.conf
        det_boxes, det_cls = detections.boxes[keep], detections.classes[keep]
        regular = ~(truth.ignore | truth.iscrowd)
        gt_boxes, gt_cls = truth.boxes[regular], truth.classes[regular]
        if (~regular).any() and len(det_boxes):
            on_region = coco_box_iou(det_boxes, truth.boxes[~regular], truth.iscrowd[~regular]).max(1) > self.iou
            near_real = (
                coco_box_iou(det_boxes, gt_boxes, np.zeros(len(gt_boxes), bool)).max(1) > self.iou
                if len(gt_boxes)
                else np.zeros(len(det_boxes), bool)
            )
            det_boxes, det_cls = det_boxes[~on_region | near_real], det_cls[~on_region | near_real]
        bg = self.nc
        if len(gt_boxes) == 0 or len(det_boxes) == 0:
            np.add.at(self.matrix, (det_cls, np.full(len(det_cls), bg)), 1)
            np.add.at(self.matrix, (np.full(len(gt_cls), bg), gt_cls), 1)
            return
        ious = coco_box_iou(det_boxes, gt_boxes, np.zeros(len(gt_boxes), bool))  # (D, G)
        di, gi = np.nonzero(ious > self.iou)
        order = np.argsort(-ious[di, gi], kind="mergesort")
        di, gi = di[order], gi[order]
        pairs_d, pairs_g, used_d, used_g = [], [], set(), set()
        for d, g in zip(di.tolist(), gi.tolist()):  # highest IoU first, each side used once
            if d not in used_d and g not in used_g:
                used_d.add(d)
                used_g.add(g)
                pairs_d.append(d)
                pairs_g.append(g)
        np.add.at(self.matrix, (det_cls[pairs_d], gt_cls[pairs_g]), 1)
        lone_d = np.setdiff1d(np.arange(len(det_cls)), pairs_d)
        lone_g = np.setdiff1d(np.arange(len(gt_cls)), pairs_g)
        np.add.at(self.matrix, (det_cls[lone_d], np.full(len(lone_d), bg)), 1)
        np.add.at(self.matrix, (np.full(len(lone_g), bg), gt_cls[lone_g]), 1)

    def normalized(self) -> np.ndarray:
        """Columns scaled to sum to 1 (the share of each true class predicted as each class)."""
        return self.matrix / np.maximum(self.matrix.sum(0, keepdims=True), 1)


def coco_eval_reference(
    detections: Sequence[ImageDetections], truths: Sequence[ImageGroundTruth], backend: str = "pycocotools"
) -> dict[str, float]:
    """The 12 COCO stats from the reference implementation (``backend``: "pycocotools" or "faster_coco_eval").

    Boxes go in as COCO xywh with area = box area unless ``ImageGroundTruth.area`` says otherwise. The reference
    has no per-box ``ignore`` (only ``iscrowd``), so ground truth using ``ignore`` is rejected.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} images of detections but {len(truths)} of ground truth")
    if any(gt.ignore.any() for gt in truths):
        raise ValueError("the COCO reference cannot express per-box 'ignore'; use iscrowd or drop those boxes")
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    elif backend == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        raise ValueError(f"unknown COCO backend {backend!r}; use 'pycocotools' or 'faster_coco_eval'")

    classes = sorted({int(c) for gt in truths for c in gt.classes} | {int(c) for d in detections for c in d.classes})
    images = [{"id": i + 1, "width": 1, "height": 1} for i in range(len(truths))]
    categories = [{"id": c + 1, "name": str(c)} for c in classes]
    gt_anns, dt_anns = [], []
    for i, (det, gt) in enumerate(zip(detections, truths)):
        for box, c, crowd, area in zip(_xywh(gt.boxes), gt.classes, gt.iscrowd, gt.area):
            gt_anns.append(
                {
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": box.tolist(),
                    "area": float(area),
                    "iscrowd": int(crowd),
                    "id": len(gt_anns) + 1,
                }
            )
        for box, c, s in zip(_xywh(det.boxes), det.classes, det.scores):
            dt_anns.append(
                {
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": box.tolist(),
                    "score": float(s),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                    "id": len(dt_anns) + 1,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gt_anns}
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dt_anns}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, (float(s) for s in ev.stats[:12])))
