"""The internal label table: one ``ImageLabels`` per image, whatever format the dataset came in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np


class Problem(TypedDict):
    """One thing wrong with the data: the file it is in and what is wrong, in words."""

    file: str
    problem: str


def problem(file: object, text: str) -> Problem:
    return {"file": str(file), "problem": text}


@dataclass
class ImageLabels:
    """Labels of one image, in pixels of the image as displayed (after its EXIF orientation).

    Attributes:
        file: image path.
        shape: ``(h, w)`` as displayed.
        cls (ndarray[N] int64): class indices into the dataset's ``names``.
        boxes (ndarray[N, 4] float32): ``(x1, y1, x2, y2)`` pixels, clipped to the image, non-degenerate.
        image_id: COCO image id for COCO data, else the file stem.
        label_file: where the labels came from (YOLO txt, VOC XML, COCO JSON), or None.
        ignore_boxes (ndarray[K, 4] float32): ignore regions, xyxy pixels: COCO ``iscrowd`` boxes and VOC
            ``difficult`` objects. Never training targets; the evaluator neither counts nor penalises them.
        ignore_cls (ndarray[K] int64): their classes.
        ignore_crowd (ndarray[K] bool): True for a crowd region (any number of detections may fall in it, IoU
            measured as intersection / detection area), False for a difficult object (matched at most once).
    """

    file: str
    shape: tuple[int, int]
    cls: np.ndarray
    boxes: np.ndarray
    image_id: int | str
    label_file: str | None = None
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    ignore_cls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignore_crowd: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        self.cls = np.asarray(self.cls, dtype=np.int64).reshape(-1)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if len(self.cls) != len(self.boxes):
            raise ValueError(f"{self.file}: {len(self.cls)} classes for {len(self.boxes)} boxes")
        self.ignore_boxes = np.asarray(self.ignore_boxes, dtype=np.float32).reshape(-1, 4)
        self.ignore_cls = np.asarray(self.ignore_cls, dtype=np.int64).reshape(-1)
        self.ignore_crowd = np.asarray(self.ignore_crowd, dtype=bool).reshape(-1)
        if not len(self.ignore_boxes) == len(self.ignore_cls) == len(self.ignore_crowd):
            raise ValueError(f"{self.file}: ignore regions with fields of different lengths")


@dataclass
class LabelSet:
    """Every usable image of one split, the class names, and the problems found while reading it.

    ``category_ids[i]`` is the id class ``i`` had in the source (COCO category id; ``i`` for YOLO/VOC), so
    predictions can be written back in the source's numbering.
    """

    names: list[str]
    images: list[ImageLabels]
    problems: list[Problem] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    root: str = ""
    format: str = ""

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(len(self.names)))

    def __len__(self) -> int:
        return len(self.images)

    def ignored(self) -> dict[str, int]:
        """How many ignore regions the split holds: ``{"crowd": n, "difficult": m}``."""
        crowd = sum(int(im.ignore_crowd.sum()) for im in self.images)
        return {"crowd": crowd, "difficult": sum(len(im.ignore_crowd) for im in self.images) - crowd}

    def instances_per_class(self) -> np.ndarray:
        """(nc,) int64: number of boxes of each class."""
        counts = np.zeros(len(self.names), dtype=np.int64)
        for im in self.images:
            np.add.at(counts, im.cls, 1)
        return counts


def class_names(names) -> list[str]:
    """Dataset names as a list, whether given as a list or a ``{index: name}`` dict."""
    if isinstance(names, dict):
        return [str(names[i]) for i in sorted(names)]
    return [str(n) for n in names]
