"""Checkpoints of the DAMO-YOLO authors' repository (tinyvision/DAMO-YOLO, T/S/M/L) -> ``damoyolo-t/s/m/l``.

Their trainer saves ``{'epoch', 'model': state_dict, 'optimizer', 'feature_loss'}`` (the EMA model's state dict
when EMA is on, as for every released file; released "clean" files hold ``model`` alone). The state dict is the
training form: every RepConv still has its 3x3 and 1x1 branches (``rbr_dense``, ``rbr_1x1``); a file saved
after their ``switch_to_deploy`` (``rbr_reparam``) is refused with one sentence.

Their modules and ours, part by part (``{i}``/``{j}``/``{k}`` are the same index on both sides):

| theirs | ours |
|---|---|
| ``backbone.block_list.0`` / ``backbone.csp_stage.0`` (Focus) | ``layers.0`` |
| ``backbone.block_list.{i}.block_list.{j}`` (T/S stage i, block or SPP j) | ``layers.{i}.blocks.{j}`` |
| ``backbone.csp_stage.{i}.convstem.{j}`` (M/L stage i, block j) | ``layers.{i}.blocks.{j}`` |
| ``csp_stage.{i}.downsampler / conv_start / conv_shortcut / conv_fuse / spp`` | ``layers.{i}.down / start / shortcut / merge / spp`` |
| block: ``conv1``, ``conv2.rbr_dense``, ``conv2.rbr_1x1``, ``residual_proj`` | ``conv1``, ``conv2.conv1``, ``conv2.conv2``, ``proj`` |
| SPP: ``conv1``, ``conv2`` | ``cv1``, ``cv2`` |
| ``neck.merge_3 / merge_4 / merge_5 / merge_7 / merge_6`` | the nodes tagged ``N5 / N4 / P3 / P4 / P5``, ``.stage`` |
| node: ``conv1``, ``conv2``, ``conv3``; ``convs.{k}.conv2`` (RepConv), ``convs.{k}.conv1`` | ``cv1``, ``cv2``, ``cv3``; ``blocks.{k}.rep``, ``blocks.{k}.conv`` |
| ``neck.bu_conv13 / bu_conv24 / bu_conv57 / bu_conv46 / bu_conv76`` (stride-2 convs) | ``resamplers.1`` of N5 / N4 / P4 / P5, ``resamplers.2`` of P5 |
| ``head.gfl_cls.{i}``, ``head.gfl_reg.{i}``, ``head.scales.{i}.scale`` | head ``cls.{i}``, ``reg.{i}``, ``scales.{i}`` |

A conv-BN is ``conv1``/``bn1`` in their backbone's plain convs and ``conv``/``bn`` elsewhere; ours is always
``conv``/``bn``. ``head.integral.project`` (the fixed GFL bin positions 0..16) is dropped: ours computes the
expectation itself. Their model reads 0..255 RGB pixels (no normalisation), ours 0..1, so the stem conv's
weight is multiplied by 255 (it is followed by BatchNorm with no bias in between: exact). Files from before
their v0.3.0 (March 2023, head ``legacy=True``) have one class channel more than classes (81 for COCO), which
their eval slices off: a class conv with ``nc + 1`` outputs loses its last one. A DDP ``module.`` prefix is
accepted. Any other key fails loudly.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from detector.convert.mapping import KeyMapping, UnmappedKey
from detector.errors import DetectorError
from detector.nn.repgfpn import GFPNNode
from detector.nn.zerohead import ZeroHead

PIXEL_SCALE = 255.0  # their input range 0..255, ours 0..1
STEM = re.compile(r"backbone\.(?:block_list|csp_stage)\.0\.conv\.conv\.weight")
LEGACY_CLS = re.compile(r"head\.gfl_cls\.\d+\.(?:weight|bias)")

# their neck node -> our tag; their stride-2 neck conv -> (our node tag, resampler index)
NODES = {"merge_3": "N5", "merge_4": "N4", "merge_5": "P3", "merge_7": "P4", "merge_6": "P5"}
DOWNS = {"bu_conv13": ("N5", 1), "bu_conv24": ("N4", 1), "bu_conv57": ("P4", 1), "bu_conv46": ("P5", 1),
         "bu_conv76": ("P5", 2)}  # fmt: skip
CSP_PARTS = {"downsampler": "down", "conv_start": "start", "conv_shortcut": "shortcut", "conv_fuse": "merge"}
FIXED = ("head.integral.project",)

_CONV_BN = r"(?P<cb>conv|bn)\.(?P<t>[^.]+)"  # ConvBNAct / conv_bn: .conv.weight, .bn.running_mean, ...
_CONV1_BN1 = r"(?P<cb>conv1|bn1)\.(?P<t>[^.]+)"  # their ConvKXBN: .conv1.weight, .bn1.bias, ...


def _cb(m: re.Match) -> str:
    """Our ``conv.<tensor>`` / ``bn.<tensor>`` for a matched conv-BN tail."""
    return {"conv1": "conv", "bn1": "bn"}.get(m["cb"], m["cb"]) + "." + m["t"]


def _rep(branch: str) -> str:
    return {"rbr_dense": "conv1", "rbr_1x1": "conv2"}[branch]


# one NAS residual block (ResConvBlock) or the SPPBottleneck sharing its list, relative to the block
_BLOCK_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(rf"conv1\.{_CONV1_BN1}"), lambda m: "conv1." + _cb(m)),
    (re.compile(rf"conv2\.(?P<b>rbr_dense|rbr_1x1)\.{_CONV_BN}"), lambda m: f"conv2.{_rep(m['b'])}." + _cb(m)),
    (re.compile(rf"residual_proj\.{_CONV1_BN1}"), lambda m: "proj." + _cb(m)),
    (re.compile(rf"conv(?P<n>[12])\.{_CONV_BN}"), lambda m: f"cv{m['n']}." + _cb(m)),  # SPPBottleneck
]

# one RepGFPN node (their CSPStage), relative to the node
_NODE_RULES: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(rf"conv(?P<n>[123])\.{_CONV_BN}"), lambda m: f"cv{m['n']}." + _cb(m)),
    (re.compile(rf"convs\.(?P<k>\d+)\.conv1\.{_CONV_BN}"), lambda m: f"blocks.{m['k']}.conv." + _cb(m)),
    (
        re.compile(rf"convs\.(?P<k>\d+)\.conv2\.(?P<b>rbr_dense|rbr_1x1)\.{_CONV_BN}"),
        lambda m: f"blocks.{m['k']}.rep.{_rep(m['b'])}." + _cb(m),
    ),
]


def _first(rules: list[tuple[re.Pattern, Callable[[re.Match], str]]], rest: str) -> str | None:
    for pattern, ours in rules:
        if m := pattern.fullmatch(rest):
            return ours(m)
    return None


def is_damoyolo(keys: list[str]) -> bool:
    """Whether a state dict has the DAMO-YOLO repository's layout (RepGFPN ``neck.merge_3``, ``head.gfl_cls``)."""
    keys = [_strip(k) for k in keys]
    return any(k.startswith("neck.merge_3.") for k in keys) and any(k.startswith("head.gfl_cls.") for k in keys)


def _strip(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _layer_indices(model: nn.Module) -> tuple[int, dict[str, int], int]:
    """Our backbone's layer count, the neck nodes' indices by tag, and the head's index."""
    specs = model.specs
    tags = {s.tag: s.index for s in specs if s.tag}
    missing = [t for t in NODES.values() if not isinstance(model.layers[tags[t]] if t in tags else None, GFPNNode)]
    if missing or not isinstance(model.main_head, ZeroHead):
        what = f"RepGFPN nodes tagged {', '.join(missing)}" if missing else "ZeroHead"
        raise DetectorError(
            f"damoyolo-official: our model has no {what}; DAMO-YOLO checkpoints go into damoyolo-t/s/m/l"
        )
    n_backbone = sum(1 for s in specs if s.section == "backbone")
    return n_backbone, {t: tags[t] for t in NODES.values()}, model.main_index


def damoyolo_mapping(keys: list[str], model: nn.Module) -> KeyMapping:
    """The mapping of one upstream DAMO-YOLO state dict (``keys``) onto our ``model`` (see the module table)."""
    deploy = [k for k in keys if ".rbr_reparam." in k]
    if deploy:
        raise DetectorError(
            f"damoyolo-official: the checkpoint holds the fused deploy form ({deploy[0]}, ...); "
            "convert the training-form file (RepConv branches rbr_dense / rbr_1x1), as released"
        )
    n_backbone, node, head = _layer_indices(model)

    def backbone(key: str, rest: str) -> str:
        if m := re.fullmatch(rf"(?:block_list|csp_stage)\.0\.conv\.{_CONV_BN}", rest):
            return "layers.0.conv." + _cb(m)
        m = re.fullmatch(r"(?:block_list\.(?P<i>\d+)\.block_list|csp_stage\.(?P<c>\d+)\.convstem)\.(?P<j>\d+)\.(?P<r>.+)", rest)  # fmt: skip
        if m and (ours := _first(_BLOCK_RULES, m["r"])) is not None:
            i = int(m["i"] or m["c"])
            if 0 < i < n_backbone:
                return f"layers.{i}.blocks.{m['j']}.{ours}"
        if (m := re.fullmatch(rf"csp_stage\.(?P<i>\d+)\.(?P<p>\w+)\.conv\.{_CONV1_BN1}", rest)) and m["p"] in CSP_PARTS:
            if 0 < int(m["i"]) < n_backbone:
                return f"layers.{m['i']}.{CSP_PARTS[m['p']]}." + _cb(m)
        if m := re.fullmatch(rf"csp_stage\.(?P<i>\d+)\.spp\.conv(?P<n>[12])\.{_CONV_BN}", rest):
            if 0 < int(m["i"]) < n_backbone:
                return f"layers.{m['i']}.spp.cv{m['n']}." + _cb(m)
        raise UnmappedKey(key)

    def neck(key: str, rest: str) -> str:
        part, _, tail = rest.partition(".")
        if part in DOWNS and (m := re.fullmatch(_CONV_BN, tail)):
            tag, r = DOWNS[part]
            return f"layers.{node[tag]}.resamplers.{r}." + _cb(m)
        if part in NODES and (ours := _first(_NODE_RULES, tail)) is not None:
            return f"layers.{node[NODES[part]]}.stage.{ours}"
        raise UnmappedKey(key)

    def head_key(key: str, rest: str) -> str:
        if m := re.fullmatch(r"gfl_(?P<b>cls|reg)\.(?P<i>\d+)\.(?P<t>weight|bias)", rest):
            return f"layers.{head}.{m['b']}.{m['i']}.{m['t']}"
        if m := re.fullmatch(r"scales\.(?P<i>\d+)\.scale", rest):
            return f"layers.{head}.scales.{m['i']}"
        raise UnmappedKey(key)

    parts = {"backbone": backbone, "neck": neck, "head": head_key}

    def map_key(key: str) -> str:
        part, _, rest = _strip(key).partition(".")
        if part not in parts:
            raise UnmappedKey(key)
        return parts[part](key, rest)

    def value(key: str, tensor: torch.Tensor) -> torch.Tensor:
        key = _strip(key)
        if STEM.fullmatch(key):
            return tensor * PIXEL_SCALE
        if LEGACY_CLS.fullmatch(key) and tensor.shape[0] == model.nc + 1:
            return tensor[: model.nc]  # a "legacy" head's extra class channel, which their eval slices off
        return tensor

    return KeyMapping(
        "damoyolo-official",
        map_key,
        drop=lambda key: _strip(key) in FIXED,
        classifier=(f"layers.{head}.cls.",),
        prepare=lambda state: {k: value(k, v) for k, v in state.items()},
    )
