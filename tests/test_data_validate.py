"""Bad input: each case is reported as {file, problem} and the rest of the data still loads."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from _data_synth import add_yolo_image, draw, make_yolo, save_rgb, write_yaml, yolo_line
from PIL import Image

from detector.data import cache as label_cache
from detector.data import load as load_module
from detector.data.image_io import read_image
from detector.data.load import load_split

GOOD = 3  # images make_yolo writes in each test's dataset


def dataset(tmp_path: Path) -> Path:
    return make_yolo(tmp_path, n=GOOD, h=64, w=96)


def problems_of(ls, name: str) -> list[str]:
    return [p["problem"] for p in ls.problems if Path(p["file"]).name == name]


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty file (0 bytes)"),
        (b"this is not an image at all" * 10, "not a readable image"),
        ("truncate", "corrupt or truncated image"),
    ],
    ids=["zero-byte", "unreadable", "truncated"],
)
def test_bad_image_files_are_skipped_and_reported(tmp_path, content, expected):
    y = dataset(tmp_path)
    bad = tmp_path / "images/train/bad.jpg"
    if content == "truncate":
        save_rgb(bad, np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
        content = bad.read_bytes()[: bad.stat().st_size // 2]
    bad.write_bytes(content)
    (tmp_path / "labels/train/bad.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    ls = load_split(y, "train")
    assert len(ls) == GOOD
    msgs = problems_of(ls, "bad.jpg")
    assert len(msgs) == 1 and expected in msgs[0] and "image skipped" in msgs[0]


def test_bad_label_lines_are_skipped_line_by_line(tmp_path):
    y = dataset(tmp_path)
    lines = [
        "0 0.5 0.5 0.2 0.2",
        "1 0.5 abc 0.2 0.2",
        "7 0.5 0.5 0.2 0.2",
        "1 0.5 0.5",
        "x 0.1 0.1 0.1 0.1",
        "2 0.25 0.25 0.1 0.1",
    ]
    add_yolo_image(tmp_path, "train", "lines.png", 64, 96, [], label_lines=lines)
    ls = load_split(y, "train")
    assert len(ls) == GOOD + 1
    msgs = problems_of(ls, "lines.txt")
    assert len(msgs) == 4
    assert "line 2: bad field 'abc'" in msgs[0]
    assert "line 3: class 7 out of range" in msgs[1]
    assert "line 4: expected 'cls xc yc w h'" in msgs[2]
    assert "line 5: bad class field 'x'" in msgs[3]
    im = next(im for im in ls.images if Path(im.file).name == "lines.png")
    assert im.cls.tolist() == [0, 2]  # the good lines survive


def test_boxes_outside_degenerate_and_duplicate(tmp_path):
    y = dataset(tmp_path)
    h, w = 64, 96
    lines = [
        "0 0.95 0.5 0.3 0.2",  # partly outside on the right: clipped
        "1 1.5 0.5 0.2 0.2",  # entirely outside: dropped
        "2 0.5 0.5 0.0 0.2",  # zero width: dropped
        yolo_line(3, (10, 10, 40, 40), h, w),
        yolo_line(3, (11, 10, 41, 40), h, w),  # near-identical copy of the previous box: dropped
        yolo_line(2, (11, 10, 41, 40), h, w),  # same place, other class: kept
    ]
    add_yolo_image(tmp_path, "train", "boxes.png", h, w, [], label_lines=lines)
    ls = load_split(y, "train")
    msgs = problems_of(ls, "boxes.txt")
    assert len(msgs) == 4
    assert "line 1" in msgs[0] and "clipped to [76.8, 25.6, 96, 38.4]" in msgs[0]
    assert "line 2" in msgs[1] and "entirely outside the 96x64 image; dropped" in msgs[1]
    assert "line 3" in msgs[2] and "degenerate" in msgs[2]
    assert "line 5" in msgs[3] and "duplicates line 4" in msgs[3]
    im = next(im for im in ls.images if Path(im.file).name == "boxes.png")
    assert im.cls.tolist() == [0, 3, 2]
    np.testing.assert_allclose(im.boxes[0], [76.8, 25.6, 96, 38.4], atol=1e-3)


def test_missing_label_file_means_background(tmp_path):
    y = dataset(tmp_path)
    save_rgb(tmp_path / "images/train/bg.png", draw(64, 96, []))
    (tmp_path / "labels/train/empty.txt").write_text("")
    save_rgb(tmp_path / "images/train/empty.png", draw(64, 96, []))
    ls = load_split(y, "train")
    assert len(ls) == GOOD + 2
    assert problems_of(ls, "bg.txt") == ["no label file (image used as background)"]
    assert problems_of(ls, "empty.txt") == []  # an empty label file is a background image on purpose
    assert all(len(im.cls) == 0 for im in ls.images if Path(im.file).stem in ("bg", "empty"))


def test_exif_rotated_jpeg_boxes_in_displayed_frame(tmp_path):
    raw = np.zeros((40, 80, 3), np.uint8)
    raw[5:15, 10:30] = 255  # a white block in the stored (unrotated) pixels
    ex = Image.Exif()
    ex[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "images/train/rot.jpg"
    path.parent.mkdir(parents=True)
    Image.fromarray(raw).save(path, exif=ex, quality=100)
    # as displayed (80 high, 40 wide) the block sits at x 25..35, y 10..30
    (tmp_path / "labels/train").mkdir(parents=True)
    (tmp_path / "labels/train/rot.txt").write_text(yolo_line(0, (25, 10, 35, 30), 80, 40) + "\n")
    ls = load_split(write_yaml(tmp_path, {"train": "images/train", "names": ["a"]}), "train")
    (im,) = ls.images
    assert im.shape == (80, 40)
    img = read_image(im.file)
    assert img.shape == (80, 40, 3)
    x1, y1, x2, y2 = im.boxes[0].astype(int)
    assert img[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].min() > 200  # the box covers the block as displayed
    assert img[:, : x1 - 2].max() < 60 and img[: y1 - 2].max() < 60


def test_gray_rgba_and_16bit_png_become_8bit_rgb(tmp_path):
    root = tmp_path / "images/train"
    root.mkdir(parents=True)
    gray = np.full((32, 48), 77, np.uint8)
    rgba = np.zeros((32, 48, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)  # stored as BGR(A) by OpenCV: R=30, G=20, B=10
    rgba[..., 3] = 128
    deep = np.full((32, 48, 3), 40000, np.uint16)
    for name, arr in (("gray.png", gray), ("rgba.png", rgba), ("deep.png", deep)):
        cv2.imwrite(str(root / name), arr)
    ls = load_split(write_yaml(tmp_path, {"train": "images/train", "names": ["a"]}), "train", cache=False)
    assert len(ls) == 3
    got = {Path(im.file).stem: read_image(im.file) for im in ls.images}
    for img in got.values():
        assert img.dtype == np.uint8 and img.shape == (32, 48, 3)
    assert (got["gray"] == 77).all()
    assert tuple(got["rgba"][0, 0]) == (30, 20, 10)
    assert (got["deep"] == 40000 >> 8).all()


def test_label_cache_hit_rebuild_and_read_only_fallback(tmp_path, monkeypatch):
    y = dataset(tmp_path)
    first = load_split(y, "train")
    assert list((tmp_path / ".cache").glob("labels-*.npz"))

    def boom(*a, **k):
        raise AssertionError("validated again although nothing changed")

    monkeypatch.setattr(load_module, "validate_record", boom)
    again = load_split(y, "train")
    assert [im.file for im in again.images] == [im.file for im in first.images]
    for a, b in zip(first.images, again.images):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.image_id == b.image_id and a.shape == b.shape
    monkeypatch.undo()
    # a changed label file (other size) triggers a rebuild
    (tmp_path / "labels/train/img0.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    assert load_split(y, "train").images[0].cls.tolist() == [0]
    # a data folder where .cache cannot be created: the user cache folder takes it
    for f in (tmp_path / ".cache").iterdir():
        f.unlink()
    (tmp_path / ".cache").rmdir()
    (tmp_path / ".cache").write_text("not a folder")
    monkeypatch.setenv("DETECTOR_CACHE_DIR", str(tmp_path / "user"))
    load_split(y, "train")
    assert list((tmp_path / "user" / "labels").glob("*.npz"))
    assert label_cache.load_labels_cache(label_cache.cache_files(tmp_path, "x"), "nope") is None


def test_voc_bad_objects_and_unreadable_xml(tmp_path):
    from _data_synth import make_voc

    make_voc(
        tmp_path,
        {
            "ok": (60, 80, [("cell", 1, 2, 30, 40)]),
            "odd": (60, 80, [("cell", 5, 5, 20, "x"), ("cell", 10, 10, 50, 50), ("cell", 30, 30, 30, 30)]),
            "broken": (60, 80, [("cell", 1, 2, 30, 40)]),
        },
        {"train": ["ok", "odd", "broken", "nolabel"]},
    )
    (tmp_path / "Annotations/broken.xml").write_text("<annotation><object>")
    save_rgb(tmp_path / "JPEGImages/nolabel.jpg", draw(60, 80, []))
    y = write_yaml(tmp_path, {"path": ".", "format": "voc", "train": "train", "names": ["cell"]})
    ls = load_split(y, "train")
    assert sorted(im.image_id for im in ls.images) == ["nolabel", "odd", "ok"]
    assert "object 1 (cell): bad bndbox" in problems_of(ls, "odd.xml")[0]
    assert "object 3: cell box [30, 30, 30, 30] is degenerate" in problems_of(ls, "odd.xml")[1]
    assert "unreadable XML" in problems_of(ls, "broken.xml")[0]
    assert problems_of(ls, "nolabel.xml") == ["no annotation file (image used as background)"]


def test_coco_unknown_category_and_orphan_annotation(tmp_path):
    import json

    from _data_synth import make_coco

    ann = make_coco(tmp_path, [("a.jpg", 60, 80, [(1, 10, 10, 20, 30, 0), (9, 1, 1, 5, 5, 0)])], [(1, "x")])
    doc = json.loads(ann.read_text())
    doc["annotations"].append({"id": 99, "image_id": 5, "category_id": 1, "bbox": [1, 1, 4, 4]})
    doc["annotations"].append({"id": 100, "image_id": 1000, "category_id": 1, "bbox": [1, "a", 4, 4]})
    ann.write_text(json.dumps(doc))
    ls = load_split(write_yaml(tmp_path, {"val": str(ann.relative_to(tmp_path))}), "val")
    assert ls.images[0].cls.tolist() == [0]
    text = [p["problem"] for p in ls.problems]
    assert any("annotation id 2: unknown category id 9" in t for t in text)
    assert any("annotation id 99: image id 5 not in 'images'" in t for t in text)
    assert any("annotation id 100: bad bbox" in t for t in text)
