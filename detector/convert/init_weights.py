"""``detector train ... weights=PATH``: start a model from a checkpoint of ours (trained, or made by
``detector convert``), with a report of what was loaded, what was re-initialised and what was ignored.

Tensors are matched by name. A tensor whose shape changed because the class count changed (found by building
the model once more with another class count on the meta device, so no head needs a hand-written list) keeps
its fresh initialisation; a tensor whose module can resize it (``resize_state``: a size that is a setting of the
layer, e.g. LSNet's attention bias table) is resized and reported; any other shape change is an error, since it
means a different architecture.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from detector.checkpoint import load_checkpoint
from detector.convert.class_count import class_dependent_keys
from detector.convert.mapping import LoadReport
from detector.errors import DetectorError


def _class_count(ckpt: dict) -> int | None:
    nc = (ckpt.get("model_yaml") or {}).get("nc")
    return int(nc) if nc is not None else (len(ckpt["names"]) if ckpt.get("names") else None)


def load_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Load the (EMA) weights of checkpoint ``path`` into ``model`` by name; see the module docstring."""
    if not Path(path).is_file():
        raise DetectorError(f"weights={path}: no such file")
    try:
        ckpt = load_checkpoint(path)
    except DetectorError as e:
        raise DetectorError(
            f"weights={path}: {e}; convert another framework's file first: detector convert {path} model=NAME"
        ) from None
    if ckpt.get("deploy"):
        raise DetectorError(
            f"weights={path}: holds the fused deploy form, which cannot be trained; use the training checkpoint"
        )
    theirs: dict[str, torch.Tensor] = ckpt["model"]
    own = model.state_dict()
    by_class = class_dependent_keys(model.yaml, _class_count(ckpt))
    load, reinit, resized, wrong = {}, [], [], []
    for k, v in theirs.items():
        if k not in own:
            continue
        if own[k].shape == v.shape:
            load[k] = v.to(own[k].dtype)
        elif k in by_class:
            reinit.append(k)
        elif (fitted := _resized(model, k, v, own[k].shape)) is not None:
            load[k] = fitted.to(own[k].dtype)
            resized.append(k)
        else:
            wrong.append(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}")
    if wrong:
        raise DetectorError(
            f"weights={path}: {len(wrong)} tensor(s) differ in shape from this model (another architecture?): {wrong[:5]}"
        )
    if not load:
        raise DetectorError(f"weights={path}: no tensor of this checkpoint fits the model (another architecture?)")
    model.load_state_dict(load, strict=False)
    kept = [k for k in own if k not in load and k not in reinit]
    return LoadReport(sorted(load), sorted(reinit), kept, sorted(k for k in theirs if k not in own), sorted(resized))


def _resized(model: nn.Module, key: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """``tensor`` fitted to ``shape`` by the module that owns ``key``, when that module defines
    ``resize_state(name, tensor)`` for it (a size that is a setting of the layer, not another architecture, such
    as LSNet's attention bias table for a 4x4 vs a 20x20 map); None otherwise."""
    owner, _, name = key.rpartition(".")
    resize = getattr(model.get_submodule(owner), "resize_state", None)
    fitted = resize(name, tensor) if resize is not None else None
    return fitted if fitted is not None and fitted.shape == shape else None
