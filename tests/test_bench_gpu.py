"""tools/bench_gpu.py: the dry run exercises every code path on the CPU; without CUDA a real run says so."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "bench_gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up while the script is being executed
    spec.loader.exec_module(module)
    return module


def test_dry_run_prints_every_row(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "rows.csv"
    assert bench.main(["--dry-run", "--batch", "1", "--runs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "DRY RUN on CPU" in printed
    lines = printed.splitlines()
    for variant in bench.VARIANTS:
        (row,) = [ln for ln in lines if ln.startswith(f"gelan-t {variant} ")]
        model_ms, e2e_ms, ips = (float(v) for v in row.split()[3:6])
        assert model_ms > 0 and e2e_ms > 0 and ips == pytest.approx(1e3 / e2e_ms, rel=0.01, abs=1)
    for kernel in ("letterbox_frames", "decode_topk", "ska forward", "ska forward+backward", "dw_pw"):
        assert any(ln.startswith(f"kernel {kernel} ") and "x the PyTorch path" in ln for ln in lines), kernel
    assert any(ln.startswith("gelan-t floor") for ln in lines) and "TB/s" in printed and "TFLOP/s" in printed
    assert len(out.read_text().splitlines()) == 1 + 2 + 1 + 4 + 2 * 5  # header, ceilings, floor, variants, kernels


def test_without_cuda_a_real_run_stops_with_one_sentence():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="needs a CUDA GPU and torch sees none.*--dry-run"):
        _load().main([])
