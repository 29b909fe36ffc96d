"""COCO metrics against pycocotools on real BCCD annotations with synthetic detections, plus hand-made cases."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from detector import metrics
from detector.metrics import (
    STAT_NAMES,
    COCOEvaluator,
    ConfusionMatrix,
    ImageDetections,
    ImageGroundTruth,
    coco_eval_reference,
    evaluate_detections,
)

BCCD = Path(__file__).resolve().parents[1] / "datasets" / "bccd"
NAMES = ["RBC", "WBC", "Platelets"]


def load_voc_split(split: str = "val") -> list[ImageGroundTruth]:
    """BCCD ground truth of one split, parsed straight from the VOC XML (independent of detector.data)."""
    truths = []
    for stem in (BCCD / "ImageSets" / "Main" / f"{split}.txt").read_text().split():
        root = ET.parse(BCCD / "Annotations" / f"{stem}.xml").getroot()
        boxes, classes = [], []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            boxes.append([float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
            classes.append(NAMES.index(obj.find("name").text.strip()))
        truths.append(ImageGroundTruth(np.array(boxes).reshape(-1, 4), np.array(classes)))
    return truths


def synthetic_detections(truths: list[ImageGroundTruth], seed: int) -> list[ImageDetections]:
    """Realistic detections: jittered GTs (some dropped, some duplicated, a few with the wrong class), false
    positives of every size, random scores with good boxes tending to score higher."""
    rng = np.random.default_rng(seed)
    out = []
    for gt in truths:
        boxes, scores, classes = [], [], []
        for box, c in zip(gt.boxes, gt.classes):
            if rng.random() < 0.15:
                continue  # missed
            for copy in range(1 + (rng.random() < 0.1)):  # occasional duplicate
                wh = box[2:] - box[:2]
                noise = rng.normal(0, 0.08 + 0.1 * copy, 4) * np.concatenate((wh, wh))
                boxes.append(box + noise)
                scores.append(rng.uniform(0.2, 1.0))
                classes.append(c if rng.random() > 0.05 else rng.integers(3))
        for _ in range(rng.integers(0, 12)):  # false positives, small to large
            xy = rng.uniform(0, 600, 2)
            wh = rng.uniform(5, 200, 2)
            boxes.append(np.concatenate((xy, xy + wh)))
            scores.append(rng.uniform(0.0, 0.7))
            classes.append(rng.integers(3))
        out.append(ImageDetections(np.array(boxes).reshape(-1, 4), np.array(scores), np.array(classes)))
    return out


@pytest.fixture(scope="module")
def bccd_val() -> list[ImageGroundTruth]:
    return load_voc_split("val")


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pycocotools_on_bccd(bccd_val, seed):
    dets = synthetic_detections(bccd_val, seed)
    ours = evaluate_detections(dets, bccd_val).stats
    ref = coco_eval_reference(dets, bccd_val)
    assert list(ours) == list(STAT_NAMES)
    for name in STAT_NAMES:
        assert abs(ours[name] - ref[name]) < 1e-3, (name, ours[name], ref[name])
    assert 0.3 < ours["mAP50"] < 0.95 and ours["mAP_small"] != -1  # a realistic, non-degenerate case


def test_matches_pycocotools_with_crowd_regions(bccd_val):
    rng = np.random.default_rng(7)
    truths = [ImageGroundTruth(gt.boxes, gt.classes, iscrowd=rng.random(len(gt.classes)) < 0.1) for gt in bccd_val[:40]]
    dets = synthetic_detections(truths, seed=3)
    ours = evaluate_detections(dets, truths).stats
    ref = coco_eval_reference(dets, truths)
    for name in STAT_NAMES:
        assert abs(ours[name] - ref[name]) < 1e-3, (name, ours[name], ref[name])


def test_matches_pycocotools_beyond_100_detections_with_tied_scores(bccd_val):
    """Over 100 detections per image and class (the maxDets cut) and scores rounded so that many tie."""
    rng = np.random.default_rng(0)
    dets = []
    for d in synthetic_detections(bccd_val[:30], seed=11):
        xy, wh = rng.uniform(0, 600, (250, 2)), rng.uniform(3, 150, (250, 2))
        boxes = np.concatenate((d.boxes, np.concatenate((xy, xy + wh), 1)))
        scores = np.round(np.concatenate((d.scores, rng.uniform(0, 0.5, 250))), 2)
        dets.append(ImageDetections(boxes, scores, np.concatenate((d.classes, rng.integers(0, 3, 250)))))
    ours = evaluate_detections(dets, bccd_val[:30]).stats
    ref = coco_eval_reference(dets, bccd_val[:30])
    for name in STAT_NAMES:
        assert abs(ours[name] - ref[name]) < 1e-3, (name, ours[name], ref[name])


def test_faster_coco_eval_backend_agrees(bccd_val):
    dets = synthetic_detections(bccd_val[:30], seed=5)
    ref = coco_eval_reference(dets, bccd_val[:30])
    fast = coco_eval_reference(dets, bccd_val[:30], backend="faster_coco_eval")
    assert all(abs(ref[k] - fast[k]) < 1e-3 for k in STAT_NAMES)


def test_perfect_and_empty_detections():
    gt = ImageGroundTruth([[0, 0, 50, 50], [100, 100, 120, 110]], [0, 1])
    perfect = ImageDetections(gt.boxes, [0.9, 0.8], gt.classes)
    m = evaluate_detections([perfect], [gt])
    assert m.stats["mAP50-95"] == pytest.approx(1.0) and m.stats["AR1"] == pytest.approx(1.0)
    assert m.stats["mAP_large"] == -1  # no large ground truth
    assert m.stats["mAP_medium"] == pytest.approx(1.0) and m.stats["mAP_small"] == pytest.approx(1.0)
    assert m.precision.tolist() == [1.0, 1.0] and m.recall.tolist() == [1.0, 1.0]
    none = evaluate_detections([ImageDetections(np.zeros((0, 4)), [], [])], [gt])
    assert none.stats["mAP50-95"] == 0.0 and none.stats["AR100"] == 0.0
    assert none.table(["a", "b"])[1] == {
        "class": "b", "images": 1, "instances": 1, "P": 0.0, "R": 0.0, "mAP50": 0.0, "mAP50-95": 0.0
    }  # fmt: skip


def test_iou_thresholds_and_greedy_order():
    gt = ImageGroundTruth([[0, 0, 100, 100]], [0])
    # IoU 0.81 with the GT: a true positive for thresholds 0.5..0.8, a false positive above
    det = ImageDetections([[0, 0, 90, 90]], [0.9], [0])
    m = evaluate_detections([det], [gt])
    assert m.stats["mAP50"] == pytest.approx(1.0) and m.stats["mAP75"] == pytest.approx(1.0)
    assert m.stats["mAP50-95"] == pytest.approx(0.7)  # 7 of 10 thresholds
    # greedy by score: the higher-scored worse box (IoU 0.64) takes the GT up to threshold 0.6; above that it is
    # a false positive ranked before the exact box, so precision at full recall is 1/2
    det2 = ImageDetections([[0, 0, 80, 80], [0, 0, 100, 100]], [0.9, 0.5], [0, 0])
    m2 = evaluate_detections([det2], [gt])
    assert m2.stats["mAP50"] == pytest.approx(1.0) and m2.stats["mAP75"] == pytest.approx(0.5)
    assert m2.stats["mAP50-95"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)
    ref = coco_eval_reference([det2], [gt])
    assert all(abs(m2.stats[k] - ref[k]) < 1e-9 for k in STAT_NAMES)


def test_ignore_flag_neither_counts_nor_penalises():
    gt = ImageGroundTruth([[0, 0, 50, 50], [200, 200, 260, 260]], [0, 0], ignore=[False, True])
    det = ImageDetections([[0, 0, 50, 50], [200, 200, 260, 260]], [0.5, 0.9], [0, 0])
    m = evaluate_detections([det], [gt])
    assert m.stats["mAP50-95"] == pytest.approx(1.0) and int(m.instances[0]) == 1
    with pytest.raises(ValueError, match="ignore"):
        coco_eval_reference([det], [gt])


def test_per_class_pr_at_best_f1(bccd_val):
    dets = synthetic_detections(bccd_val, seed=0)
    m = evaluate_detections(dets, bccd_val)
    assert m.classes.tolist() == [0, 1, 2]
    assert m.instances.tolist() == [int(sum((g.classes == c).sum() for g in bccd_val)) for c in range(3)]
    assert np.isclose(m.ap50_95.mean(), m.stats["mAP50-95"]) and np.isclose(m.ap50.mean(), m.stats["mAP50"])
    assert 0.0 < m.conf < 1.0 and ((m.precision > 0.2) & (m.precision <= 1)).all() and (m.recall > 0.5).all()
    # P/R really are read at m.conf: recount class 0 at IoU 0.5 by brute force
    tp = fp = 0
    for det, gt in zip(dets, bccd_val):
        keep = np.flatnonzero((det.classes == 0) & (det.scores >= m.conf))
        keep = keep[np.argsort(-det.scores[keep])]
        ious = _iou(det.boxes[keep], gt.boxes[gt.classes == 0])
        taken = set()
        for row in ious:
            cand = [j for j in np.argsort(-row) if row[j] >= 0.5 and j not in taken]
            if cand:
                taken.add(cand[0])
                tp += 1
            else:
                fp += 1
    assert m.precision[0] == pytest.approx(tp / (tp + fp)) and m.recall[0] == pytest.approx(tp / m.instances[0])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def test_confusion_matrix():
    cm = ConfusionMatrix(nc=2, conf=0.25, iou=0.45)
    gt = ImageGroundTruth([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], [0, 1, 1])
    det = ImageDetections(
        [[0, 0, 10, 10], [20, 20, 30, 31], [80, 80, 90, 90], [50, 50, 60, 60]], [0.9, 0.8, 0.7, 0.1], [0, 0, 1, 1]
    )
    cm.update(det, gt)
    # rows predicted (0, 1, background), columns true (0, 1, background)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    cm.update(ImageDetections(np.zeros((0, 4)), [], []), ImageGroundTruth([[0, 0, 5, 5]], [0]))
    assert cm.matrix[2, 0] == 1
    assert np.allclose(cm.normalized().sum(0)[:2], 1.0)


def test_evaluator_accumulates_like_one_shot(bccd_val):
    dets = synthetic_detections(bccd_val[:20], seed=9)
    ev = COCOEvaluator()
    for d, g in zip(dets, bccd_val[:20]):
        ev.update(d, g)
    assert ev.compute().stats == evaluate_detections(dets, bccd_val[:20]).stats


def greedy_match_sequential(
    ious: np.ndarray, gt_ignore: np.ndarray, iscrowd: np.ndarray, thresholds: np.ndarray = metrics.IOU_THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """The detection-by-detection walk of one group (pycocotools' order), which ``greedy_match`` must equal."""
    r, g = gt_ignore.shape
    d, t = ious.shape[0], len(thresholds)
    matched = np.zeros((r, t, d), bool)
    matched_ignored = np.zeros((r, t, d), bool)
    if g == 0:
        return matched, matched_ignored
    gt_taken = np.zeros((r, t, g), bool)
    thr = np.minimum(thresholds, 1 - 1e-10)[None, :, None]  # (1, T, 1)
    ignored = gt_ignore[:, None, :]  # (R, 1, G)
    rows = np.arange(r)[:, None]
    cols = np.arange(t)[None, :]
    for k in np.flatnonzero(ious.max(1) >= thr.min()):
        eligible = (ious[k] >= thr) & (~gt_taken | iscrowd)  # (R, T, G)
        regular = eligible & ~ignored
        fallback = eligible & ignored
        has_regular, has_fallback = regular.any(-1), fallback.any(-1)
        best = np.where(
            has_regular,
            metrics._last_argmax(np.where(regular, ious[k], -1.0)),
            metrics._last_argmax(np.where(fallback, ious[k], -1.0)),
        )  # (R, T)
        hit = has_regular | has_fallback
        matched[:, :, k] = hit
        matched_ignored[:, :, k] = hit & gt_ignore[rows, best]
        gt_taken[rows, cols, best] |= hit
    return matched, matched_ignored


def test_grouped_greedy_match_equals_the_sequential_walk():
    """Random IoUs with ties, crowd and ignored GTs, several groups padded into one call."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = [(int(rng.integers(0, 12)), int(rng.integers(0, 6))) for _ in range(int(rng.integers(1, 4)))]
        dmax, gmax = max(d for d, _ in sizes), max(g for _, g in sizes)
        ious = np.full((len(sizes), dmax, gmax), -1.0)
        ignore = np.ones((len(sizes), 4, gmax), bool)
        crowd = np.zeros((len(sizes), gmax), bool)
        expected = []
        for i, (d, g) in enumerate(sizes):
            iou = np.clip(np.round(rng.random((d, g)) * rng.choice([0.6, 1.0, 1.3]), rng.choice([1, 2, 6])), 0, 1)
            ign, cr = rng.random((4, g)) < 0.3, rng.random(g) < 0.2
            ious[i, :d, :g], ignore[i, :, :g], crowd[i, :g] = iou, ign, cr
            expected.append(greedy_match_sequential(iou, ign, cr))
        matched, matched_ignored = metrics.greedy_match(ious, ignore, crowd)
        for i, (d, _) in enumerate(sizes):
            np.testing.assert_array_equal(matched[i, ..., :d], expected[i][0])
            np.testing.assert_array_equal(matched_ignored[i, ..., :d], expected[i][1])
