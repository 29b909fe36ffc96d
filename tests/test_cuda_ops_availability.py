"""cuda_ops without a GPU: importing never fails (not even without Triton) and never imports Triton, ops fall back
to their references, asking for a kernel explicitly says why not; every kernel compiles for sm_90 with no GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import cuda_ops

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, env_drop: tuple[str, ...] = ("TRITON_INTERPRET",), timeout: int = 300):
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


CHECKS = """
    import torch, cuda_ops
    assert "triton" not in sys.modules or sys.modules["triton"] is None, "import cuda_ops imported triton"
    x, w = torch.randn(1, 4, 5, 5), torch.randn(1, 2, 9, 5, 5)
    assert torch.equal(cuda_ops.ska(x, w), cuda_ops.ska(x, w, impl="reference"))
    imgs, meta = cuda_ops.letterbox_frames([torch.zeros(7, 9, 3, dtype=torch.uint8)], 16)
    assert imgs.shape == (1, 3, 16, 16) and meta.shape == (1, 4)
    maps = [torch.randn(1, 64 + 2, 4, 4)]
    assert cuda_ops.decode_topk(maps, [8], conf=0.0)[3].all()
    try:
        cuda_ops.ska(x, w, impl="kernel")
    except cuda_ops.KernelUnavailable as e:
        print("WHY:", e)
    else:
        raise SystemExit("impl='kernel' ran on CPU without the interpreter")
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
@pytest.mark.parametrize("triton_installed", [True, False])
def test_import_and_fallback_without_gpu(triton_installed: bool) -> None:
    # a None entry in sys.modules makes both `import triton` and importlib.util.find_spec("triton") say "absent"
    hide = "" if triton_installed else "sys.modules['triton'] = None\n"
    code = "import sys\n" + hide + textwrap.dedent(CHECKS)
    res = run_python(code)
    assert res.returncode == 0, res.stderr[-2000:]
    why = res.stdout.split("WHY:", 1)[1].strip()
    assert why.startswith("ska: the Triton kernel cannot run on cpu tensors here:")
    assert ("Triton is not installed" in why) != triton_installed


def test_use_kernel_rules() -> None:
    with pytest.raises(ValueError, match="impl='fast' is not one of"):
        cuda_ops.use_kernel("ska", "fast", torch.device("cpu"))
    assert not cuda_ops.use_kernel("ska", "reference", torch.device("cpu"))
    assert not cuda_ops.use_kernel("ska", "auto", torch.device("cpu"))  # never the interpreter on "auto"


def test_every_kernel_compiles_for_sm90() -> None:
    """Triton's compiler (bundled ptxas), not the interpreter: catches what only the compiler rejects."""
    res = run_python("import sys\nfrom cuda_ops.compile_check import main\nsys.exit(main(['--arch', '90']))")
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert len(lines) >= 12 and all(" ok " in line for line in lines), res.stdout
    for op in ("letterbox", "class_max", "gather_decode", "ska_fwd", "ska_bwd", "dw_pw"):
        assert any(line.startswith(op) for line in lines), f"{op} not compiled"
