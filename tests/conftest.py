"""Suite-wide settings."""

from __future__ import annotations

import os

import pytest
import torch

# cuda_ops kernels are tested on CPU through Triton's interpreter, which Triton reads when a kernel is jitted:
# set it before any test module can import triton (cuda_ops imports it lazily, on the first kernel call). Only
# without a GPU: where CUDA exists the same tests run the compiled kernels. It changes nothing elsewhere in the
# suite: impl="auto" never picks the interpreter (cuda_ops.availability.use_kernel), only impl="kernel" does.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Small CPU forwards gain nothing from intra-op threads, and on a shared machine OpenMP's spin-waiting
    makes them many times slower; run the suite single-threaded and restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
