"""Shared bits of the cuda_ops tests: where kernels run, how to skip, how to compare."""

from __future__ import annotations

import pytest
import torch

from cuda_ops.availability import kernel_runs_on, why_not

# CUDA where present (compiled kernels), else CPU through Triton's interpreter (tests/conftest.py sets it)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

needs_kernel = pytest.mark.skipif(not kernel_runs_on(DEVICE), reason=f"Triton kernels cannot run: {why_not(DEVICE)}")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64; NaN anywhere fails."""
    a, b = a.double().cpu(), b.double().cpu()
    assert torch.isfinite(a).all(), "non-finite values in the kernel output"
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()
