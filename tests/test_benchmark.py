"""detector benchmark on CPU with a tiny model: every backend timed or skipped with its reason, CSV written."""

from __future__ import annotations

import csv

import pytest
import yaml
from deploy_testing import TINY

from detector.benchmark import BenchmarkArgs, benchmark, cli_benchmark, load_train_form
from detector.config import ConfigError


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "name"}))
    return path


def test_cli_benchmark_table_and_csv(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "bench.csv"
    argv = [f"model={tiny_yaml}", "backends=torch,torch-fused,onnx,engine", "batch=1,2", "imgsz=64", "runs=2"]
    assert cli_benchmark([*argv, "warmup=1", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "tiny @ 64, cpu, fp32, median of 2 runs" in printed and f"saved {out}" in printed
    rows = list(csv.DictReader(out.open()))
    assert [(r["backend"], int(r["batch"])) for r in rows] == [
        (b, n) for b in ("torch", "torch-fused", "onnx", "engine") for n in (1, 2)
    ]
    for r in rows[:6]:
        assert r["status"] == "ok" and float(r["median_ms"]) > 0
        assert float(r["images_per_s"]) == pytest.approx(int(r["batch"]) / float(r["median_ms"]) * 1e3, rel=1e-3)
    assert all(r["status"] == "skipped: TensorRT needs device=cuda" and r["median_ms"] == "" for r in rows[6:])


def test_half_on_cpu_is_skipped_with_its_reason(tiny_yaml):
    args = BenchmarkArgs(model=str(tiny_yaml), backends=["torch-fused"], batch=[1], imgsz=64, half=True, runs=1)
    (row,) = benchmark(load_train_form(str(tiny_yaml)), args)
    assert row.median_ms is None and "half=True needs device=cuda" in row.status


def test_bad_arguments(tiny_yaml):
    with pytest.raises(ConfigError, match=r"unknown backend\(s\) \['tensorrt'\]"):
        cli_benchmark([f"model={tiny_yaml}", "backends=tensorrt"])
    with pytest.raises(ConfigError, match="name a model"):
        cli_benchmark(["imgsz=64"])
