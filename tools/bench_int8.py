"""FP32 vs INT8 (real calibration) vs INT8 (data-free) on one trained checkpoint, side by side in one run.

    python tools/bench_int8.py runs/train/exp/weights/best.pt --data bccd --imgsz 320 --calib 200

Exports the three ONNX models with dynamic H/W (one file each serves validation and both latency sizes),
evaluates each with the same Validator as ``detector val`` (mAP50-95 / mAP50 on the val split) and times ONNX
Runtime at each ``--sizes`` (batch 1, ``--threads`` threads). Latency rounds alternate between the models so
a change in machine load hits them alike. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import numpy as np


def export_variants(ckpt: str, out: Path, args) -> dict[str, tuple[Path, float]]:
    """``{name: (onnx path, export seconds)}`` for fp32, int8 (data) and int8 (free) [and int8 clip]."""
    from detector.export import export
    from detector.quantize import Int8Options

    def opts(**kw) -> Int8Options:
        return Int8Options(method=args.method, keep_float=args.keep_float, **kw)

    plans = {
        "fp32": {},
        f"int8 {args.method}, calib={args.calib}": {"int8": opts(), "data": args.data, "calib": args.calib},
        "int8 data-free (calib=free)": {
            "int8": opts(calib="free", free_steps=args.free_steps, free_images=args.free_images)
        },
    }
    if args.clip:
        plans[f"int8 + clip_weights={args.clip:g}"] = {"int8": opts(clip_weights=args.clip), "data": args.data,
                                                      "calib": args.calib}  # fmt: skip
    made = {}
    for i, (name, kw) in enumerate(plans.items()):
        t = time.perf_counter()
        path = export(ckpt, imgsz=args.imgsz, dynamic_hw=True, out=out / f"model{i}.onnx", **kw)
        made[name] = (path, time.perf_counter() - t)
        print(f"exported {name}: {path} ({made[name][1]:.0f} s)", flush=True)
    return made


def evaluate(path: Path, args, out: Path) -> dict[str, float]:
    from detector.engine.settings import ValRunConfig
    from detector.engine.validator import validate_checkpoint

    cfg = ValRunConfig(model=str(path), data=args.data, imgsz=args.imgsz, batch=8, device="cpu", workers=0,
                       plots=False, project=str(out / "val"), name=path.stem, exist_ok=True)  # fmt: skip
    return validate_checkpoint(cfg).stats


def latency(paths: dict[str, Path], sizes: list[int], threads: int, runs: int) -> dict[tuple[str, int], float]:
    """Median ms per batch-1 call, rounds alternating between the models."""
    from deploy.onnx_runner import OnnxRunner

    runners = {name: OnnxRunner(p, device="cpu", threads=threads) for name, p in paths.items()}
    times: dict[tuple[str, int], list[float]] = {(n, s): [] for n in runners for s in sizes}
    rng = np.random.default_rng(0)
    for s in sizes:
        x = rng.random((1, 3, s, s), dtype=np.float32)
        for r in runners.values():
            for _ in range(3):
                r(x)  # warm-up: first calls allocate
        for _ in range(runs):
            for name, r in runners.items():
                t = time.perf_counter()
                r(x)
                times[(name, s)].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument("--data", default="bccd")
    ap.add_argument("--imgsz", type=int, default=320, help="export / calibration / validation size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640], help="latency input sizes")
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"])
    ap.add_argument("--keep-float", type=int, default=4)
    ap.add_argument("--free-steps", type=int, default=200)
    ap.add_argument("--free-images", type=int, default=32)
    ap.add_argument("--clip", type=float, default=0.0, help="also export with clip_weights=K")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", default="runs/bench_int8")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    made = export_variants(args.ckpt, out, args)
    stats = {name: evaluate(p, args, out) for name, (p, _) in made.items()}
    ms = latency({n: p for n, (p, _) in made.items()}, args.sizes, args.threads, args.runs)

    base = stats["fp32"]["mAP50-95"]
    head = "| model | mAP50-95 | mAP50 | loss (points) | " + " | ".join(f"{s} px ms (x)" for s in args.sizes)
    print("\n" + head + " | export s |")
    print("|" + "---|" * (5 + len(args.sizes)))
    for name, (_, secs) in made.items():
        st = stats[name]
        speed = " | ".join(f"{ms[(name, s)]:.1f} ({ms[('fp32', s)] / ms[(name, s)]:.2f}x)" for s in args.sizes)
        loss = 100 * (base - st["mAP50-95"])
        print(f"| {name} | {st['mAP50-95']:.3f} | {st['mAP50']:.3f} | {loss:+.1f} | {speed} | {secs:.0f} |")


if __name__ == "__main__":
    main()
