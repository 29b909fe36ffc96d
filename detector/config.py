"""Typed configuration: YAML files merged in order, then ``key=value`` overrides, checked against dataclasses.

Every problem (missing file, bad YAML, unknown key, wrong type) raises ``ConfigError`` with one message that
names the file, the key and, for unknown keys, the closest valid key. A schema declares the allowed range of
its numeric keys in a ``limits: ClassVar[dict[str, Range]]`` mapping; ``build`` (and ``check_limits`` for a
config built in Python) reports every value outside its range at once, one line per key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from detector.errors import DetectorError

T = TypeVar("T")


class ConfigError(DetectorError, ValueError):
    """A configuration problem, with a message meant for the user (no traceback needed)."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a numeric key: ``low <= v <= high``; ``open_low`` / ``open_high`` exclude the bound.
    ``None`` (where the key allows it) is always allowed."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def allows(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.open_low else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.open_high else v > self.high))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"{'<' if self.open_high else '<='} {self.high:g}"


def limit_problems(cfg: Any, prefix: str = "") -> list[str]:
    """``"key 'val.conf' = 5 must be in [0, 1]"`` for every value of dataclass ``cfg`` (recursively) outside the
    ``Range`` its schema declares in ``limits``."""
    out: list[str] = []
    limits = getattr(type(cfg), "limits", {}) or {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out += limit_problems(value, f"{prefix}{f.name}.")
            continue
        rule = limits.get(f.name)
        if rule is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not rule.allows(value):
            out.append(f"key {prefix + f.name!r} = {value!r} must be {rule.describe()}")
    return out


def check_limits(cfg: Any, where: str = "config") -> None:
    """Raise one ``ConfigError`` listing every out-of-range value of ``cfg`` (one line per key), if any."""
    problems = limit_problems(cfg)
    if len(problems) == 1:
        raise ConfigError(f"{where}: {problems[0]}")
    if problems:
        raise ConfigError(f"{where}: {len(problems)} values out of range:\n" + "\n".join(f"  {p}" for p in problems))


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error raises ``ConfigError`` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    try:
        with open(p, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["epochs=10", "optim.lr0=0.01"]`` -> nested dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"command line: {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""  # `key=` is an empty string (None where allowed)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _scalar(text: str) -> Any:
    """One comma-separated piece of a list written as ``batch=1,8`` -> a YAML scalar (``1``, ``"onnx"``)."""
    try:
        return yaml.safe_load(text.strip())
    except yaml.YAMLError:
        return text.strip()


def deep_merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; ``update`` wins; neither input is modified."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``, converting where it is lossless (int -> float, str -> Path)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if (value is None or value == "") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: expected one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (Any,)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and inner is not Any:
            value = (
                [value]
                if not isinstance(value, str)
                else [v if inner is str else _scalar(v) for v in value.split(",") if v]
            )
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return build(tp, value, where, check=False)  # the top-level build checks ranges once, for every key
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    return value


def build(schema: type[T], data: dict, where: str = "config", check: bool = True) -> T:
    """Instantiate dataclass ``schema`` from ``data``, checking every key and type recursively, then (``check``)
    every value against the schema's ``limits``.

    ``where`` prefixes error messages (a file name, or ``file: section``). A schema's ``aliases`` (a class
    attribute ``{other name: field}``) are accepted for their field.
    """
    hints = get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    aliases: dict[str, str] = getattr(schema, "aliases", {})
    kwargs = {}
    for key, value in data.items():
        if key in aliases:
            if aliases[key] in data:
                raise ConfigError(f"{where}: {key!r} is another name for {aliases[key]!r}; give one of them")
            key = aliases[key]
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{where}: key {key!r}")
    try:
        out = schema(**kwargs)
    except TypeError as e:  # a required field without default
        raise ConfigError(f"{where}: {e}") from None
    if check:
        check_limits(out, where)
    return out


def load(schema: type[T], files: Iterable[str | Path] = (), overrides: Iterable[str] | dict = ()) -> T:
    """Merge YAML ``files`` in order, then ``overrides``; validate the result against ``schema``.

    Each file is validated on its own first so an error names the file it came from; every field of
    ``schema`` therefore needs a default.
    """
    merged: dict = {}
    for f in files:
        data = read_yaml(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{f}: expected a mapping of keys at the top level")
        build(schema, data, str(f))
        merged = deep_merge(merged, data)
    over = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    build(schema, over, "command line")
    return build(schema, deep_merge(merged, over), "config")


def to_dict(cfg: Any) -> Any:
    """A dataclass config -> plain dict/list/scalars (Paths as strings), for YAML and checkpoints."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def save_yaml(data: Any, path: str | Path) -> None:
    """Write ``data`` (dataclass or plain) as YAML."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(data), f, sort_keys=False)
