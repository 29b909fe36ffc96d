"""Turning the ``cfg`` handed to a loss builder (None, a config dataclass or a plain mapping) into its dataclass."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

from detector.config import ConfigError

C = TypeVar("C")


def resolve_loss_config(cfg: Any, config_class: type[C], loss_name: str) -> C:
    """``None`` -> defaults; an instance of ``config_class`` as is; a mapping -> ``config_class(**mapping)``.

    An unknown key raises ``ConfigError`` naming the loss, the key and the closest valid key.
    """
    if cfg is None:
        return config_class()
    if isinstance(cfg, config_class):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"loss {loss_name!r}: config must be a {config_class.__name__} or a mapping, got {cfg!r}")
    valid = [f.name for f in dataclasses.fields(config_class)]
    for key in cfg:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"loss {loss_name!r}: unknown key {key!r}{hint} (valid: {', '.join(valid)})")
    return config_class(**cfg)
