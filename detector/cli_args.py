"""The one command-line grammar of every ``detector`` mode, and the ``--help`` text generated from its schema.

A mode's keys are the fields of a dataclass (``TrainConfig``, ``PredictConfig``, ``ExportArgs`` ...), so the
parser, the type checks (``detector.config``) and the help text all read the same definition. Accepted forms:

* ``key=value`` and ``section.key=value`` (values are YAML scalars or lists: ``batch=[1,8]`` or ``batch=1,8``);
* ``--key=value``, ``--key value`` (non-boolean keys), ``--flag`` / ``--no-flag`` (boolean keys);
* bare words fill the mode's positional keys in order (``detector info gelan-t`` sets ``model``); modes that
  take files (``detector train RECIPE.yaml``) get the remaining words back;
* ``-h`` / ``--help`` / ``help`` anywhere prints the mode's usage, one example and every key with its type,
  default and meaning.

A list key given more than once (``--split train --split val``) collects every value.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, get_type_hints

from detector.config import ConfigError, load, parse_overrides

HELP_WORDS = ("-h", "--help", "help")


@dataclass(frozen=True)
class ModeSpec:
    """One ``detector`` mode: what runs it, which dataclass holds its keys, and what ``--help`` shows."""

    name: str  # "train", or "data check" for a sub-command
    target: str  # "module:function" called with the remaining argv, returns the exit status
    summary: str  # one line for `detector help`
    usage: str
    example: str
    schema: str | None = None  # "module:Dataclass" whose fields are the keys
    positional: tuple[str, ...] = ()  # keys that bare words fill, in order

    def schema_class(self) -> type | None:
        return _import(self.schema) if self.schema else None


def _import(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def wants_help(argv: list[str]) -> bool:
    return any(a in HELP_WORDS for a in argv)


# -- parsing ---------------------------------------------------------------------------------------------------
def field_types(schema: type, prefix: str = "") -> dict[str, Any]:
    """``{"epochs": int, "optim.lr0": float | None, ...}`` for dataclass ``schema`` (nested sections dotted)."""
    out: dict[str, Any] = {}
    hints = get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(field_types(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


def _is_bool(tp: Any) -> bool:
    """``bool`` or a union with ``bool`` in it (``resume: bool | str``)."""
    return tp is bool or (typing.get_origin(tp) in (typing.Union, types.UnionType) and bool in typing.get_args(tp))


def _is_list(tp: Any) -> bool:
    if typing.get_origin(tp) in (list, tuple):
        return True
    return any(typing.get_origin(a) in (list, tuple) for a in typing.get_args(tp))


def split_argv(argv: list[str], schema: type | None, where: str = "command line") -> tuple[list[str], dict]:
    """``argv`` -> (bare words, nested overrides dict). An unknown ``--key`` stops here (its value could not be
    told from a bare word); an unknown ``key=value`` passes through for ``config.load`` to name."""
    types_ = field_types(schema) if schema is not None else {}
    words: list[str] = []
    raw: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and len(arg) > 2:
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            if eq:
                raw.setdefault(key, []).append(value)
            elif key.startswith("no_") and _is_bool(types_.get(key[3:])):
                raw.setdefault(key[3:], []).append("false")
            elif schema is not None and key not in types_:
                close = difflib.get_close_matches(key, list(types_), n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where}: unknown key {key!r} (in --{key}){hint}")
            elif key not in types_ or _is_bool(types_[key]):
                raw.setdefault(key, []).append("true")
            elif i + 1 < len(argv):
                raw.setdefault(key, []).append(argv[i + 1])
                i += 1
            else:
                raise ConfigError(f"{where}: --{key} needs a value (--{key} VALUE or {key}=VALUE)")
        elif "=" in arg and not arg.startswith("="):
            key, _, value = arg.partition("=")
            raw.setdefault(key.strip(), []).append(value)
        else:
            words.append(arg)
        i += 1
    pairs = []
    for key, values in raw.items():
        if len(values) > 1 and _is_list(types_.get(key)):
            pairs.append(f"{key}={','.join(values)}")
        else:
            pairs.append(f"{key}={values[-1]}")  # a repeated scalar key: the last one wins, as in YAML merges
    return words, parse_overrides(pairs)


def parse_args(spec: ModeSpec, argv: list[str]) -> Any:
    """Parse ``argv`` for ``spec`` into its schema dataclass; prints the help and returns None on ``--help``."""
    if wants_help(argv):
        print(mode_help(spec))
        return None
    schema = spec.schema_class()
    words, overrides = split_argv(argv, schema, f"detector {spec.name}")
    if len(words) > len(spec.positional):
        extra = words[len(spec.positional) :]
        raise ConfigError(f"detector {spec.name}: unexpected argument(s) {extra}; usage: {spec.usage}")
    for key, word in zip(spec.positional, words):
        if key in overrides:
            raise ConfigError(f"detector {spec.name}: {key} given twice ({word!r} and {key}={overrides[key]!r})")
        overrides[key] = word
    return load(schema, [], overrides)


# -- help --------------------------------------------------------------------------------------------------------
def _comments(cls: type) -> dict[str, str]:
    """``name -> trailing comment`` of each field line in the dataclass source (the keys' documentation)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in source.splitlines():
        m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _type_str(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if not typing.get_args(tp):
        return getattr(tp, "__name__", str(tp))
    return str(tp).replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")


def key_rows(schema: type, instance: Any = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(key, type, default, meaning)`` for every key of ``schema``, nested sections as ``section.key``."""
    obj = instance if instance is not None else schema()
    hints, notes = get_type_hints(schema), _comments(schema)
    rows = []
    for f in dataclasses.fields(schema):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += key_rows(type(value), value, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", _type_str(hints[f.name]), repr(value), notes.get(f.name, "")))
    return rows


def mode_help(spec: ModeSpec) -> str:
    """Usage, summary, example and the table of keys of one mode."""
    lines = [f"usage: {spec.usage}", "", spec.summary, f"example: {spec.example}"]
    schema = spec.schema_class()
    if schema is not None:
        rows = key_rows(schema)
        wk = max(len(r[0]) for r in rows)
        wt = min(max(len(r[1]) for r in rows), 28)
        wd = min(max(len(r[2]) for r in rows), 24)
        lines += ["", "keys (key=value, --key value, --flag / --no-flag):"]
        for key, tp, default, note in rows:
            lines.append(f"  {key:<{wk}}  {tp:<{wt}}  {default:<{wd}}  {note}".rstrip())
    lines += ["", "docs: README.md, docs/training.md, docs/data.md, docs/deploy.md"]
    return "\n".join(lines)


def mode_args(name: str, argv: list[str]) -> Any:
    """``parse_args`` for the mode registered as ``name`` in ``detector.cli.MODES``."""
    from detector.cli import MODES

    return parse_args(MODES[name], argv)
