"""Config loading: merge order, overrides, and one clear message per kind of mistake."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from detector.config import ConfigError, load, parse_overrides


@dataclass
class Optim:
    lr0: float = 0.01
    name: str = "sgd"


@dataclass
class Recipe:
    epochs: int = 10
    imgsz: int = 640
    model: str = "gelan-t"
    cache: bool = False
    optim: Optim = field(default_factory=Optim)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_merge_order_and_overrides(tmp_path):
    a = write(tmp_path, "a.yaml", "epochs: 5\noptim: {lr0: 0.02}\n")
    b = write(tmp_path, "b.yaml", "imgsz: 320\n")
    cfg = load(Recipe, [a, b], ["epochs=7", "optim.name=adamw", "cache=true"])
    assert (cfg.epochs, cfg.imgsz, cfg.cache) == (7, 320, True)
    assert cfg.optim.lr0 == 0.02 and cfg.optim.name == "adamw"


def test_int_accepted_for_float_and_not_the_reverse(tmp_path):
    assert load(Recipe, [], ["optim.lr0=1"]).optim.lr0 == 1.0
    with pytest.raises(ConfigError, match=r"command line: key 'epochs': expected an integer, got 2.5"):
        load(Recipe, [], ["epochs=2.5"])


def test_unknown_key_names_file_key_and_closest(tmp_path):
    a = write(tmp_path, "recipe.yaml", "epoch: 5\n")
    with pytest.raises(ConfigError) as e:
        load(Recipe, [a])
    msg = str(e.value)
    assert "recipe.yaml" in msg and "'epoch'" in msg and "did you mean 'epochs'" in msg


def test_unknown_nested_key(tmp_path):
    a = write(tmp_path, "r.yaml", "optim: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"r.yaml: key 'optim': unknown key 'lr'; did you mean 'lr0'"):
        load(Recipe, [a])


def test_wrong_type_names_file_and_key(tmp_path):
    a = write(tmp_path, "r.yaml", "imgsz: big\n")
    with pytest.raises(ConfigError, match=r"r.yaml: key 'imgsz': expected an integer, got 'big'"):
        load(Recipe, [a])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: file not found"):
        load(Recipe, [tmp_path / "nope.yaml"])
    bad = write(tmp_path, "bad.yaml", "epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML"):
        load(Recipe, [bad])


def test_override_syntax():
    assert parse_overrides(["a.b=1", "c=x", "d=[1, 2]"]) == {"a": {"b": 1}, "c": "x", "d": [1, 2]}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


@dataclass
class WithOptional:
    device: str = "cpu"
    batch: int | None = 4


def test_empty_value_means_empty_string_or_none():
    cfg = load(WithOptional, [], ["device=", "batch="])
    assert cfg.device == "" and cfg.batch is None


def test_pretrained_is_another_name_for_weights():
    """``pretrained=`` (the name other frameworks use) sets ``weights``; both at once is an error."""
    from detector.engine.settings import TrainConfig

    assert load(TrainConfig, overrides=["pretrained=w.pt"]).weights == "w.pt"
    with pytest.raises(ConfigError, match="'pretrained' is another name for 'weights'"):
        load(TrainConfig, overrides=["pretrained=a.pt", "weights=b.pt"])
