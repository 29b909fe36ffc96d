"""Published figures in the zoo YAMLs: schema, presence, our counts in the same form and convention, the table tool."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from detector.config import ConfigError
from detector.info import count_flops, count_params
from detector.model import build_model
from detector.published import Measured, Published, flops_at, measure, measure_zoo_model, published_of, read_published
from detector.zoo import find_yaml, model_names

ROOT = Path(__file__).resolve().parents[1]  # the repository (tools/ lives here, not in the package)

# families whose every file must say what was published (gelan/ is kept by its own owner; mixes have no paper)
WITH_PAPERS = ("classify", "damo", "leyolo")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _zoo_table_module():
    spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "tools" / "zoo_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_zoo_published_entry_is_valid() -> None:
    seen = 0
    for name in model_names():
        pub = published_of(name)  # raises on a bad entry
        family = find_yaml(name).parent.name
        if family in WITH_PAPERS:
            assert pub is not None, f"{name}: no `published` entry"
        if family == "mixes":
            assert pub is None, f"{name}: a mix of our own has no published figures"
        if pub is not None:
            seen += 1
            assert 1e5 < pub.params < 1e9 and pub.source
            assert pub.gflops is None or 0.1 < pub.gflops < 1000
    assert seen >= 16


def test_numbers_written_as_yaml_text_are_caught() -> None:
    with pytest.raises(ConfigError, match=r"x.yaml: published key 'params' is the text '8.5e6'.*write 8.5e\+6"):
        read_published({"published": {"params": "8.5e6", "source": "s"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"unknown key 'gflop'; did you mean 'gflops'"):
        read_published({"published": {"params": 1e6, "gflop": 2.0, "source": "s"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"key 'form': expected one of \['train', 'deploy'\]"):
        read_published({"published": {"params": 1e6, "form": "fused", "source": "s"}}, "x.yaml")
    assert read_published({"nc": 80}) is None
    assert read_published({"published": {"params": 8.5e6, "source": "s"}}) == Published(8.5e6, "s")


class _PooledGate(nn.Module):
    """A conv plus a 1x1 conv on globally pooled features: a FLOP term that does not grow with the image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        return y * self.gate(y.mean((2, 3), keepdim=True)).sigmoid()


def test_half_size_count_only_where_exact() -> None:
    sizes: list[int] = []

    def counter(m: nn.Module, s: int) -> float:
        sizes.append(s)
        return count_flops(m, s)

    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1))
    assert flops_at(counter, conv, 256, 32) == count_flops(conv, 256)
    assert sizes == [128, 64]  # the full size never ran
    sizes.clear()
    gated = _PooledGate()
    assert flops_at(counter, gated, 256, 32) == count_flops(gated, 256)
    assert sizes == [128, 64, 256]  # the constant term broke f(s/2) = 4 f(s/4): counted at full size
    sizes.clear()
    flops_at(counter, conv, 224, 32)
    assert sizes == [224]  # 224 / 4 is not a multiple of the stride


def test_measure_counts_both_forms() -> None:
    model = build_model("gelan-s-fpan", nc=80)
    ours = measure(model, 128)
    assert ours.train_params == count_params(model)
    deploy = model.to_deploy()
    assert ours.deploy_params == count_params(deploy) < ours.train_params
    assert ours.deploy_gflops == pytest.approx(count_flops(deploy, 128) / 1e9, rel=1e-9)
    assert ours.train_gflops > ours.deploy_gflops  # BN and RepConv 1x1 branches still count in the train form


def test_a_published_model_measures_as_published() -> None:
    """End to end through the YAML entry: V-19-slim-dw-eSE, 1.90M params and 0.40 GMACs (0.80 GFLOPs) at 224."""
    _, pub, ours = measure_zoo_model("vovnet19-slim-dw-cls")
    assert (pub.imgsz, pub.form, ours.imgsz) == (224, "train", 224)
    assert abs(ours.train_params / pub.params - 1) < 0.01
    assert abs(ours.train_gflops / pub.gflops - 1) < 0.01


def test_table_row() -> None:
    zoo_table = _zoo_table_module()
    pub = Published(params=2.0e6, source="s", gflops=4.0, imgsz=320, form="train", flops="conv+bn")
    ours = Measured(320, "conv+bn", 2_020_000, 4.1, 1_990_000, 3.5)
    row = zoo_table.table_row("leyolo-n", pub, ours)
    assert (
        row == "| leyolo-n | leyolo | 320 | 2.00M / 4.00 (train) | 2.02M / 4.10\u2020 | 1.99M / 3.50 | +1.0% / +2.5% |"
    )
    assert zoo_table.table_row("gelan-s-fpan", None, ours).endswith("| 1.99M / 3.50 | - |")
    assert zoo_table.HEADER.count("\n") == 1 and zoo_table.HEADER.splitlines()[0].count("|") == 8
