"""The LSNet authors' ImageNet checkpoints (``lsnet_t/s/b.pth``; CVPR 2025 "LSNet: See Large, Focus Small") ->
our ``lsnet-t/s/b-cls``, and through them the LSNet backbone of any detector (``weights=``).

Their release files are ``torch.save({'model': state_dict})`` (training checkpoints add ``model_ema``,
``optimizer``, ``args``, ...; their evaluation loads ``model``, and so does ``read_foreign``). Their names -> ours:

| theirs | ours |
|---|---|
| ``patch_embed.{0,2,4}`` (Conv2d_BN, ReLUs at 1 and 3) | ``layers.0.conv{1,2,3}`` |
| ``blocks{s}.{j}`` (stage ``s`` = 1..4, transitions first) | ``layers.{s}.blocks.{j}`` |
| Conv2d_BN ``.c`` / ``.bn`` | ``.conv`` / ``.bn`` |
| ``mixer.conv``, ``mixer.conv1`` (RepVGG-DW), ``se.fc1``, ``se.fc2`` | ``mixer.0.conv``, ``mixer.0.conv1``, ``mixer.1.reduce``, ``mixer.1.expand`` |
| ``mixer.lkp.*``, ``mixer.bn`` (LSConv) | the same |
| ``mixer.m.{qkv,dw,attention_biases}``, ``mixer.m.proj.1`` (attention in a Residual) | ``mixer.{qkv,dw,attention_biases}``, ``mixer.proj`` |
| ``ffn.m.pw{1,2}`` (FFN in a Residual) | ``ffn.pw{1,2}`` |
| ``head.bn``, ``head.l`` (BN + Linear) | ``layers.5.norm``, ``layers.5.linear`` |

``mixer.m.attention_bias_idxs`` (their integer index of ``(|dy|, |dx|)`` into the bias table, row-major: the
same order our ``RelPosAttention`` reads its table in) is derived, not learned: dropped. The distilled files
(``lsnet_*_distill.pth``) hold a second classifier ``head_dist`` whose logits their evaluation averages with
``head``'s; ``fold_distilled_heads`` turns the two into the one BN + Linear of ours with the same output.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from detector.convert.mapping import KeyMapping, UnmappedKey
from detector.errors import DetectorError
from detector.nn.classify import Classify

BN_EPS = 1e-5  # their BatchNorm1d (and ours in Classify): PyTorch's default
_BN = ("weight", "bias", "running_mean", "running_var")

_STEM = re.compile(r"patch_embed\.([024])\.(.+)")
_STAGE = re.compile(r"blocks([1-4])\.(\d+)\.(.+)")
_HEAD = {"head.bn.": "layers.5.norm.", "head.l.": "layers.5.linear."}
_BLOCK_PARTS = (  # their prefix inside a block -> ours; the tail then maps through _conv_bn
    ("mixer.conv.", "mixer.0.conv."),
    ("mixer.conv1.", "mixer.0.conv1."),
    ("mixer.lkp.", "mixer.lkp."),
    ("mixer.m.proj.1.", "mixer.proj."),
    ("mixer.m.qkv.", "mixer.qkv."),
    ("mixer.m.dw.", "mixer.dw."),
    ("ffn.m.pw1.", "ffn.pw1."),
    ("ffn.m.pw2.", "ffn.pw2."),
)
_BLOCK_TENSORS = {  # whole keys inside a block that are not a Conv2d_BN
    **{f"se.fc{i}.{p}": f"mixer.1.{ours}.{p}" for i, ours in ((1, "reduce"), (2, "expand")) for p in ("weight", "bias")},
    **{f"mixer.bn.{p}": f"mixer.bn.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")},
    "mixer.m.attention_biases": "mixer.attention_biases",
}  # fmt: skip
_LKP_PLAIN = re.compile(r"cv4\.(weight|bias)|norm\.(weight|bias)")  # LKP's biased 1x1 and its GroupNorm


def _conv_bn(tail: str, key: str) -> str:
    """``c.weight`` -> ``conv.weight``; ``bn.*`` stays: the inside of one of their Conv2d_BN."""
    if tail == "c.weight":
        return "conv.weight"
    if tail.startswith("bn.") and tail[3:] in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        return tail
    raise UnmappedKey(key)


def _block(rest: str, key: str) -> str:
    """A key inside one of their stage entries (a transition Conv2d_BN or a Block), in our names."""
    if rest in _BLOCK_TENSORS:
        return _BLOCK_TENSORS[rest]
    for theirs, ours in _BLOCK_PARTS:
        if rest.startswith(theirs):
            tail = rest[len(theirs) :]
            if theirs == "mixer.lkp.":
                if _LKP_PLAIN.fullmatch(tail):
                    return ours + tail
                if m := re.fullmatch(r"(cv[123])\.(.+)", tail):
                    return f"{ours}{m[1]}." + _conv_bn(m[2], key)
                raise UnmappedKey(key)
            return ours + _conv_bn(tail, key)
    return _conv_bn(rest, key)  # a transition: DW3x3 s2 or 1x1 Conv2d_BN


def _folded_linear(state: dict[str, Tensor], prefix: str) -> tuple[Tensor, Tensor]:
    """Their ``BN_Linear`` at ``prefix`` (BatchNorm1d then Linear, eval mode) as one affine map ``(W, c)``,
    in float64: ``W = L.weight * s``, ``c = L.bias + L.weight @ (bn.bias - mean * s)``, ``s = bn.weight /
    sqrt(var + eps)``."""
    need = [f"{prefix}.bn.{p}" for p in _BN] + [f"{prefix}.l.weight", f"{prefix}.l.bias"]
    if missing := [k for k in need if k not in state]:
        raise UnmappedKey(f"a distilled LSNet checkpoint without {', '.join(missing)}: not their BN_Linear classifier")
    w, b, mean, var = (state[f"{prefix}.bn.{p}"].double() for p in _BN)
    lin_w, lin_b = state[f"{prefix}.l.weight"].double(), state[f"{prefix}.l.bias"].double()
    scale = w / torch.sqrt(var + BN_EPS)
    return lin_w * scale[None, :], lin_b + lin_w @ (b - mean * scale)


def fold_distilled_heads(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A distilled checkpoint's classifiers ``head`` and ``head_dist`` -> one ``head`` with their evaluation
    output ``(head(x) + head_dist(x)) / 2``: each BatchNorm folded into its Linear, the two averaged, and an
    identity BatchNorm (mean 0, var 1, weight sqrt(1 + eps), bias 0) in front. Other state dicts pass unchanged."""
    if not any(k.startswith("head_dist.") for k in state):
        return state
    (w1, c1), (w2, c2) = _folded_linear(state, "head"), _folded_linear(state, "head_dist")
    c = w1.shape[1]
    rest = {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist."))}
    head = {
        "head.bn.weight": torch.full((c,), math.sqrt(1.0 + BN_EPS)),
        "head.bn.bias": torch.zeros(c),
        "head.bn.running_mean": torch.zeros(c),
        "head.bn.running_var": torch.ones(c),
        "head.bn.num_batches_tracked": torch.zeros((), dtype=torch.long),
        "head.l.weight": ((w1 + w2) / 2).float(),
        "head.l.bias": ((c1 + c2) / 2).float(),
    }
    return {**rest, **head}


def lsnet_mapping(keys: list[str], model: nn.Module | None = None) -> KeyMapping:
    """The key mapping of one LSNet state dict (``keys``) onto our ``lsnet-*-cls`` (``model``, when given, must be
    a classifier); a distilled one's two classifiers are folded into one first (``fold_distilled_heads``)."""
    if model is not None and not isinstance(getattr(model, "main_head", None), Classify):
        raise DetectorError(
            f"an LSNet ImageNet checkpoint converts into lsnet-t-cls / lsnet-s-cls / lsnet-b-cls, not into the "
            f"detector {getattr(model, 'yaml', {}).get('name', '')!r}; convert it into the -cls model of its scale "
            f"and start the detector from that file: detector train model=... weights=CONVERTED.pt"
        )

    def map_key(key: str) -> str:
        for theirs, ours in _HEAD.items():
            if key.startswith(theirs) and key[len(theirs) :] in ("weight", "bias", "running_mean", "running_var",
                                                                 "num_batches_tracked"):  # fmt: skip
                return ours + key[len(theirs) :]
        if m := _STEM.fullmatch(key):
            return f"layers.0.conv{int(m[1]) // 2 + 1}." + _conv_bn(m[2], key)
        if m := _STAGE.fullmatch(key):
            return f"layers.{m[1]}.blocks.{m[2]}." + _block(m[3], key)
        raise UnmappedKey(key)

    def drop(key: str) -> bool:
        return bool(_STAGE.fullmatch(key)) and key.endswith(".mixer.m.attention_bias_idxs")

    return KeyMapping("lsnet-official", map_key, drop=drop, classifier=("layers.5.",), prepare=fold_distilled_heads)
