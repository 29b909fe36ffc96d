"""yolov9t-ul ... yolov9e-ul (Ultralytics' YOLOv9 layout) reproduce Ultralytics' own counts exactly (nc=80, 640).

Their figures: the ``published`` entry of each YAML (Ultralytics 8.4's yolov9<s>.yaml, their model.info()) and the
counts the reference script took from their built model (tests/assets/ultralytics_yolov9_reference/*.json, train
form and after their ``fuse()``). Their counts include the DFL's 16 fixed bin weights, which ours computes in the
decode (no tensor), hence the ``+ bins``. Shapes only: the models are built on the meta device.
"""

from __future__ import annotations

import json
from functools import cache

import pytest
import torch
from _engine_kit import REPO

from detector.info import model_summary
from detector.model import build_model
from detector.published import published_of

SIZES = ["t", "s", "m", "c", "e"]
FIXTURES = REPO / "tests" / "assets" / "ultralytics_yolov9_reference"


@cache
def summary(size: str) -> dict:
    with torch.device("meta"):
        model = build_model(f"yolov9{size}-ul")
    return {**model_summary(model, 640), "bins": model.main_head.bins, "aux": set(model.heads()) - {"main"}}


@pytest.mark.parametrize("size", SIZES)
def test_params_equal_ultralytics_exactly(size: str):
    ours, pub = summary(size), published_of(f"yolov9{size}-ul")
    theirs = json.loads((FIXTURES / f"yolov9{size}.json").read_text())
    assert ours["params"] + ours["bins"] == theirs["params"] == pub.params
    assert ours["deploy_params"] + ours["bins"] == theirs["fused_params"]
    assert not ours["aux"] and ours["strides"] == [8.0, 16.0, 32.0]  # no PGI branch in their models


@pytest.mark.parametrize("size", SIZES)
def test_gflops_match_ultralytics(size: str):
    """Their train-form GFLOPs (thop, BatchNorm counted; printed to one decimal) within 0.5%."""
    ours, pub = summary(size), published_of(f"yolov9{size}-ul")
    assert (pub.form, pub.flops) == ("train", "conv+bn")
    assert abs(ours["gflops"] / pub.gflops - 1) < 0.005, ours


def test_head_widths_are_theirs_not_the_papers():
    """Same backbone and neck as gelan-t, only the head differs: no grouped box convs, class width max(64, 80)."""
    with torch.device("meta"):
        ul, paper = build_model("yolov9t-ul"), build_model("gelan-t")
    assert [s.block for s in ul.specs] == [s.block for s in paper.specs]
    body = len(ul.layers) - 1
    shapes = [{k: v.shape for k, v in m.layers[:body].state_dict().items()} for m in (ul, paper)]
    assert shapes[0] == shapes[1]
    box, cls = ul.main_head.box[0], ul.main_head.cls[0]
    assert (box[1].conv.groups, box[2].groups, cls[0].conv.out_channels) == (1, 1, 80)
    pbox, pcls = paper.main_head.box[0], paper.main_head.cls[0]
    assert (pbox[1].conv.groups, pbox[2].groups, pcls[0].conv.out_channels) == (4, 4, 128)
    with pytest.raises(ValueError, match="box_groups=3"):
        build_model({"nc": 80, **{k: ul.yaml[k] for k in ("backbone", "neck")},
                     "head": [{"DDetect": {"from": ["P3", "P4", "P5"], "box_groups": 3}}]})  # fmt: skip
