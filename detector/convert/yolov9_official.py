"""Checkpoints of the YOLOv9 paper's repository (``yolov9-t/s/m/c/e.pt``, ``gelan-t/s/m/c/e.pt``) -> ours.

Their layers are ``model.{i}`` in the order of their YAML; inside a layer the block names are the same as ours
(``cv1``, ``cv2.0.m.0.cv1.conv1``, CBLinear's ``conv``, ...), so a layer maps by its index alone, through a
``Layout`` (``yolov9_layout``: their index -> ours):

- t/s/m/c follow one rule: their YAMLs for yolov9-m/c open with a parameter-free ``Silence`` layer (their keys
  then start at ``model.1``), ours do not; their backbone + neck come first (ours ``0 .. K-1``, ``K`` = our main
  head); in a YOLOv9 file the auxiliary branch follows and then one ``DualDDetect``; ours puts the main head at
  ``K``, then the auxiliary layers (one index later than theirs), then the auxiliary head;
- yolov9-e / gelan-e (two backbones joined by CBLinear/CBFuse) have hand-written tables: their yolov9-e puts the
  auxiliary FPN (29-35) before the main neck (36-48), ours after the main head;
- their detection layer: ``cv2``/``cv3`` (box/class branches; of the auxiliary head in a ``DualDDetect``),
  ``cv4``/``cv5`` (main head of a ``DualDDetect``) and the fixed ``dfl``/``dfl2`` convs (ours computes the DFL
  expectation, so they are dropped). Into a GELAN model, a YOLOv9 file's auxiliary tensors are dropped.
"""

from __future__ import annotations

import re

from torch import nn

from detector.convert.mapping import KeyMapping, UnmappedKey
from detector.convert.yolov9_layout import find_layout

LAYER_KEY = re.compile(r"model\.(\d+)\.(.+)")
"""``model.{i}.{rest}``: a layer's tensor in a YOLOv9-style state dict (this repository's and Ultralytics')."""


def first_and_last_layer(keys: list[str], what: str) -> tuple[int, int]:
    """Their first layer index with tensors (0, or 1 after a parameter-free first layer) and their last (the
    detection layer); ``what`` names the source in the error for anything else."""
    indices = sorted({int(m[1]) for k in keys if (m := LAYER_KEY.fullmatch(k))})
    if not indices:
        raise UnmappedKey(f"no model.N keys: not {what} checkpoint")
    if indices[0] not in (0, 1):
        raise UnmappedKey(f"model.{indices[0]}: their first layer with tensors is neither 0 nor 1")
    return indices[0], indices[-1]


def head_indices(model: nn.Module) -> tuple[int, int | None]:
    """Our main head's layer index and the auxiliary head's (None without one)."""
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    heads = model.heads()
    main = index[id(model.main_head)]
    aux = [index[id(h)] for h in heads.values() if h is not model.main_head]
    return main, (aux[0] if aux else None)


def yolov9_mapping(keys: list[str], model: nn.Module) -> KeyMapping:
    """The mapping of one upstream YOLOv9/GELAN state dict (``keys``) onto our ``model``."""
    first, detect = first_and_last_layer(keys, "a YOLOv9 repository")
    dual = any(k.startswith(f"model.{detect}.cv4.") for k in keys)
    main, aux = head_indices(model)
    layout = find_layout(first, detect, dual, main)

    branch = {"cv2": (aux, "box"), "cv3": (aux, "cls"), "cv4": (main, "box"), "cv5": (main, "cls")} if dual else {
        "cv2": (main, "box"), "cv3": (main, "cls")}  # fmt: skip

    def drop(key: str) -> bool:
        m = LAYER_KEY.fullmatch(key)
        if m is None:
            return False
        i, rest = int(m[1]), m[2]
        if i == detect:
            part = rest.partition(".")[0]
            return part in ("dfl", "dfl2") or (part in branch and branch[part][0] is None)
        return aux is None and i in layout.aux  # a YOLOv9 auxiliary layer going into a GELAN model

    def map_key(key: str) -> str:
        m = LAYER_KEY.fullmatch(key)
        if m is None:
            raise UnmappedKey(key)
        i, rest = int(m[1]), m[2]
        if i == detect:
            part, _, tail = rest.partition(".")
            if part not in branch or not tail:
                raise UnmappedKey(key)
            return f"layers.{branch[part][0]}.{branch[part][1]}.{tail}"
        if i not in layout.layers:
            raise UnmappedKey(key)
        return f"layers.{layout.layers[i]}.{rest}"

    classifier = tuple(f"layers.{h}.cls." for h in (main, aux) if h is not None)
    return KeyMapping("yolov9-official", map_key, drop=drop, classifier=classifier)
