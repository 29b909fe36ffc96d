"""BGR images in, detections in original-image pixels out, through any deploy runner (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from deploy.contract import NMSConfig
from deploy.errors import DeployError
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
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    classes: list[int] | None = None,
    agnostic: bool | None = None,
    multi_label: bool | None = None,
    imgsz: int | tuple[int, int] | None = None,
    chunk: int | None = None,
) -> list[Detections]:
    """Detect objects in BGR ``uint8 (H, W, 3)`` image(s); one ``Detections`` per image, in order.

    Pre-processing follows the model's exported ``PreprocessSpec`` (``runner.input_spec(imgsz)``: a
    dynamic-size graph at ``imgsz`` when given, a fixed-size graph only at its own size). NMS options left
    None come from the model's exported ``NMSConfig`` (``metadata.postprocess``: the prediction defaults,
    conf 0.25 and one label per box, unless the export said otherwise). Graphs with NMS inside already applied
    their exported ``conf``/``iou``/``max_det`` (multi-label); here ``conf``, ``classes`` and ``max_det`` can
    only filter further.
    """
    imgs = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
    spec = runner.input_spec(imgsz)
    try:
        cfg = runner.metadata.postprocess.updated(
            conf=conf, iou=iou, max_det=max_det, classes=classes, agnostic=agnostic, multi_label=multi_label
        )
    except ValueError as e:
        raise DeployError(f"predict: {e}") from None
    step = runner.fixed_batch or min(runner.max_batch or DEFAULT_CHUNK, chunk or DEFAULT_CHUNK)
    names = runner.metadata.names
    results: list[Detections] = []
    for start in range(0, len(imgs), step):
        part = imgs[start : start + step]
        x, ratio_pads, shapes = preprocess(part, spec, runner.input_dtype)
        if runner.fixed_batch and len(part) < runner.fixed_batch:  # a static-batch model: pad the last chunk
            x = np.concatenate([x, np.zeros((runner.fixed_batch - len(part), *x.shape[1:]), x.dtype)])
        out = runner(x)
        if runner.has_nms:
            dets = [filter_detections(d, cfg) for d in from_nms_outputs(out)]
        else:
            pred = out[RAW_OUTPUT] if RAW_OUTPUT in out else next(iter(out.values()))
            dets = non_max_suppression(pred.astype(np.float32), cfg)
        for det, rp, shape in zip(dets, ratio_pads, shapes):
            boxes = scale_boxes(det[:, :4], rp, shape)
            results.append(Detections(boxes, det[:, 4].copy(), det[:, 5].astype(np.int64), names))
    return results


def filter_detections(det: np.ndarray, cfg: NMSConfig) -> np.ndarray:
    """Final ``(n, 6)`` detections of an in-graph NMS (best first) narrowed by ``cfg``'s conf, classes, max_det."""
    keep = det[:, 4] > cfg.conf
    if cfg.classes is not None:
        keep &= np.isin(det[:, 5].astype(np.int64), np.asarray(cfg.classes))
    return det[keep][: cfg.max_det]
