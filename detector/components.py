"""Component files (``models/components/NAME.yaml``): one section's layer list, and which section it fills.

A component's kind follows from the tag contract of ``docs/interfaces.md``, so no file needs a label and a new
file is recognised as soon as it exists:

* ``head``: it holds a detection/classification head block (a ``Head`` subclass);
* ``neck``: it tags ``P3``, ``P4`` and ``P5`` (reading the backbone's ``B`` tags);
* ``backbone``: it tags ``B3``, ``B4`` and ``B5`` (its stride 8/16/32 outputs).

A file is either a bare list of layers or a one-key mapping ``{backbone|neck|head|layers: [...]}``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import detector.nn  # noqa: F401  (registers every block, so heads are recognised)
from detector.config import ConfigError, read_yaml
from detector.nn.block import Head
from detector.registry import BLOCKS
from detector.zoo import MODELS_DIR, find_yaml

KINDS = ("backbone", "neck", "head")
BACKBONE_TAGS = ("B3", "B4", "B5")
NECK_TAGS = ("P3", "P4", "P5")
COMPONENTS_DIR = MODELS_DIR / "components"
_LIST_KEYS = (*KINDS, "auxiliary", "layers")


def read_component(name: str | Path) -> tuple[Path, list[dict]]:
    """Find a component file by zoo name or path and return ``(path, layers)``."""
    path = find_yaml(name, what="component")
    data = read_yaml(path)
    if isinstance(data, dict):
        keys = [k for k in data if k in _LIST_KEYS]
        if len(keys) != 1 or not isinstance(data[keys[0]], list):
            raise ConfigError(f"{path}: a component file holds one list of layers, bare or under one of {_LIST_KEYS}")
        data = data[keys[0]]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{path}: a component file must hold a non-empty list of layers")
    return path, data


def kind_of_layers(layers: list[dict]) -> str | None:
    """``backbone``, ``neck`` or ``head`` by the tag contract (see the module docstring); None if it fits none."""
    blocks, tags = [], set()
    for layer in layers:
        if isinstance(layer, dict) and len(layer) == 1:
            ((block, args),) = layer.items()
            blocks.append(str(block))
            if isinstance(args, dict) and args.get("tag") is not None:
                tags.add(str(args["tag"]))
    if any(b in BLOCKS and issubclass(BLOCKS.get(b), Head) for b in blocks):
        return "head"
    if tags.issuperset(NECK_TAGS):
        return "neck"
    if tags.issuperset(BACKBONE_TAGS):
        return "backbone"
    return None


def describe_kind(kind: str | None) -> str:
    """Why a component is of ``kind``, for error messages."""
    return {
        "head": "it holds a head block",
        "neck": f"it tags {'/'.join(NECK_TAGS)}",
        "backbone": f"it tags {'/'.join(BACKBONE_TAGS)}",
    }.get(kind or "", "it follows none of the backbone/neck/head tag contracts")


def component_kind(name: str | Path) -> str | None:
    """Kind of the component file ``name`` (zoo name or path)."""
    return kind_of_layers(read_component(name)[1])


@cache
def component_names(kind: str | None = None) -> list[str]:
    """Every component in ``models/components`` (sorted names), or only those of ``kind``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; choose one of {KINDS}")
    names = sorted(p.stem for p in COMPONENTS_DIR.glob("*.yaml"))
    return [n for n in names if kind is None or component_kind(n) == kind]
