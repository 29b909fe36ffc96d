"""DAMO-YOLO official checkpoints (tinyvision/DAMO-YOLO T/S/M/L) -> damoyolo-t/s/m/l: the converted model gives the
upstream code's outputs (tests/assets/damoyolo_reference, made by tools/reference_outputs_damoyolo.py), the key
mapping is complete and fails loudly, a changed class count re-initialises only the class convs, and
``detector convert`` reads a file written the way their trainer writes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _engine_kit import REPO, bccd_subset, tiny_config
from damoyolo_kit import damoyolo_reference_weights

from detector.checkpoint import load_checkpoint, model_from_checkpoint
from detector.convert import UnmappedKey, convert
from detector.convert.damoyolo_official import damoyolo_mapping
from detector.convert.init_weights import load_weights
from detector.convert.mapping import map_state_dict
from detector.engine.trainer import Trainer
from detector.errors import DetectorError
from detector.model import build_model

FIXTURES = REPO / "tests" / "assets" / "damoyolo_reference"
SCALES = ["damoyolo-t", "damoyolo-s", "damoyolo-m", "damoyolo-l"]
REG = 4 * 17  # the raw map's distribution channels come first, then the class logits


def _fixture(name: str) -> tuple[list, dict[str, np.ndarray]]:
    ref = json.loads((FIXTURES / f"{name}.json").read_text())
    return ref["keys"], dict(np.load(FIXTURES / f"{name}.npz"))


def _upstream_file(name: str, path, **extra) -> dict[str, torch.Tensor]:
    """Their weights for ``name`` saved as their trainer saves them; returns the state dict."""
    keys, _ = _fixture(name)
    sd = damoyolo_reference_weights(keys)
    sd["head.integral.project"] = torch.linspace(0, 16, 17)  # fixed in their model, whatever the kit drew
    torch.save({"epoch": 300, "model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
                "feature_loss": None, **extra}, path)  # fmt: skip
    return sd


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Raw per-level maps and the decoded (B, 4 + nc, A) output, in eval mode, for pixel input ``x`` (0..255)."""
    model.eval()
    with torch.no_grad():
        return model(x / 255, decode=False)[model.main_tag], model(x / 255)[model.main_tag]


def _assert_equal_to_upstream(model: torch.nn.Module, arrays: dict[str, np.ndarray], rel: float = 0.0) -> None:
    raw, dec = _outputs(model, torch.from_numpy(arrays["x"]))
    for i, b in enumerate(raw):
        a = torch.from_numpy(arrays[f"raw_{i}"])
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-4 * max(1.0, rel * a.abs().max().item()), i
    boxes, scores = torch.from_numpy(arrays["boxes"]), torch.from_numpy(arrays["scores"])  # (B, A, 4), (B, A, nc)
    assert dec.shape == (boxes.shape[0], 4 + scores.shape[2], boxes.shape[1])
    assert (dec[:, 4:] - scores.permute(0, 2, 1)).abs().max() <= 1e-4
    # boxes are pixels (up to ~300 at 64x64 input): 1e-4 of their size, float32's resolution there
    assert (dec[:, :4] - boxes.permute(0, 2, 1)).abs().max() <= 1e-4 * boxes.abs().max()


@pytest.mark.parametrize("name", SCALES)
def test_damoyolo_official_outputs_equal(name, tmp_path):
    """Raw head maps (distribution logits after the level's Scale, class logits) within 1e-4 of the upstream
    code's; decoded boxes and scores too; and the fused deploy form still matches."""
    _, arrays = _fixture(name)
    _upstream_file(name, tmp_path / "theirs.pth")
    out, report = convert(tmp_path / "theirs.pth", tmp_path / "ours.pt", model=name)  # source recognised
    assert len(report.loaded) == len(build_model(name).state_dict()) and not report.kept and not report.reinitialised
    assert report.ignored == ["head.integral.project"]
    assert load_checkpoint(out)["converted_from"]["source"] == "damoyolo-official"
    _assert_equal_to_upstream(model_from_checkpoint(out, deploy=False), arrays)
    _assert_equal_to_upstream(model_from_checkpoint(out, deploy=True), arrays, rel=1.0)


@pytest.mark.parametrize("name", SCALES)
def test_damoyolo_key_mapping_is_complete(name):
    """Every upstream key maps onto a tensor of ours with the same shape, and every tensor of ours is filled."""
    keys, _ = _fixture(name)
    model = build_model(name)
    own = model.state_dict()
    theirs = {k: torch.empty(s) for k, s in keys}
    mapped, dropped = map_state_dict(damoyolo_mapping(list(theirs), model), theirs)
    assert set(mapped) == set(own) and dropped == ["head.integral.project"]
    assert all(tuple(mapped[k].shape) == tuple(own[k].shape) for k in own)


def test_damoyolo_key_failures_are_loud(tmp_path):
    sd = _upstream_file("damoyolo-t", tmp_path / "t.pth")

    def save(state, file="x.pth"):
        torch.save({"model": state}, tmp_path / file)
        return tmp_path / file

    with pytest.raises(UnmappedKey, match=r"1 key\(s\).*neck\.merge_9\.conv1\.conv\.weight"):
        convert(save({**sd, "neck.merge_9.conv1.conv.weight": torch.zeros(1)}), model="damoyolo-t")
    plain = {k.replace("conv2.rbr_dense.conv.", "conv2.conv1."): v for k, v in sd.items()}  # reparam=False form
    with pytest.raises(UnmappedKey, match=r"backbone\.block_list\.1\.block_list\.0\.conv2\.conv1\.weight"):
        convert(save(plain), model="damoyolo-t")
    with pytest.raises(DetectorError, match="does not fill"):
        convert(save({k: v for k, v in sd.items() if not k.startswith("neck.merge_7.")}), model="damoyolo-t")
    deploy = {**sd, "backbone.block_list.1.block_list.0.conv2.rbr_reparam.weight": torch.zeros(1)}
    with pytest.raises(DetectorError, match=r"fused deploy form .*rbr_reparam"):
        convert(save(deploy), model="damoyolo-t")
    with pytest.raises(DetectorError, match="not in our model|has shape"):  # a T checkpoint into the S model
        convert(tmp_path / "t.pth", model="damoyolo-s")
    with pytest.raises(DetectorError, match="our model has no RepGFPN nodes tagged N5"):
        convert(tmp_path / "t.pth", model="gelan-t")
    with pytest.raises(DetectorError, match="give model=.*damoyolo-t"):
        convert(tmp_path / "t.pth")
    # a DDP-wrapped model's keys carry "module.": accepted
    _, report = convert(save({f"module.{k}": v for k, v in sd.items()}), tmp_path / "o.pt", model="damoyolo-t")
    assert len(report.loaded) == len(sd) - 1


def test_damoyolo_legacy_head_drops_its_extra_class_channel(tmp_path):
    """Files from before DAMO-YOLO v0.3.0 (head legacy=True) have 81 class channels for 80 classes; their eval
    slices the last off (the upstream legacy model with these weights gives the fixture's outputs exactly,
    checked beside their code), so the conversion drops it and the outputs still equal the fixture's."""
    _, arrays = _fixture("damoyolo-t")
    sd = _upstream_file("damoyolo-t", tmp_path / "t.pth")
    g = torch.Generator().manual_seed(5)
    for k in [k for k in sd if k.startswith("head.gfl_cls.")]:
        sd[k] = torch.cat((sd[k], torch.randn((1, *sd[k].shape[1:]), generator=g)))
    torch.save({"model": sd}, tmp_path / "legacy.pth")
    out, report = convert(tmp_path / "legacy.pth", tmp_path / "ours.pt", model="damoyolo-t")
    assert not report.reinitialised and len(report.loaded) == len(sd) - 1
    _assert_equal_to_upstream(model_from_checkpoint(out, deploy=False), arrays)


def test_damoyolo_checkpoint_for_other_classes_keeps_them(tmp_path):
    """A file trained on 3 classes (their class convs have 3 outputs) converts into a 3-class damoyolo-t whose
    maps equal the upstream ones channel for channel (the 80-class fixture's first 3 class logits)."""
    _, arrays = _fixture("damoyolo-t")
    sd = _upstream_file("damoyolo-t", tmp_path / "t.pth")
    torch.save({"model": {k: v[:3] if k.startswith("head.gfl_cls.") else v for k, v in sd.items()}}, tmp_path / "3.pth")
    out, report = convert(tmp_path / "3.pth", tmp_path / "ours.pt", model="damoyolo-t")
    ckpt = load_checkpoint(out)
    assert ckpt["model_yaml"]["nc"] == 3 and ckpt["names"] == ["0", "1", "2"] and not report.reinitialised
    raw, _ = _outputs(model_from_checkpoint(out, deploy=False), torch.from_numpy(arrays["x"]))
    for i, b in enumerate(raw):
        assert (torch.from_numpy(arrays[f"raw_{i}"][:, : REG + 3]) - b).abs().max() <= 1e-4


def test_damoyolo_class_count_change(tmp_path):
    """weights= from the converted 80-class file into a 3-class damoyolo-t: the three class convs (weight and
    bias) start fresh, everything else is loaded, so the box distributions still equal the upstream ones; a
    BCCD training run starts from it and logs the counts."""
    _, arrays = _fixture("damoyolo-t")
    _upstream_file("damoyolo-t", tmp_path / "theirs.pth")
    out, _ = convert(tmp_path / "theirs.pth", tmp_path / "ours.pt", model="damoyolo-t")
    model = build_model("damoyolo-t", nc=3)
    head = f"layers.{model.main_index}"
    report = load_weights(model, out)
    assert report.reinitialised == sorted(f"{head}.cls.{i}.{t}" for i in range(3) for t in ("bias", "weight"))
    assert len(report.loaded) == len(model.state_dict()) - 6 and not report.kept and not report.ignored
    raw, dec = _outputs(model, torch.from_numpy(arrays["x"]))
    for i, b in enumerate(raw):
        assert b.shape[1] == REG + 3
        assert (torch.from_numpy(arrays[f"raw_{i}"][:, :REG]) - b[:, :REG]).abs().max() <= 1e-4
    assert dec.shape[1] == 4 + 3

    data = bccd_subset(tmp_path / "bccd", 2)  # 3 classes: the run starts from the converted weights
    Trainer(tiny_config(tmp_path, data, model="damoyolo-t", epochs=1, imgsz=64, weights=str(out))).train()
    log = (tmp_path / "runs" / "exp" / "train.log").read_text()
    assert f"{len(report.loaded)} tensors loaded, 6 re-initialised (class count changed)" in log


def test_detector_convert_cli_on_an_upstream_checkpoint(tmp_path, capsys):
    """``detector convert`` end to end on a file laid out as their trainer saves it (model = the EMA state dict,
    with optimizer state and epoch beside it): one line of counts, a weights-only checkpoint of ours."""
    from detector.cli import main

    _, arrays = _fixture("damoyolo-m")
    src = tmp_path / "damoyolo_tinynasL35_M.pth"
    _upstream_file("damoyolo-m", src)
    assert main(["convert", str(src), "model=damoyolo-m", f"out={tmp_path / 'm.pt'}"]) == 0
    assert "843 tensors loaded, 0 re-initialised (class count changed), 0 not in the checkpoint, 1 ignored" in (
        capsys.readouterr().out
    )
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["names"] == [str(i) for i in range(80)] and ckpt["converted_from"]["source"] == "damoyolo-official"
    _assert_equal_to_upstream(model_from_checkpoint(tmp_path / "m.pt", deploy=False), arrays)

    torch.save({"model": {"backbone.block_list.1.block_list.0.conv2.rbr_reparam.weight": torch.zeros(1),
                          "neck.merge_3.conv1.conv.weight": torch.zeros(1), "head.gfl_cls.0.weight": torch.zeros(1)}},
               tmp_path / "deploy.pth")  # fmt: skip
    assert main(["convert", str(tmp_path / "deploy.pth"), "model=damoyolo-t"]) == 2
    assert "fused deploy form" in capsys.readouterr().err
