"""The LSNet authors' ImageNet checkpoints -> our ``lsnet-*-cls`` give the logits their own code gave
(``tests/assets/lsnet_reference``, made by ``tools/reference_outputs_lsnet.py``), the key mapping is complete and
strict, and a converted checkpoint initialises the LSNet backbone of a detector through ``weights=``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _engine_kit import REPO, bccd_subset, tiny_config
from convert_kit import reference_weights

from detector.checkpoint import model_from_checkpoint
from detector.convert import UnmappedKey, convert
from detector.convert.init_weights import load_weights
from detector.convert.lsnet_official import lsnet_mapping
from detector.convert.mapping import map_state_dict
from detector.engine.trainer import Trainer
from detector.errors import DetectorError
from detector.model import build_model
from detector.nn.lsnet import RelPosAttention

FIXTURES = REPO / "tests" / "assets" / "lsnet_reference"
SCALES = ["t", "s", "b"]
CLASSIFIER = 7  # BatchNorm1d (5 tensors) + Linear (2)


def _reference(name: str) -> tuple[dict, dict[str, torch.Tensor], np.lib.npyio.NpzFile]:
    """The fixture's metadata, the upstream state dict it was made from (the integer attention index tables
    as upstream holds them), and the upstream outputs."""
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    state = reference_weights(meta["keys"])
    for k in state:
        if k.endswith("attention_bias_idxs"):
            state[k] = torch.tensor(meta["attention_bias_idxs"], dtype=torch.long)
    return meta, state, np.load(FIXTURES / f"{name}.npz")


def _input(meta: dict, arrays) -> torch.Tensor:
    spec = meta["input"]
    x = torch.randn(*spec["shape"], generator=torch.Generator().manual_seed(spec["seed"]))
    assert np.array_equal(x.flatten()[:16].numpy(), arrays["x_head"]), "the fixture's input is not reproduced"
    return x


def _logits_and_stages(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Raw logits (eval mode returns probabilities) and the spatial mean of stages 1-4, (B, C) each."""
    got: dict[str, torch.Tensor] = {}
    hooks = [model.main_head.linear.register_forward_hook(lambda m, i, y: got.update(logits=y))]
    hooks += [
        model.layers[s].register_forward_hook(lambda m, i, y, s=s: got.update({f"stage{s}": y.mean((2, 3))}))
        for s in range(1, 5)
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return got["logits"], [got[f"stage{s}"] for s in range(1, 5)]


def _close(a: torch.Tensor, b: np.ndarray) -> bool:
    ref = torch.from_numpy(b)
    return a.shape == ref.shape and (a - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("name", [*SCALES, "t_distill"])
def test_lsnet_official_logits_equal(name, tmp_path):
    """A checkpoint laid out as the authors release theirs ({'model': state_dict}) is recognised, converted with
    every tensor placed, and gives their logits and stage features on the fixture's input (a distilled one: the
    mean of its two classifiers, as their evaluation reports)."""
    meta, state, arrays = _reference(f"lsnet_{name}")
    torch.save({"model": state}, tmp_path / f"lsnet_{name}.pth")
    ours = f"lsnet-{name[0]}-cls"
    out, report = convert(tmp_path / f"lsnet_{name}.pth", tmp_path / "ours.pt", model=ours)
    distilled = CLASSIFIER if "distill" in name else 0  # head_dist.*, folded into the one classifier
    assert len(report.loaded) == len(build_model(ours).state_dict()) == len(state) - 5 - distilled
    assert not report.kept and report.ignored == sorted(k for k in state if k.endswith("attention_bias_idxs"))
    model = model_from_checkpoint(out, deploy=False)
    logits, stages = _logits_and_stages(model, _input(meta, arrays))
    assert _close(logits, arrays["logits"])
    for s, y in enumerate(stages, 1):
        assert _close(y, arrays[f"stage{s}_mean"]), f"stage {s}"


def test_lsnet_mapping_is_complete_and_strict():
    """Every upstream key of every scale maps onto a tensor of ours with its shape; only the derived attention
    index tables are dropped, and they index the bias table in the row-major (|dy|, |dx|) order ours reads."""
    for scale in SCALES:
        meta = json.loads((FIXTURES / f"lsnet_{scale}.json").read_text())
        own = build_model(f"lsnet-{scale}-cls").state_dict()
        theirs = {k: torch.empty(s) for k, s in meta["keys"]}
        mapped, dropped = map_state_dict(lsnet_mapping(list(theirs)), theirs)
        assert set(mapped) == set(own) and all(tuple(mapped[k].shape) == tuple(own[k].shape) for k in own), scale
        assert len(dropped) == 5 and all(k.endswith(".mixer.m.attention_bias_idxs") for k in dropped), scale
    r = 4  # their stage-4 table at 224
    dy, dx = RelPosAttention(384, 16, 4, r).offsets(r, r, torch.device("cpu"))
    assert torch.equal(dy * r + dx, torch.tensor(meta["attention_bias_idxs"]))


def test_lsnet_key_failures(tmp_path):
    _, state, _ = _reference("lsnet_t")
    cases = {
        "extra": ({**state, "blocks4.3.mixer.m.extra": torch.zeros(1)}, UnmappedKey, r"1 key\(s\).*blocks4\.3\.mixer\.m\.extra"),
        "short": ({k: v for k, v in state.items() if not k.startswith("blocks4.9.")}, DetectorError, "does not fill"),
        "no classifier": ({k: v for k, v in state.items() if not k.startswith("head.")}, DetectorError, "does not fill"),
    }  # fmt: skip
    for sd, error, match in cases.values():
        torch.save({"model": sd}, tmp_path / "x.pth")
        with pytest.raises(error, match=match):
            convert(tmp_path / "x.pth", tmp_path / "o.pt", model="lsnet-t-cls")
    torch.save({"model": state}, tmp_path / "t.pth")
    with pytest.raises(DetectorError, match="has shape"):  # LSNet-T weights into LSNet-S
        convert(tmp_path / "t.pth", tmp_path / "o.pt", model="lsnet-s-cls")
    with pytest.raises(DetectorError, match="give model=.*lsnet-t-cls"):
        convert(tmp_path / "t.pth", tmp_path / "o.pt")
    with pytest.raises(DetectorError, match="not into the detector 'lsnet-t-gelan'.*weights="):
        convert(tmp_path / "t.pth", tmp_path / "o.pt", model="lsnet-t-gelan")
    _, distilled, _ = _reference("lsnet_t_distill")
    torch.save({"model": {k: v for k, v in distilled.items() if k != "head_dist.bn.running_var"}}, tmp_path / "d.pth")
    with pytest.raises(UnmappedKey, match="distilled LSNet checkpoint without head_dist.bn.running_var"):
        convert(tmp_path / "d.pth", tmp_path / "o.pt", model="lsnet-t-cls")


def test_detector_convert_cli_on_a_training_checkpoint(tmp_path):
    """``detector convert`` end to end on a file written the way their training loop saves (model, model_ema,
    optimizer, args as an argparse.Namespace, ...): the non-EMA ``model`` is taken, as their evaluation does."""
    meta, state, arrays = _reference("lsnet_t")
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}, "lr_scheduler": {},
                "epoch": 299, "model_ema": ema, "scaler": {"scale": 65536.0},
                "args": argparse.Namespace(model="lsnet_t", distillation_type="none")}, tmp_path / "best.pth")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "detector", "convert", str(tmp_path / "best.pth"), "model=lsnet-t-cls"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    said = f"best-lsnet-t-cls.pt: {len(state) - 5} tensors loaded, 0 re-initialised (class count changed), 0 not in"
    assert said in run.stdout
    logits, _ = _logits_and_stages(model_from_checkpoint(tmp_path / "best-lsnet-t-cls.pt", deploy=False),
                                   _input(meta, arrays))  # fmt: skip
    assert _close(logits, arrays["logits"])


def _detector(scale: str) -> str | dict:
    """lsnet-t-gelan, or the same mix around the LSNet-S/B detection backbone (no zoo file of its own)."""
    if scale == "t":
        return "lsnet-t-gelan"
    return {"name": f"lsnet-{scale}-gelan", "backbone": f"lsnet-{scale}-backbone", "neck": "gelan-t-pan",
            "head": "ddetect"}  # fmt: skip


@pytest.mark.parametrize("scale", SCALES)
def test_detector_backbone_from_a_converted_lsnet(scale, tmp_path):
    """weights= of a converted lsnet-X-cls into a detector on the LSNet-X backbone: every backbone tensor loads
    (the attention bias tables resized from the 4x4 ImageNet map to the 20x20 detection map), the classifier is
    ignored, neck and head keep their initialisation; training (LSNet-T) prints the counts."""
    _, state, _ = _reference(f"lsnet_{scale}")
    torch.save({"model": state}, tmp_path / "lsnet.pth")
    cls_path, _ = convert(tmp_path / "lsnet.pth", tmp_path / f"lsnet-{scale}-cls.pt", model=f"lsnet-{scale}-cls")
    cls = model_from_checkpoint(cls_path, deploy=False).eval()
    det = build_model(_detector(scale), nc=3).eval()
    own = det.state_dict()
    backbone = [k for k in own if int(k.split(".")[1]) <= 4]
    report = load_weights(det, cls_path)
    assert report.loaded == sorted(backbone) and len(backbone) == len(state) - 5 - CLASSIFIER
    assert report.resized == sorted(f"layers.4.blocks.{j}.mixer.attention_biases" for j in (3, 5, 7, 9, 11))
    assert len(report.ignored) == CLASSIFIER and all(k.startswith("layers.5.") for k in report.ignored)
    assert not report.reinitialised and sorted(report.kept) == sorted(k for k in own if k not in backbone)
    theirs, mine = cls.state_dict(), det.state_dict()
    assert all(torch.equal(theirs[k], mine[k]) for k in backbone if k not in report.resized)
    # the resized table makes the detection layer compute, on its 20x20 map, what the ImageNet layer computes there
    a, b = cls.layers[4].blocks[3].mixer, det.layers[4].blocks[3].mixer
    assert (a.resolution, b.resolution) == (4, 20)
    x = torch.randn(1, a.qkv.conv.in_channels, 20, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (a(x) - b(x)).abs().max() <= 1e-5
    if scale != "t":
        return
    data = bccd_subset(tmp_path / "bccd", 2)
    cfg = tiny_config(tmp_path, data, model="lsnet-t-gelan", epochs=1, imgsz=64, weights=str(cls_path))
    Trainer(cfg).train()
    log = (tmp_path / "runs" / "exp" / "train.log").read_text()
    assert f"{len(backbone)} tensors loaded (5 of them resized to this model), 0 re-initialised" in log
    assert f"{CLASSIFIER} ignored" in log
