"""Pretrained weights from other frameworks: timm VoVNet checkpoints give identical logits in our models, key
mappings fail loudly, the restricted unpickler recovers pickled modules and refuses code, and ``weights=``
initialises training with a report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import torch
from _engine_kit import REPO, bccd_subset, tiny_config
from backbone_kit import randomize_norms
from convert_kit import reference_weights

from detector.checkpoint import load_checkpoint, model_from_checkpoint
from detector.convert import UnmappedKey, UnsafePickle, convert, module_state_dict, safe_load
from detector.convert.init_weights import class_dependent_keys, load_weights
from detector.engine.trainer import Trainer
from detector.errors import DetectorError
from detector.model import build_model

timm = pytest.importorskip("timm")  # a test-only dependency (Apache-2.0)

PAIRS = [
    ("vovnet39a", "vovnet39-v1-cls"),
    ("vovnet57a", "vovnet57-v1-cls"),
    ("ese_vovnet19b_dw", "vovnet19-dw-cls"),
    ("ese_vovnet19b_slim_dw", "vovnet19-slim-dw-cls"),
    ("ese_vovnet39b", "ese-vovnet39b-cls"),
    ("ese_vovnet57b", "ese-vovnet57b-cls"),
]


def _timm_checkpoint(name: str, path) -> torch.nn.Module:
    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False)
    randomize_norms(m)  # non-trivial BatchNorm statistics, so a swapped mean/var would show
    torch.save(m.state_dict(), path)
    return m.eval()


@pytest.mark.parametrize(("theirs", "ours"), PAIRS, ids=[p[0] for p in PAIRS])
def test_timm_vovnet_logits_equal(theirs, ours, tmp_path):
    ref = _timm_checkpoint(theirs, tmp_path / f"{theirs}.pth")
    out, report = convert(tmp_path / f"{theirs}.pth", tmp_path / "ours.pt", model=ours)
    assert len(report.loaded) == len(ref.state_dict()) and not report.kept and not report.ignored
    model = model_from_checkpoint(out, deploy=False).eval()
    x = torch.randn(2, 3, 64, 80)
    logits = {}  # the raw head output (eval mode returns softmax probabilities)
    model.main_head.linear.register_forward_hook(lambda mod, inp, out: logits.update(raw=out))
    with torch.no_grad():
        a, probs = ref(x), model(x)
    b = logits["raw"]
    assert a.shape == b.shape == (2, 1000)
    assert torch.allclose((probs["main"] if isinstance(probs, dict) else probs), a.softmax(1), atol=1e-5)
    assert (a - b).abs().max() <= 1e-4 * max(1.0, a.abs().max().item())
    assert load_checkpoint(out)["converted_from"]["source"] == "timm-vovnet"  # weights-only loadable


def test_key_mapping_fails_loudly(tmp_path):
    sd = timm.create_model("ese_vovnet19b_dw").state_dict()
    torch.save({**sd, "stages.9.extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(UnmappedKey, match=r"1 key\(s\).*stages\.9\.extra\.weight"):
        convert(tmp_path / "extra.pth", tmp_path / "o.pt", model="vovnet19-dw-cls")
    torch.save({k: v for k, v in sd.items() if "stages.3" not in k}, tmp_path / "short.pth")
    with pytest.raises(DetectorError, match="does not fill"):
        convert(tmp_path / "short.pth", tmp_path / "o.pt", model="vovnet19-dw-cls")
    with pytest.raises(DetectorError, match="not in our model|has shape"):  # another architecture
        convert(_save(sd, tmp_path), tmp_path / "o.pt", model="vovnet19-slim-dw-cls")
    with pytest.raises(DetectorError, match="give model="):
        convert(_save(sd, tmp_path), tmp_path / "o.pt")


def _save(sd, tmp_path):
    torch.save(sd, tmp_path / "plain.pth")
    return tmp_path / "plain.pth"


FOREIGN = """
import torch
from torch import nn
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(Block(), nn.Conv2d(4, 2, 1))
        self.names = {0: "a", 1: "b"}
"""


def test_pickled_module_of_an_unknown_class_is_recovered(tmp_path):
    """Written by another process whose classes this one cannot import: the state dict still comes back."""
    (tmp_path / "theirproject.py").write_text(textwrap.dedent(FOREIGN))
    script = (
        "import torch, numpy as np, argparse, theirproject; torch.manual_seed(0); m = theirproject.Net().half(); "
        "torch.save({'model': m, 'opt': argparse.Namespace(lr=0.01), 'best': np.float64(0.5)}, 'ck.pt'); "
        "torch.save({k: v.float() for k, v in m.state_dict().items()}, 'ref.pt')"
    )
    subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, check=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}
    )
    assert "theirproject" not in sys.modules
    ck = safe_load(tmp_path / "ck.pt")
    assert "theirproject" not in sys.modules, "safe_load must not import the checkpoint's project"
    assert ck["model"].__global__ == "theirproject.Net" and ck["model"].names == {0: "a", 1: "b"}
    assert ck["opt"].lr == 0.01 and float(ck["best"]) == 0.5
    got, ref = module_state_dict(ck["model"]), torch.load(tmp_path / "ref.pt", weights_only=True)
    assert sorted(got) == sorted(ref) and "model.0.scratch" not in got
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


class _Payload:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("fn", [os.system, eval, subprocess.Popen], ids=["os.system", "eval", "Popen"])
def test_planted_payload_is_refused_without_running(fn, tmp_path):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if fn is not eval else f"open({str(marker)!r}, 'w')"
    args = (arg,) if fn is not subprocess.Popen else (["touch", str(marker)],)
    torch.save({"model": _Payload(fn, *args)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickle, match=r"evil\.pt: refused, the pickle would call"):
        safe_load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_namespaces_come_back_but_a_namespace_called_with_arguments_is_refused(tmp_path):
    """A SimpleNamespace pickles as ``cls()`` + its ``__dict__``: read as an inert placeholder with its fields.
    The same class name called with an argument is a call like any other and refused."""
    torch.save({"args": types.SimpleNamespace(imgsz=640, name="run")}, tmp_path / "ns.pt")
    args = safe_load(tmp_path / "ns.pt")["args"]
    assert args.__global__ == "types.SimpleNamespace" and (args.imgsz, args.name) == (640, "run")
    torch.save({"args": _Payload(types.SimpleNamespace, {"imgsz": 640})}, tmp_path / "called.pt")
    with pytest.raises(UnsafePickle, match=r"called\.pt: refused, the pickle would call types.SimpleNamespace with"):
        safe_load(tmp_path / "called.pt")


def test_weights_init_reports_loaded_reinitialised_ignored(tmp_path):
    """weights= from a 5-class checkpoint into a 3-class run: the class branches alone start fresh."""
    from _engine_kit import TINY_MODEL

    from detector.checkpoint import save_checkpoint
    from detector.model import load_model_dict

    src = build_model(TINY_MODEL, nc=5)
    sd = {**src.state_dict(), "extra.weight": torch.zeros(1)}
    save_checkpoint(
        {"model": sd, "model_yaml": load_model_dict(TINY_MODEL, 5), "names": list("abcde")}, tmp_path / "w.pt"
    )
    model = build_model(TINY_MODEL, nc=3)
    report = load_weights(model, tmp_path / "w.pt")
    by_class = class_dependent_keys(model.yaml)
    assert by_class and set(report.reinitialised) == by_class and report.ignored == ["extra.weight"]
    assert len(report.loaded) == len(model.state_dict()) - len(by_class) and not report.kept
    k = report.loaded[0]
    assert torch.equal(model.state_dict()[k], src.state_dict()[k])

    data = bccd_subset(tmp_path / "bccd", 2)
    Trainer(tiny_config(tmp_path, data, epochs=1, imgsz=64, weights=str(tmp_path / "w.pt"))).train()
    log = (tmp_path / "runs" / "exp" / "train.log").read_text()
    assert f"{len(report.loaded)} tensors loaded, {len(by_class)} re-initialised (class count changed)" in log

    with pytest.raises(DetectorError, match="no such file"):
        load_weights(model, tmp_path / "missing.pt")
    with pytest.raises(DetectorError, match="detector convert"):
        load_weights(model, _save(timm.create_model("ese_vovnet19b_dw").state_dict(), tmp_path))


YOLOV9_FIXTURES = REPO / "tests" / "assets" / "yolov9_reference"
YOLOV9 = [f"{family}-{scale}" for family in ("gelan", "yolov9") for scale in "tsmce"]


def _bn_eval_raw(model: torch.nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every head's raw maps (the training-form output, auxiliary heads included) with BatchNorm in eval mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("name", YOLOV9)
def test_yolov9_official_outputs_equal(name, tmp_path):
    """Weights laid out as the paper's repository saves them give the outputs its own code gave
    (tests/assets/yolov9_reference, made by tools/reference_outputs_yolov9.py), raw maps of both heads and the
    decoded main output, within 1e-4."""
    ref = json.loads((YOLOV9_FIXTURES / f"{name}.json").read_text())
    arrays = np.load(YOLOV9_FIXTURES / f"{name}.npz")
    torch.save(reference_weights(ref["keys"]), tmp_path / "theirs.pt")  # a state dict: no class name to go by
    out, report = convert(tmp_path / "theirs.pt", tmp_path / "ours.pt", model=name, source="yolov9-official")
    assert len(report.loaded) == len(build_model(name).state_dict()) and not report.kept
    model = model_from_checkpoint(out, deploy=False)
    x = torch.from_numpy(arrays["x"])
    raw = _bn_eval_raw(model, x)
    for tag in ("main", "aux"):
        theirs = [torch.from_numpy(arrays[f"{tag}_{i}"]) for i in range(3) if f"{tag}_{i}" in arrays]
        assert (tag in raw) == bool(theirs), tag
        for a, b in zip(theirs, raw.get(tag, [])):
            assert a.shape == b.shape and (a - b).abs().max() <= 1e-4, tag
    with torch.no_grad():
        dec = model.eval()(x)["main"]
    xywh = torch.from_numpy(arrays["main_decoded"])
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:4] / 2, xywh[:, :2] + xywh[:, 2:4] / 2, xywh[:, 4:]], 1)
    assert dec.shape == xyxy.shape and (dec - xyxy).abs().max() <= 1e-4


@pytest.mark.parametrize("scale", ["t", "e"])
def test_yolov9_checkpoint_into_gelan_drops_the_auxiliary_branch(scale, tmp_path):
    """A yolov9 file into the gelan model: the main head's raw maps are the upstream yolov9 model's."""
    ref = json.loads((YOLOV9_FIXTURES / f"yolov9-{scale}.json").read_text())
    arrays = np.load(YOLOV9_FIXTURES / f"yolov9-{scale}.npz")
    torch.save(reference_weights(ref["keys"]), tmp_path / "theirs.pt")
    out, report = convert(tmp_path / "theirs.pt", tmp_path / "g.pt", model=f"gelan-{scale}", source="yolov9-official")
    assert len(report.loaded) == len(build_model(f"gelan-{scale}").state_dict()) and not report.kept
    assert len(report.ignored) == len(ref["keys"]) - len(report.loaded) > 300  # aux branch + aux head + DFL
    raw = _bn_eval_raw(model_from_checkpoint(out, deploy=False), torch.from_numpy(arrays["x"]))
    assert set(raw) == {"main"}
    for i, b in enumerate(raw["main"]):
        assert (torch.from_numpy(arrays[f"main_{i}"]) - b).abs().max() <= 1e-4


def test_yolov9_key_mapping_is_complete_and_strict():
    """Every upstream key maps (or is dropped by rule) onto a tensor of ours with the same shape, for every
    scale; a key from another layout fails loudly."""
    from detector.convert.mapping import map_state_dict
    from detector.convert.yolov9_official import yolov9_mapping

    for name in YOLOV9:
        keys = json.loads((YOLOV9_FIXTURES / f"{name}.json").read_text())["keys"]
        model = build_model(name)
        own = model.state_dict()
        theirs = {k: torch.empty(s) for k, s in keys}
        mapped, dropped = map_state_dict(yolov9_mapping(list(theirs), model), theirs)
        assert set(mapped) == set(own), name
        assert all(tuple(mapped[k].shape) == tuple(own[k].shape) for k in own), name
        assert all(".dfl" in k for k in dropped), name
    with pytest.raises(UnmappedKey):
        map_state_dict(
            yolov9_mapping(["model.0.conv.weight", "model.3.cv9.x"], build_model("gelan-t")),
            {"model.0.conv.weight": torch.zeros(1), "model.3.cv9.x": torch.zeros(1), "model.22.foo.1": torch.zeros(1)},
        )


@pytest.mark.parametrize("layout", ["yolov9-e", "gelan-e"])
def test_yolov9_e_index_table_covers_our_model_once(layout):
    """The hand-written -e table sends every upstream layer but the detection layer to a distinct layer of ours,
    and with our head(s) they are all of our layers; the upstream key list has tensors only in tabled layers."""
    from detector.convert.yolov9_layout import E_LAYOUTS
    from detector.convert.yolov9_official import head_indices

    table = {t.name: t for t in E_LAYOUTS}[layout]
    model = build_model(layout)
    heads = [h for h in head_indices(model) if h is not None]
    ours = list(table.layers.values())
    assert len(set(ours)) == len(ours) and sorted(ours + heads) == list(range(len(model.layers)))
    keys = json.loads((YOLOV9_FIXTURES / f"{layout}.json").read_text())["keys"]
    theirs = {int(k.split(".")[1]) for k, _ in keys}
    assert theirs - set(table.layers) == {table.detect} and 0 not in theirs
    assert table.aux == {i for i, j in table.layers.items() if j > heads[0]}  # ours follow the main head


def test_yolov9_e_missing_or_extra_key_fails_loudly(tmp_path):
    from detector.convert.mapping import apply
    from detector.convert.yolov9_official import yolov9_mapping

    keys = json.loads((YOLOV9_FIXTURES / "gelan-e.json").read_text())["keys"]
    theirs = {k: torch.zeros(s) for k, s in keys}
    model = build_model("gelan-e")
    for extra in ("model.0.conv.weight", "model.42.cv9.0.weight"):  # their Silence; no such head branch
        with pytest.raises(UnmappedKey, match=rf"1 key\(s\).*{extra}"):
            apply(yolov9_mapping([*theirs, extra], model), {**theirs, extra: torch.zeros(1)}, model)
    extra = "model.30.cv1.conv.weight"  # their Upsample, our Upsample (29): no tensors there
    with pytest.raises(DetectorError, match=r"1 mapped key\(s\) are not in our model.*layers\.29\.cv1"):
        apply(yolov9_mapping([*theirs, extra], model), {**theirs, extra: torch.zeros(1)}, model)
    short = {k: v for k, v in theirs.items() if not k.startswith("model.12.")}  # one CBLinear missing
    with pytest.raises(DetectorError, match=r"does not fill 2 tensor\(s\).*layers\.11\.conv"):
        apply(yolov9_mapping(list(short), model), short, model)


def test_convert_keeps_the_checkpoints_class_count(tmp_path):
    """A checkpoint trained on 5 classes converts into a 5-class model (its class branch loaded, not dropped),
    whatever class count the zoo file says."""
    torch.manual_seed(0)
    ref = timm.create_model("ese_vovnet19b_dw", num_classes=5).eval()
    randomize_norms(ref)
    out, report = convert(_save(ref.state_dict(), tmp_path), tmp_path / "o.pt", model="vovnet19-dw-cls")
    assert not report.reinitialised and len(report.loaded) == len(ref.state_dict())
    ck = load_checkpoint(out)
    assert ck["model_yaml"]["nc"] == 5 and len(ck["names"]) == 5
    model = model_from_checkpoint(out, deploy=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        probs = model(x)
    probs = probs["main"] if isinstance(probs, dict) else probs
    assert torch.allclose(probs, ref(x).softmax(1), atol=1e-5)


def test_weights_from_80_classes_into_3_where_hidden_class_widths_follow_nc(tmp_path):
    """gelan-t sizes its class branch's hidden layers from nc (80 classes: wider than 3), so coming from a COCO
    checkpoint those layers start fresh too, and every other tensor is loaded."""
    from detector.checkpoint import save_checkpoint
    from detector.model import load_model_dict

    src = build_model("gelan-t", nc=80)
    save_checkpoint({"model": src.state_dict(), "model_yaml": load_model_dict("gelan-t", 80),
                     "names": [str(i) for i in range(80)]}, tmp_path / "coco.pt")  # fmt: skip
    model = build_model("gelan-t", nc=3)
    report = load_weights(model, tmp_path / "coco.pt")
    hidden = [k for k in report.reinitialised if ".cls.0.0." in k]
    assert hidden and set(report.reinitialised) == class_dependent_keys(model.yaml, 80)
    assert len(report.loaded) + len(report.reinitialised) == len(model.state_dict()) and not report.kept
    assert all(torch.equal(model.state_dict()[k], src.state_dict()[k]) for k in report.loaded)
