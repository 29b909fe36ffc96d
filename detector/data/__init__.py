"""Data pipeline: dataset formats -> validated, cached label table -> augmented samples -> batches.

Public entry points: ``build_dataloader`` (batches for the engine), ``load_split`` (the label table of a split),
``AugmentConfig``. ``detector data check|convert`` lives in ``check.py``. The letterbox is the inference
contract's (``detector.ops.letterbox``). Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AugmentConfig": "detector.data.augment",
    "DatasetSpec": "detector.data.spec",
    "ImageLabels": "detector.data.labels",
    "LabelSet": "detector.data.labels",
    "Problem": "detector.data.labels",
    "build_dataloader": "detector.data.loader",
    "load_split": "detector.data.load",
    "resolve_dataset": "detector.data.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'detector.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
