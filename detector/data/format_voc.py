"""Pascal VOC: ``Annotations/ID.xml``, ``JPEGImages/ID.jpg``, ``ImageSets/Main/SPLIT.txt`` (one ID per line).

A split entry is a split name (``train`` -> ``ImageSets/Main/train.txt``) or a path to such a list, relative to
the root. Class names are the YAML's ``names`` if given, else every object name found under ``Annotations/``,
sorted. Box coordinates are taken as written (pixels, no 1-based shift), so conversions round-trip exactly.
Objects marked ``difficult`` follow the dataset YAML's ``difficult`` key: ``ignore`` (default, the VOC
evaluation's rule: ignore regions, neither targets nor counted by the evaluator) or ``keep`` (ordinary boxes).
An ID without an XML file is a background image (reported). Without ``names``, the classes found are listed
once per load, with a warning for names that differ only by case or spaces (likely label typos).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from detector.config import ConfigError
from detector.data.formats import FORMATS, LabelFormat, RawRecord, resolve, thread_map
from detector.data.image_io import IMG_EXTS
from detector.data.labels import Problem, problem
from detector.data.spec import DatasetSpec

_COORDS = ("xmin", "ymin", "xmax", "ymax")


def split_ids(spec: DatasetSpec, split: str) -> tuple[Path, list[str]]:
    entry = str(spec.entry(split))
    path = resolve(spec.root, entry)
    if not path.is_file():
        path = spec.root / "ImageSets" / "Main" / f"{entry}.txt"
    if not path.is_file():
        raise ConfigError(f"{spec.source}: VOC split list for {split!r} not found: {path}")
    ids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return path, list(dict.fromkeys(ids))


def image_path(root: Path, image_id: str, filename: str | None) -> Path | None:
    """``JPEGImages/ID.jpg``, else the XML's ``<filename>``, else ``ID`` with any image suffix."""
    folder = root / "JPEGImages"
    candidates = [folder / f"{image_id}.jpg"]
    if filename:
        candidates.append(folder / filename)
    candidates += [folder / f"{image_id}{ext}" for ext in IMG_EXTS]
    return next((c for c in candidates if c.is_file()), None)


def parse_xml(path: Path, index_of: dict[str, int], difficult: str = "ignore") -> tuple[RawRecord, str | None]:
    """Boxes of one annotation (pixels, xyxy) and its ``<filename>``; unusable objects are reported.
    ``difficult="ignore"`` turns objects marked difficult into ignore regions, ``"keep"`` keeps them as boxes."""
    rec = RawRecord(image=Path(), image_id=path.stem, label_file=path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        rec.problems.append(problem(path, f"unreadable XML ({e}); image skipped"))
        rec.usable = False
        return rec, None
    size = root.find("size")
    if size is not None:
        try:
            rec.declared_shape = (int(float(size.findtext("height", ""))), int(float(size.findtext("width", ""))))
        except ValueError:
            pass  # the image itself gives the size
    boxes, classes, where = [], [], []
    hard_boxes, hard_classes = [], []
    for n, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        label = f"object {n} ({name or 'no name'})"
        if name not in index_of:
            rec.problems.append(problem(path, f"{label}: class {name!r} is not in the class names; box skipped"))
            continue
        box = obj.find("bndbox")
        values = [box.findtext(k) if box is not None else None for k in _COORDS]
        try:
            coords = [float(v) for v in values]  # type: ignore[arg-type]
        except (TypeError, ValueError):
            rec.problems.append(problem(path, f"{label}: bad bndbox {dict(zip(_COORDS, values))}; box skipped"))
            continue
        if difficult == "ignore" and (obj.findtext("difficult") or "0").strip() == "1":
            hard_boxes.append(coords)
            hard_classes.append(index_of[name])
            continue
        boxes.append(coords)
        classes.append(index_of[name])
        where.append(f"object {n}")
    rec.boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    rec.cls = np.array(classes, dtype=np.int64)
    rec.where = where
    rec.ignore_boxes = np.array(hard_boxes, dtype=np.float64).reshape(-1, 4)
    rec.ignore_cls = np.array(hard_classes, dtype=np.int64)
    rec.ignore_crowd = np.zeros(len(hard_classes), dtype=bool)
    return rec, root.findtext("filename")


def object_names(path: Path) -> set[str]:
    try:
        return {(o.findtext("name") or "").strip() for o in ET.parse(path).getroot().iter("object")} - {""}
    except (ET.ParseError, OSError):
        return set()  # reported when the split holding it is read


@FORMATS.register("voc")
class VocFormat(LabelFormat):
    name = "voc"

    def sources(self, spec: DatasetSpec, split: str) -> list[Path]:
        list_file, ids = split_ids(spec, split)
        xmls = sorted((spec.root / "Annotations").glob("*.xml"))  # all of them: they define the class names
        return [list_file, *xmls, *[spec.root / "JPEGImages" / f"{i}.jpg" for i in ids]]

    def names(self, spec: DatasetSpec) -> tuple[list[str], list[int]]:
        if spec.names is not None:
            return list(spec.names), list(range(len(spec.names)))
        found: set[str] = set().union(*thread_map(object_names, sorted((spec.root / "Annotations").glob("*.xml"))))
        if not found:
            raise ConfigError(f"{spec.source}: no object names found under {spec.root / 'Annotations'}")
        names = sorted(found)
        return names, list(range(len(names)))

    def records(self, spec: DatasetSpec, split: str, names: list[str]) -> tuple[list[RawRecord], list[Problem]]:
        _, ids = split_ids(spec, split)
        index_of = {n: i for i, n in enumerate(names)}

        def one(image_id: str) -> RawRecord:
            xml = spec.root / "Annotations" / f"{image_id}.xml"
            if xml.is_file():
                rec, filename = parse_xml(xml, index_of, spec.difficult)
            else:
                rec, filename = RawRecord(image=Path(), image_id=image_id), None
                rec.problems.append(problem(xml, "no annotation file (image used as background)"))
            img = image_path(spec.root, image_id, filename)
            rec.image = img or spec.root / "JPEGImages" / f"{image_id}.jpg"
            rec.image_id = image_id
            return rec

        return thread_map(one, ids), []

    def name_warnings(self, spec: DatasetSpec, names: list[str]) -> list[str]:
        """Without ``names`` in the YAML: the classes found, and groups that differ only by case or spaces."""
        if spec.names is not None:
            return []
        out = [f"{spec.source}: no 'names' given; {len(names)} classes found under Annotations/: {names}"]
        for group in near_duplicates(names):
            out.append(
                f"{spec.source}: class names {group} differ only by case or spaces, so they are "
                f"{len(group)} different classes; if that is a label typo fix the XML files, or give 'names'"
            )
        return out


def near_duplicates(names: list[str]) -> list[list[str]]:
    """Groups of names equal after dropping case and whitespace (``["RBC", "rbc", "R B C"]``)."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(re.sub(r"\s+", "", n).casefold(), []).append(n)
    return [g for g in groups.values() if len(g) > 1]
