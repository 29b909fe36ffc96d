"""tools/gpu_smoke.py in its CPU mode: every step that can run on the CPU passes, the CUDA-only ones are skipped
with their reason (on a GPU machine the same script exercises the CUDA paths)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _engine_kit import REPO


@pytest.mark.slow
def test_gpu_smoke_cpu_mode(tmp_path):
    cmd = [sys.executable, str(REPO / "tools" / "gpu_smoke.py"), "--device", "cpu", "--images", "2", "--imgsz", "64",
           "--epochs", "2", "--batch", "2", "--out", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln[:4] in ("PASS", "FAIL", "SKIP")]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = {ln[6:40].strip(): ln[:4] for ln in lines}
    assert status == {
        "train gelan-t (AMP)": "PASS",
        "train yolov9-t (PGI, AMP)": "PASS",
        "crash after epoch 1, resume": "PASS",
        "val best.pt": "PASS",
        "predict device=cuda half=True": "SKIP",
        "predict on the CPU": "PASS",
        "export ONNX, run in ONNX Runtime": "PASS",
        "TensorRT engine (uint8 input)": "SKIP",
        "single-process NCCL init": "SKIP",
    }, lines
    assert all("needs a CUDA GPU" in ln for ln in lines if ln.startswith("SKIP"))
    assert "run on CPUExecutionProvider" in next(ln for ln in lines if "ONNX Runtime" in ln)
    assert "gpu_smoke: OK (0 failed)" in proc.stdout
