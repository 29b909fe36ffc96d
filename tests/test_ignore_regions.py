"""Ignore regions (COCO ``iscrowd``, VOC ``difficult``) from the label files to the evaluator, their count in
``data check``, VOC class names that look like typos, and the faster-coco-eval cross-check of final numbers."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from _data_synth import make_coco, make_voc, write_yaml
from test_metrics import load_voc_split, synthetic_detections

from detector.config import ConfigError
from detector.data import build_dataloader
from detector.data.check import check, format_report
from detector.data.convert import convert
from detector.data.load import load_split
from detector.engine.coco_crosscheck import EvaluatedImage, cross_check
from detector.engine.validator import coco_results, image_truth
from detector.metrics import COCOEvaluator, ConfusionMatrix, ImageDetections, ImageGroundTruth


@pytest.fixture
def crowd_coco(tmp_path):
    ann = make_coco(
        tmp_path,
        [
            ("a.jpg", 60, 80, [(7, 10, 10, 20, 30, 0), (7, 0, 0, 80, 60, 1), (3, 40, 5, 10, 10, 1)]),
            ("b.jpg", 50, 50, [(3, 5, 5, 20, 20, 0)]),
        ],
        [(7, "dog"), (3, "cat")],
    )
    return write_yaml(tmp_path, {"path": ".", "train": str(ann.relative_to(tmp_path)),
                                 "val": str(ann.relative_to(tmp_path))})  # fmt: skip


def test_coco_crowd_boxes_reach_the_evaluator_and_are_counted(crowd_coco):
    report = check(crowd_coco, cache=False)
    assert report["splits"]["val"]["ignored"] == {"crowd": 2, "difficult": 0}
    assert report["splits"]["val"]["instances"] == 2 and report["problems"] == []
    assert "crowd" in format_report(report)
    loader, _ = build_dataloader(crowd_coco, "val", imgsz=64, batch=2, augment=None, workers=0, rect=True)
    batch = next(iter(loader))
    a = batch["im_files"].index(next(f for f in batch["im_files"] if f.endswith("a.jpg")))
    boxes, cls, crowd = batch["ignore"][a]
    np.testing.assert_allclose(boxes, [[0, 0, 80, 60], [40, 5, 50, 15]])  # original pixels, not letterboxed
    assert cls.tolist() == [1, 0] and crowd.tolist() == [True, True]
    assert len(batch["cls"]) == 2  # no training target made of a crowd box
    # a detection on the crowd region is no false positive: AP of "cat" stays 1 (pycocotools' rule)
    truth = image_truth([[40, 5, 50, 15]], [0], (np.array([[0, 0, 80, 60]]), np.array([0]), np.array([True])))
    assert truth.iscrowd.tolist() == [False, True] and truth.ignore.tolist() == [False, False]
    found = ImageDetections([[40, 5, 50, 15], [0, 0, 79, 59]], [0.9, 0.95], [0, 0])
    ev = COCOEvaluator()
    ev.update(found, truth)
    assert ev.compute().stats["mAP50"] == pytest.approx(1.0)
    ev = COCOEvaluator()  # the same detections where the crowd box had been dropped: one false positive first
    ev.update(found, ImageGroundTruth([[40, 5, 50, 15]], [0]))
    assert ev.compute().stats["mAP50"] < 0.6
    _, written = convert(crowd_coco, "coco", crowd_coco.parent / "converted")  # crowd survives a conversion
    back = load_split(crowd_coco.parent / "converted" / "data.yaml", "val", cache=False)
    assert back.ignored() == written["val"].ignored() == {"crowd": 2, "difficult": 0}
    cm = ConfusionMatrix(1, conf=0.25, iou=0.45)
    cm.update(found, truth)
    assert cm.matrix.tolist() == [[1, 0], [0, 0]]  # the crowd detection is neither a match nor background


def test_voc_difficult_is_ignored_by_default_or_kept(tmp_path):
    root = make_voc(tmp_path / "voc", {"1": (60, 80, [("cell", 5, 5, 30, 30), ("cell", 40, 10, 70, 50)])},
                    {"train": ["1"]})  # fmt: skip
    xml = root / "Annotations" / "1.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    ignored = load_split(write_yaml(root, {"path": ".", "train": "train", "format": "voc"}), "train").images[0]
    assert len(ignored.cls) == 1 and ignored.ignore_crowd.tolist() == [False]
    np.testing.assert_allclose(ignored.ignore_boxes, [[5, 5, 30, 30]])
    assert check(root / "data.yaml", cache=False)["ignored"] == {"crowd": 0, "difficult": 1}
    kept = load_split(write_yaml(root, {"path": ".", "train": "train", "difficult": "keep"}, "k.yaml"), "train")
    assert len(kept.images[0].cls) == 2 and len(kept.images[0].ignore_boxes) == 0
    with pytest.raises(ConfigError, match=r"key 'difficult' must be one of \['ignore', 'keep'\], got 'skip'"):
        load_split(write_yaml(root, {"path": ".", "train": "train", "difficult": "skip"}, "bad.yaml"), "train")


def test_voc_without_names_lists_classes_and_warns_on_case_or_space_twins(tmp_path, caplog):
    objs = [("RBC", 5, 5, 30, 30), ("rbc", 40, 10, 70, 50), ("White Cell", 1, 1, 9, 9)]
    root = make_voc(tmp_path / "voc", {"1": (60, 80, objs), "2": (60, 80, [("WBC", 3, 3, 20, 20)])},
                    {"train": ["1", "2"]})  # fmt: skip
    xml = root / "Annotations" / "2.xml"  # a fifth name, beyond the test palette: written into the XML only
    xml.write_text(
        xml.read_text().replace(
            "</annotation>",
            "<object><name>whitecell</name><bndbox><xmin>2</xmin>"
            "<ymin>2</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>",
        )
    )
    for _ in range(2):  # the second load comes from the label cache and still says it
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="detector.data"):
            ls = load_split(root, "train")
        assert ls.names == ["RBC", "WBC", "White Cell", "rbc", "whitecell"]
        text = caplog.text
        assert "5 classes found under Annotations/: ['RBC', 'WBC', 'White Cell', 'rbc', 'whitecell']" in text
        assert "class names ['RBC', 'rbc'] differ only by case or spaces" in text
        assert "class names ['White Cell', 'whitecell'] differ only by case or spaces" in text
        assert "WBC'] differ" not in text
    problems = [p["problem"] for p in check(root)["problems"]]
    assert sum("differ only by case or spaces" in p for p in problems) == 2


def test_final_numbers_agree_with_faster_coco_eval_on_the_saved_json(tmp_path):
    """Real BCCD boxes (some turned into crowd regions), synthetic detections: ours == faster-coco-eval."""
    rng = np.random.default_rng(3)
    truths = []
    for gt in load_voc_split("val")[:30]:
        crowd = rng.random(len(gt.classes)) < 0.15
        truths.append(image_truth(gt.boxes[~crowd], gt.classes[~crowd],
                                  (gt.boxes[crowd], gt.classes[crowd], np.ones(crowd.sum(), bool))))  # fmt: skip
    dets = synthetic_detections(truths, seed=5)
    ev = COCOEvaluator()
    for d, t in zip(dets, truths):
        ev.update(d, t)
    ours = ev.compute().stats
    category_ids = [1, 2, 3]
    preds, images = [], []
    for k, (d, t) in enumerate(zip(dets, truths)):
        preds += coco_results(f"img{k}", d, category_ids)
        images.append(EvaluatedImage(f"img{k}", f"img{k}.jpg", (480, 640), t))
    (tmp_path / "predictions.json").write_text(json.dumps(preds))
    out = cross_check(tmp_path, images, category_ids, ["Platelets", "RBC", "WBC"], ours)
    assert out["agrees"] and out["max_abs_diff"] < 1e-3, out
    assert 0.2 < ours["mAP50-95"] < 0.95 and out["stats"]["mAP50"] == pytest.approx(ours["mAP50"], abs=1e-3)
    gt = json.loads((tmp_path / "ground_truth.json").read_text())
    assert sum(a["iscrowd"] for a in gt["annotations"]) == sum(int(t.iscrowd.sum()) for t in truths) > 0
