"""BGR images in, detections in original-image pixels out, through any deploy runner (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from deploy.metadata import RAW_OUTPUT
from deploy.postprocess import from_nms_outputs, non_max_suppression, scale_boxes
from deploy.preprocess import preprocess
from deploy.runner import Runner

DEFAULT_CHUNK = 16  # images per runner call when the model takes any batch size


@dataclass
class Detections:
    """One image's detections: ``boxes (ndarray[n, 4])`` xyxy in original pixels, ``scores (ndarray[n])``,
    ``class_ids (ndarray[n])`` int64; ``names`` maps class ids to names."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def labels(self) -> list[str]:
        return [self.names.get(int(c), str(int(c))) for c in self.class_ids]


def predict(
    runner: Runner,
    images: np.ndarray | Sequence[np.ndarray],
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = True,
    chunk: int | None = None,
) -> list[Detections]:
    """Detect objects in BGR ``uint8 (H, W, 3)`` image(s); one ``Detections`` per image, in order.

    Graphs without NMS get numpy NMS with these thresholds, multi-label by default like the in-graph NMS
    variants (a box may be kept once per class above ``conf``), so every export of a model detects alike. Graphs with NMS inside already applied their
    exported ``conf``/``iou``/``max_det``; here ``conf`` and ``classes`` can only filter further.
    """
    imgs = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
    step = runner.fixed_batch or min(runner.max_batch or DEFAULT_CHUNK, chunk or DEFAULT_CHUNK)
    names = runner.metadata.names
    results: list[Detections] = []
    for start in range(0, len(imgs), step):
        part = imgs[start : start + step]
        x, ratio_pads, shapes = preprocess(part, runner.input_hw, runner.metadata.stride, runner.input_dtype)
        if runner.fixed_batch and len(part) < runner.fixed_batch:  # a static-batch model: pad the last chunk
            x = np.concatenate([x, np.zeros((runner.fixed_batch - len(part), *x.shape[1:]), x.dtype)])
        out = runner(x)
        if runner.has_nms:
            dets = [_filter(d, conf, classes) for d in from_nms_outputs(out)]
        else:
            pred = out[RAW_OUTPUT] if RAW_OUTPUT in out else next(iter(out.values()))
            dets = non_max_suppression(pred.astype(np.float32), conf, iou, max_det, multi_label, classes, agnostic)
        for det, rp, shape in zip(dets, ratio_pads, shapes):
            boxes = scale_boxes(det[:, :4], rp, shape)
            results.append(Detections(boxes, det[:, 4].copy(), det[:, 5].astype(np.int64), names))
    return results


def _filter(det: np.ndarray, conf: float, classes: list[int] | None) -> np.ndarray:
    keep = det[:, 4] > conf
    if classes is not None:
        keep &= np.isin(det[:, 5].astype(np.int64), np.asarray(classes))
    return det[keep]
