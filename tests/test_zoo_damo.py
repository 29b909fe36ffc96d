"""DAMO-YOLO family: published sizes, deploy fusion, raw-map layout, ZeroHead decoding, mixing with others."""

from __future__ import annotations

import copy

import pytest
import torch
from backbone_kit import randomize_norms
from torch import nn

from detector.config import ConfigError
from detector.info import count_flops, count_params
from detector.model import build_model, load_model_dict
from detector.nn.repconv import RepConv
from detector.nn.zerohead import ZeroHead

# (deploy params, GFLOPs @640) from the DAMO-YOLO paper / model zoo, nc=80
PUBLISHED = {
    "damoyolo-t": (8.48e6, 18.1),
    "damoyolo-s": (16.3e6, 37.8),
    "damoyolo-m": (28.2e6, 61.8),
    "damoyolo-l": (42.1e6, 97.3),
}
T_TRAIN_PARAMS = 8.88e6
MODELS = sorted(PUBLISHED)


def _rel(ours: float, ref: float) -> float:
    return abs(ours - ref) / ref


@pytest.fixture(scope="module", params=MODELS)
def built(request):
    torch.manual_seed(0)
    return request.param, build_model(request.param)


def test_published_sizes(built):
    name, model = built
    params, gflops = PUBLISHED[name]
    deploy = copy.deepcopy(model).to_deploy()
    assert _rel(count_params(deploy), params) < 0.01, count_params(deploy)
    # every map is an exact multiple of 32 at 320, so FLOPs scale exactly with the pixel count
    ours_gflops = count_flops(deploy, 320) * 4 / 1e9
    assert _rel(ours_gflops, gflops) < 0.01, ours_gflops
    assert count_params(model) > count_params(deploy)  # RepConv branches and BN went away


def test_t_train_form_params():
    assert _rel(count_params(build_model("damoyolo-t")), T_TRAIN_PARAMS) < 0.01


def test_widths_and_strides(built):
    name, model = built
    tags = {s.tag: s for s in model.specs if s.tag}
    assert [tags[t].stride for t in ("B3", "B4", "B5", "P3", "P4", "P5")] == [8, 16, 32, 8, 16, 32]
    neck_out = [64, 128, 256] if name == "damoyolo-t" else [128, 256, 512]
    assert [tags[t].width for t in ("P3", "P4", "P5")] == neck_out
    # the first two fusion nodes keep the backbone's widths (inferred, not written in the neck file)
    assert tags["N5"].width == tags["B5"].width and tags["N4"].width == tags["B4"].width


@torch.no_grad()
def test_deploy_fusion_matches(built):
    name, model = built
    gen = torch.Generator().manual_seed(1)
    model = copy.deepcopy(model)
    randomize_norms(model, seed=1)
    head = model.main_head
    for conv in [*head.cls, *head.reg]:
        conv.reset_parameters()  # the N(0, 0.01) init would hide the features behind the class bias
    head.scales[1].data.fill_(1.7)  # a non-trivial learned scale must survive folding
    model.eval()
    x = torch.rand(2, 3, 128, 128, generator=gen)
    ref_maps = model(x, decode=False)["main"]
    ref_dec = model(x)["main"]
    deploy = copy.deepcopy(model).to_deploy()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deploy.modules())
    assert all(r.fused is not None for r in deploy.modules() if isinstance(r, RepConv))
    assert deploy.main_head.scales is None
    maps = deploy(x, decode=False)["main"]
    for a, b in zip(maps, ref_maps):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max(), name
    dec = deploy(x)["main"]
    assert (dec - ref_dec).abs().max() <= 1e-4 * ref_dec.abs().max()


def test_train_raw_maps_and_eval_decode(built):
    name, model = built
    model = build_model(name, nc=3)
    x = torch.rand(2, 3, 128, 128)
    model.train()
    maps = model(x)["main"]
    assert [tuple(m.shape) for m in maps] == [(2, 4 * 17 + 3, 16, 16), (2, 71, 8, 8), (2, 71, 4, 4)]
    model.eval()
    with torch.no_grad():
        dec = model(x)["main"]
    assert dec.shape == (2, 4 + 3, 16 * 16 + 8 * 8 + 4 * 4)
    assert float(dec[:, 4:].min()) >= 0 and float(dec[:, 4:].max()) <= 1


def test_zerohead_contract_and_init():
    head = ZeroHead([8, 16, 32], nc=5, strides=[8, 16, 32])
    assert (head.loss, head.bins, head.anchor_offset) == ("aota", 17, 0.0)
    assert ZeroHead([8], nc=5, strides=[8], reg_max=8).bins == 8
    for cls in head.cls:
        assert torch.allclose(cls.bias.sigmoid(), torch.full((5,), 0.01))
        assert cls.kernel_size == (3, 3)
    assert ZeroHead([8], nc=5, strides=[8], k=1).cls[0].kernel_size == (1, 1)


def test_zerohead_decode_grid_corners_and_integral():
    head = ZeroHead([4, 4], nc=2, strides=[8, 16])
    maps = [torch.zeros(1, 4 * 17 + 2, 3, 4), torch.zeros(1, 4 * 17 + 2, 2, 2)]
    # level 0, cell (row 2, col 3): all mass on bin 5 for left/top, bin 2 for right/bottom
    big = 50.0
    for side, b in zip(range(4), (5, 5, 2, 2)):
        maps[0][0, side * 17 + b, 2, 3] = big
    out = head.decode(maps)
    assert out.shape == (1, 4 + 2, 3 * 4 + 2 * 2)
    a = 2 * 4 + 3  # row-major index of (row 2, col 3)
    x, y = 3 * 8.0, 2 * 8.0  # grid corner, no half-cell offset
    assert torch.allclose(out[0, :4, a], torch.tensor([x - 40, y - 40, x + 16, y + 16]), atol=1e-3)
    # uniform logits -> expected distance 8 bins; level 1, cell (1, 0) at (0, 16) with stride 16
    b_idx = 12 + 2
    assert torch.allclose(out[0, :4, b_idx], torch.tensor([-128.0, 16 - 128.0, 128.0, 16 + 128.0]))
    assert torch.allclose(out[0, 4:], torch.full_like(out[0, 4:], 0.5))


def test_repconv_fuse_stride2():
    torch.manual_seed(0)
    m = RepConv(6, 10, 3, 2, act="relu")
    randomize_norms(m, seed=3)
    m.eval()
    x = torch.randn(2, 6, 15, 15)
    ref = m(x)
    m.fuse()
    assert m.fused is not None and m.fused.stride == (2, 2)
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_repgfpn_and_zerohead_on_a_gelan_backbone():
    cfg = load_model_dict("gelan-t")
    cfg.update(name="gelan-t-repgfpn", neck="repgfpn-t", head="zerohead")
    model = build_model(load_model_dict(cfg))
    tags = {s.tag: s for s in model.specs if s.tag}
    assert (tags["N5"].width, tags["N4"].width) == (128, 96)  # gelan-t's B5/B4 widths
    model.train()
    maps = model(torch.rand(1, 3, 64, 64))["main"]
    assert [m.shape[1:] for m in maps] == [(148, 8, 8), (148, 4, 4), (148, 2, 2)]


def test_damo_backbone_with_ddetect():
    cfg = {"name": "damo-t-ddetect", "backbone": "damoyolo-t-backbone", "neck": "repgfpn-t"}
    cfg["head"] = [{"DDetect": {"from": ["P3", "P4", "P5"]}}]
    model = build_model(load_model_dict(cfg), nc=4)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64))["main"].shape == (1, 8, 64 + 16 + 4)


def test_gfpn_node_stride_mismatch_is_reported():
    cfg = load_model_dict("damoyolo-t")
    cfg["neck"][0] = {"GFPNNode": {"from": ["B5", "B4"], "resample": ["none", "up"], "tag": "N5"}}
    with pytest.raises(ConfigError, match=r"neck layer 6 \(GFPNNode\).*input 1 has stride 16.*'up'"):
        build_model(cfg)


def test_depth_rounding():
    from detector.nn.repgfpn import depth_to_blocks

    assert [depth_to_blocks(d) for d in (0.33, 1.0, 1.5, 2.0)] == [1, 3, 4, 6]
    with pytest.raises(ValueError, match="0 blocks"):
        depth_to_blocks(0.1)
