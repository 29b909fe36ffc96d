"""YOLO txt labels: ``.../images/.../x.jpg`` <-> ``.../labels/.../x.txt``, one ``cls xc yc w h`` line per box (0..1).

A split entry is an image folder (searched recursively), a ``.txt`` list of image paths (relative lines are
relative to the list file's folder), or a list of these. A missing label file means a background image and
is reported; an empty one is a background image on purpose. Lines with more than five fields are polygons
(``cls x1 y1 x2 y2 ...``) and give their bounding box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.config import ConfigError
from detector.data.formats import FORMATS, LabelFormat, RawRecord, resolve, thread_map
from detector.data.image_io import is_image
from detector.data.labels import Problem, problem
from detector.data.spec import DatasetSpec


def label_path(image: Path) -> Path:
    """The label file of ``image``: the last ``images`` folder becomes ``labels``, the suffix ``.txt``.

    Only the last suffix is replaced, so ``a.b.jpg`` -> ``a.b.txt``. Without an ``images`` folder in the
    path the label file sits beside the image.
    """
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def list_images(spec: DatasetSpec, entry: str | list) -> list[Path]:
    """Every image named by a split entry, sorted, without duplicates."""
    entries = entry if isinstance(entry, list) else [entry]
    found: list[Path] = []
    for e in entries:
        p = resolve(spec.root, e)
        if p.is_dir():
            found += [f for f in p.rglob("*") if f.is_file() and is_image(f)]
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line:
                    found.append(resolve(p.parent, line))
        elif p.is_file() and is_image(p):
            found.append(p)
        else:
            raise ConfigError(f"{spec.source}: split entry {str(e)!r} not found (looked for {p})")
    return sorted(set(found))


def parse_label_file(path: Path, nc: int) -> RawRecord:
    """Boxes of one label file in normalised ``(xc, yc, w, h)``; bad lines are reported and skipped."""
    rec = RawRecord(image=Path(), image_id="", label_file=path, normalized=True)
    if not path.is_file():
        rec.problems.append(problem(path, "no label file (image used as background)"))
        return rec
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        rec.problems.append(problem(path, f"unreadable label file ({e}); image skipped"))
        rec.usable = False
        return rec
    boxes, classes, where = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        parsed = _parse_line(fields, nc)
        if isinstance(parsed, str):
            rec.problems.append(problem(path, f"line {n}: {parsed}; line skipped"))
            continue
        classes.append(parsed[0])
        boxes.append(parsed[1])
        where.append(f"line {n}")
    rec.boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    rec.cls = np.array(classes, dtype=np.int64)
    rec.where = where
    return rec


def _parse_line(fields: list[str], nc: int) -> tuple[int, list[float]] | str:
    """``(cls, [xc, yc, w, h])`` or the reason the line is unusable."""
    n = len(fields)
    if n != 5 and (n < 7 or n % 2 == 0):
        return f"expected 'cls xc yc w h' (or a polygon 'cls x1 y1 x2 y2 x3 y3 ...'), got {n} fields"
    try:
        c = float(fields[0])
    except ValueError:
        return f"bad class field {fields[0]!r}"
    if not c.is_integer():
        return f"bad class field {fields[0]!r} (not an integer)"
    values = []
    for f in fields[1:]:
        try:
            v = float(f)
        except ValueError:
            return f"bad field {f!r} (not a number)"
        if not np.isfinite(v):
            return f"bad field {f!r} (not finite)"
        values.append(v)
    if not 0 <= c < nc:
        return f"class {int(c)} out of range (the dataset has {nc} classes, 0..{nc - 1})"
    if n == 5:
        return int(c), values
    xy = np.array(values).reshape(-1, 2)
    (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
    return int(c), [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


@FORMATS.register("yolo")
class YoloFormat(LabelFormat):
    name = "yolo"

    def sources(self, spec: DatasetSpec, split: str) -> list[Path]:
        images = list_images(spec, spec.entry(split))
        return images + [label_path(p) for p in images]

    def names(self, spec: DatasetSpec) -> tuple[list[str], list[int]]:
        names = list(spec.names or [])
        return names, list(range(len(names)))

    def records(self, spec: DatasetSpec, split: str, names: list[str]) -> tuple[list[RawRecord], list[Problem]]:
        images = list_images(spec, spec.entry(split))

        def one(image: Path) -> RawRecord:
            rec = parse_label_file(label_path(image), len(names))
            rec.image, rec.image_id = image, image.stem
            return rec

        return thread_map(one, images), []
