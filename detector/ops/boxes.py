"""Box geometry between the letterboxed model input and the original image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def scale_boxes(
    boxes: Tensor,
    ratio_pad: tuple[float | Sequence[float], Sequence[float]],
    ori_shape: Sequence[int],
) -> Tensor:
    """Map xyxy boxes from the letterboxed input back to the original image, clipped to it.

    Args:
        boxes (Tensor[N, 4]): xyxy in pixels of the letterboxed image.
        ratio_pad: ``(ratio, (padw, padh))`` as the letterbox returned it; ``ratio`` is one gain or ``(rw, rh)``.
        ori_shape: ``(h0, w0)`` of the original image.

    Returns:
        Tensor[N, 4]: ``(boxes - pad) / ratio`` clipped to ``[0, w0] x [0, h0]`` (a new tensor).
    """
    ratio, (padw, padh) = ratio_pad
    rw, rh = (ratio, ratio) if isinstance(ratio, (int, float)) else (float(ratio[0]), float(ratio[1]))
    h0, w0 = int(ori_shape[0]), int(ori_shape[1])
    pad = boxes.new_tensor([padw, padh, padw, padh])
    gain = boxes.new_tensor([rw, rh, rw, rh])
    out = (boxes[..., :4] - pad) / gain
    limit = boxes.new_tensor([w0, h0, w0, h0])
    return torch.minimum(out.clamp(min=0), limit)
