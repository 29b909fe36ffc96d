"""``detector data check`` / ``convert``: counts, every problem by file name, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from _data_synth import make_yolo, save_rgb, write_yaml

from detector.data.check import cli_data

BCCD = Path(__file__).resolve().parents[1] / "datasets" / "bccd"

# What is wrong with the bundled BCCD annotations (found by reading them): two zero-size boxes, and seven RBC
# boxes annotated twice, the copy shifted by 2 px (IoU 0.92-0.93).
BCCD_DEGENERATE = {"BloodImage_00338.xml", "BloodImage_00343.xml"}
BCCD_DUPLICATES = {f"BloodImage_{i:05d}.xml" for i in (20, 100, 104, 251, 284, 331, 403)}


def test_bccd_check_reports_its_real_problems(capsys):
    assert cli_data(["check", str(BCCD), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 364 and report["format"] == "voc"
    assert {k: v["images"] for k, v in report["splits"].items()} == {"train": 205, "val": 87, "test": 72}
    assert report["per_class"] == {"Platelets": 361, "RBC": 4146, "WBC": 372}  # 4155 RBC written, 9 dropped
    assert report["instances"] == 361 + 4146 + 372
    assert report["image_size"] == {"min": [640, 480], "max": [640, 480]}
    by_file = {Path(p["file"]).name: p["problem"] for p in report["problems"]}
    assert set(by_file) == BCCD_DEGENERATE | BCCD_DUPLICATES
    assert all("degenerate (0 x 0 px); dropped" in by_file[f] for f in BCCD_DEGENERATE)
    assert all("duplicates object" in by_file[f] for f in BCCD_DUPLICATES)
    assert "object 13: RBC box [504, 337, 504, 337]" in by_file["BloodImage_00338.xml"]


def test_check_text_output_names_files(capsys):
    assert cli_data(["check", str(BCCD), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "Annotations/BloodImage_00338.xml: object 13: RBC box" in out
    assert "RBC" in out and "640x480 .. 640x480" in out and out.rstrip().endswith("usable")


def test_unusable_data_exits_nonzero(tmp_path, capsys):
    for i in range(2):  # images, but not a single label
        save_rgb(tmp_path / f"images/train/{i}.png", np.zeros((32, 32, 3), np.uint8))
    y = write_yaml(tmp_path, {"train": "images/train", "val": "images/val", "names": ["a"]})
    (tmp_path / "images/val").mkdir()
    assert cli_data(["check", str(y), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] is False and report["instances"] == 0
    assert any("split 'val' has no usable images" in p["problem"] for p in report["problems"])
    assert sum("no label file" in p["problem"] for p in report["problems"]) == 2


def test_convert_cli_writes_a_loadable_dataset(tmp_path, capsys):
    y = make_yolo(tmp_path / "src", n=3, h=48, w=64)
    assert cli_data(["convert", str(y), str(tmp_path / "out"), "--to", "coco"]) == 0
    assert "train: 3 images, 12 boxes" in capsys.readouterr().out
    assert cli_data(["check", str(tmp_path / "out" / "data.yaml")]) == 0
    assert cli_data(["convert", str(y), str(tmp_path / "x"), "--to", "voc"]) == 2  # argparse rejects it
