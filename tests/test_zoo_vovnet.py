"""VoVNet V1/V2 backbones: published ImageNet counts, OSA/eSE behaviour, BN fusion and a detection smoke test."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from backbone_kit import check_detection_smoke, randomize_norms, rel_diff

from detector.info import cli_info, count_flops, count_params
from detector.model import build_model
from detector.nn.osa import OSA, EffectiveSE, OSAStage, VoVStem

# (model, params with the 1000-class classifier, GMACs @224 or None) from MODELS.md section 4.
PUBLISHED = [
    ("vovnet39-v1-cls", 22.6e6, 7.07),
    ("vovnet57-v1-cls", 36.6e6, 8.93),
    ("vovnet19-dw-cls", 6.54e6, 1.33),
    ("vovnet19-slim-dw-cls", 1.90e6, 0.40),
    ("vovnet39-cls", 26.2e6, None),  # V2-39 with eSE in every OSA module; the paper gives no GMACs for it
]


@pytest.mark.parametrize(("name", "params", "gmacs"), PUBLISHED)
def test_published_counts(name: str, params: float, gmacs: float | None) -> None:
    model = build_model(name)
    assert model.nc == 1000
    assert abs(count_params(model) - params) / params < 0.01
    if gmacs is not None:
        ours = count_flops(model, 224) / 2e9  # detector.info counts FLOPs = 2 x MACs
        assert abs(ours - gmacs) / gmacs < 0.01


def test_v2_39_ese_placement() -> None:
    """26.2M has eSE in every OSA module; dropping it from all but each stage's last module gives the 24.6M form."""
    model = build_model("vovnet39-cls")
    modules = [m for m in model.modules() if isinstance(m, OSA)]
    assert len(modules) == 6 and all(isinstance(m.ese, EffectiveSE) for m in modules)
    stages = [m for m in model.modules() if isinstance(m, OSAStage)]
    not_last = [blk for st in stages for blk in list(st.blocks)[:-1]]
    ese_params = sum(count_params(blk.ese) for blk in not_last)
    assert ese_params == 768 * 768 + 768 + 1024 * 1024 + 1024
    assert abs(count_params(model) - ese_params - 24.6e6) / 24.6e6 < 0.01


def test_info_cli_json(capsys) -> None:
    assert cli_info(["vovnet19-slim-dw-cls", "--json", "imgsz=224"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == count_params(build_model("vovnet19-slim-dw-cls"))
    # VoVNet quotes GMACs of convolutions only (no BatchNorm), i.e. the BN-free count of the deploy form.
    assert abs(info["deploy_gflops"] / 2 - 0.40) / 0.40 < 0.01
    assert info["strides"] == [32.0]


def test_stage_pool_is_ceil_mode_and_residual_only_after_first() -> None:
    stage = OSAStage(16, 32, 8, layers=2, blocks=3)
    assert [b.residual for b in stage.blocks] == [False, True, True]
    assert stage(torch.rand(1, 16, 16, 16)).shape == (1, 32, 8, 8)  # floor mode would give 7x7
    assert stage(torch.rand(1, 16, 15, 15)).shape == (1, 32, 7, 7)
    assert OSAStage(16, 32, 8, pool=False)(torch.rand(1, 16, 9, 9)).shape == (1, 32, 9, 9)


def test_osa_widths_and_depthwise_reduction() -> None:
    m = OSA(48, 64, 16, layers=3, ese=False)
    # 3x3 chain 48->16->16->16 (+BN), then 1x1 over 48 + 3*16 channels (+BN)
    expect = (48 * 16 + 2 * 16 * 16) * 9 + 3 * 32 + (48 + 48) * 64 + 128
    assert count_params(m) == expect
    dw = OSA(48, 64, 16, layers=3, ese=False, dw=True)
    # 1x1 reduction 48->16 (+BN); each layer DW3x3 (16*9) + PW 16x16 (+BN); aggregation as above
    expect_dw = 48 * 16 + 32 + 3 * (16 * 9 + 16 * 16 + 32) + (48 + 48) * 64 + 128
    assert count_params(dw) == expect_dw
    assert dw(torch.rand(2, 48, 10, 12)).shape == (2, 64, 10, 12)


def test_ese_is_hard_sigmoid_gate() -> None:
    se = EffectiveSE(4)
    with torch.no_grad():
        se.fc.weight.zero_()
        se.fc.bias.copy_(torch.tensor([-4.0, 0.0, 1.5, 4.0]))
    x = torch.rand(2, 4, 3, 3)
    gate = torch.tensor([0.0, 0.5, 0.75, 1.0]).view(1, 4, 1, 1)
    assert torch.allclose(se(x), x * gate)
    # a non-zero weight: gate = relu6(W mean(x) + b + 3) / 6
    torch.nn.init.normal_(se.fc.weight)
    ref = x * F.relu6(F.conv2d(x.mean((2, 3), keepdim=True), se.fc.weight, se.fc.bias) + 3) / 6
    assert torch.allclose(se(x), ref, atol=1e-6)


def test_stems() -> None:
    assert VoVStem(3, 128, 64)(torch.rand(1, 3, 64, 64)).shape == (1, 128, 16, 16)
    dw = VoVStem(3, 64, 64, dw=True)
    assert dw(torch.rand(1, 3, 64, 64)).shape == (1, 64, 16, 16)
    assert count_params(dw) == 3 * 64 * 9 + 128 + 2 * (64 * 9 + 64 * 64 + 128)


@pytest.mark.parametrize("name", ["vovnet19-slim-dw-cls", "vovnet39-cls", "vovnet39-v1-cls"])
def test_fused_matches_unfused(name: str) -> None:
    torch.manual_seed(0)
    model = randomize_norms(build_model(name)).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x, decode=False)["main"][0]
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        model.to_deploy()
        assert n_bn > 0 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        out = model(x, decode=False)["main"][0]
    assert rel_diff(out, ref) < 1e-4


@pytest.mark.parametrize(
    "backbone",
    [
        "vovnet19-slim-dw-backbone",
        "vovnet19-dw-backbone",
        "vovnet19-backbone",
        "vovnet39-backbone",
        "vovnet57-backbone",
        "vovnet99-backbone",
        "vovnet39-v1-backbone",
    ],
)
def test_detection_smoke(backbone: str) -> None:
    check_detection_smoke(backbone, imgsz=128)
