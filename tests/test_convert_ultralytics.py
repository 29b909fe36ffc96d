"""Ultralytics' YOLOv9 checkpoints (yolov9t/s/m/c/e.pt) -> our yolov9*-ul: the same outputs as their own code on
the same weights (fixtures in tests/assets/ultralytics_yolov9_reference, made by
tools/reference_outputs_ultralytics_yolov9.py beside ultralytics 8.4), a key mapping that fails loudly, a
class-count change, and an end-to-end ``detector convert`` of a file pickled the way they pickle theirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _engine_kit import REPO
from convert_kit import reference_weights

from detector.checkpoint import load_checkpoint, model_from_checkpoint
from detector.convert import UnmappedKey, convert
from detector.convert.init_weights import load_weights
from detector.convert.mapping import map_state_dict
from detector.convert.ultralytics_yolov9 import ultralytics_yolov9_mapping
from detector.errors import DetectorError
from detector.model import build_model

FIXTURES = REPO / "tests" / "assets" / "ultralytics_yolov9_reference"
SIZES = ["t", "s", "m", "c", "e"]
TOL = 1e-4


def _fixture(size: str) -> tuple[dict, dict[str, np.ndarray]]:
    return json.loads((FIXTURES / f"yolov9{size}.json").read_text()), dict(np.load(FIXTURES / f"yolov9{size}.npz"))


def _theirs(keys: list) -> dict[str, torch.Tensor]:
    """Their state dict as the reference script filled it: deterministic weights, DFL bins 0..15."""
    sd = reference_weights(keys)
    for k in sd:
        if ".dfl." in k:
            sd[k] = torch.arange(16, dtype=torch.float32).view(1, 16, 1, 1)
    return sd


def _assert_outputs_equal(model: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Our raw maps (levels flattened and concatenated, as their head returns them) and decoded output equal
    theirs within TOL; their decoded boxes are xywh, ours xyxy."""
    x = torch.from_numpy(arrays["x"])
    head = model.eval().main_head
    with torch.no_grad():
        maps = model(x, decode=False)["main"]  # eval mode (BatchNorm statistics), raw maps
        decoded = head.decode(maps)  # what model(x) returns in eval
    raw = torch.cat([m.flatten(2) for m in maps], 2)  # (B, 4*16 + nc, A)
    boxes, scores = raw.split([4 * head.bins, head.nc], 1)
    for ours, name in ((boxes, "boxes"), (scores, "scores")):
        theirs = torch.from_numpy(arrays[name])
        assert ours.shape == theirs.shape and (ours - theirs).abs().max() <= TOL, name
    xywh = torch.from_numpy(arrays["decoded"])
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:4] / 2, xywh[:, :2] + xywh[:, 2:4] / 2, xywh[:, 4:]], 1)
    assert decoded.shape == xyxy.shape and (decoded - xyxy).abs().max() <= TOL


@pytest.mark.parametrize("size", SIZES)
def test_ultralytics_yolov9_outputs_equal(size, tmp_path):
    """Their weights in our yolov9<size>-ul give their raw head outputs and decoded boxes within 1e-4."""
    ref, arrays = _fixture(size)
    torch.save(_theirs(ref["keys"]), tmp_path / "theirs.pt")  # a bare state dict: no class name to go by
    out, report = convert(tmp_path / "theirs.pt", tmp_path / "ours.pt", f"yolov9{size}-ul", "ultralytics-yolov9")
    assert len(report.loaded) == len(ref["keys"]) - 1 and report.ignored == [k for k, _ in ref["keys"] if ".dfl." in k]
    assert not report.kept and not report.reinitialised
    _assert_outputs_equal(model_from_checkpoint(out, deploy=False), arrays)


def test_ultralytics_yolov9_key_mapping_is_complete_and_strict():
    """Every one of their keys maps (or is the DFL, dropped by rule) onto a tensor of ours with the same shape,
    for every scale; keys of another layout or model fail loudly."""
    for size in SIZES:
        keys = _fixture(size)[0]["keys"]
        with torch.device("meta"):
            model = build_model(f"yolov9{size}-ul")
        own = model.state_dict()
        theirs = {k: torch.empty(s, device="meta") for k, s in keys}
        mapped, dropped = map_state_dict(ultralytics_yolov9_mapping(list(theirs), model), theirs)
        assert set(mapped) == set(own), size
        assert all(mapped[k].shape == own[k].shape for k in own), size
        assert dropped == [k for k in theirs if ".dfl." in k] and len(dropped) == 1, size

    keys = [k for k, _ in _fixture("t")[0]["keys"]]
    model = build_model("yolov9t-ul")
    extra = {k: torch.zeros(1) for k in [*keys, "model.22.one2one_cv2.0.0.conv.weight", "names.0"]}
    with pytest.raises(UnmappedKey, match=r"2 key\(s\).*one2one_cv2.*names\.0"):
        map_state_dict(ultralytics_yolov9_mapping(list(extra), model), extra)
    with pytest.raises(UnmappedKey, match="auxiliary head"):
        ultralytics_yolov9_mapping(keys, build_model("yolov9-t"))  # the paper's PGI model is not theirs
    e_keys = [k for k, _ in _fixture("e")[0]["keys"]]
    with pytest.raises(UnmappedKey, match=r"model\.42: their detection layer would be our layers\.41, but ours"):
        ultralytics_yolov9_mapping(e_keys, model)


def test_wrong_or_partial_checkpoint_fails_loudly(tmp_path):
    ref, _ = _fixture("t")
    sd = _theirs(ref["keys"])
    torch.save(sd, tmp_path / "t.pt")
    with pytest.raises(DetectorError, match="has shape"):  # yolov9t weights into the s-sized model
        convert(tmp_path / "t.pt", tmp_path / "o.pt", "yolov9s-ul", "ultralytics-yolov9")
    torch.save({k: v for k, v in sd.items() if not k.startswith("model.21.")}, tmp_path / "short.pt")
    with pytest.raises(DetectorError, match="does not fill"):
        convert(tmp_path / "short.pt", tmp_path / "o.pt", "yolov9t-ul", "ultralytics-yolov9")
    with pytest.raises(DetectorError, match="match no supported source"):  # a bare state dict names no source
        convert(tmp_path / "t.pt", tmp_path / "o.pt", "yolov9t-ul")


def test_class_count_change(tmp_path):
    """Their 80-class weights -> ours -> ``weights=`` into a 3-class yolov9t-ul: the class branches start fresh
    (all of them: their hidden width max(P3 width, min(nc, 100)) is 80 at 80 classes, 64 at 3), the rest loads."""
    ref, _ = _fixture("t")
    torch.save(_theirs(ref["keys"]), tmp_path / "theirs.pt")
    out, _ = convert(tmp_path / "theirs.pt", tmp_path / "ours.pt", "yolov9t-ul", "ultralytics-yolov9")
    converted = load_checkpoint(out)["model"]
    model = build_model("yolov9t-ul", nc=3)
    report = load_weights(model, out)
    own = model.state_dict()
    changed = {k for k in own if own[k].shape != converted[k].shape}
    assert changed == {k for k in own if k.startswith("layers.22.cls.") and not k.endswith("num_batches_tracked")}
    assert set(report.reinitialised) == changed and len(changed) == 3 * (2 * 5 + 2)  # 2 Conv+BN and a 1x1 a level
    assert len(report.loaded) == len(own) - len(changed) and not report.kept and not report.ignored
    k = "layers.22.box.2.1.conv.weight"
    assert torch.equal(own[k], converted[k])


def test_checkpoint_of_another_class_count_keeps_its_classes(tmp_path):
    """Their checkpoint fine-tuned on 3 classes, converted into yolov9t-ul (80 in its file): the result is a 3-class
    model with every tensor theirs, class branches included."""
    keys = [k for k, _ in _fixture("t")[0]["keys"]]
    with torch.device("meta"):
        three = build_model("yolov9t-ul", nc=3)
    to_ours = ultralytics_yolov9_mapping(keys, three).map_key
    shapes3 = {k: v.shape for k, v in three.state_dict().items()}
    keys3 = [(k, [1, 16, 1, 1] if ".dfl." in k else list(shapes3[to_ours(k)])) for k in keys]
    torch.save(_theirs(keys3), tmp_path / "three.pt")
    out, report = convert(tmp_path / "three.pt", tmp_path / "ours.pt", "yolov9t-ul", "ultralytics-yolov9")
    assert len(report.loaded) == len(shapes3) and not report.reinitialised and not report.kept
    ckpt = load_checkpoint(out)
    assert ckpt["model_yaml"]["nc"] == 3 and ckpt["names"] == ["0", "1", "2"]
    assert tuple(ckpt["model"]["layers.22.cls.0.0.conv.weight"].shape) == (64, 64, 3, 3)  # max(64, min(3, 100))


# A stand-in for their package, importable only by the process that writes the checkpoint: their class path
# and the attributes their released files carry (names dict, yaml, stride, args as a dict after strip_optimizer).
THEIR_PACKAGE = """
from torch import nn
class DetectionModel(nn.Module):
    pass
"""
THEIR_UTILS = """
from types import SimpleNamespace
class IterableSimpleNamespace(SimpleNamespace):
    pass
"""

WRITER = """
import json, sys, torch
from torch import nn
from convert_kit import reference_weights
from ultralytics.nn.tasks import DetectionModel
keys = json.load(open(sys.argv[1]))["keys"]
sd = reference_weights(keys)
model = DetectionModel()
for key, value in sd.items():
    *path, leaf = key.split(".")
    node = model
    for part in path:
        if part not in node._modules:
            node.add_module(part, nn.Module())
        node = node._modules[part]
    if ".dfl." in key:
        value = torch.arange(16, dtype=torch.float32).view(1, 16, 1, 1)
    if leaf.startswith(("running_", "num_batches")):
        node.register_buffer(leaf, value)
    else:
        node.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
model.names = {i: f"class{i}" for i in range(80)}
model.yaml = {"nc": 80, "yaml_file": sys.argv[4]}
model.stride = torch.tensor([8.0, 16.0, 32.0])
if sys.argv[3] == "released":  # after their strip_optimizer: args a dict, the model under "model"
    model.args = {"imgsz": 640, "task": "detect"}
    torch.save({"date": "2026-01-01T00:00:00", "version": "8.4.190", "license": "AGPL-3.0", "epoch": -1,
                "best_fitness": None, "model": model.half(), "ema": None, "updates": None, "optimizer": None,
                "train_args": {"imgsz": 640}, "train_metrics": {"fitness": 0.1}, "train_results": {}}, sys.argv[2])
else:  # a last.pt saved mid-training: the EMA model, its args their config namespace, optimizer state
    from ultralytics.utils import IterableSimpleNamespace
    model.args = IterableSimpleNamespace(imgsz=640, task="detect")
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.01, momentum=0.9)
    torch.save({"epoch": 3, "best_fitness": None, "model": None, "ema": model.half(), "updates": 120,
                "optimizer": opt.state_dict(), "train_args": {"imgsz": 640}, "train_metrics": {"fitness": 0.1},
                "train_results": {}, "date": "2026-01-01T00:00:00", "version": "8.4.190"}, sys.argv[2])
"""


def _write_their_checkpoint(tmp_path, form: str, yaml_file: str = "yolov9t.yaml"):
    """y.pt pickled by a stand-in of their package (``released`` or ``mid`` training form) holding the
    yolov9t reference weights; their package is importable only in the writing process."""
    pkg = tmp_path / "pkg" / "ultralytics" / "nn"
    (tmp_path / "pkg" / "ultralytics" / "utils").mkdir(parents=True)
    pkg.mkdir(parents=True)
    for folder in (pkg.parent, pkg):
        (folder / "__init__.py").write_text("")
    (pkg / "tasks.py").write_text(textwrap.dedent(THEIR_PACKAGE))
    (pkg.parent / "utils" / "__init__.py").write_text(textwrap.dedent(THEIR_UTILS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "pkg"), str(REPO / "tests")])}
    writer = [sys.executable, "-c", textwrap.dedent(WRITER), str(FIXTURES / "yolov9t.json"), str(tmp_path / "y.pt")]
    subprocess.run([*writer, form, yaml_file], check=True, env=env, timeout=120)


def _detector_convert(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # their package is not importable here
    cmd = [sys.executable, "-m", "detector", "convert", str(tmp_path / "y.pt"), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("form", ["released", "mid"])
def test_detector_convert_reads_a_checkpoint_pickled_the_ultralytics_way(form, tmp_path):
    """``detector convert yolov9t.pt``, recognised by their pickled class and GELAN keys, without importing their
    package; class names come over, and the outputs are theirs. Both a released file and a ``last.pt`` saved
    mid-training (EMA model holding their config namespace) convert; without model= the model is the one their
    pickled model's YAML names."""
    _write_their_checkpoint(tmp_path, form)
    proc = _detector_convert(tmp_path, *(["model=yolov9t-ul"] if form == "released" else []))
    assert proc.returncode == 0, proc.stderr
    assert "1338 tensors loaded, 0 re-initialised (class count changed), 0 not in the checkpoint, 1 ignored" in (
        proc.stdout
    )
    assert ("built from yolov9t.yaml, so converting into yolov9t-ul" in proc.stdout) == (form == "mid")
    ckpt = load_checkpoint(tmp_path / "y-yolov9t-ul.pt")
    assert ckpt["names"] == [f"class{i}" for i in range(80)]
    assert ckpt["converted_from"]["source"] == "ultralytics-yolov9"
    assert ckpt["converted_from"]["arch"] == "ultralytics.nn.tasks.DetectionModel"
    _assert_outputs_equal(model_from_checkpoint(tmp_path / "y-yolov9t-ul.pt", deploy=False), _fixture("t")[1])


def test_a_wrong_model_taken_from_their_yaml_name_says_where_it_came_from(tmp_path):
    """yolov9t weights in a model whose pickled YAML name says yolov9s: the strict load fails, naming the guess."""
    _write_their_checkpoint(tmp_path, "released", "yolov9s.yaml")
    proc = _detector_convert(tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "model=yolov9s-ul was taken from yolov9s.yaml; give model= if it is wrong" in proc.stderr
    assert not (tmp_path / "y-yolov9s-ul.pt").exists()
