"""The fused BatchNorm + SiLU op: the reference path here, the kernels in subprocesses (``bn_silu_interpreted.py``)
so that ``TRITON_INTERPRET`` is set (or, for the sm_90 build, unset) before Triton is imported, whatever the
suite-wide conftest sets (``--noconftest``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cuda_ops import KernelUnavailable, status
from cuda_ops.batchnorm_silu import batchnorm_silu
from detector.nn.conv import Conv, fused_bn_runs

HERE = Path(__file__).resolve().parent
CHECKS = HERE / "bn_silu_interpreted.py"


def run_checks(interpret: bool, select: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:xdist",
        "-p",
        "no:cacheprovider",
        "--noconftest",
        str(CHECKS),
        "-k",
        select,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


@pytest.mark.skipif(not status().triton, reason="Triton is not installed")
def test_kernels_under_the_triton_interpreter():
    run_checks(interpret=True, select="not sm90")


@pytest.mark.skipif(not status().triton, reason="Triton is not installed")
def test_kernels_compile_for_sm90():
    run_checks(interpret=False, select="sm90")


def test_reference_path_here_and_kernel_refused_clearly():
    x = torch.randn(2, 4, 5, 5)
    w, b, rm, rv = torch.ones(4), torch.zeros(4), torch.zeros(4), torch.ones(4)
    rm2, rv2 = rm.clone(), rv.clone()
    y = batchnorm_silu(x, w, b, rm, rv, 0.1, 1e-5)  # impl="auto" on CPU without the interpreter: the reference
    torch.testing.assert_close(y, F.silu(F.batch_norm(x, rm2, rv2, w, b, True, 0.1, 1e-5)))
    torch.testing.assert_close(rm, rm2)
    if not status().interpret:
        with pytest.raises(KernelUnavailable, match="batchnorm_silu: the Triton kernel cannot run on cpu"):
            batchnorm_silu(x, w, b, rm, rv, impl="kernel")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batchnorm_silu(torch.randn(1, 4, 1, 1), w, b, rm, rv)


def test_conv_takes_the_stock_path_off_cuda():
    conv = Conv(3, 8, k=3).train()
    assert conv.fused_bn and conv._fusable_bn()
    assert not fused_bn_runs(torch.zeros(1))  # CPU tensors: PyTorch's BatchNorm
    conv.bn = torch.nn.SyncBatchNorm(8)
    assert not conv._fusable_bn()  # SyncBatchNorm keeps the stock path
