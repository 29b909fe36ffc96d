"""Compile every kernel of ``cuda_ops`` ahead of time for a CUDA target, no GPU needed.

``python -m cuda_ops.compile_check [--arch 90]`` prints one line per kernel specialisation (shared memory,
PTX and cubin size) and exits non-zero if any fails to compile: a kernel that Triton's interpreter accepts but
the compiler rejects is caught on a CPU-only machine.

Run it in a fresh process: after Triton's interpreter has run a kernel that calls Triton's own jitted library
functions (``tl.sum``, ``tl.max``, ...), Triton 3.x leaves ``triton.language`` patched for the interpreter and
compiling in that process fails.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cuda_ops._triton import compile_for_gpu

OP_MODULES = ("cuda_ops.letterbox", "cuda_ops.decode_topk", "cuda_ops.ska", "cuda_ops.dw_pw")


def compile_everything(arch: int = 90) -> list[tuple[str, str]]:
    """``[(specialisation name, "ok ..." or the error)]`` for every op module's ``compile_specs()``."""
    rows = []
    for name in OP_MODULES:
        module = importlib.import_module(name)
        module._kernels()  # binds tl and registers the raw device helpers
        for spec in module.compile_specs():
            try:
                k = compile_for_gpu(module, spec, arch)
                rows.append(
                    (spec.name, f"ok shared={k.metadata.shared} ptx={len(k.asm['ptx'])} cubin={len(k.asm['cubin'])}")
                )
            except Exception as e:  # report every failure, not only the first
                rows.append((spec.name, f"FAILED {type(e).__name__}: {str(e).strip().splitlines()[-1]}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for sm_90 (Hopper)")
    args = parser.parse_args(argv)
    rows = compile_everything(args.arch)
    for name, result in rows:
        print(f"{name:32s} sm_{args.arch}  {result}")
    return 1 if any(r.startswith("FAILED") for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
