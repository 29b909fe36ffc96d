"""Model YAML -> ``DetectionModel``: a flat graph of registered blocks addressed by tags.

A model file has ``nc`` and the sections ``backbone``, ``neck``, ``head`` and optional ``auxiliary``. Each
section is a list of layers ``{BlockName: {args..., from: SRC, tag: NAME}}``, or the name of a component file
(``backbone: vovnet39-backbone``) holding such a list. ``from`` is ``-1`` (previous layer, the default), a
negative offset, a tag, ``input`` (the image) or a list of those. Input widths and strides are inferred.

Heads (subclasses of ``Head``) are the model's outputs, keyed by their tag (``main`` by default). The
``auxiliary`` section is training-only: eval skips it and ``drop_auxiliary`` deletes it; since it comes last,
no index of a main layer changes, so a PGI model's state dict loads into its GELAN twin as is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import detector.nn  # noqa: F401  (registers every block)
from detector.components import BACKBONE_TAGS, NECK_TAGS, describe_kind, kind_of_layers, read_component
from detector.config import ConfigError, read_yaml
from detector.nn.block import Block, Head
from detector.registry import BLOCKS
from detector.zoo import find_yaml

SECTIONS = ("backbone", "neck", "head", "auxiliary")
INPUT = "input"


@dataclass
class LayerSpec:
    """One resolved layer: which block, its YAML arguments, absolute input indices (None = image)."""

    index: int
    section: str
    block: str
    args: dict[str, Any]
    sources: list[int | None]
    multi_input: bool
    tag: str | None
    width: Any = None
    stride: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def load_model_dict(model: str | Path | dict, nc: int | None = None) -> dict:
    """Read a model YAML (zoo name, path or dict) and inline component files; returns a self-contained dict."""
    if isinstance(model, dict):
        cfg, origin = copy.deepcopy(model), model.get("name", "<dict>")
    else:
        path = find_yaml(model)
        cfg, origin = read_yaml(path), str(path)
        if not isinstance(cfg, dict):
            raise ConfigError(f"{origin}: a model file must be a mapping with backbone/neck/head sections")
        cfg.setdefault("name", path.stem)
    unknown = set(cfg) - set(SECTIONS) - {"nc", "name", "imgsz", "description", "published"}
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level key(s) {sorted(unknown)}; expected nc, {', '.join(SECTIONS)}")
    for sec in SECTIONS:
        if isinstance(cfg.get(sec), str):
            comp, layers = read_component(cfg[sec])
            kind = kind_of_layers(layers)
            if sec != "auxiliary" and kind is not None and kind != sec:
                raise ConfigError(
                    f"{origin}: `{sec}: {cfg[sec]}` names a {kind} component "
                    f"({describe_kind(kind)}: {comp}); the {sec} section needs a {sec} component"
                )
            cfg[sec] = copy.deepcopy(layers)
    if nc is not None:
        cfg["nc"] = int(nc)
    cfg.setdefault("nc", 80)
    for sec in ("backbone", "head"):
        if not cfg.get(sec):
            raise ConfigError(f"{origin}: section `{sec}` is missing or empty")
    return cfg


def parse_layers(cfg: dict) -> list[LayerSpec]:
    """Flatten the sections into ``LayerSpec``s with absolute input indices."""
    specs: list[LayerSpec] = []
    tags: dict[str, int] = {}
    name = cfg.get("name", "model")
    for sec in SECTIONS:
        for j, layer in enumerate(cfg.get(sec) or []):
            where = f"{name}: {sec}[{j}]"
            if not isinstance(layer, dict) or len(layer) != 1:
                raise ConfigError(f"{where}: a layer is a one-key mapping {{Block: {{args}}}}, got {layer!r}")
            ((block, args),) = layer.items()
            args = dict(args or {})
            src = args.pop("from", -1)
            tag = args.pop("tag", None)
            multi = isinstance(src, list)
            sources = [_resolve_source(s, len(specs), tags, where) for s in (src if multi else [src])]
            if tag is not None:
                if tag in tags or tag == INPUT:
                    raise ConfigError(f"{where}: tag {tag!r} is used twice")
                tags[str(tag)] = len(specs)
            specs.append(LayerSpec(len(specs), sec, str(block), args, sources, multi, tag))
    return specs


def _resolve_source(src: Any, here: int, tags: dict[str, int], where: str) -> int | None:
    if src == INPUT:
        return None
    if isinstance(src, int) and not isinstance(src, bool):
        if src >= 0:
            raise ConfigError(f"{where}: `from: {src}`: use a negative offset or a tag, not an absolute index")
        if here + src < 0:
            return None if here + src == -1 else _bad(where, f"`from: {src}` reaches before the first layer")
        return here + src
    if isinstance(src, str):
        if src not in tags:
            import difflib

            close = difflib.get_close_matches(src, tags, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known tags: {sorted(tags)}"
            for part, contract in (("backbone", BACKBONE_TAGS), ("neck", NECK_TAGS)):
                if src in contract:  # a part that breaks the mixing contract: say which part and what it lacks
                    have = [t for t in contract if t in tags]
                    hint = f"; the {part} must tag {', '.join(contract)} (strides 8/16/32) but tags only {have}"
            raise ConfigError(f"{where}: `from: {src}` names no earlier tag{hint}")
        return tags[src]
    raise ConfigError(f"{where}: bad `from` entry {src!r}")


def _bad(where: str, msg: str):
    raise ConfigError(f"{where}: {msg}")


class DetectionModel(nn.Module):
    """The built graph. ``forward(images)`` -> ``{head_tag: output}``.

    ``images (Tensor[B, 3, H, W])`` float in 0..1. Training: each head's raw per-level maps; eval: decoded
    ``(B, 4 + nc, A)`` from the non-auxiliary heads only (pass ``decode=False`` to get raw maps in eval).
    """

    def __init__(self, cfg: dict, in_channels: int = 3) -> None:
        super().__init__()
        self.yaml = copy.deepcopy(cfg)
        self.nc = int(cfg["nc"])
        self.names: dict[int, str] = {i: str(i) for i in range(self.nc)}
        self.specs = parse_layers(cfg)
        self.layers = nn.ModuleList()
        for spec in self.specs:
            self.layers.append(self._build(spec, in_channels))
        self.head_tags = {s.index: (s.tag or "main") for s in self.specs if isinstance(self.layers[s.index], Head)}
        if not any(self.specs[i].section != "auxiliary" for i in self.head_tags):
            raise ConfigError(f"{cfg.get('name', 'model')}: no detection head outside the auxiliary section")
        self._refresh_plan()

    # -- building -------------------------------------------------------------------------------------------
    def _build(self, spec: LayerSpec, in_channels: int) -> nn.Module:
        where = f"{self.yaml.get('name', 'model')}: {spec.section} layer {spec.index} ({spec.block})"
        try:
            cls = BLOCKS.get(spec.block)
        except KeyError as e:
            raise ConfigError(f"{where}: {e.args[0]}") from None
        widths = [in_channels if s is None else self.specs[s].width for s in spec.sources]
        strides = [1.0 if s is None else self.specs[s].stride for s in spec.sources]
        c1 = widths if spec.multi_input else widths[0]
        kwargs = dict(spec.args)
        if issubclass(cls, Head):
            kwargs.setdefault("nc", self.nc)
            kwargs["strides"] = strides
        try:
            module = cls(c1, **kwargs)
            spec.stride = module.out_stride(strides)
        except (TypeError, ValueError, KeyError) as e:
            raise ConfigError(f"{where}: {e}") from None
        spec.width = module.c2
        return module

    def _refresh_plan(self) -> None:
        """Which layers run, and which outputs must be kept because a later layer reads them."""
        active = list(range(len(self.layers)))
        self._keep = {s for spec in self.specs for s in spec.sources if s is not None}
        self._active_train = active
        self._active_eval = [i for i in active if self.specs[i].section != "auxiliary"]

    # -- info ------------------------------------------------------------------------------------------------
    @property
    def strides(self) -> list[float]:
        """Strides of the main head's inputs, e.g. [8, 16, 32]."""
        return self.main_head.strides

    @property
    def main_index(self) -> int:
        """Layer index of the main head: the first head outside the auxiliary section (the one val, predict and
        export use)."""
        for i in sorted(self.head_tags):
            if self.specs[i].section != "auxiliary":
                return i
        raise RuntimeError("model has no main head")

    @property
    def main_tag(self) -> str:
        """Output tag of the main head (``main`` unless the YAML tags it otherwise)."""
        return self.head_tags[self.main_index]

    @property
    def main_head(self) -> Head:
        return self.layers[self.main_index]  # type: ignore[return-value]

    def decode(self, maps: list[Tensor]) -> Tensor:
        """The main head's raw maps -> ``(Tensor[B, 4 + nc, A])`` float32 (xyxy input pixels, class scores),
        whatever dtype the body ran in. The one decode entry point of val, predict and export."""
        return self.main_head.decode(maps)

    def infer(self, images: Tensor) -> Tensor:
        """``images (Tensor[B, 3, H, W])`` (in the model's dtype) -> the main head's decoded float32
        ``(B, 4 + nc, A)``; auxiliary heads do not run (call in eval mode)."""
        return self.decode(self(images, decode=False)[self.main_tag])

    def heads(self) -> dict[str, Head]:
        """Every head by output tag (aux heads included while the auxiliary section exists)."""
        return {tag: self.layers[i] for i, tag in self.head_tags.items()}  # type: ignore[misc]

    # -- running ---------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, decode: bool | None = None) -> dict[str, Any]:
        decode = (not self.training) if decode is None else decode
        order = self._active_train if self.training else self._active_eval
        saved: dict[int, Any] = {}
        outputs: dict[str, Any] = {}
        for i in order:
            spec, layer = self.specs[i], self.layers[i]
            ins = [x if s is None else saved[s] for s in spec.sources]
            inp = ins if spec.multi_input else ins[0]
            if i in self.head_tags:
                maps = layer.forward_raw(inp)
                outputs[self.head_tags[i]] = layer.decode(maps) if decode else maps
                continue
            y = layer(inp)
            if i in self._keep:
                saved[i] = y
        return outputs

    # -- deploy conversion -----------------------------------------------------------------------------------
    def drop_auxiliary(self) -> DetectionModel:
        """Delete the auxiliary section in place; main layers keep their indices (and state-dict keys)."""
        n_main = sum(1 for s in self.specs if s.section != "auxiliary")
        if any(s.section == "auxiliary" for s in self.specs[:n_main]):
            raise RuntimeError("auxiliary layers must come last")
        del self.layers[n_main:]
        self.specs = self.specs[:n_main]
        self.head_tags = {i: t for i, t in self.head_tags.items() if i < n_main}
        self.yaml.pop("auxiliary", None)
        self._refresh_plan()
        return self

    @torch.no_grad()
    def fuse(self) -> DetectionModel:
        """Fold BN and re-parameterise every fusable block in place (call in eval mode)."""
        self.eval()
        for m in list(self.modules()):
            if isinstance(m, Block) and m is not self:
                m.fuse()
        return self

    def to_deploy(self) -> DetectionModel:
        """Deploy form, in place: auxiliary section removed, every block fused, eval mode."""
        return self.drop_auxiliary().fuse()


def build_model(model: str | Path | dict, nc: int | None = None) -> DetectionModel:
    """Build a ``DetectionModel`` from a zoo name (``gelan-c``), a YAML path or a dict; ``nc`` overrides."""
    return DetectionModel(load_model_dict(model, nc))
