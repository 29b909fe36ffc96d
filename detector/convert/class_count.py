"""Which tensors of a model depend on its class count, and how many classes a checkpoint's tensors were made for.

Both questions are answered by building the model on the meta device with two class counts and comparing shapes,
so no head needs a hand-written list of its class branches.
"""

from __future__ import annotations

import torch


def _meta_shapes(model_yaml: dict, nc: int) -> dict[str, torch.Size]:
    from detector.model import DetectionModel

    with torch.device("meta"):
        return {k: v.shape for k, v in DetectionModel({**model_yaml, "nc": nc}).state_dict().items()}


def class_dependent_keys(model_yaml: dict, other_nc: int | None = None) -> set[str]:
    """State-dict keys whose shape differs between this model dict and the same model for ``other_nc`` classes
    (default: one class more). Give the other class count when it is known: some heads size their hidden class
    branch layers from ``nc`` too (e.g. ``max(width, min(nc, 100))``), so which layers change depends on both."""
    nc = int(model_yaml.get("nc", 80))
    other = nc + 1 if other_nc is None or other_nc == nc else other_nc
    a, b = _meta_shapes(model_yaml, nc), _meta_shapes(model_yaml, other)
    return {k for k in a if k in b and a[k] != b[k]}


def checkpoint_class_count(model_yaml: dict, state: dict[str, torch.Tensor]) -> int | None:
    """The class count ``state`` (already in our key names) was trained for, or None when it holds no tensor
    whose shape depends on it. A class-dependent dimension grows linearly with ``nc`` (``a + (nc - 1) * step``),
    so one tensor's size gives the count."""
    one, two = _meta_shapes(model_yaml, 1), _meta_shapes(model_yaml, 2)
    for k, shape in one.items():
        if k not in state or k not in two or shape == two[k] or len(state[k].shape) != len(shape):
            continue
        d = next(i for i, (x, y) in enumerate(zip(shape, two[k])) if x != y)
        step, extra = two[k][d] - shape[d], state[k].shape[d] - shape[d]
        if step > 0 and extra >= 0 and extra % step == 0:
            return 1 + extra // step
    return None
