"""Free mixing of backbones, necks and heads (MODELS.md "Mix and match").

* every backbone x neck x head over a representative set (one part per family), and every other component file in
  ``models/components`` once with representative partners, so a new component is tested as soon as it exists:
  train-mode raw maps in the documented layout that the head's loss accepts, eval-mode ``(B, 4 + nc, A)``, and a
  deploy form (``to_deploy``) within 1e-4 relative of the trained form under random BatchNorm statistics;
* the GELAN component files rebuild gelan-t exactly and gelan-c to its published size;
* each file in ``models/mixes`` trains one step (forward, real loss, backward, SGD step), deploys and exports to ONNX;
* parts that cannot combine fail at build time with a ConfigError that says why.
"""

from __future__ import annotations

import copy
import io
import itertools
import warnings

import numpy as np
import pytest
import torch
from backbone_kit import randomize_norms, rel_diff
from torch import nn

import detector.losses  # noqa: F401  (registers the losses)
from detector.components import KINDS, component_kind, component_names, read_component
from detector.config import ConfigError, read_yaml
from detector.info import count_params
from detector.model import DetectionModel, build_model, load_model_dict, parse_layers
from detector.registry import LOSSES
from detector.zoo import MODELS_DIR, model_names

NC = 3
H, W = 96, 128  # non-square, so a swapped height/width shows; a multiple of 32 for every stride-32 backbone
# one part per family; the full cross product of these is built
REPRESENTATIVE = {
    "backbone": ["gelan-t-backbone", "damoyolo-t-backbone", "leyolo-n-backbone", "vovnet19-slim-dw-backbone",
                 "lsnet-t-backbone"],
    "neck": ["gelan-t-pan", "repgfpn-t", "fpan-n"],
    "head": ["ddetect", "zerohead", "dnin"],
}  # fmt: skip
COMBOS = list(itertools.product(*REPRESENTATIVE.values()))
# every other component once, with the first representative of the two other kinds
OTHERS = [(kind, name) for kind in KINDS for name in component_names(kind) if name not in REPRESENTATIVE[kind]]
MIX_FILES = sorted(p.stem for p in (MODELS_DIR / "mixes").glob("*.yaml"))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small inputs: intra-op threads only add contention on a shared CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mix(backbone: str, neck: str, head: str, nc: int = NC) -> DetectionModel:
    torch.manual_seed(0)
    return build_model({"name": f"{backbone}+{neck}+{head}", "backbone": backbone, "neck": neck, "head": head}, nc)


def synthetic_batch(batch: int, h: int, w: int, seed: int = 0) -> dict:
    """A collated batch in the docs/interfaces.md format: 2 boxes per image, letterboxed to (h, w) without padding."""
    g = torch.Generator().manual_seed(seed)
    n = 2 * batch
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
    wh = 8 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])
    return {
        "img": torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, generator=g),
        "cls": torch.randint(0, NC, (n,), generator=g).float(),
        "bboxes": torch.cat((xy, xy + wh), 1),
        "batch_idx": torch.arange(batch).repeat_interleave(2),
        "im_files": [f"synthetic_{i}.jpg" for i in range(batch)],
        "ori_shapes": [(h, w)] * batch,
        "ratio_pad": [(1.0, (0.0, 0.0))] * batch,
        "image_ids": [f"synthetic_{i}" for i in range(batch)],
    }


def make_fusion_visible(model: DetectionModel) -> None:
    """Random BN statistics everywhere, default-scale final predictor convs (heads init them near zero, which
    would hide the features behind the biases) and a non-trivial per-level scale where a head has one."""
    randomize_norms(model)
    head = model.main_head
    for m in head.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            m.reset_parameters()
    for p in getattr(head, "scales", None) or []:
        p.data.fill_(1.3)


@torch.no_grad()
def check_contract(model: DetectionModel) -> None:
    """Train-mode raw maps (layout + loss), eval-mode decoded boxes, deploy form == trained form."""
    make_fusion_visible(model)
    head = model.main_head
    assert head.strides == [8.0, 16.0, 32.0]
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(1))
    batch = synthetic_batch(1, H, W)

    model.train()
    maps = model(x)["main"]
    sizes = [(H // int(s), W // int(s)) for s in head.strides]
    assert [tuple(m.shape) for m in maps] == [(1, 4 * head.bins + NC, h, w) for h, w in sizes]
    loss, items = LOSSES.get(head.loss)(head)(maps, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0 and torch.isfinite(items).all()

    model.eval()
    out = model(x)["main"]
    assert out.shape == (1, 4 + NC, sum(h * w for h, w in sizes))
    assert torch.isfinite(out).all() and 0 <= float(out[:, 4:].min()) and float(out[:, 4:].max()) <= 1
    raw = model(x, decode=False)["main"]

    deploy = copy.deepcopy(model).to_deploy()
    # every BatchNorm after a conv folds; LSNet's LSConv keeps the one after its dynamic (input-made) SKA kernel
    bn_before, bn_after = (sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) for net in (model, deploy))
    assert bn_after <= 0.1 * bn_before, (bn_before, bn_after)
    assert count_params(deploy) < count_params(model)
    for a, b in zip(deploy(x, decode=False)["main"], raw):
        assert rel_diff(a, b) < 1e-4
    assert rel_diff(deploy(x)["main"], out) < 1e-4


@pytest.mark.parametrize(("backbone", "neck", "head"), COMBOS, ids=["+".join(c) for c in COMBOS])
def test_every_representative_combination(backbone: str, neck: str, head: str) -> None:
    check_contract(mix(backbone, neck, head))


@pytest.mark.parametrize(("kind", "name"), OTHERS, ids=[name for _, name in OTHERS])
def test_every_other_component_mixes(kind: str, name: str) -> None:
    parts = {k: REPRESENTATIVE[k][0] for k in KINDS} | {kind: name}
    check_contract(mix(parts["backbone"], parts["neck"], parts["head"]))


def test_components_are_discovered_by_the_tag_contract() -> None:
    names = component_names()
    assert len(COMBOS) == 45 and len(COMBOS) + len(OTHERS) >= 60
    for kind, parts in REPRESENTATIVE.items():
        assert set(parts) <= set(component_names(kind)), kind
    for name in names:
        kind = component_kind(name)
        assert kind in KINDS, f"{name}: tags no B3/B4/B5, no P3/P4/P5 and holds no head"
        declared = read_yaml(read_component(name)[0])
        if isinstance(declared, dict):  # a file that names its section must agree with what its tags say
            assert list(declared) in ([kind], ["layers"]), (name, list(declared), kind)


# -- GELAN parts --------------------------------------------------------------------------------------------------
def _layer_specs(cfg: dict) -> list[tuple]:
    return [(s.section, s.block, s.args, s.sources, s.tag) for s in parse_layers(cfg)]


def test_gelan_t_components_rebuild_gelan_t_exactly() -> None:
    whole = load_model_dict("gelan-t")
    parts = load_model_dict(
        {"name": "gelan-t", "backbone": "gelan-t-backbone", "neck": "gelan-t-pan", "head": "ddetect"}
    )
    assert _layer_specs(parts) == _layer_specs(whole)  # same blocks, arguments, wiring and tags
    torch.manual_seed(0)
    ref = build_model(whole)
    torch.manual_seed(0)
    model = build_model(parts)
    assert count_params(model) == count_params(ref) == 2_442_624
    x = torch.rand(1, 3, 64, 64)
    ref.eval(), model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["main"], ref(x)["main"])


def test_gelan_c_components_match_published_size() -> None:
    """MODELS.md section 1: gelan-c unfused 25.499M, deploy 25.29M; per-layer spot checks."""
    model = mix("gelan-c-backbone", "gelan-c-pan", "ddetect", nc=80)
    layers = [count_params(m) for m in model.layers]
    assert layers[:3] == [1_856, 73_984, 212_864]
    # the authors' DFL is a frozen 1x1 conv with 16 weights; ours is a buffer, hence 16 fewer than 5,552,320
    assert count_params(model.main_head) == 5_552_320 - 16
    assert abs(count_params(model) - 25.499e6) < 1e3
    assert abs(count_params(copy.deepcopy(model).to_deploy()) - 25.29e6) / 25.29e6 < 1e-3
    if "gelan-c" in model_names():  # the whole-model file, where it exists, must be these parts
        parts = load_model_dict({"name": "c", "backbone": "gelan-c-backbone", "neck": "gelan-c-pan", "head": "ddetect"})
        assert _layer_specs(parts) == _layer_specs(load_model_dict("gelan-c"))


# -- the mix files ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MIX_FILES)
def test_mix_file_trains_one_step_deploys_and_exports(name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(name, nc=NC)
    assert model.strides == [8.0, 16.0, 32.0]
    batch = synthetic_batch(2, 128, 128)
    model.train()
    out = model(batch["img"].float() / 255)
    total = torch.zeros(())
    for tag, head in model.heads().items():
        loss, _ = LOSSES.get(head.loss)(head)(out[tag], batch)
        total = total + head.loss_weight * loss
    assert torch.isfinite(total) and total > 0
    total.backward()
    params = dict(model.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values()), "a dead branch"
    before = {k: p.detach().clone() for k, p in params.items()}
    lr = 0.01
    torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9).step()
    # every tensor whose step is above float32 resolution moved (a conv bias in front of a BatchNorm gets ~1e-9)
    movable = [k for k, p in params.items() if lr * p.grad.abs().max() > 1e-6 * (1 + p.abs().max())]
    assert all(not torch.equal(before[k], params[k]) for k in movable)
    last = len(model.layers) - 1  # the gradient reached the first layer, through neck and head
    assert any(k.startswith("layers.0.") for k in movable) and any(k.startswith(f"layers.{last}.") for k in movable)

    model.eval()
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        ref = model(x)["main"]
        deploy = copy.deepcopy(model).to_deploy()
        assert rel_diff(deploy(x)["main"], ref) < 1e-4
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(deploy, (x,), buf, dynamo=False, opset_version=17, input_names=["images"])
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (onnx_out,) = sess.run(None, {"images": x.numpy()})
    assert np.abs(onnx_out - ref.numpy()).max() <= 1e-4 * float(ref.abs().max())


def test_the_documented_example_mixes_exist() -> None:
    assert {"vovnet39-repgfpn", "lsnet-t-gelan", "gelan-s-fpan"} <= set(MIX_FILES) <= set(model_names())
    expected = {
        "vovnet39-repgfpn": ("vovnet39-backbone", "repgfpn-s", "ddetect"),
        "lsnet-t-gelan": ("lsnet-t-backbone", "gelan-t-pan", "ddetect"),
    }
    for name, parts in expected.items():
        cfg = read_yaml(MODELS_DIR / "mixes" / f"{name}.yaml")
        assert (cfg["backbone"], cfg["neck"], cfg["head"]) == parts


# -- parts that cannot combine ------------------------------------------------------------------------------------
def test_component_in_the_wrong_section_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"`backbone: repgfpn-t` names a neck component \(it tags P3/P4/P5"):
        mix("repgfpn-t", "gelan-t-pan", "ddetect")
    with pytest.raises(ConfigError, match=r"`neck: ddetect` names a head component"):
        mix("gelan-t-backbone", "ddetect", "ddetect")


def test_neck_whose_inputs_are_missing_is_refused() -> None:
    backbone = [  # a backbone that stops at stride 16 and so has no B5
        {"Conv": {"out": 16, "k": 3, "s": 2}},
        {"Conv": {"out": 16, "k": 3, "s": 2}},
        {"Conv": {"out": 32, "k": 3, "s": 2, "tag": "B3"}},
        {"Conv": {"out": 64, "k": 3, "s": 2, "tag": "B4"}},
    ]
    cfg = {"name": "short", "backbone": backbone, "neck": "gelan-t-pan", "head": "ddetect"}
    with pytest.raises(
        ConfigError, match=r"short: neck\[0\]: `from: B5` .*backbone must tag B3, B4, B5 .*\['B3', 'B4'\]"
    ):
        build_model(cfg)


def test_classifier_head_behind_a_neck_is_refused() -> None:
    cfg = {"name": "cls-on-neck", "backbone": "gelan-t-backbone", "neck": "gelan-t-pan"}
    cfg["head"] = [{"Classify": {"from": ["P3", "P4", "P5"]}}]
    with pytest.raises(
        ConfigError, match=r"head layer 22 \(Classify\): Classify is an image-classification head.*got 3"
    ):
        build_model(cfg)
