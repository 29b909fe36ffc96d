"""Which autocast dtype a device trains and validates in."""

from __future__ import annotations

import torch


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with a GradScaler); no AMP on CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
