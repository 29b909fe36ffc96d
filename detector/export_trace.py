"""Where and with what sample an export is traced.

Tracing runs the model once. fp16 convolutions on the CPU are ~80x slower than fp32 (no fast kernels), so an
fp16 export traces on a CUDA GPU when there is one; fp32 traces where asked (the CPU by default: it is fast
enough and needs no GPU). A dynamic-batch export traces with batch 1: the batch axis is symbolic in the graph
whatever the sample's size, so a full batch would only cost time and memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INPUT_DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class TracePlan:
    """``device`` to trace on and the ``sample (Tensor[B, 3, H, W])`` shape's batch ``batch``."""

    device: torch.device
    batch: int

    def sample(self, h: int, w: int, input_dtype: str = "float32") -> torch.Tensor:
        dtype = torch.uint8 if input_dtype == "uint8" else torch.float32
        return torch.zeros(self.batch, 3, h, w, dtype=dtype, device=self.device)


def plan_trace(half: bool, batch: int, dynamic: bool, device: str | None = None) -> TracePlan:
    """``device`` None/""/"auto": CUDA (GPU 0) for fp16 when available, else the CPU; any other form of
    ``deploy.device`` is used as given (``device=cuda`` without a GPU is an error)."""
    from detector.engine.distributed import select_device

    if device in (None, "", "auto"):
        dev = torch.device("cuda", 0) if half and torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = select_device(device)
    return TracePlan(dev, 1 if dynamic else int(batch))
