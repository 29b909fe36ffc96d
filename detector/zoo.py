"""Finding model and recipe YAML files by name (``gelan-c``) or by path."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from detector.config import ConfigError
from detector.resources import data_dir

MODELS_DIR = data_dir("models")
CONFIGS_DIR = data_dir("configs")


@cache
def _index(folder: Path) -> dict[str, Path]:
    """stem -> path for every YAML below ``folder`` (names are unique across the zoo; a test checks)."""
    return {p.stem: p for p in sorted(folder.rglob("*.yaml"))}


def model_names() -> list[str]:
    """Every complete model in the zoo (component files under ``models/components`` excluded)."""
    return sorted(n for n, p in _index(MODELS_DIR).items() if "components" not in p.parts)


def find_yaml(name: str | Path, folder: Path = MODELS_DIR, what: str = "model") -> Path:
    """A path to an existing YAML, or a zoo name (with or without ``.yaml``) looked up in ``folder``."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    stem = p.name[: -len(p.suffix)] if p.suffix in (".yaml", ".yml") else p.name
    index = _index(folder)
    if stem in index and (p.parent == Path(".") or not p.exists()):
        return index[stem]
    import difflib

    close = difflib.get_close_matches(stem, index, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"{name}: no such {what} file and no {what} of that name in {folder}{hint}")
