"""YAML graph builder: wiring, inferred widths/strides, named outputs and clear build errors."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_detector

from detector.config import ConfigError
from detector.model import build_model

TINY = tiny_detector()


def test_widths_strides_and_outputs():
    m = build_model(TINY)
    assert m.strides == [8.0, 16.0, 32.0]
    assert [s.width for s in m.specs[:5]] == [8, 16, 16, 32, 32]
    x = torch.rand(2, 3, 64, 96)
    m.train()
    out = m(x)
    assert set(out) == {"main"}
    assert [tuple(t.shape) for t in out["main"]] == [(2, 67, 8, 12), (2, 67, 4, 6), (2, 67, 2, 3)]
    m.eval()
    dec = m(x)["main"]
    assert dec.shape == (2, 4 + 3, 8 * 12 + 4 * 6 + 2 * 3)
    assert float(dec[:, 4:].min()) >= 0 and float(dec[:, 4:].max()) <= 1
    raw = m(x, decode=False)["main"]
    assert torch.allclose(m.main_head.decode(raw), dec)


def test_nc_override_changes_head():
    assert build_model(TINY, nc=7).main_head.nc == 7


def _with(section: str, index: int, layer: dict) -> dict:
    cfg = {k: (list(v) if isinstance(v, list) else v) for k, v in TINY.items()}
    cfg[section][index] = layer
    return cfg


def test_unknown_block_suggests_closest():
    with pytest.raises(ConfigError, match=r"tiny: backbone layer 1 \(Con\).*did you mean 'Conv'"):
        build_model(_with("backbone", 1, {"Con": {"out": 16}}))


def test_unknown_tag_suggests_closest():
    with pytest.raises(ConfigError, match=r"names no earlier tag; did you mean 'B4'"):
        build_model(_with("neck", 0, {"Identity": {"from": "B44"}}))


def test_bad_argument_is_reported_with_layer():
    with pytest.raises(ConfigError, match=r"backbone layer 1 \(Conv\).*unexpected keyword argument 'outt'"):
        build_model(_with("backbone", 1, {"Conv": {"outt": 16}}))


def test_concat_of_different_strides_fails_at_build_time():
    with pytest.raises(ConfigError, match="different strides"):
        build_model(_with("neck", 0, {"Concat": {"from": ["B3", "B4"], "tag": "P3"}}))


def test_absolute_index_rejected():
    with pytest.raises(ConfigError, match="use a negative offset or a tag"):
        build_model(_with("neck", 0, {"Identity": {"from": 2, "tag": "P3"}}))


def test_unknown_model_name_suggests():
    with pytest.raises(ConfigError, match="did you mean"):
        build_model("gelan-tt")
