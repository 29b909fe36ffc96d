"""Checking one parsed record against its image: decodable, sized, and boxes that make sense in it.

Rules (each applied case is reported as a problem naming the label file and the box):
- an image that is missing, empty, corrupt, truncated or tiny is skipped;
- a box with no overlap with the image is dropped; one reaching more than ``CLIP_TOLERANCE`` px outside
  is clipped; one narrower or lower than ``MIN_SIZE`` px after clipping (zero-size, inverted) is dropped;
- a box of the same class overlapping an earlier one with IoU >= ``DUPLICATE_IOU`` is a duplicate: dropped.
Ignore regions (crowd / difficult) are clipped to the image like boxes; one with nothing left is dropped.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from detector.data.formats import RawRecord
from detector.data.image_io import ImageReadError, probe_image
from detector.data.labels import ImageLabels, Problem, problem

CLIP_TOLERANCE = 1.0
MIN_SIZE = 1.0
DUPLICATE_IOU = 0.9


def validate_record(rec: RawRecord, names: list[str]) -> tuple[ImageLabels | None, list[Problem]]:
    """The record's ``ImageLabels`` (None if the image is unusable) and every problem found."""
    problems = list(rec.problems)
    if not rec.usable:
        return None, problems
    try:
        h, w = probe_image(rec.image)
    except ImageReadError as e:
        return None, [*problems, problem(rec.image, f"{e}; image skipped")]
    label_file = rec.label_file or rec.image
    if rec.declared_shape is not None and tuple(rec.declared_shape) != (h, w):
        dh, dw = rec.declared_shape
        problems.append(problem(label_file, f"annotation gives size {dw}x{dh} but the image is {w}x{h}; using {w}x{h}"))
    boxes = rec.boxes.astype(np.float64).reshape(-1, 4)
    if rec.normalized:
        boxes = cxcywh_to_xyxy(boxes) * [w, h, w, h]
    where = rec.where or [f"box {i + 1}" for i in range(len(boxes))]
    boxes, cls, box_problems = clean_boxes(boxes, rec.cls, (h, w), where, names)
    problems += [problem(label_file, p) for p in box_problems]
    regions, keep = clip_regions(rec.ignore_boxes, (h, w))
    for i in np.flatnonzero(~keep):
        kind = "crowd region" if rec.ignore_crowd[i] else "difficult object"
        problems.append(
            problem(label_file, f"{kind} {_fmt(rec.ignore_boxes[i])} has no area inside the image; dropped")
        )
    labels = ImageLabels(
        file=str(rec.image),
        shape=(h, w),
        cls=cls,
        boxes=boxes,
        image_id=rec.image_id,
        label_file=str(rec.label_file) if rec.label_file else None,
        ignore_boxes=regions,
        ignore_cls=rec.ignore_cls[keep],
        ignore_crowd=rec.ignore_crowd[keep],
    )
    return labels, problems


def clip_regions(boxes: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``boxes (ndarray[K, 4])`` xyxy clipped to an image of ``shape`` ``(h, w)``; returns ``(kept float32,
    keep (ndarray[K] bool))`` where a region narrower or lower than ``MIN_SIZE`` after clipping is not kept."""
    h, w = shape
    clipped = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, [w, h, w, h])
    keep = ((clipped[:, 2] - clipped[:, 0]) >= MIN_SIZE) & ((clipped[:, 3] - clipped[:, 1]) >= MIN_SIZE)
    return clipped[keep].astype(np.float32), keep


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """(N, 4) ``(xc, yc, w, h)`` -> ``(x1, y1, x2, y2)``."""
    out = np.empty_like(b)
    out[:, :2] = b[:, :2] - b[:, 2:] / 2
    out[:, 2:] = b[:, :2] + b[:, 2:] / 2
    return out


def clean_boxes(
    boxes: np.ndarray, cls: np.ndarray, shape: tuple[int, int], where: list[str], names: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Apply the module's rules to ``boxes (ndarray[N, 4])`` xyxy pixels of an image of ``shape`` ``(h, w)``.

    Returns the kept ``(boxes float32, cls int64)`` and one message per box changed or dropped.
    """
    h, w = shape
    messages: list[str] = []
    keep_b, keep_c, keep_w = [], [], []
    for box, c, at in zip(boxes, cls, where):
        label = f"{at}: {_name(names, c)} box {_fmt(box)}"
        x1, y1, x2, y2 = box
        if not 0 <= c < len(names):
            messages.append(f"{label}: class {int(c)} out of range 0..{len(names) - 1}; dropped")
            continue
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            if x2 > x1 and y2 > y1:
                messages.append(f"{label} lies entirely outside the {w}x{h} image; dropped")
                continue
        clipped = np.clip(box, 0, [w, h, w, h])
        bw, bh = clipped[2] - clipped[0], clipped[3] - clipped[1]
        if bw < MIN_SIZE or bh < MIN_SIZE:
            messages.append(f"{label} is degenerate ({max(bw, 0):g} x {max(bh, 0):g} px); dropped")
            continue
        if np.abs(clipped - box).max() > CLIP_TOLERANCE:
            messages.append(f"{label} extends outside the {w}x{h} image; clipped to {_fmt(clipped)}")
        keep_b.append(clipped)
        keep_c.append(int(c))
        keep_w.append(label)
    b = np.array(keep_b, dtype=np.float32).reshape(-1, 4)
    c = np.array(keep_c, dtype=np.int64)
    first, iou = duplicate_of(b, c)
    for i in np.flatnonzero(first >= 0):
        other = keep_w[first[i]].split(":")[0]
        messages.append(f"{keep_w[i]} duplicates {other} (same class, IoU {iou[i]:.2f}); dropped")
    return b[first < 0], c[first < 0], messages


def duplicate_of(boxes: np.ndarray, cls: np.ndarray, iou_thr: float = DUPLICATE_IOU) -> tuple[np.ndarray, np.ndarray]:
    """For each box, the index of an earlier kept box of its class with IoU >= ``iou_thr`` (else -1), and that IoU.

    Returns ``(first (ndarray[N] int64), iou (ndarray[N] float32))``.
    """
    n = len(boxes)
    first = np.full(n, -1, dtype=np.int64)
    best = np.zeros(n, dtype=np.float32)
    if n < 2:
        return first, best
    iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy()
    same = (cls[:, None] == cls[None, :]) & (iou >= iou_thr)
    for i in range(1, n):  # a box dropped as a duplicate cannot make a later one a duplicate
        js = np.flatnonzero(same[i, :i] & (first[:i] < 0))
        if len(js):
            first[i] = js[0]
            best[i] = iou[i, js[0]]
    return first, best


def _name(names: list[str], c: int) -> str:
    return names[c] if 0 <= c < len(names) else f"class {int(c)}"


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in box) + "]"
