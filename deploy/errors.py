"""Errors raised by ``deploy`` and the lazy import of optional runtime libraries."""

from __future__ import annotations

import importlib
from types import ModuleType

GPU_EXTRA = 'pip install "detector[gpu]"'
EXPORT_EXTRA = 'pip install "detector[export]"'
ORT_EXTRA = 'pip install "detector[ort]"'


class DeployError(Exception):
    """A problem with a deployed model or its input, explained in the message (file, tensor, what is wrong)."""


class MissingDependencyError(DeployError, ImportError):
    """An optional runtime library (tensorrt, onnxruntime, CUDA bindings) is not installed."""


def import_optional(module: str, purpose: str, install: str) -> ModuleType:
    """Import ``module`` or raise ``MissingDependencyError`` saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{purpose} needs the Python module `{module}`, which is not importable ({e}); install it with: {install}"
        ) from None
