"""``detector convert SRC [out=DST] [model=NAME] [source=KIND]``: another framework's checkpoint -> one of ours.

The source file is read by ``safe_load`` (no code of the other project runs), its state dict is recognised by
its key layout (``SOURCES``), mapped key for key onto the zoo model named by ``model=`` and loaded strictly, and
written as our checkpoint (weights-only loadable; config, class names and where it came from inside).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detector import __version__
from detector.checkpoint import save_checkpoint
from detector.config import ConfigError
from detector.convert.class_count import checkpoint_class_count
from detector.convert.damoyolo_official import damoyolo_mapping, is_damoyolo
from detector.convert.lsnet_official import lsnet_mapping
from detector.convert.mapping import KeyMapping, LoadReport, load_mapped, map_state_dict
from detector.convert.safe_pickle import Placeholder, module_state_dict, safe_load
from detector.convert.timm_vovnet import timm_vovnet_mapping
from detector.convert.ultralytics_yolov9 import is_ultralytics_yolov9, ultralytics_yolov9_mapping
from detector.convert.yolov9_official import yolov9_mapping
from detector.errors import DetectorError


@dataclass(frozen=True)
class Source:
    """A kind of foreign checkpoint: ``recognise(keys, arch)`` (arch: the pickled model's class name, or
    "state_dict"), ``mapping(keys, our_model)``, ``models``, ours it fits, and ``config_suffix``: what turns
    the stem of the model YAML their pickled model names (``yolov9t.yaml``) into our model's name."""

    name: str
    recognise: Callable[[list[str], str], bool]
    mapping: Callable[[list[str], object], KeyMapping]
    models: tuple[str, ...]
    config_suffix: str = ""

    def model_for(self, config_file: str | None) -> str:
        """Our model for their model YAML ``config_file``, or "" where it names none of ``models``."""
        name = Path(config_file).stem + self.config_suffix if config_file else ""
        return name if name in self.models else ""


SOURCES: dict[str, Source] = {
    "timm-vovnet": Source(
        "timm-vovnet",
        lambda keys, arch: "stem.0.conv.weight" in keys and any(k.startswith("stages.0.blocks.0.conv_concat.") for k in keys),
        timm_vovnet_mapping,
        ("vovnet39-v1-cls", "vovnet57-v1-cls", "vovnet19-dw-cls", "vovnet19-slim-dw-cls", "ese-vovnet39b-cls",
         "ese-vovnet57b-cls"),
    ),
    "lsnet-official": Source(
        "lsnet-official",
        lambda keys, arch: "patch_embed.0.c.weight" in keys and any(k.startswith("blocks4.") for k in keys),
        lsnet_mapping,
        ("lsnet-t-cls", "lsnet-s-cls", "lsnet-b-cls"),
    ),
    "yolov9-official": Source(
        "yolov9-official",
        lambda keys, arch: arch == "models.yolo.DetectionModel" and any(k.startswith("model.") for k in keys),
        yolov9_mapping,
        ("yolov9-t", "yolov9-s", "yolov9-m", "yolov9-c", "yolov9-e", "gelan-t", "gelan-s", "gelan-m", "gelan-c",
         "gelan-e"),
    ),
    "damoyolo-official": Source(
        "damoyolo-official",
        lambda keys, arch: is_damoyolo(keys),
        damoyolo_mapping,
        ("damoyolo-t", "damoyolo-s", "damoyolo-m", "damoyolo-l"),
    ),
    "ultralytics-yolov9": Source(
        "ultralytics-yolov9",
        is_ultralytics_yolov9,
        ultralytics_yolov9_mapping,
        ("yolov9t-ul", "yolov9s-ul", "yolov9m-ul", "yolov9c-ul", "yolov9e-ul"),
        config_suffix="-ul",
    ),
}  # fmt: skip
"""Every supported source by name; ``detector convert`` picks the one whose ``recognise`` accepts the keys."""


@dataclass
class Foreign:
    """What a foreign checkpoint holds: its state dict, class names if it has them, its model's class name, and
    the model YAML file its pickled model was built from, if it says."""

    state: dict[str, torch.Tensor]
    names: list[str] | None
    arch: str
    config_file: str | None = None


def read_foreign(path: str | Path) -> Foreign:
    """Safely read ``path`` and find its weights: a pickled module (``model``/``ema`` entry, EMA preferred when
    present and not None), a ``state_dict``/``model`` dict of tensors, or a bare state dict."""
    obj = safe_load(path)
    if isinstance(obj, dict) and {"model_yaml", "names", "model"} <= set(obj):
        raise DetectorError(f"{path}: already a detector checkpoint; it needs no conversion")
    module = _pick(obj)
    if isinstance(module, Placeholder):
        names = getattr(module, "names", None)
        if isinstance(names, dict):
            names = [str(names[i]) for i in sorted(names)]
        return Foreign(
            module_state_dict(module), list(names) if names else None, module.__global__, _config_file(module)
        )
    if isinstance(module, dict) and module and all(isinstance(v, torch.Tensor) for v in module.values()):
        return Foreign({k: v.float() if v.is_floating_point() else v for k, v in module.items()}, None, "state_dict")
    raise DetectorError(f"{path}: found no model weights (a pickled module or a state dict) in this checkpoint")


def _config_file(module: Placeholder) -> str | None:
    """The YAML a pickled YOLO-style model was built from: Ultralytics keep it in ``yaml["yaml_file"]``, the
    YOLOv9 repository in ``yaml_file``."""
    yaml = getattr(module, "yaml", None)
    found = yaml.get("yaml_file") if isinstance(yaml, dict) else None
    found = found or getattr(module, "yaml_file", None)
    return found if isinstance(found, str) else None  # a pickled Path would be a placeholder: not trusted


def _pick(obj: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    for key in ("ema", "model", "state_dict", "model_state_dict"):
        if obj.get(key) is not None and not (key == "ema" and isinstance(obj[key], dict) and "updates" in obj[key]):
            return obj[key]
    return obj


def recognise(state: dict[str, torch.Tensor], path: str | Path, source: str = "", arch: str = "") -> Source:
    """The ``Source`` for a state dict: the one asked for, else the one whose key layout it has."""
    keys = list(state)
    if source:
        if source not in SOURCES:
            raise ConfigError(f"source={source!r} is not one of {', '.join(SOURCES)}")
        return SOURCES[source]
    found = [s for s in SOURCES.values() if s.recognise(keys, arch)]
    if not found:
        raise DetectorError(
            f"{path}: the checkpoint's keys ({', '.join(keys[:3])}, ...) match no supported source "
            f"({', '.join(SOURCES)}); give source= if you know it"
        )
    return found[0]


def convert(
    src: str | Path, out: str | Path | None = None, model: str = "", source: str = ""
) -> tuple[Path, LoadReport]:
    """Convert ``src`` into our zoo model ``model`` (default: the one their pickled model's YAML names); returns
    the written checkpoint and what was loaded."""
    foreign = read_foreign(src)
    kind = recognise(foreign.state, src, source, foreign.arch)
    if model:
        cfg, net, report = _load_into(model, kind, foreign)
    else:
        model = kind.model_for(foreign.config_file)
        if not model:
            raise ConfigError(
                f"{src}: a {kind.name} checkpoint does not name our model; give model= (one of {', '.join(kind.models)})"
            )
        print(f"{src}: model= not given; its model was built from {foreign.config_file}, so converting into {model}")
        try:
            cfg, net, report = _load_into(model, kind, foreign)
        except DetectorError as e:
            hint = f"model={model} was taken from {foreign.config_file}; give model= if it is wrong"
            raise type(e)(f"{src}: {e} ({hint})") from None
    names = foreign.names if foreign.names and len(foreign.names) == cfg["nc"] else [str(i) for i in range(cfg["nc"])]
    out = Path(out) if out else Path(src).with_name(f"{Path(src).stem}-{model}.pt")
    ckpt = {
        "model": net.state_dict(),
        "model_yaml": cfg,
        "names": names,
        "version": __version__,
        "converted_from": {"file": str(src), "source": kind.name, "arch": foreign.arch, "report": report.summary()},
    }
    save_checkpoint(ckpt, out)
    return out, report


def _load_into(model: str, kind: Source, foreign: Foreign) -> tuple[dict, torch.nn.Module, LoadReport]:
    """Our ``model`` holding the foreign weights, strictly mapped: ``(config, module, report)``; the class count
    is the checkpoint's."""
    from detector.model import build_model, load_model_dict

    cfg = load_model_dict(model)
    with torch.device("meta"):  # the mappings read the model's layout only
        mapping = kind.mapping(list(foreign.state), build_model(cfg))
    mapped, dropped = map_state_dict(mapping, foreign.state)
    # a checkpoint trained on other classes keeps its class branches
    cfg["nc"] = checkpoint_class_count(cfg, mapped) or int(cfg.get("nc", 80))
    net = build_model(cfg)
    return cfg, net, load_mapped(mapping, mapped, dropped, net, strict=True)


@dataclass
class ConvertConfig:
    """Keys of ``detector convert SRC [key=value ...]``."""

    src: str = ""  # the foreign checkpoint (a bare word works too: detector convert SRC)
    out: str = ""  # default: SRC's folder, SRC-stem + "-" + model + ".pt"
    model: str = ""  # our zoo model the weights go into (e.g. vovnet39-v1-cls); default: the one their YAML names
    source: str = ""  # force a source kind (default: recognised from the keys)


def cli_convert(argv: list[str]) -> int:
    from detector.cli_args import mode_args

    cfg = mode_args("convert", argv)  # SRC as a bare word or src=
    if cfg is None:
        return 0
    if not cfg.src:
        raise ConfigError(
            f"detector convert: give the checkpoint to convert: detector convert SRC model=NAME ({', '.join(SOURCES)})"
        )
    out, report = convert(cfg.src, cfg.out or None, cfg.model, cfg.source)
    print(f"{cfg.src} -> {out}: {report.summary()}")
    return 0
