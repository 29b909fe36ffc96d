"""channels_last (NHWC) memory format on CUDA, for the model and its input batches.

Tensor cores run convolutions in NHWC; with NCHW tensors cuDNN transposes around every fp16/bf16
convolution (~9% of GPU time in the transposes in a Hopper profile). On the CPU the default NCHW stays:
there is nothing to gain and some kernels are slower. Model code must not assume contiguity (``reshape``,
not ``view``, on activations) so both layouts give the same numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def uses_channels_last(device: torch.device) -> bool:
    return device.type == "cuda"


def model_to_channels_last(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with its 4-d parameters and buffers in channels_last on CUDA (in place; unchanged on CPU)."""
    return model.to(memory_format=torch.channels_last) if uses_channels_last(device) else model


def to_channels_last(images: Tensor, device: torch.device) -> Tensor:
    """An image batch ``(B, C, H, W)`` in channels_last on CUDA; unchanged elsewhere."""
    if uses_channels_last(device) and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
