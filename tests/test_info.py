"""``detector info``: the per-layer table (shapes for every layer, heads included) and the text output."""

from __future__ import annotations

import torch

from detector.info import cli_info, count_params, layer_table, shape_only_copy
from detector.model import build_model


def test_layer_table_shows_head_output_shapes():
    m = build_model("yolov9-t")
    rows = layer_table(m, imgsz=256)
    assert len(rows) == len(m.layers)
    by_tag = {r.tag: r for r in rows}
    raw = "144x32x32 | 144x16x16 | 144x8x8"  # 4*16 DFL bins + 80 classes per level
    assert by_tag["main"].shape == f"{raw} -> 84x1344"  # decoded (4 + nc, A), A = 32^2 + 16^2 + 8^2
    assert by_tag["aux"].section == "auxiliary" and by_tag["aux"].shape == f"{raw} -> 84x1344"
    assert by_tag["B3"].shape == "64x32x32" and by_tag["A5"].shape == "128x8x8"
    assert all(r.shape for r in rows)
    assert sum(r.params for r in rows) == count_params(m)


def test_layer_table_leaves_model_untouched():
    m = build_model("gelan-t").train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    layer_table(m, imgsz=64)
    assert m.training and next(m.parameters()).device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_shape_only_copy_shares_no_data():
    m = build_model("gelan-t")
    c = shape_only_copy(m)
    assert all(p.device.type == "meta" for p in c.parameters())
    assert all(b.device.type == "meta" for b in c.buffers())
    assert count_params(c) == count_params(m)
    assert all(p.device.type == "cpu" for p in m.parameters())


def test_cli_table_prints_every_layer(capsys):
    assert cli_info(["gelan-t", "imgsz=128"]) == 0
    out = capsys.readouterr().out
    head_line = next(line for line in out.splitlines() if " DDetect " in line)
    assert head_line.rstrip().endswith("144x16x16 | 144x8x8 | 144x4x4 -> 84x336")
    assert "gelan-t @ 128: train form 2.443M params" in out
