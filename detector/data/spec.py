"""What DATA names: a dataset YAML, a parsed mapping, a Pascal VOC folder, or a config name like ``bccd``.

A dataset YAML holds ``path`` (the dataset root), ``train``/``val``/``test`` (split entries, relative to the root),
``names`` (a list, or a mapping ``{0: name}``), and optionally ``format: yolo|coco|voc`` (inferred otherwise).

Path rules: a relative ``path`` is resolved against the YAML file's folder first, then the current directory,
then ``$DETECTOR_DATASETS`` (default ``./datasets``) by its last component (so the packaged ``bccd`` finds a
``datasets/bccd`` beside you when the package is installed); without ``path`` the root is the YAML's folder.
Split entries are relative to the root.

Files other tools write are read too: keys of ours are checked strictly (a typo names the closest key), keys
that other tools add (``FOREIGN_KEYS``: Roboflow's ``roboflow`` block, Ultralytics' ``download``/``channels``
...) are ignored with a one-line note. A Roboflow YOLO export writes ``train: ../train/images`` beside the
folders it means; such an entry is read as ``train/images`` (noted). A Roboflow COCO export (split folders
with ``_annotations.coco.json`` and their images, ``valid`` for val) is recognised as a folder.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.config import ConfigError, read_yaml
from detector.resources import data_dir

FORMAT_NAMES = ("yolo", "coco", "voc")
SPLITS = ("train", "val", "test")
_KEYS = ("path", "train", "val", "test", "names", "nc", "format", "difficult")
DIFFICULT = ("ignore", "keep")  # VOC objects marked difficult: ignore regions (the VOC rule), or ordinary boxes
FOREIGN_KEYS = frozenset(
    {"roboflow", "download", "channels", "kpt_shape", "flip_idx", "license", "licence", "url", "version", "yaml_file"}
    | {"author", "description", "date", "info", "categories", "augmentations", "preprocessing"}
)
"""Keys other tools (Roboflow, Ultralytics, dataset hubs) write into a data.yaml that mean nothing here."""
ROBOFLOW_COCO_FILE = "_annotations.coco.json"
ROBOFLOW_SPLIT_DIRS = {"train": "train", "val": "valid", "test": "test"}
LOGGER = logging.getLogger("detector")
_NOTED: set[str] = set()
_CONFIG_DIR = data_dir("configs") / "data"


@dataclass
class DatasetSpec:
    """A resolved dataset definition.

    Attributes:
        root: dataset root folder (absolute).
        format: ``"yolo"``, ``"coco"`` or ``"voc"``.
        splits: split name -> entry as written (a path, list of paths, or for COCO ``{annotations, images}``).
        names: class names, or None where the format carries them (COCO categories, VOC object names).
        source: what the user gave (for messages).
        notes: one line per thing read leniently (ignored foreign keys, rewritten Roboflow paths).
        difficult: VOC objects marked difficult: ``"ignore"`` (ignore regions) or ``"keep"`` (ordinary boxes).
    """

    root: Path
    format: str
    splits: dict[str, Any] = field(default_factory=dict)
    names: list[str] | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    difficult: str = "ignore"

    def entry(self, split: str) -> Any:
        """The entry of ``split``; an absent split raises ``ConfigError`` naming the ones that exist."""
        if split not in self.splits or self.splits[split] in (None, "", []):
            have = ", ".join(k for k, v in self.splits.items() if v) or "none"
            raise ConfigError(f"{self.source}: no {split!r} split defined (splits: {have})")
        return self.splits[split]


def resolve_dataset(data: str | Path | dict | DatasetSpec) -> DatasetSpec:
    """Turn what the user gave as DATA into a ``DatasetSpec``; anything unusable raises ``ConfigError``."""
    if isinstance(data, DatasetSpec):
        return data
    if isinstance(data, dict):
        return _from_mapping(data, Path.cwd(), "data mapping")
    p = Path(data)
    if p.is_file():
        mapping = read_yaml(p)
        if not isinstance(mapping, dict):
            raise ConfigError(f"{p}: expected a mapping with path/train/val/names")
        return _from_mapping(mapping, p.resolve().parent, str(p))
    if p.is_dir():
        return _from_folder(p)
    named = _CONFIG_DIR / f"{data}.yaml"
    if not p.suffix and named.is_file():
        return resolve_dataset(named)
    raise ConfigError(f"{data}: no such dataset file or folder")


def is_voc_root(p: Path) -> bool:
    return (p / "Annotations").is_dir() and (p / "ImageSets" / "Main").is_dir()


def _from_folder(p: Path) -> DatasetSpec:
    if is_voc_root(p):
        splits = {f.stem: f.stem for f in sorted((p / "ImageSets" / "Main").glob("*.txt")) if "_" not in f.stem}
        return DatasetSpec(root=p.resolve(), format="voc", splits=splits, source=str(p))
    for name in ("data.yaml", "dataset.yaml"):
        if (p / name).is_file():
            return resolve_dataset(p / name)
    coco_splits = {
        split: {"annotations": f"{folder}/{ROBOFLOW_COCO_FILE}", "images": folder}
        for split, folder in ROBOFLOW_SPLIT_DIRS.items()
        if (p / folder / ROBOFLOW_COCO_FILE).is_file()
    }
    if coco_splits:
        return DatasetSpec(root=p.resolve(), format="coco", splits=coco_splits, source=str(p))
    raise ConfigError(
        f"{p}: not a dataset folder (expected a Pascal VOC layout with Annotations/ and ImageSets/Main/, "
        f"split folders with {ROBOFLOW_COCO_FILE} (a Roboflow COCO export), or a data.yaml inside); "
        "pass a dataset YAML instead"
    )


def _names(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        keys = sorted(value)
        if keys != list(range(len(keys))):
            raise ConfigError(f"{where}: key 'names' must map 0..{len(keys) - 1} to names, got keys {keys}")
        return [str(value[k]) for k in keys]
    if isinstance(value, list) and value:
        return [str(v) for v in value]
    raise ConfigError(f"{where}: key 'names' must be a non-empty list or a mapping {{0: name}}, got {value!r}")


def _check_keys(m: dict, where: str) -> list[str]:
    """Ours strictly, foreign ones with a note; returns the notes."""
    foreign = []
    for key in m:
        if key in _KEYS:
            continue
        if key in FOREIGN_KEYS:
            foreign.append(str(key))
            continue
        close = difflib.get_close_matches(str(key), _KEYS, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(_KEYS)}"
        raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    return [f"{where}: ignoring key(s) {', '.join(foreign)} written by other tools"] if foreign else []


def _parent_relative(root: Path, entry: Any, split: str, where: str, notes: list[str]) -> Any:
    """A Roboflow-style ``../train/images`` that does not exist but ``train/images`` under the root does."""
    if isinstance(entry, list):
        return [_parent_relative(root, e, split, where, notes) for e in entry]
    if not isinstance(entry, str) or not entry.startswith("../") or Path(entry).is_absolute():
        return entry
    inside = entry[3:]
    if not (root / entry).exists() and (root / inside).exists():
        notes.append(f"{where}: {split} entry {entry!r} read as {inside!r} (the Roboflow export convention)")
        return inside
    return entry


def _from_mapping(m: dict, base: Path, where: str) -> DatasetSpec:
    notes = _check_keys(m, where)
    root = _root(m.get("path"), base, where)
    names = _names(m.get("names"), where)
    if names is not None and m.get("nc") is not None and int(m["nc"]) != len(names):
        raise ConfigError(f"{where}: nc is {m['nc']} but {len(names)} names are given")
    splits = {s: _parent_relative(root, m[s], s, where, notes) for s in SPLITS if m.get(s)}
    if not splits:
        raise ConfigError(f"{where}: no split defined (give at least one of train/val/test)")
    fmt = m.get("format") or _infer_format(root, splits)
    if fmt not in FORMAT_NAMES:
        raise ConfigError(f"{where}: key 'format' must be one of {list(FORMAT_NAMES)}, got {fmt!r}")
    if fmt == "yolo" and names is None:
        raise ConfigError(f"{where}: YOLO data needs 'names' (the class names, in class-id order)")
    difficult = m.get("difficult", "ignore")
    if difficult not in DIFFICULT:
        raise ConfigError(f"{where}: key 'difficult' must be one of {list(DIFFICULT)}, got {difficult!r}")
    for note in notes:
        if note not in _NOTED:  # once per process, though the spec is resolved by every split reader
            _NOTED.add(note)
            LOGGER.info(f"note: {note}")
    return DatasetSpec(
        root=root, format=fmt, splits=splits, names=names, source=where, notes=notes, difficult=difficult
    )


def _root(value: Any, base: Path, where: str) -> Path:
    if value in (None, ""):
        return base
    p = Path(str(value)).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [base / p, Path.cwd() / p, Path(os.environ.get("DETECTOR_DATASETS", "datasets")) / p.name]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    tried = " or ".join(str(c) for c in candidates)
    raise ConfigError(f"{where}: dataset path {value!r} not found (looked for {tried})")


def _infer_format(root: Path, splits: dict[str, Any]) -> str:
    for entry in splits.values():
        if isinstance(entry, dict) or str(entry).endswith(".json"):
            return "coco"
    if is_voc_root(root):
        return "voc"
    return "yolo"
