"""Roboflow exports read as they are: a YOLO export's data.yaml (roboflow block, ../train/images entries) and a
COCO export folder (_annotations.coco.json per split folder, a group category); other tools' keys are noted."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from _engine_kit import bccd_subset

from detector.config import ConfigError
from detector.data.check import check, cli_data
from detector.data.convert import convert
from detector.data.load import load_split
from detector.data.spec import resolve_dataset

ROBOFLOW_BLOCK = {
    "workspace": "team-roboflow",
    "project": "blood-cell-detection-1ekwu",
    "version": 3,
    "license": "CC BY 4.0",
    "url": "https://universe.roboflow.com/team-roboflow/blood-cell-detection-1ekwu/dataset/3",
}
SPLIT_DIRS = {"train": "train", "val": "valid"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Four BCCD images (train = val) and their per-class counts."""
    data = bccd_subset(tmp_path_factory.mktemp("bccd"), 4)
    return data, load_split(data, "train").instances_per_class().tolist()


def _roboflow_yolo(source_yaml, root):
    """The layout Roboflow's "YOLOv8" download has: SPLIT/images, SPLIT/labels, data.yaml with ../SPLIT/images."""
    conv = root.parent / f"{root.name}-conv"
    convert(source_yaml, "yolo", conv, splits=list(SPLIT_DIRS))
    for split, folder in SPLIT_DIRS.items():
        for kind in ("images", "labels"):
            shutil.copytree(conv / kind / split, root / folder / kind)
    doc = {"train": "../train/images", "val": "../valid/images", "nc": 3, "names": ["Platelets", "RBC", "WBC"]}
    doc["roboflow"] = ROBOFLOW_BLOCK
    (root / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (root / "README.roboflow.txt").write_text("exported via roboflow.com\n")
    return root / "data.yaml"


def _roboflow_coco(source_yaml, root):
    """The layout of Roboflow's "COCO" download: SPLIT/_annotations.coco.json beside the SPLIT's images, and a
    category 0 named after the project that is every class's supercategory and labels nothing."""
    conv = root.parent / f"{root.name}-conv"
    convert(source_yaml, "coco", conv, splits=list(SPLIT_DIRS))
    for split, folder in SPLIT_DIRS.items():
        shutil.copytree(conv / "images" / split, root / folder)
        doc = json.loads((conv / "annotations" / f"instances_{split}.json").read_text())
        for c in doc["categories"]:
            c["supercategory"] = "cells"
        doc["categories"].insert(0, {"id": 0, "name": "cells", "supercategory": "none"})
        (root / folder / "_annotations.coco.json").write_text(json.dumps(doc))
    return root


def test_roboflow_yolo_export(source, tmp_path, capsys):
    data, counts = source
    yaml_path = _roboflow_yolo(data, tmp_path / "rf-yolo")
    spec = resolve_dataset(yaml_path)
    assert spec.format == "yolo" and spec.splits == {"train": "train/images", "val": "valid/images"}
    assert spec.notes[0].endswith("ignoring key(s) roboflow written by other tools")
    assert "'../train/images' read as 'train/images'" in spec.notes[1]
    report = check(yaml_path, cache=False)
    assert report["usable"] and report["splits"]["train"]["images"] == 4 and not report["problems"]
    assert list(report["splits"]["val"]["per_class"].values()) == counts
    assert cli_data(["check", str(yaml_path)]) == 0
    out = capsys.readouterr().out
    assert "note: " in out and "ignoring key(s) roboflow" in out


def test_roboflow_coco_export_folder(source, tmp_path):
    data, counts = source
    root = _roboflow_coco(data, tmp_path / "rf-coco")
    spec = resolve_dataset(root)
    assert spec.format == "coco" and set(spec.splits) == {"train", "val"}
    report = check(root, cache=False)
    assert report["usable"] and report["names"] == ["Platelets", "RBC", "WBC"]  # the group category is no class
    assert list(report["splits"]["train"]["per_class"].values()) == counts and not report["problems"]
    assert load_split(root, "val").category_ids == [1, 2, 3]


def test_foreign_keys_noted_ours_strict(tmp_path, source):
    data, _ = source
    doc = yaml.safe_load(data.read_text())
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**doc, "channels": 3, "download": "https://example.org/x.zip"}))
    assert resolve_dataset(tmp_path / "a.yaml").notes == [
        f"{tmp_path / 'a.yaml'}: ignoring key(s) channels, download written by other tools"
    ]
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**doc, "nmes": ["x"]}))
    with pytest.raises(ConfigError, match="unknown key 'nmes'; did you mean 'names'"):
        resolve_dataset(tmp_path / "b.yaml")
