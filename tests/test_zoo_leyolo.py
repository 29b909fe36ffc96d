"""LeYOLO family: published params/FLOPs, the width rule, DNiN head, fused == unfused, shapes at 128 px."""

from __future__ import annotations

import pytest
import torch
from backbone_kit import randomize_norms
from torch import nn

from detector.config import ConfigError, read_yaml
from detector.info import count_flops, count_flops_with_norm, count_params
from detector.model import build_model
from detector.nn.heads import DDetect
from detector.nn.leyolo import DNiN, InvertedBottleneck, MNConv, leyolo_width
from detector.zoo import find_yaml

# MODELS.md section 3 / arXiv 2406.14239 table: params, and GFLOPs at each size as (paper, counted from the
# authors' config). Either figure is a match.
PUBLISHED = {
    "leyolo-n": (1.12e6, {320: (0.66, 0.67), 480: (1.47, 1.50)}),
    "leyolo-s": (1.92e6, {480: (2.53, 2.55), 640: (4.51, 4.53)}),
    "leyolo-m": (2.40e6, {640: (5.80, 5.85)}),
    "leyolo-l": (2.40e6, {768: (8.40, 8.42)}),
}
MODELS = list(PUBLISHED)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: one thread avoids oversubscribing a shared CI runner (10x faster there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def close(ours: float, published: float, tol: float = 0.01) -> bool:
    return abs(ours - published) <= tol * published


@pytest.mark.parametrize("name", MODELS)
def test_params_match_published(name):
    params, _ = PUBLISHED[name]
    assert close(count_params(build_model(name)), params)


@pytest.mark.parametrize("name", MODELS)
def test_gflops_match_published(name):
    """The authors count the unfused model with thop (BatchNorm at 8 FLOPs per element): compare like with like.

    The conv-only count (= the BN-folded deploy form) must sit below it by exactly that BN term.
    """
    _, sizes = PUBLISHED[name]
    model = build_model(name)
    for imgsz, (paper, counted) in sizes.items():
        ours = count_flops_with_norm(model, imgsz) / 1e9
        assert close(ours, paper) or close(ours, counted), (name, imgsz, ours, paper, counted)
        conv_only = count_flops(model, imgsz) / 1e9
        assert 0.9 * ours < conv_only < 0.97 * ours


def _layers(name: str, section: str) -> list[tuple[str, dict]]:
    layers = read_yaml(find_yaml(name, what="component"))[section]
    return [next(iter(layer.items())) for layer in layers]


@pytest.mark.parametrize(
    ("small", "nano", "section"), [("leyolo-s-backbone", "leyolo-n-backbone", "backbone"), ("fpan-s", "fpan-n", "neck")]
)
def test_small_is_nano_through_the_width_rule(small, nano, section):
    s_layers, n_layers = _layers(small, section), _layers(nano, section)
    assert [b for b, _ in s_layers] == [b for b, _ in n_layers]
    for (_, s), (_, n) in zip(s_layers, n_layers):
        for key in ("out", "e"):
            assert (key in s) == (key in n)
            if key in n:
                assert s[key] == leyolo_width(n[key], 1.33), (small, s, n)
        assert {k: v for k, v in s.items() if k not in ("out", "e")} == {
            k: v for k, v in n.items() if k not in ("out", "e")
        }


def test_width_rule_and_medium_widths():
    assert [leyolo_width(c, 1.33) for c in (16, 32, 64, 96, 128, 192, 576, 1000)] == [
        24,
        48,
        88,
        128,
        176,
        256,
        768,
        768,
    ]
    scaled = {leyolo_width(c, 1.33) for c in (16, 32, 64, 96, 128, 192, 576)}
    for comp, sec in (("leyolo-m-backbone", "backbone"), ("fpan-m", "neck")):
        for _, args in _layers(comp, sec):
            assert {args[k] for k in ("out", "e") if k in args} <= scaled, (comp, args)


def test_medium_keeps_the_published_detect_inputs():
    m = build_model("leyolo-m")
    tags = {s.tag: s for s in m.specs if s.tag}
    assert [tags[t].width for t in ("P3", "P4", "P5")] == [48, 88, 256]
    assert tags["P5"].block == "Concat"
    # the four blocks after the P5 fusion run (and count) but no head reads them, as published
    tail = [s for s in m.specs if s.section == "neck" and s.index > tags["P5"].index]
    assert [s.block for s in tail] == ["InvertedBottleneck"] * 4
    read = {src for spec in m.specs for src in spec.sources}
    assert tail[-1].index not in read and not {s.index for s in tail} & set(m.specs[-1].sources)
    assert count_params(build_model("leyolo-l")) == count_params(m)


def test_dnin_branches():
    head = build_model("leyolo-n").main_head
    assert isinstance(head, DNiN) and (head.loss, head.bins, head.anchor_offset) == ("tal", 16, 0.5)
    for branch, width, out in ((head.box[0], 64, 64), (head.cls[0], 80, 80)):
        pw, dw1, dw2, last = branch
        assert (pw.conv.kernel_size, pw.conv.out_channels) == ((1, 1), width)
        for dw in (dw1, dw2):
            assert (dw.conv.kernel_size, dw.conv.groups, dw.conv.out_channels) == ((3, 3), width, width)
        assert isinstance(last, nn.Conv2d) and last.kernel_size == (1, 1) and last.out_channels == out
    # the class width follows the authors' max(C_P3, min(nc, 100)): 80 on COCO, C_P3 for few classes
    assert build_model("leyolo-s", nc=3).main_head.cls[0][0].conv.out_channels == 48


def test_dnin_decodes_like_ddetect():
    torch.manual_seed(0)
    strides = [8.0, 16.0, 32.0]
    dnin, ddetect = DNiN([32, 64, 96], 5, strides).eval(), DDetect([32, 64, 96], 5, strides).eval()
    maps = [torch.randn(2, 64 + 5, 80 // int(s), 96 // int(s)) for s in strides]
    assert torch.equal(dnin.decode(maps), ddetect.decode(maps))


def test_blocks():
    stem = MNConv(3, 16, 2, 2)
    assert stem.conv.padding == (0, 0) and stem.conv.bias is not None
    assert MNConv(3, 16, 3, 2).conv.padding == (1, 1)
    x = torch.randn(1, 16, 8, 8)
    same = InvertedBottleneck(16, 16, 5, 48)
    assert same.residual and same(x).shape == x.shape
    down = InvertedBottleneck(16, 32, 3, 48, s=2)
    assert not down.residual and down(x).shape == (1, 32, 4, 4) and len(down.layers) == 3
    assert len(InvertedBottleneck(16, 32, 3, expand=False).layers) == 2
    cfg = {
        "name": "bad",
        "backbone": [{"InvertedBottleneck": {"out": 8, "e": 12, "expand": False}}],
        "head": [{"DNiN": {"from": [-1, -1, -1]}}],
    }
    with pytest.raises(ConfigError, match=r"bad: backbone layer 0 \(InvertedBottleneck\).*leave `e` out"):
        build_model(cfg)


@pytest.mark.parametrize("name", ["leyolo-n", "leyolo-m", "gelan-s-fpan"])
def test_fused_matches_unfused(name):
    torch.manual_seed(0)
    model = build_model(name, nc=3)
    randomize_norms(model)
    model.eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        ref = model(x, decode=False)["main"]
        model.to_deploy()
        fused = model(x, decode=False)["main"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for r, f in zip(ref, fused):
        assert ((r - f).abs().max() / r.abs().max()).item() < 1e-4


@pytest.mark.parametrize("name", [*MODELS, "gelan-s-fpan"])
def test_train_maps_and_eval_decode_at_128(name):
    nc = 3
    model = build_model(name, nc=nc)
    x = torch.rand(2, 3, 128, 128)
    maps = model.train()(x)["main"]
    assert [tuple(m.shape) for m in maps] == [(2, 64 + nc, 128 // s, 128 // s) for s in (8, 16, 32)]
    with torch.no_grad():
        out = model.eval()(x)["main"]
    assert out.shape == (2, 4 + nc, 16 * 16 + 8 * 8 + 4 * 4)
    assert 0 <= float(out[:, 4:].min()) and float(out[:, 4:].max()) <= 1
