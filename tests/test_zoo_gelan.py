"""GELAN / YOLOv9-PGI zoo: every model reproduces the published parameter and FLOP counts (nc=80, 640x640).

Reference: /work/shared/reference/MODELS.md section 1 (YOLOv9 paper and the authors' configs, counted).
Tolerances: params 1% (train and deploy form), deploy GFLOPs 1%, train GFLOPs 2% (the authors' counter, thop,
also counts BatchNorm, which ours does not). FLOPs are counted on meta-device copies (shapes only), which the
first test checks against a real CPU run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from detector.info import count_flops, count_params, model_summary
from detector.model import DetectionModel, build_model

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Published:
    """Published counts of one model: its own (train) form and its deploy form; None = not published."""

    params: float
    deploy_params: float
    deploy_gflops: float
    gflops: float | None = None


# gelan-X: train form = unfused GELAN ("unfused gelan params"); yolov9-X: train form with the PGI branch.
PUBLISHED = {
    "gelan-t": Published(params=2.443e6, deploy_params=2.41e6, deploy_gflops=9.8),
    "gelan-s": Published(params=7.226e6, deploy_params=7.11e6, deploy_gflops=26.4),
    "gelan-m": Published(params=20.124e6, deploy_params=19.98e6, deploy_gflops=76.3),
    "gelan-c": Published(params=25.499e6, deploy_params=25.29e6, deploy_gflops=102.1),
    "gelan-e": Published(params=58.114e6, deploy_params=57.35e6, deploy_gflops=189.0),
    "yolov9-t": Published(params=3.72e6, deploy_params=2.41e6, deploy_gflops=9.8, gflops=16.5),
    "yolov9-s": Published(params=9.81e6, deploy_params=7.11e6, deploy_gflops=26.4, gflops=40.0),
    "yolov9-m": Published(params=32.88e6, deploy_params=19.98e6, deploy_gflops=76.3, gflops=133.0),
    "yolov9-c": Published(params=51.18e6, deploy_params=25.29e6, deploy_gflops=102.1, gflops=239.9),
    "yolov9-e": Published(params=69.53e6, deploy_params=57.35e6, deploy_gflops=189.0, gflops=245.5),
}
MODELS = sorted(PUBLISHED)


@cache
def built(name: str) -> DetectionModel:
    """Each model is built once per test session (tests must not modify it)."""
    return build_model(name)


@cache
def summary(name: str) -> dict:
    return model_summary(built(name), 640)


def rel(ours: float, ref: float) -> float:
    return abs(ours - ref) / ref


def test_meta_flop_count_equals_real_run_and_scales_with_area():
    m = build_model("yolov9-t")
    for train_form in (False, True):
        real = count_flops(m, 160, train_form, device=None)  # a real CPU forward
        assert real > 0 and count_flops(m, 160, train_form) == real
        # conv FLOPs scale with the image area at multiples of 32, so counts at 320 x 4 would be exact too
        assert count_flops(m, 640, train_form) == 4 * count_flops(m, 320, train_form) == 16 * real


@pytest.mark.parametrize("name", MODELS)
def test_params_match_published(name: str):
    s, ref = summary(name), PUBLISHED[name]
    assert rel(s["params"], ref.params) < 0.01, s
    assert rel(s["deploy_params"], ref.deploy_params) < 0.01, s


@pytest.mark.parametrize("name", MODELS)
def test_gflops_match_published(name: str):
    s, ref = summary(name), PUBLISHED[name]
    assert rel(s["deploy_gflops"], ref.deploy_gflops) < 0.01, s
    if ref.gflops is not None:
        assert rel(s["gflops"], ref.gflops) < 0.02, s


@pytest.mark.parametrize("size", ["t", "s", "m", "c", "e"])
def test_pgi_twin_has_gelan_as_its_main_branch(size: str):
    """yolov9-X = gelan-X + an auxiliary section: same main layers, plus an aux head at loss weight 0.25."""
    pgi, gelan = built(f"yolov9-{size}"), built(f"gelan-{size}")
    n_main = len(gelan.layers)
    assert [s.block for s in pgi.specs[:n_main]] == [s.block for s in gelan.specs]
    assert all(s.section == "auxiliary" for s in pgi.specs[n_main:])
    assert count_params(pgi.layers[:n_main]) == count_params(gelan)
    heads = pgi.heads()
    assert set(heads) == {"main", "aux"} and set(gelan.heads()) == {"main"}
    assert heads["aux"].loss_weight == 0.25 and heads["main"].loss_weight == 1.0
    assert pgi.strides == gelan.strides == [8.0, 16.0, 32.0]


# Fused counts printed by the authors' own code for their converted models (WongKinYiu/yolov9 issue #505),
# which include DFL's 16 fixed bin weights (a buffer here): exact equality pins every width, e.g. gelan-m's 184.
AUTHORS_FUSED_EXACT = {"gelan-t": 2_407_632, "gelan-s": 7_105_888, "gelan-m": 19_978_672}


@pytest.mark.parametrize("name", sorted(AUTHORS_FUSED_EXACT))
def test_fused_params_equal_the_authors_exact_counts(name: str):
    assert summary(name)["deploy_params"] + 16 == AUTHORS_FUSED_EXACT[name]


def test_gelan_c_per_layer_spot_checks():
    m = built("gelan-c")
    assert count_params(m.layers[0]) == 1_856  # first Conv
    assert count_params(m.layers[1]) == 73_984  # second Conv
    assert m.specs[2].block == "RepNCSPELAN4" and count_params(m.layers[2]) == 212_864
    head = m.main_head
    # The published figure counts the authors' DFL as a frozen 1x1 conv holding the 16 bin indices; ours computes
    # those fixed values in the decode (detector.ops.decode.dfl_expectation), so they are added here.
    assert count_params(head) + head.bins == 5_552_320


def test_cli_info_json():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "detector", "info", "gelan-t", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"name", "imgsz", "params", "gflops", "deploy_params", "deploy_gflops", "nc", "strides"}
    assert out["name"] == "gelan-t" and out["imgsz"] == 640 and out["nc"] == 80
    assert out["strides"] == [8.0, 16.0, 32.0]
    assert out["params"] == count_params(built("gelan-t"))
    assert rel(out["params"], 2.443e6) < 0.01 and rel(out["deploy_params"], 2.41e6) < 0.01
    assert rel(out["deploy_gflops"], 9.8) < 0.01
    assert out["deploy_gflops"] < out["gflops"]  # unfused RepConvN runs an extra 1x1 conv per block


def test_zoo_lists_all_ten():
    from detector.zoo import model_names

    assert set(MODELS) <= set(model_names())


@pytest.mark.parametrize("name", [n for n in MODELS if n.startswith("gelan")])
def test_no_dead_layers_in_main_graph(name: str):
    """Every backbone/neck layer is read by a later layer: the deploy form carries no dead weight."""
    if True:
        m = built(name)
        used = {s for spec in m.specs for s in spec.sources if s is not None}
        head = next(i for i in m.head_tags)
        assert set(range(head)) <= used, name
