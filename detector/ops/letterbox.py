"""Images -> model input tensors under a ``PreprocessSpec``.

The pixels come from ``deploy.preprocess`` (OpenCV/numpy, no torch), the single letterbox of the project, so
validation, ``Detector`` and ``deploy`` cannot drift apart; this module only adds the move to torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from deploy.contract import LetterboxPlan, PreprocessSpec
from deploy.preprocess import apply_letterbox, letterbox, letterbox_batch

__all__ = ["apply_letterbox", "letterbox", "letterbox_batch", "to_input"]


def to_input(
    images: Sequence[np.ndarray],
    spec: PreprocessSpec,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, list[LetterboxPlan]]:
    """BGR ``uint8 (H_i, W_i, 3)`` images -> ``(Tensor[B, 3, H, W])`` RGB in 0..1 on ``device`` in ``dtype``,
    and each image's ``LetterboxPlan``.

    Divides by 255 in float32 before any narrowing to ``dtype``, as validation does with its uint8 batches,
    so an fp32 input is bit-identical to validation's and to ``deploy.preprocess.preprocess``.
    """
    batch, plans = letterbox_batch(images, spec)
    x = torch.from_numpy(batch).to(device).float().div_(255)
    return x.to(dtype), plans
