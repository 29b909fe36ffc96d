"""Dataset formats: YOLO txt, COCO JSON and Pascal VOC load into the same label table; conversions round-trip."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _data_synth import add_yolo_image, make_coco, make_voc, make_yolo, write_yaml

from detector.config import ConfigError
from detector.data.check import cli_data
from detector.data.convert import convert
from detector.data.load import load_split
from detector.data.spec import resolve_dataset
from detector.errors import DetectorError

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO / "datasets" / "bccd"


def by_stem(ls):
    return {Path(im.file).stem: im for im in ls.images}


def test_yolo_boxes_in_pixels(tmp_path):
    y = make_yolo(tmp_path, n=2, h=96, w=128)
    ls = load_split(y, "train")
    assert ls.names == ["a", "b", "c", "d"] and ls.format == "yolo" and len(ls) == 2
    im = ls.images[0]
    assert im.shape == (96, 128) and im.image_id == "img0"
    lines = (tmp_path / "labels/train/img0.txt").read_text().split("\n")
    c, xc, yc, w, h = map(float, lines[1].split())
    np.testing.assert_allclose(
        im.boxes[1], [(xc - w / 2) * 128, (yc - h / 2) * 96, (xc + w / 2) * 128, (yc + h / 2) * 96], atol=1e-3
    )
    assert im.cls.tolist() == [0, 1, 2, 3]
    assert ls.problems == []


def test_yolo_polygon_list_file_and_odd_names(tmp_path):
    names = ["my.image.v2.png", "with space.png", "données_é.png"]
    for n in names:
        add_yolo_image(tmp_path, "train", n, 64, 64, [(0, 8, 8, 40, 40)])
    # a polygon line gives its bounding box
    (tmp_path / "labels/train/with space.txt").write_text("0 0.125 0.125 0.625 0.125 0.625 0.625 0.125 0.625\n")
    (tmp_path / "list.txt").write_text("".join(f"./images/train/{n}\n" for n in names))
    y = write_yaml(tmp_path, {"train": "list.txt", "names": ["x"]})
    ls = load_split(y, "train")
    got = by_stem(ls)
    assert sorted(got) == sorted(Path(n).stem for n in names)
    for im in ls.images:
        np.testing.assert_allclose(im.boxes, [[8, 8, 40, 40]], atol=1e-4)
    assert ls.problems == []


def test_coco_keeps_ids_and_maps_categories(tmp_path):
    ann = make_coco(
        tmp_path,
        [
            ("a.jpg", 60, 80, [(7, 10, 10, 20, 30, 0), (3, 40, 5, 10, 10, 0), (7, 0, 0, 80, 60, 1)]),
            ("b.jpg", 50, 50, []),
        ],
        [(7, "dog"), (3, "cat")],
    )
    y = write_yaml(tmp_path, {"path": ".", "val": str(ann.relative_to(tmp_path))})
    ls = load_split(y, "val")
    assert ls.format == "coco" and ls.names == ["cat", "dog"] and ls.category_ids == [3, 7]
    a, b = ls.images
    assert (a.image_id, b.image_id) == (1000, 1007)
    assert a.cls.tolist() == [1, 0]  # the crowd annotation is no training box ...
    np.testing.assert_allclose(a.boxes, [[10, 10, 30, 40], [40, 5, 50, 15]])
    np.testing.assert_allclose(a.ignore_boxes, [[0, 0, 80, 60]])  # ... but an ignore region for the evaluator
    assert a.ignore_cls.tolist() == [1] and a.ignore_crowd.tolist() == [True] and len(b.ignore_boxes) == 0
    assert len(b.cls) == 0 and b.shape == (50, 50)


def test_voc_names_sorted_or_given(tmp_path):
    make_voc(
        tmp_path,
        {"0001": (60, 80, [("zebra", 1, 2, 30, 40), ("ant", 40, 10, 70, 50)]), "0002": (60, 80, [])},
        {"train": ["0001", "0002"]},
    )
    ls = load_split(tmp_path, "train")
    assert ls.names == ["ant", "zebra"] and ls.images[0].cls.tolist() == [1, 0]
    np.testing.assert_allclose(ls.images[0].boxes, [[1, 2, 30, 40], [40, 10, 70, 50]])
    y = write_yaml(tmp_path, {"path": ".", "format": "voc", "train": "train", "names": ["zebra", "ant"]}, "given.yaml")
    assert load_split(y, "train", cache=False).images[0].cls.tolist() == [0, 1]


def test_bccd_voc_folder_and_config_yaml():
    ls = load_split(BCCD, "train")
    assert ls.format == "voc" and ls.names == ["Platelets", "RBC", "WBC"] and len(ls) == 205
    spec = resolve_dataset("bccd")  # configs/data/bccd.yaml, path relative to the YAML's folder
    assert spec.root == BCCD.resolve() and spec.names == ["Platelets", "RBC", "WBC"]
    assert len(load_split(REPO / "configs/data/bccd.yaml", "val")) == 87


@pytest.mark.parametrize("to", ["yolo", "coco"])
def test_bccd_converts_with_identical_boxes(tmp_path, to):
    assert cli_data(["convert", str(BCCD), str(tmp_path / to), "--to", to]) == 0
    for split in ("train", "val", "test"):
        src, dst = by_stem(load_split(BCCD, split)), by_stem(load_split(tmp_path / to / "data.yaml", split))
        assert sorted(src) == sorted(dst)
        for stem, a in src.items():
            b = dst[stem]
            assert a.shape == b.shape and a.cls.tolist() == b.cls.tolist()
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        assert load_split(tmp_path / to / "data.yaml", split).problems == []  # the converted data is clean


def test_converted_coco_keeps_coco_ids(tmp_path):
    ann = make_coco(tmp_path / "src", [("a.jpg", 60, 80, [(7, 10, 10, 20, 30, 0)])], [(7, "dog"), (3, "cat")])
    y = write_yaml(tmp_path / "src", {"val": str(ann.relative_to(tmp_path / "src"))})
    out, _ = convert(y, "coco", tmp_path / "out")
    ls = load_split(out, "val")
    assert ls.images[0].image_id == 1000 and ls.category_ids == [3, 7] and ls.images[0].cls.tolist() == [1]


def test_spec_errors_are_clear(tmp_path):
    make_yolo(tmp_path, n=1)
    with pytest.raises(ConfigError, match="unknown key 'vall'; did you mean 'val'"):
        resolve_dataset({"path": str(tmp_path), "train": "images/train", "vall": "x", "names": ["a"]})
    with pytest.raises(ConfigError, match="needs 'names'"):
        resolve_dataset(write_yaml(tmp_path, {"train": "images/train"}, "nonames.yaml"))
    with pytest.raises(ConfigError, match="dataset path 'nowhere' not found"):
        resolve_dataset(write_yaml(tmp_path, {"path": "nowhere", "train": "x", "names": ["a"]}, "bad.yaml"))
    with pytest.raises(ConfigError, match="no 'val' split"):
        load_split(tmp_path / "data.yaml", "val")
    with pytest.raises(ConfigError, match="not a dataset folder"):
        resolve_dataset(tmp_path / "images")


def test_empty_split_is_a_clear_error(tmp_path):
    (tmp_path / "images" / "val").mkdir(parents=True)
    y = write_yaml(tmp_path, {"val": "images/val", "names": ["a"]})
    with pytest.raises(DetectorError, match="split 'val' has no usable images"):
        load_split(y, "val")


def test_voc_copy_of_bccd_reads_without_yaml(tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(BCCD / "Annotations", root / "Annotations")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    ids = (BCCD / "ImageSets/Main/test.txt").read_text().split()[:5]
    (root / "ImageSets/Main/test.txt").write_text("\n".join(ids))
    (root / "JPEGImages").mkdir()
    for i in ids:
        shutil.copy(BCCD / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
    ls = load_split(root, "test")
    assert [im.image_id for im in ls.images] == ids and ls.names == ["Platelets", "RBC", "WBC"]


def test_same_named_images_in_different_folders_get_different_ids(tmp_path):
    """``val save_json`` used the file stem as image_id: a/x.png and b/x.png became one image."""
    import json

    import torch
    from _data_synth import draw, save_rgb
    from tiny_models import tiny_detector

    from detector.data import build_dataloader
    from detector.engine.settings import ValConfig
    from detector.engine.validator import Validator
    from detector.model import build_model

    for rel in ("a/x.png", "b/x.png", "y.png"):
        save_rgb(tmp_path / "images" / "val" / rel, draw(64, 96, [(0, 8, 8, 40, 40)]))
        label = (tmp_path / "labels" / "val" / rel).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("0 0.25 0.375 0.333 0.5\n")
    data = write_yaml(tmp_path, {"path": ".", "val": "images/val", "names": ["a", "b", "c"]})
    ids = sorted(im.image_id for im in load_split(data, "val").images)
    assert ids == ["images/val/a/x", "images/val/b/x", "y"]  # only colliding stems change
    loader, _ = build_dataloader(data, "val", imgsz=64, batch=2, workers=0)
    torch.manual_seed(0)
    Validator(loader, ["a", "b", "c"], ValConfig(plots=False), torch.device("cpu"), run_dir=tmp_path)(
        build_model(tiny_detector()), save_json=True
    )
    saved = {p["image_id"] for p in json.loads((tmp_path / "predictions.json").read_text())}
    assert saved == set(ids)
