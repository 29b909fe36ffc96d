"""Small synthetic datasets for the data tests: images with filled, coloured boxes, in YOLO/COCO/VOC layouts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import yaml

PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
"""Class c is drawn in PALETTE[c] (RGB) on a black background."""


def draw(h: int, w: int, boxes: list[tuple[int, float, float, float, float]]) -> np.ndarray:
    """RGB image with each ``(cls, x1, y1, x2, y2)`` box filled in its class colour."""
    img = np.zeros((h, w, 3), np.uint8)
    for c, x1, y1, x2, y2 in boxes:
        img[int(y1) : int(y2), int(x1) : int(x2)] = PALETTE[c]
    return img


def save_rgb(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def yolo_line(c: int, box: tuple[float, float, float, float], h: int, w: int) -> str:
    x1, y1, x2, y2 = box
    return f"{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"


def make_yolo(
    root: Path, n: int = 6, split: str = "train", h: int = 96, w: int = 128, names=("a", "b", "c", "d"), ext=".png"
) -> Path:
    """``n`` images, each with one box per class (non-overlapping), plus ``data.yaml``; returns the YAML path."""
    rng = np.random.default_rng(0)
    for i in range(n):
        boxes = []
        for c in range(len(names)):
            x1 = c * w // len(names) + int(rng.integers(0, 4))
            y1 = int(rng.integers(0, h // 2))
            boxes.append((c, x1, y1, x1 + w // len(names) - 6, y1 + int(rng.integers(10, h // 2))))
        add_yolo_image(root, split, f"img{i}{ext}", h, w, boxes)
    return write_yaml(root, {"path": ".", split: f"images/{split}", "names": list(names)})


def add_yolo_image(root: Path, split: str, name: str, h: int, w: int, boxes, label_lines: list[str] | None = None):
    img = save_rgb(root / "images" / split / name, draw(h, w, boxes))
    lines = (
        label_lines
        if label_lines is not None
        else [yolo_line(c, (x1, y1, x2, y2), h, w) for c, x1, y1, x2, y2 in boxes]
    )
    lab = root / "labels" / split / Path(name).with_suffix(".txt").name
    lab.parent.mkdir(parents=True, exist_ok=True)
    lab.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return img, lab


def write_yaml(root: Path, doc: dict, name: str = "data.yaml") -> Path:
    p = root / name
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return p


def make_coco(root: Path, images: list[tuple[str, int, int, list]], categories: list[tuple[int, str]]) -> Path:
    """COCO layout; ``images`` = [(file, h, w, [(category_id, x, y, bw, bh, iscrowd)])]; returns the JSON path."""
    doc = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in categories]}
    for k, (file, h, w, anns) in enumerate(images):
        image_id = 1000 + 7 * k
        boxes = [(0, x, y, x + bw, y + bh) for _, x, y, bw, bh, _ in anns]
        save_rgb(root / "images" / "val2017" / file, draw(h, w, boxes))
        doc["images"].append({"id": image_id, "file_name": file, "height": h, "width": w})
        for cid, x, y, bw, bh, crowd in anns:
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cid,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": crowd,
                }
            )
    ann = root / "annotations" / "instances_val2017.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(doc), encoding="utf-8")
    return ann


def voc_xml(filename: str, h: int, w: int, objects: list[tuple[str, object, object, object, object]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height>"
        f"<depth>3</depth></size>{objs}</annotation>"
    )


def make_voc(root: Path, items: dict[str, tuple[int, int, list]], splits: dict[str, list[str]]) -> Path:
    """VOC layout; ``items`` = {id: (h, w, [(name, x1, y1, x2, y2)])}; returns the root."""
    names = sorted({o[0] for _, _, objs in items.values() for o in objs})
    for image_id, (h, w, objs) in items.items():
        boxes = [(names.index(n), *map(float, b)) for n, *b in objs if all(isinstance(v, (int, float)) for v in b)]
        save_rgb(root / "JPEGImages" / f"{image_id}.jpg", draw(h, w, boxes))
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(f"{image_id}.jpg", h, w, objs), encoding="utf-8")
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    return root
