"""Deferred Triton: kernels are plain functions until first use, so ``import cuda_ops`` never imports Triton.

Each op module writes its kernels as module-level functions over a module global ``tl`` (``None`` until bound),
with string annotations (``from __future__ import annotations``) so ``tl.constexpr`` is not evaluated at import.
:func:`jit_kernels` binds ``tl`` and wraps the functions with ``triton.jit`` (an interpreted function under
``TRITON_INTERPRET=1``); :func:`compile_for_gpu` compiles one of them ahead of time for a CUDA target without a
GPU, which is how the tests catch a kernel the interpreter accepts but the compiler rejects.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CompileSpec:
    """One specialisation of a kernel to compile ahead of time: Triton signature types, constexprs, options."""

    name: str
    fn: Callable
    signature: dict[str, str]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    # int arguments that are multiples of 16 at the benchmark shapes; Triton specialises those (and 16-byte
    # aligned pointers, which every spec assumes) at run time, so the PTX shows the loads the GPU will run
    multiples_of_16: tuple[str, ...] = ()


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (Triton block shapes must be powers of two)."""
    return 1 << max(0, n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints (grid sizes)."""
    return -(-a // b)


def program_block(gpu_block: int, device, interpreter_block: int = 4096) -> int:
    """Elements per program: ``gpu_block`` on a GPU; larger under the interpreter, which runs programs one after
    another in Python at a fixed cost per op, so fewer, wider programs test the same code far faster."""
    return gpu_block if getattr(device, "type", device) == "cuda" else max(gpu_block, interpreter_block)


def jit_kernels(module: types.ModuleType, kernels: tuple[Callable, ...], helpers: tuple[Callable, ...] = ()):
    """Bind ``module.tl`` to ``triton.language`` and return ``triton.jit`` of each kernel, by name without "_".

    ``helpers`` are device functions the kernels call by their module-global name: compiled kernels need them as
    ``JITFunction``s, so their globals are replaced by jitted versions (the interpreter calls plain functions,
    so there they stay as they are). The raw functions are kept for :func:`compile_for_gpu`.
    """
    import triton
    import triton.language

    module.tl = triton.language
    raw = module.__dict__.setdefault("_raw_helpers", {})
    for fn in helpers:
        fn = raw.setdefault(fn.__name__, fn)
        if not _interpreting():
            setattr(module, fn.__name__, triton.jit(fn))
    return types.SimpleNamespace(**{fn.__name__.lstrip("_"): triton.jit(fn) for fn in kernels})


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "") == "1"


def compile_for_gpu(module: types.ModuleType, spec: CompileSpec, arch: int = 90):
    """Compile ``spec`` for ``sm_<arch>`` (PTX and cubin through Triton's bundled ptxas); no GPU needed.

    Works under ``TRITON_INTERPRET=1`` too: the raw function is wrapped in a compiling ``JITFunction`` directly.
    Returns Triton's compiled kernel (``.asm["ptx"]``, ``.metadata``).
    """
    import triton
    import triton.language
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    module.tl = triton.language
    signature = dict(spec.signature)
    for name in spec.constexprs:
        signature[name] = "constexpr"
    raw = module.__dict__.get("_raw_helpers", {})
    saved = {name: getattr(module, name) for name in raw}
    try:
        for name, fn in raw.items():  # compiled callees, also in a process where the interpreter is on
            setattr(module, name, JITFunction(fn))
        params = list(inspect.signature(spec.fn).parameters)
        aligned = [n for n, ty in spec.signature.items() if ty.startswith("*")] + list(spec.multiples_of_16)
        attrs = {(params.index(n),): [["tt.divisibility", 16]] for n in aligned}
        src = ASTSource(JITFunction(spec.fn), signature, spec.constexprs, attrs)
        return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": spec.num_warps})
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)
