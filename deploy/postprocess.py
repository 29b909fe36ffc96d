"""Model output -> detections, in numpy: NMS for graphs without one, and boxes back to original pixels.

``non_max_suppression`` and ``scale_boxes`` are the numpy twins of ``detector.ops.nms`` and
``detector.ops.boxes`` (tests check that they agree); ``from_nms_outputs`` reads the four outputs of an in-graph NMS (ONNX or TensorRT plugin).
"""

from __future__ import annotations

import numpy as np

from deploy.contract import NMSConfig
from deploy.errors import DeployError

MAX_CANDIDATES = 20000  # per image, best first, before NMS (quadratic); equal to detector.ops.nms


def box_iou_one(box: np.ndarray, boxes: np.ndarray, area: np.floating, areas: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``box (ndarray[4])`` with ``boxes (ndarray[N, 4])`` given their areas -> ``(N,)``."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area + areas - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy NMS, same rule as ``torchvision.ops.nms``: visit boxes by falling score, drop later boxes whose
    IoU with a kept one is > ``iou_thres``. ``boxes (ndarray[N, 4])`` xyxy, ``scores (ndarray[N])``.

    Returns the kept indices ``(ndarray[K])`` int64, highest score first.
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iou = box_iou_one(boxes[i], boxes[rest], areas[i], areas[rest])
        order = rest[~(iou > iou_thres)]  # a NaN IoU (degenerate boxes) suppresses nothing, as in torchvision
    return np.asarray(keep, dtype=np.int64)


def non_max_suppression(
    pred: np.ndarray, cfg: NMSConfig | None = None, max_candidates: int = MAX_CANDIDATES
) -> list[np.ndarray]:
    """Decoded model output ``pred (ndarray[B, 4 + nc, A])`` (xyxy pixels, class scores) -> per image
    ``(ndarray[n, 6])`` float32 ``[x1, y1, x2, y2, score, cls]``, best first, at most ``cfg.max_det``.

    Candidates are class scores > ``cfg.conf`` (every such class of a box with ``multi_label``, else its best
    class), at most ``max_candidates`` per image (the best); NMS is per class unless ``agnostic``; ``classes``
    keeps only those class ids. ``cfg`` defaults to ``NMSConfig.predict()``; the same rule as
    ``detector.ops.nms.non_max_suppression``.
    """
    cfg = cfg or NMSConfig.predict()
    conf, iou, max_det, multi_label, classes = cfg.conf, cfg.iou, cfg.max_det, cfg.multi_label, cfg.classes
    if pred.ndim != 3 or pred.shape[1] < 5:
        raise DeployError(f"non_max_suppression: expected (B, 4 + nc, A) predictions, got shape {pred.shape}")
    out = []
    for p in pred:
        boxes, scores = p[:4].T, p[4:].T  # (A, 4), (A, nc)
        if classes is not None:
            scores = scores * np.isin(np.arange(scores.shape[1]), np.asarray(classes))
        if multi_label:
            a_idx, cls = np.nonzero(scores > conf)
            score = scores[a_idx, cls]
        else:
            best = scores.argmax(1)
            a_idx = np.nonzero(scores[np.arange(len(scores)), best] > conf)[0]
            cls = best[a_idx]
            score = scores[a_idx, cls]
        if len(score) > max_candidates:
            top = np.argsort(-score, kind="stable")[:max_candidates]
            a_idx, cls, score = a_idx[top], cls[top], score[top]
        box = boxes[a_idx]
        keep = batched_nms(box, score, np.zeros_like(cls) if cfg.agnostic else cls, iou)[:max_det]
        det = np.concatenate([box[keep], score[keep, None], cls[keep, None].astype(box.dtype)], 1)
        out.append(det.astype(np.float32, copy=False).reshape(-1, 6))
    return out


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_thres: float) -> np.ndarray:
    """``nms`` within each group (class) separately; kept indices of all groups, highest score first.

    One pass per class on the untouched coordinates: the "offset boxes by class" trick would add large
    offsets that cost float32 precision in the IoU.
    """
    kept = [
        np.nonzero(groups == g)[0][nms(boxes[groups == g], scores[groups == g], iou_thres)] for g in np.unique(groups)
    ]
    keep = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    return keep[np.argsort(-scores[keep], kind="stable")]  # equal scores in candidate order, as the torch twin


def scale_boxes(
    boxes: np.ndarray, ratio_pad: tuple[float | tuple[float, float], tuple[float, float]], ori_shape: tuple[int, int]
) -> np.ndarray:
    """xyxy ``boxes (ndarray[N, 4])`` in letterboxed pixels -> original pixels, clipped to ``ori_shape`` (h, w).

    ``ratio_pad = (ratio, (padw, padh))`` as returned by ``preprocess.letterbox``; ``ratio`` may be ``(rw, rh)``.
    """
    ratio, (padw, padh) = ratio_pad
    rw, rh = (ratio, ratio) if isinstance(ratio, (int, float)) else (float(ratio[0]), float(ratio[1]))
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - padw) / rw
    out[:, [1, 3]] = (out[:, [1, 3]] - padh) / rh
    h, w = ori_shape
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def from_nms_outputs(outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The four outputs of an in-graph NMS -> per image ``(ndarray[n, 6])`` ``[x1, y1, x2, y2, score, cls]``.

    ``num_dets (B, 1)``, ``det_boxes (B, K, 4)``, ``det_scores (B, K)``, ``det_classes (B, K)``; only the
    first ``num_dets[i]`` rows of image ``i`` are valid.
    """
    try:
        num, boxes, scores, cls = (outputs[k] for k in ("num_dets", "det_boxes", "det_scores", "det_classes"))
    except KeyError as e:
        raise DeployError(f"model outputs {sorted(outputs)} lack the NMS output {e.args[0]!r}") from None
    out = []
    for i in range(len(boxes)):
        n = int(num[i].reshape(-1)[0])
        det = np.concatenate(
            [boxes[i, :n].astype(np.float32), scores[i, :n, None].astype(np.float32), cls[i, :n, None]], 1
        )
        out.append(det.astype(np.float32, copy=False))
    return out
