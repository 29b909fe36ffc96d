"""COCO JSON: an instances file (images, annotations with ``bbox`` ``[x, y, w, h]`` pixels, categories).

A split entry is either ``{annotations: FILE.json, images: FOLDER}`` or just the JSON path; then the image
folder is the first existing one of ``images/NAME``, ``NAME``, ``../images/NAME`` and ``../NAME`` beside the
JSON's folder, ``images``, the JSON's folder, and the root, where NAME is the JSON's stem without
``instances_`` (``instances_val2017.json`` -> ``val2017``). Image ids are kept. Categories become classes
0..nc-1 in order of category id; ``category_ids`` maps back. Crowd annotations (``iscrowd: 1``) become ignore
regions: never training targets, and the evaluator treats them as pycocotools does (detections inside them
are neither true nor false positives).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from detector.config import ConfigError
from detector.data.formats import FORMATS, LabelFormat, RawRecord, resolve
from detector.data.labels import Problem, problem
from detector.data.spec import DatasetSpec


def split_files(spec: DatasetSpec, split: str) -> tuple[Path, Path]:
    """``(annotation json, image folder)`` of a split."""
    entry = spec.entry(split)
    if isinstance(entry, dict):
        unknown = set(entry) - {"annotations", "images"}
        if unknown or "annotations" not in entry:
            raise ConfigError(f"{spec.source}: COCO split {split!r} must be {{annotations: FILE.json, images: DIR}}")
        ann = resolve(spec.root, entry["annotations"])
        images = resolve(spec.root, entry["images"]) if entry.get("images") else None
    else:
        ann, images = resolve(spec.root, entry), None
    if not ann.is_file():
        raise ConfigError(f"{spec.source}: COCO annotation file for split {split!r} not found: {ann}")
    if images is None:
        name = ann.stem.removeprefix("instances_")
        up = ann.parent.parent
        candidates = [ann.parent / "images" / name, ann.parent / name, up / "images" / name, up / name]
        candidates += [spec.root / "images" / name, spec.root / name, spec.root / "images", ann.parent, spec.root]
        images = next((c for c in candidates if c.is_dir()), spec.root)
    elif not images.is_dir():
        raise ConfigError(f"{spec.source}: image folder for split {split!r} not found: {images}")
    return ann, images


@lru_cache(maxsize=4)
def _read_json(path: str, mtime_ns: int) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable COCO JSON file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConfigError(f"{path}: not a COCO instances file (no 'images' list)")
    return data


def read_json(path: Path) -> dict[str, Any]:
    """Parsed COCO file, memoised per path and modification time (one parse for names and records)."""
    return _read_json(str(path), path.stat().st_mtime_ns)


def categories(data: dict[str, Any], path: Path) -> tuple[list[str], list[int]]:
    """Class names and category ids in id order. A category that only groups others (it is their
    ``supercategory``) and labels nothing is not a class: Roboflow's COCO exports put the project name there."""
    cats = sorted(data.get("categories") or [], key=lambda c: c["id"])
    groups = {c.get("supercategory") for c in cats}
    used = {a.get("category_id") for a in data.get("annotations") or []}
    cats = [c for c in cats if not (c["name"] in groups and c["id"] not in used)] or cats
    if not cats:
        raise ConfigError(f"{path}: no categories")
    return [str(c["name"]) for c in cats], [int(c["id"]) for c in cats]


@FORMATS.register("coco")
class CocoFormat(LabelFormat):
    name = "coco"

    def sources(self, spec: DatasetSpec, split: str) -> list[Path]:
        ann, images = split_files(spec, split)
        return [ann, *sorted(p for p in images.rglob("*") if p.is_file() and p.suffix.lower() != ".json")]

    def names(self, spec: DatasetSpec) -> tuple[list[str], list[int]]:
        split = next(iter(spec.splits))
        ann, _ = split_files(spec, split)
        names, ids = categories(read_json(ann), ann)
        if spec.names is not None and spec.names != names:
            raise ConfigError(f"{spec.source}: 'names' {spec.names} differ from the categories in {ann}: {names}")
        return names, ids

    def records(self, spec: DatasetSpec, split: str, names: list[str]) -> tuple[list[RawRecord], list[Problem]]:
        ann_path, image_dir = split_files(spec, split)
        data = read_json(ann_path)
        split_names, cat_ids = categories(data, ann_path)
        if split_names != names:
            raise ConfigError(f"{ann_path}: categories {split_names} differ from the dataset's {names}")
        index_of = {cid: i for i, cid in enumerate(cat_ids)}
        recs: dict[Any, RawRecord] = {}
        orphans: list[Problem] = []
        for im in data["images"]:
            shape = (int(im["height"]), int(im["width"])) if "height" in im and "width" in im else None
            recs[im["id"]] = RawRecord(
                image=image_dir / im["file_name"], image_id=im["id"], label_file=ann_path, declared_shape=shape
            )
        rows: dict[Any, tuple[list, list, list]] = {k: ([], [], []) for k in recs}
        crowds: dict[Any, tuple[list, list]] = {k: ([], []) for k in recs}
        for a in data.get("annotations") or []:
            where = f"annotation id {a.get('id')}"
            if a.get("image_id") not in recs:
                orphans.append(problem(ann_path, f"{where}: image id {a.get('image_id')!r} not in 'images'; skipped"))
                continue
            rec = recs[a["image_id"]]
            cid = a.get("category_id")
            bbox = a.get("bbox")
            if cid not in index_of:
                rec.problems.append(problem(ann_path, f"{where}: unknown category id {cid!r}; box skipped"))
                continue
            if not _valid_bbox(bbox):
                rec.problems.append(problem(ann_path, f"{where}: bad bbox {bbox!r}; box skipped"))
                continue
            x, y, w, h = (float(v) for v in bbox)
            if a.get("iscrowd", 0):
                crowd_boxes, crowd_cls = crowds[a["image_id"]]
                crowd_boxes.append([x, y, x + w, y + h])
                crowd_cls.append(index_of[cid])
                continue
            boxes, cls, wh = rows[a["image_id"]]
            boxes.append([x, y, x + w, y + h])
            cls.append(index_of[cid])
            wh.append(where)
        for key, rec in recs.items():
            boxes, cls, where = rows[key]
            rec.boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
            rec.cls = np.array(cls, dtype=np.int64)
            rec.where = where
            crowd_boxes, crowd_cls = crowds[key]
            rec.ignore_boxes = np.array(crowd_boxes, dtype=np.float64).reshape(-1, 4)
            rec.ignore_cls = np.array(crowd_cls, dtype=np.int64)
            rec.ignore_crowd = np.ones(len(crowd_cls), dtype=bool)
        return list(recs.values()), orphans


def _valid_bbox(bbox: Any) -> bool:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return False
    try:
        return all(np.isfinite(float(v)) for v in bbox)
    except (TypeError, ValueError):
        return False
