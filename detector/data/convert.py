"""Write any supported dataset as YOLO txt or COCO JSON, with the boxes as validated (cleaned) on reading.

Output layout (``OUT/data.yaml`` describes it, with ``path: .``):
- images: ``OUT/images/SPLIT/...`` (hard links where possible, else copies; sub-folders kept);
- yolo: ``OUT/labels/SPLIT/....txt``, ``cls xc yc w h`` normalised to the image as displayed (an empty file
  for a background image);
- coco: ``OUT/annotations/instances_SPLIT.json``; COCO sources keep their image and category ids, others get
  image ids 1..N and category ids 1..nc.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import yaml

from detector.config import ConfigError
from detector.data.labels import ImageLabels, LabelSet
from detector.data.load import load_split
from detector.data.spec import SPLITS, DatasetSpec, resolve_dataset

LOG = logging.getLogger("detector.data")

TARGETS = ("yolo", "coco")


def default_splits(spec: DatasetSpec) -> list[str]:
    """train/val/test where defined, else every split the dataset names."""
    return [s for s in SPLITS if s in spec.splits] or list(spec.splits)


def convert(
    data: str | Path | dict | DatasetSpec, to: str, out: str | Path, *, splits: list[str] | None = None
) -> tuple[Path, dict[str, LabelSet]]:
    """Convert ``data`` to format ``to`` under ``out``; returns the written ``data.yaml`` and each split's labels."""
    if to not in TARGETS:
        raise ConfigError(f"--to must be one of {list(TARGETS)}, got {to!r}")
    spec = resolve_dataset(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, LabelSet] = {}
    doc: dict = {"path": "."}
    if to == "coco":
        doc["format"] = "coco"
    for split in splits or default_splits(spec):
        ls = load_split(spec, split)
        rel = _relative_names(ls.images)
        for im, r in zip(ls.images, rel):
            _place(Path(im.file), out / "images" / split / r)
        if to == "yolo":
            if n := sum(ls.ignored().values()):
                LOG.warning(f"{split}: {n} ignore region(s) (crowd / difficult) have no form in YOLO txt; left out")
            for im, r in zip(ls.images, rel):
                _write_yolo(im, (out / "labels" / split / r).with_suffix(".txt"))
            doc[split] = f"images/{split}"
        else:
            ann = out / "annotations" / f"instances_{split}.json"
            ann.parent.mkdir(parents=True, exist_ok=True)
            ann.write_text(json.dumps(coco_document(ls, rel)), encoding="utf-8")
            doc[split] = {"annotations": f"annotations/{ann.name}", "images": f"images/{split}"}
        written[split] = ls
    doc["names"] = next(iter(written.values())).names if written else []
    yaml_path = out / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return yaml_path, written


def coco_document(ls: LabelSet, file_names: list[str]) -> dict:
    """A COCO instances dict for ``ls``; ``file_names`` are the images' paths relative to the image folder."""
    keep_ids = ls.format == "coco" and all(isinstance(im.image_id, int) for im in ls.images)
    cat_ids = ls.category_ids if ls.format == "coco" else [i + 1 for i in range(len(ls.names))]
    images, annotations = [], []
    for n, (im, name) in enumerate(zip(ls.images, file_names), 1):
        image_id = im.image_id if keep_ids else n
        h, w = im.shape
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        # ignore regions (crowd, difficult) are crowd annotations: COCO's only way to say "neither count nor penalise"
        boxes = [(c, b, 0) for c, b in zip(im.cls, im.boxes.tolist())]
        boxes += [(c, b, 1) for c, b in zip(im.ignore_cls, im.ignore_boxes.tolist())]
        for c, (x1, y1, x2, y2), crowd in boxes:
            bw, bh = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_ids[int(c)],
                    "bbox": [round(v, 4) for v in (x1, y1, bw, bh)],
                    "area": round(bw * bh, 4),
                    "iscrowd": crowd,
                }
            )
    categories = [{"id": cid, "name": name} for cid, name in zip(cat_ids, ls.names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _write_yolo(im: ImageLabels, path: Path) -> None:
    h, w = im.shape
    lines = []
    for c, (x1, y1, x2, y2) in zip(im.cls, im.boxes.astype(float).tolist()):
        xc, yc, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{int(c)} {xc:.8g} {yc:.8g} {bw:.8g} {bh:.8g}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _relative_names(images: list[ImageLabels]) -> list[str]:
    """Image paths relative to their deepest common folder (keeps sub-folders, avoids name clashes)."""
    files = [os.path.abspath(im.file) for im in images]
    base = os.path.commonpath([os.path.dirname(f) for f in files]) if files else ""
    return [Path(os.path.relpath(f, base)).as_posix() for f in files]


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
