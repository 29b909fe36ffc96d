"""The inference contract: how an image becomes a model input, and how raw predictions become detections.

Two small records, used by every path that runs a model (validation, ``detector.Detector``, export metadata
and ``deploy``), so one image takes one path whatever runs it:

* ``PreprocessSpec``: letterbox size, stride, pad value, minimal padding (``auto``) and ``scaleup``;
  ``plan(h0, w0)`` gives the exact geometry (``LetterboxPlan``) both pixel twins follow
  (``detector.ops.letterbox`` and ``deploy.preprocess``).
* ``NMSConfig``: conf, iou, max_det, multi_label, agnostic, classes, with one preset per mode
  (``NMSConfig.val()`` and ``NMSConfig.predict()``; the table is in docs/interfaces.md).

Plain Python (no numpy, no torch), so ``deploy`` and ``detector`` share the very same classes; an export
writes both into the model metadata (``deploy.metadata``) and ``deploy`` reads them back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

PAD_VALUE = 114
MIN_PAD_MULTIPLE = 32
"""Letterboxed sides are multiples of at least this (or of a larger model stride), in every mode."""


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


@dataclass(frozen=True)
class LetterboxPlan:
    """The geometry of one letterbox: resize by ``ratio`` to ``resized`` (h, w), then pad into ``canvas`` (h, w)
    with ``pad`` = (left, top) pixels. A box maps back with ``original = (box - (left, top)) / ratio``."""

    ratio: float
    resized: tuple[int, int]
    canvas: tuple[int, int]
    pad: tuple[int, int]

    @property
    def ratio_pad(self) -> tuple[float, tuple[int, int]]:
        """``(ratio, (padw, padh))`` as ``scale_boxes`` takes it."""
        return self.ratio, self.pad


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image is fitted into a model input.

    Args:
        size: (h, w) the image is scaled to fit (an int means square); with ``auto=False`` also the input size.
        stride: with ``auto``, the padded sides are the next multiples of this.
        pad_value: grey level of the padding (all three channels).
        auto: minimal padding (a rectangular input as small as the stride allows) instead of padding to ``size``.
        scaleup: allow enlarging small images; False only shrinks.

    The image is resized with area interpolation when it shrinks and bilinear when it grows, converted BGR ->
    RGB and divided by 255 in float32.
    """

    size: tuple[int, int] = (640, 640)
    stride: int = MIN_PAD_MULTIPLE
    pad_value: int = PAD_VALUE
    auto: bool = True
    scaleup: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pair(self.size))
        h, w = self.size
        if self.stride < 1 or h < 1 or w < 1:
            raise ValueError(f"size {h}x{w} and stride {self.stride} must be positive")
        if self.auto and (h % self.stride or w % self.stride):  # a fixed size is whatever the model takes
            raise ValueError(f"size {h}x{w} must be a multiple of the stride {self.stride}")
        if not 0 <= int(self.pad_value) <= 255:
            raise ValueError(f"pad_value {self.pad_value} must lie in 0..255")

    def with_size(self, size: int | tuple[int, int]) -> PreprocessSpec:
        return replace(self, size=_pair(size))

    def plan(self, h0: int, w0: int, canvas: tuple[int, int] | None = None) -> LetterboxPlan:
        """Geometry for an ``h0 x w0`` image; ``canvas`` overrides the padded shape (a batch's common shape,
        which must hold the resized image)."""
        h, w = self.size
        r = min(h / h0, w / w0)
        if not self.scaleup:
            r = min(r, 1.0)
        rw, rh = max(1, round(w0 * r)), max(1, round(h0 * r))
        if canvas is None:
            s = self.stride
            canvas = (math.ceil(rh / s) * s, math.ceil(rw / s) * s) if self.auto else (h, w)
        ch, cw = int(canvas[0]), int(canvas[1])
        if ch < rh or cw < rw:
            raise ValueError(f"letterbox: canvas {ch}x{cw} is smaller than the resized image {rh}x{rw}")
        return LetterboxPlan(r, (rh, rw), (ch, cw), ((cw - rw) // 2, (ch - rh) // 2))

    def batch_canvas(self, shapes: list[tuple[int, int]]) -> tuple[int, int]:
        """The common input shape of a batch of images of original ``shapes``: the largest canvas of any."""
        plans = [self.plan(h0, w0) for h0, w0 in shapes]
        return max(p.canvas[0] for p in plans), max(p.canvas[1] for p in plans)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size": list(self.size)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class NMSConfig:
    """Which raw predictions become detections.

    Args:
        conf: keep (box, class) pairs scoring strictly above this.
        iou: suppress a box overlapping a higher-scored kept box of the same class (any class when
            ``agnostic``) by more than this IoU.
        max_det: at most this many detections per image, the highest-scored.
        multi_label: a box may yield one detection per class above ``conf``; else only its best class.
        agnostic: suppress across classes.
        classes: keep only these class ids (None: all).

    Modes: ``val()`` for mAP (conf 0.001, multi-label: every class that may score), ``predict()`` for
    showing or using detections (conf 0.25, one label per box). In-graph NMS exports are multi-label by
    construction (per-class suppression inside the graph).
    """

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    multi_label: bool = False
    agnostic: bool = False
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        if not 0.0 <= float(self.conf) <= 1.0:
            raise ValueError(f"conf={self.conf} must lie in [0, 1]")
        if not 0.0 <= float(self.iou) <= 1.0:
            raise ValueError(f"iou={self.iou} must lie in [0, 1]")
        if int(self.max_det) < 1:
            raise ValueError(f"max_det={self.max_det} must be >= 1")

    @classmethod
    def val(cls, **over: Any) -> NMSConfig:
        """Validation / mAP defaults: conf 0.001, iou 0.7, max_det 300, multi_label True."""
        return cls(**{"conf": 0.001, "multi_label": True, **_given(over)})

    @classmethod
    def predict(cls, **over: Any) -> NMSConfig:
        """Prediction defaults (``Detector.predict``, ``detector predict``, ``deploy.predict``): conf 0.25,
        iou 0.7, max_det 300, one label per box."""
        return cls(**_given(over))

    def updated(self, **over: Any) -> NMSConfig:
        """A copy with the given (non-None) options changed."""
        return replace(self, **_given(over))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes) if self.classes is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NMSConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _given(over: dict[str, Any]) -> dict[str, Any]:
    """Options the caller actually set (None means "the mode's default")."""
    return {k: v for k, v in over.items() if v is not None}
