"""Results.boxes as a Boxes object (the Ultralytics names), and save_txt / save_crop / summary / to_df / to_csv."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector import Results
from detector.errors import DetectorError
from detector.predict.boxes import Boxes

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "datasets/bccd/JPEGImages/BloodImage_00000.jpg"
NAMES = {0: "Platelets", 1: "RBC", 2: "WBC"}
# two of the image's ground-truth boxes (Annotations/BloodImage_00000.xml) as detections
XYXY = np.array([[260, 177, 491, 376], [78, 336, 184, 435]], np.float32)
SCORES = np.array([0.9, 0.6], np.float32)
CLS = np.array([2, 1])


@pytest.fixture
def r() -> Results:
    img = cv2.imread(str(IMAGE))
    return Results(XYXY, SCORES, CLS, NAMES, img.shape[:2], str(IMAGE), orig_img=img)


def test_boxes_views_match_the_pixel_boxes(r):
    b = r.boxes
    assert isinstance(b, Boxes) and len(b) == 2 and b.shape == (2, 6) and b.orig_shape == (480, 640)
    np.testing.assert_array_equal(b.xyxy, XYXY)
    np.testing.assert_array_equal(b.conf, SCORES)
    np.testing.assert_array_equal(b.cls, [2.0, 1.0])
    np.testing.assert_array_equal(b.data, np.concatenate([XYXY, SCORES[:, None], CLS[:, None]], 1))
    np.testing.assert_allclose(b.xywh[0], [375.5, 276.5, 231, 199])
    np.testing.assert_allclose(b.xyxyn[1], [78 / 640, 336 / 480, 184 / 640, 435 / 480], rtol=1e-6)
    np.testing.assert_allclose(b.xywhn[0], [375.5 / 640, 276.5 / 480, 231 / 640, 199 / 480], rtol=1e-6)
    assert b.numpy() is b and b.cpu() is b and b.id is None


def test_boxes_indexing_returns_boxes(r):
    first = r.boxes[0]
    assert isinstance(first, Boxes) and first.shape == (1, 6)
    np.testing.assert_array_equal(first.xyxy, XYXY[:1])
    keep = r.boxes[r.boxes.conf > 0.7]
    assert len(keep) == 1 and keep.cls[0] == 2
    assert [int(x.cls[0]) for x in r.boxes] == [2, 1]  # iterating yields one-row Boxes
    assert len(r.boxes[np.array([], dtype=int)]) == 0


def test_old_accessors_still_work(r):
    np.testing.assert_array_equal(r.xyxy, XYXY)
    np.testing.assert_array_equal(r.scores, SCORES)
    assert r.cls.dtype == np.int64 and r.cls.tolist() == [2, 1]
    assert r.class_names == ["WBC", "RBC"] and len(r) == 2
    np.testing.assert_allclose(r.xywhn, r.boxes.xywhn)
    back = Results.from_json(r.to_json())
    np.testing.assert_allclose(back.boxes.data, r.boxes.data)
    assert r.verbose() == "1 WBC, 1 RBC"


def test_save_txt_writes_yolo_lines(r, tmp_path):
    path = r.save_txt(tmp_path / "labels" / "x.txt", save_conf=True)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    c, *xywh, conf = lines[0].split()
    assert c == "2" and float(conf) == pytest.approx(0.9)
    np.testing.assert_allclose([float(v) for v in xywh], r.xywhn[0], atol=1e-6)
    empty = Results(np.zeros((0, 4)), [], [], NAMES, (480, 640))
    assert empty.save_txt(tmp_path / "e.txt").read_text() == ""


def test_save_crop_cuts_each_box_into_its_class_folder(r, tmp_path):
    files = r.save_crop(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "WBC/BloodImage_00000_0.jpg",
        "RBC/BloodImage_00000_1.jpg",
    ]
    crop = cv2.imread(str(files[0]))
    assert crop.shape[:2] == (376 - 177, 491 - 260)
    # the crop holds the same pixels (up to JPEG re-encoding)
    ref = r.orig_img[177:376, 260:491].astype(np.float32)
    assert np.abs(crop.astype(np.float32) - ref).mean() < 4
    with pytest.raises(DetectorError, match="no original image"):
        Results.from_json(r.to_json()).save_crop(tmp_path)


def test_summary_and_dataframe(r, tmp_path):
    s = r.summary()
    assert s[0] == {
        "name": "WBC",
        "class": 2,
        "confidence": 0.9,
        "box": {"x1": 260.0, "y1": 177.0, "x2": 491.0, "y2": 376.0},
    }
    assert r.summary(normalize=True)[1]["box"]["x2"] == pytest.approx(184 / 640, abs=1e-5)
    df = r.to_df()
    assert list(df.columns) == ["name", "class", "confidence", "x1", "y1", "x2", "y2"]
    assert df["name"].tolist() == ["WBC", "RBC"] and df["x2"].tolist() == [491.0, 184.0]
    text = r.to_csv()
    assert text.splitlines()[0] == "name,class,confidence,x1,y1,x2,y2" and text.splitlines()[2].startswith("RBC,1,0.6")
    out = r.to_csv(tmp_path / "d.csv")
    assert out.read_text() == text


def test_to_df_without_pandas_says_how_to_get_it(r, monkeypatch):
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pandas", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(DetectorError, match=r"pip install 'detector\[pandas\]'"):
        r.to_df()
