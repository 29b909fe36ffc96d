"""timm's VoVNet / eSE-VoVNet ImageNet checkpoints -> our VoVNet backbones and ``-cls`` models.

timm (Apache-2.0) names the stem ``stem.{0,1,2}``, the stages ``stages.{0..3}.blocks.{j}`` with ``conv_reduction``,
``conv_mid.{i}``, ``conv_concat`` and ``attn.fc``, and the classifier ``head.fc``; a separable layer (depthwise
models) is ``conv_dw`` -> ``conv_pw`` -> ``bn``. Ours: ``layers.0.conv{1,2,3}``, ``layers.{1..4}.blocks.{j}`` with
``reduce``, ``convs.{i}``, ``aggregate``, ``ese.fc``, and ``layers.5.linear``; separable layers are
``dw`` -> ``pw.conv`` -> ``pw.bn``. Which of their layers are separable is read from their keys (``conv_dw``).

| timm model | ours |
|---|---|
| ``vovnet39a``, ``vovnet57a`` | ``vovnet39-v1-cls``, ``vovnet57-v1-cls`` |
| ``ese_vovnet19b_dw``, ``ese_vovnet19b_slim_dw`` | ``vovnet19-dw-cls``, ``vovnet19-slim-dw-cls`` |
| ``ese_vovnet39b``, ``ese_vovnet57b`` | ``ese-vovnet39b-cls``, ``ese-vovnet57b-cls`` (eSE in each stage's last module) |
"""

from __future__ import annotations

import re

from detector.convert.mapping import KeyMapping, UnmappedKey

_SEPARABLE = {"conv_dw.": "dw.", "conv_pw.": "pw.conv.", "bn.": "pw.bn."}
_BLOCK_PARTS = (("conv_reduction.", "reduce."), ("conv_concat.", "aggregate."), ("attn.fc.", "ese.fc."))


def _layer(rest: str, separable: bool, key: str) -> str:
    """The tail of a conv-norm-act (``conv.*``, ``bn.*``) or separable layer key, in our names."""
    if not separable:
        return rest
    for theirs, ours in _SEPARABLE.items():
        if rest.startswith(theirs):
            return ours + rest[len(theirs) :]
    raise UnmappedKey(key)


def timm_vovnet_mapping(keys: list[str], model=None) -> KeyMapping:
    """The key mapping for one timm VoVNet checkpoint (``keys``: its state-dict keys; ``model`` is not needed)."""
    separable = {k.split(".conv_dw.")[0] for k in keys if ".conv_dw." in k}

    def map_key(key: str) -> str:
        if key.startswith("head.fc."):
            return "layers.5.linear." + key[len("head.fc.") :]
        if m := re.fullmatch(r"stem\.(\d)\.(.+)", key):
            prefix = f"stem.{m[1]}"
            return f"layers.0.conv{int(m[1]) + 1}." + _layer(m[2], prefix in separable, key)
        if m := re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(.+)", key):
            ours, rest = f"layers.{int(m[1]) + 1}.blocks.{m[2]}.", m[3]
            for theirs, mine in _BLOCK_PARTS:
                if rest.startswith(theirs):
                    return ours + mine + rest[len(theirs) :]
            if mm := re.fullmatch(r"conv_mid\.(\d+)\.(.+)", rest):
                prefix = f"stages.{m[1]}.blocks.{m[2]}.conv_mid.{mm[1]}"
                return ours + f"convs.{mm[1]}." + _layer(mm[2], prefix in separable, key)
        raise UnmappedKey(key)

    return KeyMapping("timm-vovnet", map_key, classifier=("layers.5.",))
