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


def test_main_head_under_another_tag_runs_everywhere():
    """The main head is the first head outside ``auxiliary``, whatever its tag; predict must not assume "main"."""
    from detector.predict.backends import TorchBackend

    cfg = tiny_detector()
    cfg["head"] = [{"DDetect": {"from": ["P3", "B4", "B5"], "tag": "det"}}]
    m = build_model(cfg).eval()
    assert (m.main_tag, m.main_index) == ("det", 6) and m.main_head is m.layers[6]
    x = torch.rand(1, 3, 64, 64)
    out = TorchBackend(m, torch.device("cpu"))(x)  # raised KeyError 'main' before
    assert torch.equal(out, m(x)["det"]) and torch.equal(out, m.infer(x))


def test_half_model_decodes_in_float32():
    """fp16 body, fp32 decode: the eval output, ``infer`` and the export graph agree with decoding the fp16 raw
    maps in float32, and differ from decoding in fp16 (which rounds pixel coordinates)."""
    from detector.export import DeployGraph

    torch.manual_seed(0)
    m = build_model(TINY).eval().half()
    x = torch.rand(1, 3, 640, 640).half()  # CPU fp16 convolutions: slow but exact enough for a 5-conv model
    with torch.no_grad():
        raw = m(x, decode=False)["main"]
        want = m.main_head.decode([r.float() for r in raw])
        for got in (m(x)["main"], m.infer(x), DeployGraph(m)(x.float())):
            assert got.dtype == torch.float32 and torch.equal(got, want)
        # what decoding in fp16 would give: boxes near the far corner lose precision (0.5 px steps above 512)
        in_half = (want[:, :4] - want[:, :4].half().float()).abs().max()
    assert in_half > 0.01


def test_reg_max_is_the_bin_count_in_every_head():
    from detector.nn.zerohead import ZeroHead

    ddetect = build_model(TINY).main_head
    zero = ZeroHead([8, 16, 32], nc=3, strides=[8, 16, 32], reg_max=16)
    assert ddetect.reg_max == ddetect.bins == 16 and zero.reg_max == zero.bins == 16
    assert zero.reg[0].out_channels == ddetect.box[0][-1].out_channels == 4 * 16
    with pytest.raises(ValueError, match="at least 2 bins"):
        ZeroHead([8], nc=3, strides=[8], reg_max=1)
