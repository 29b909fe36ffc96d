"""Whether our Triton kernels can run here, decided once per process, and why not when they cannot.

Every op in ``cuda_ops`` takes ``impl="auto" | "kernel" | "reference"``:

- ``"reference"``: the pure-PyTorch reference (any device; the test oracle);
- ``"kernel"``: the Triton kernel, or :class:`KernelUnavailable` with one sentence saying why it cannot run;
- ``"auto"``: the kernel on CUDA tensors where :func:`kernel_runs_on` says it can run, else the reference (never
  the interpreter: on CPU the reference is always the faster one, so ``TRITON_INTERPRET=1`` changes nothing for
  ``"auto"``; tests ask for ``"kernel"`` explicitly).

Kernels run on CUDA tensors when CUDA and Triton are both usable, and on CPU tensors when ``TRITON_INTERPRET=1``
was set before Triton was imported (Triton's interpreter; how the tests check every kernel without a GPU).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import torch

IMPLS = ("auto", "kernel", "reference")


class KernelUnavailable(RuntimeError):
    """A GPU kernel was asked for explicitly where it cannot run."""


@dataclass(frozen=True)
class KernelStatus:
    """What this process can run: ``cuda`` kernels on GPU tensors, ``interpret`` kernels on CPU tensors."""

    triton: bool
    cuda: bool
    interpret: bool
    reason: str  # why kernels cannot run on a GPU here ("" when they can)


@functools.cache
def status() -> KernelStatus:
    """Probe Triton and CUDA once; importing Triton is deferred to the first kernel call."""
    interpret = os.environ.get("TRITON_INTERPRET", "") == "1"
    has_triton = importlib.util.find_spec("triton") is not None
    has_cuda = torch.cuda.is_available()
    if not has_triton:
        reason = "Triton is not installed (pip install triton)"
    elif not has_cuda:
        reason = "no CUDA device is visible to PyTorch"
    elif interpret:
        reason = "TRITON_INTERPRET=1 is set, so Triton runs kernels on the CPU only"
    else:
        reason = ""
    return KernelStatus(
        triton=has_triton,
        cuda=has_cuda and has_triton and not interpret,
        interpret=interpret and has_triton,
        reason=reason,
    )


def kernel_runs_on(device: torch.device) -> bool:
    """True when a Triton kernel can run on tensors of ``device`` in this process."""
    st = status()
    return st.cuda if device.type == "cuda" else (st.interpret and device.type == "cpu")


def use_kernel(op: str, impl: str, device: torch.device) -> bool:
    """Resolve ``impl`` for an op on ``device``: True for the kernel, False for the reference."""
    if impl not in IMPLS:
        raise ValueError(f"{op}: impl={impl!r} is not one of {', '.join(IMPLS)}")
    if impl == "reference":
        return False
    runs = kernel_runs_on(device)
    if impl == "kernel" and not runs:
        raise KernelUnavailable(f"{op}: the Triton kernel cannot run on {device.type} tensors here: {why_not(device)}.")
    return runs and (impl == "kernel" or device.type == "cuda")


def why_not(device: torch.device) -> str:
    """The one-sentence reason a kernel cannot run on ``device`` ("" when it can)."""
    st = status()
    if device.type == "cuda":
        return st.reason
    if not st.triton:
        return "Triton is not installed (pip install triton)"
    return "kernels run on CPU tensors only under Triton's interpreter (set TRITON_INTERPRET=1 before importing triton)"
