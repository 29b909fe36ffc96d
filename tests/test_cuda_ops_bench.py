"""cuda_ops.bench runs end to end (tiny shapes; through the interpreter on CPU) and prints its table."""

from __future__ import annotations

import math

from cuda_ops_kit import DEVICE, needs_kernel

from cuda_ops.bench import format_table, run


@needs_kernel
def test_bench_smoke() -> None:
    rows = run(batch=1, imgsz=64, device=DEVICE)
    assert [r["name"] for r in rows] == [
        "letterbox_frames",
        "decode_topk",
        "ska forward",
        "ska forward+backward",
        "dw_pw",
    ]
    assert all(r["kernel_ms"] > 0 and r["baseline_ms"] > 0 and math.isfinite(r["speedup"]) for r in rows)
    table = format_table(rows)
    assert table.count("\n") == len(rows) and "speedup" in table
