"""Label formats: each turns one split of a dataset into ``RawRecord``s, which ``validate`` then checks.

A format is a class registered in ``FORMATS`` under its ``format:`` name, with three methods:
``sources`` (the files whose change must invalidate the label cache), ``names`` (class names and source
category ids) and ``records`` (one ``RawRecord`` per image, with the problems met while parsing, plus
problems that concern no single image).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from detector.data.labels import Problem
from detector.data.spec import FORMAT_NAMES, DatasetSpec
from detector.registry import Registry

FORMATS = Registry("data format")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class RawRecord:
    """One image and its labels as parsed, before the image is checked and boxes are cleaned.

    Attributes:
        image: image path.
        image_id: COCO id, or the file stem.
        label_file: the file the labels came from (None when there is none).
        boxes (ndarray[N, 4] float64): ``(x1, y1, x2, y2)`` pixels, or ``(xc, yc, w, h)`` in 0..1 if ``normalized``.
        cls (ndarray[N] int64): class indices, already checked against the class list.
        where: per box, where it sits in the label file (``"line 3"``, ``"object 2"``), for messages.
        declared_shape: ``(h, w)`` written in the annotation, if any.
        problems: what went wrong while parsing (bad fields, unknown classes, missing label file).
        usable: False when the labels could not be read at all, so the image must not be used.
        ignore_boxes (ndarray[K, 4] float64), ignore_cls (ndarray[K] int64), ignore_crowd (ndarray[K] bool):
            ignore regions in xyxy pixels (COCO ``iscrowd``: crowd True; VOC ``difficult``: crowd False).
    """

    image: Path
    image_id: int | str
    label_file: Path | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    cls: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    where: list[str] = field(default_factory=list)
    normalized: bool = False
    declared_shape: tuple[int, int] | None = None
    problems: list[Problem] = field(default_factory=list)
    usable: bool = True
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    ignore_cls: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ignore_crowd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


class LabelFormat:
    """Base class of the readers; see the module docstring."""

    name = ""

    def sources(self, spec: DatasetSpec, split: str) -> list[Path]:
        raise NotImplementedError

    def names(self, spec: DatasetSpec) -> tuple[list[str], list[int]]:
        """``(names, category_ids)`` for the whole dataset (the same for every split)."""
        raise NotImplementedError

    def records(self, spec: DatasetSpec, split: str, names: list[str]) -> tuple[list[RawRecord], list[Problem]]:
        """One record per image of the split, and problems that belong to no image."""
        raise NotImplementedError

    def name_warnings(self, spec: DatasetSpec, names: list[str]) -> list[str]:
        """Doubts about class names this format inferred from the labels (none by default)."""
        return []


def get_format(name: str) -> LabelFormat:
    """The reader registered as ``name`` (modules are imported on first use)."""
    if name in FORMAT_NAMES and name not in FORMATS:
        importlib.import_module(f"detector.data.format_{name}")
    return FORMATS.get(name)()


def thread_map(fn: Callable[[T], R], items: Iterable[T], desc: str = "") -> list[R]:
    """``[fn(x) for x in items]`` on a few threads: file reads and image header parsing release the GIL.

    With ``desc``, a progress bar (``detector.progress``) counts the items as they finish.
    """
    from detector.progress import bar

    items = list(items)
    if len(items) < 64:
        return [fn(x) for x in bar(items, desc, leave=False)] if desc else [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(fn, items, chunksize=32)
        return list(bar(results, desc, total=len(items), leave=False) if desc else results)


def resolve(root: Path, entry: str | Path) -> Path:
    """``entry`` relative to ``root`` unless absolute."""
    p = Path(str(entry)).expanduser()
    return p if p.is_absolute() else root / p
