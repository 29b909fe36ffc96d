"""Key mappings from other frameworks' state dicts to ours, and applying one to a model of ours.

A ``KeyMapping`` turns each of their keys into ours, or raises ``UnmappedKey`` for a key it does not know (so a
checkpoint of another architecture or version fails loudly instead of loading half its tensors). ``apply``
then checks the result against our model: every mapped key must exist there with the same shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from detector.errors import DetectorError


class UnmappedKey(DetectorError):
    """A key of the source checkpoint that the mapping has no rule for."""


@dataclass(frozen=True)
class KeyMapping:
    """``map_key(their_key) -> our_key``; ``drop(their_key)`` is True for tensors with no counterpart by design
    (e.g. a YOLOv9 auxiliary branch going into a GELAN model); ``classifier`` are our key prefixes of the class
    branches, which a checkpoint for another class count may not fill; ``prepare(their_state) -> their_state``
    rewrites tensors that have no one-to-one counterpart before the keys are mapped (e.g. LSNet's two distilled
    classifiers folded into the one of ours, or a stem conv of a model fed 0..255 pixels scaled for our 0..1)."""

    name: str
    map_key: Callable[[str], str]
    drop: Callable[[str], bool] = field(default=lambda key: False)
    classifier: tuple[str, ...] = ()
    prepare: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = field(default=lambda state: state)


@dataclass
class LoadReport:
    """What loading did, as lists of our keys: ``loaded``; ``reinitialised`` (class branches whose shape changed
    with the class count); ``kept`` (ours the checkpoint does not hold, left as initialised); ``ignored``, the
    checkpoint's keys with no place in our model; and ``resized``, those of ``loaded`` that their module resized
    to this model's size (``resize_state``, e.g. an attention bias table for another map size)."""

    loaded: list[str]
    reinitialised: list[str]
    kept: list[str]
    ignored: list[str]
    resized: list[str] = field(default_factory=list)

    def summary(self) -> str:
        resized = f" ({len(self.resized)} of them resized to this model)" if self.resized else ""
        return (
            f"{len(self.loaded)} tensors loaded{resized}, {len(self.reinitialised)} re-initialised (class count "
            f"changed), {len(self.kept)} not in the checkpoint, {len(self.ignored)} ignored"
        )


def map_state_dict(mapping: KeyMapping, theirs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Their state dict in our keys, and the keys dropped by design. Raises ``UnmappedKey`` listing every key
    no rule knows (at most 10 shown)."""
    ours, dropped, unknown = {}, [], []
    for k, v in mapping.prepare(theirs).items():
        if mapping.drop(k):
            dropped.append(k)
            continue
        try:
            ours[mapping.map_key(k)] = v
        except UnmappedKey:
            unknown.append(k)
    if unknown:
        raise UnmappedKey(
            f"{mapping.name}: {len(unknown)} key(s) of the checkpoint have no mapping (another architecture or "
            f"version?): {', '.join(unknown[:10])}"
        )
    return ours, dropped


def apply(mapping: KeyMapping, theirs: dict[str, torch.Tensor], model: nn.Module, strict: bool = True) -> LoadReport:
    """Load ``theirs`` into ``model`` through ``mapping``.

    ``strict``: every tensor of ours must be filled (a whole-model conversion); otherwise ours that the
    checkpoint does not hold, and class-branch tensors whose shape changed with the class count, keep their
    initialisation. A mapped key missing from our model, or a shape that differs outside the class branches,
    is always an error.
    """
    return load_mapped(mapping, *map_state_dict(mapping, theirs), model, strict)


def load_mapped(
    mapping: KeyMapping, mapped: dict[str, torch.Tensor], dropped: list[str], model: nn.Module, strict: bool = True
) -> LoadReport:
    """``apply`` for a state dict already in our keys (``map_state_dict``'s result)."""
    own = model.state_dict()
    missing_here = [k for k in mapped if k not in own]
    if missing_here:
        raise DetectorError(
            f"{mapping.name}: {len(missing_here)} mapped key(s) are not in our model: {missing_here[:10]}"
        )
    load, reinit = {}, []
    for k, v in mapped.items():
        if own[k].shape == v.shape:
            load[k] = v.to(own[k].dtype)
        elif k.startswith(mapping.classifier):
            reinit.append(k)
        else:
            raise DetectorError(
                f"{mapping.name}: {k} has shape {tuple(v.shape)} in the checkpoint but {tuple(own[k].shape)} here"
            )
    kept = [k for k in own if k not in load and k not in reinit]
    if strict and kept:
        raise DetectorError(f"{mapping.name}: the checkpoint does not fill {len(kept)} tensor(s) of ours: {kept[:10]}")
    model.load_state_dict(load, strict=False)
    return LoadReport(loaded=sorted(load), reinitialised=sorted(reinit), kept=kept, ignored=sorted(dropped))
