"""Checkpoints of the YOLOv9 paper's repository (``yolov9-t/s/m/c.pt``, ``gelan-t/s/m/c.pt``) -> ours.

Their layers are ``model.{i}`` in the order of their YAML; inside a layer the block names are the same as ours
(``cv1``, ``cv2.0.m.0.cv1.conv1``, ...), so a layer maps by its index alone:

- their YAMLs for yolov9-m/c open with a parameter-free ``Silence`` layer (their keys then start at
  ``model.1``), ours do not: their index ``i`` is our ``i - s`` with ``s`` = 1 when ``model.0`` holds no tensor;
- their backbone + neck come first (ours ``0 .. K-1``, ``K`` = our main head); in a YOLOv9 file the auxiliary
  branch follows and then one ``DualDDetect``; ours puts the main head at ``K``, then the auxiliary layers
  (one index later than theirs), then the auxiliary head;
- their detection layer: ``cv2``/``cv3`` (box/class branches; of the auxiliary head in a ``DualDDetect``),
  ``cv4``/``cv5`` (main head of a ``DualDDetect``) and the fixed ``dfl``/``dfl2`` convs (ours computes the DFL
  expectation, so they are dropped). Into a GELAN model, a YOLOv9 file's auxiliary tensors are dropped.

yolov9-e / gelan-e (whose CB-backbone order differs from ours) are not mapped yet: they fail with UnmappedKey.
"""

from __future__ import annotations

import re

from torch import nn

from detector.convert.mapping import KeyMapping, UnmappedKey

_LAYER = re.compile(r"model\.(\d+)\.(.+)")


def head_indices(model: nn.Module) -> tuple[int, int | None]:
    """Our main head's layer index and the auxiliary head's (None without one)."""
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    heads = model.heads()
    main = index[id(model.main_head)]
    aux = [index[id(h)] for h in heads.values() if h is not model.main_head]
    return main, (aux[0] if aux else None)


def yolov9_mapping(keys: list[str], model: nn.Module) -> KeyMapping:
    """The mapping of one upstream YOLOv9/GELAN state dict (``keys``) onto our ``model``."""
    indices = sorted({int(m[1]) for k in keys if (m := _LAYER.fullmatch(k))})
    if not indices:
        raise UnmappedKey("no model.N keys: not a YOLOv9 repository checkpoint")
    shift = 0 if indices[0] == 0 else 1
    detect = indices[-1]
    dual = any(k.startswith(f"model.{detect}.cv4.") for k in keys)
    main, aux = head_indices(model)
    if shift and indices[0] != 1:
        raise UnmappedKey(f"model.{indices[0]}: their first layer with tensors is neither 0 nor 1")

    branch = {"cv2": (aux, "box"), "cv3": (aux, "cls"), "cv4": (main, "box"), "cv5": (main, "cls")} if dual else {
        "cv2": (main, "box"), "cv3": (main, "cls")}  # fmt: skip

    def drop(key: str) -> bool:
        m = _LAYER.fullmatch(key)
        if m is None:
            return False
        i, rest = int(m[1]), m[2]
        if i == detect:
            part = rest.split(".", 1)[0]
            return part in ("dfl", "dfl2") or (part in branch and branch[part][0] is None)
        return aux is None and i - shift >= main  # a YOLOv9 auxiliary layer going into a GELAN model

    def map_key(key: str) -> str:
        m = _LAYER.fullmatch(key)
        if m is None:
            raise UnmappedKey(key)
        i, rest = int(m[1]), m[2]
        if i == detect:
            part, tail = rest.split(".", 1)
            if part not in branch:
                raise UnmappedKey(key)
            return f"layers.{branch[part][0]}.{branch[part][1]}.{tail}"
        j = i - shift
        return f"layers.{j if j < main else j + 1}.{rest}"

    classifier = tuple(f"layers.{h}.cls." for h in (main, aux) if h is not None)
    return KeyMapping("yolov9-official", map_key, drop=drop, classifier=classifier)
