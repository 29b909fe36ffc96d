"""tools/bench_train_step.py: the CPU dry run measures every asked variant and prints the table; without CUDA
the real benchmark stops with a clear message."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_train_step.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_train_step", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_prints_the_table(capsys):
    tool = load_tool()
    assert tool.main(["--dry-run", "--variants", "eager", "graph"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("gelan-t")]
    assert [r[2] for r in rows] == ["eager", "graph"]
    assert [r[3] for r in rows] == ["eager", "eager"]  # graph falls back on the CPU ...
    assert "graph=True: training eagerly instead: CUDA graphs need a CUDA device" in out  # ... saying why
    assert all(float(r[4]) > 0 and float(r[6]) > 0 for r in rows)  # step ms, images/s measured


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the benchmark would run")
def test_without_cuda_it_stops_clearly(capsys):
    assert load_tool().main(["--no-recipe"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
