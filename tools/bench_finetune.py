"""Fine-tune from another framework's checkpoint vs train from scratch, at the same budget, side by side.

    python tools/bench_finetune.py /tmp/ft/runs/pre/weights/last.pt --model gelan-t --recipe bccd-gelan-t \
        --epochs 20 --imgsz 256 --set augment.close_mosaic=5

Converts ``SRC`` with ``detector convert`` (the restricted unpickler, the source's key mapping), then runs
``detector train RECIPE`` twice with the same settings (seed, epochs, image size, workers; every ``--set KEY=VALUE``
goes to both): once from scratch and once with ``weights=`` the converted file (class branches fresh when
the class count differs). Both runs go at the same time, one thread each, so a change in the machine's load
hits them alike. Prints a Markdown table (best and last val mAP50-95 / mAP50, the epoch of the best, mAP50-95
after the first and middle epochs, wall time) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path


def convert(src: str, model: str, out: Path) -> str:
    from detector.convert import convert as convert_checkpoint

    path, report = convert_checkpoint(src, out / f"converted-{model}.pt", model=model)
    print(f"converted {src} -> {path}: {report.summary()}", flush=True)
    return str(path)


def train_command(args, name: str, weights: str) -> list[str]:
    cmd = [sys.executable, "-m", "detector", "train", args.recipe, f"model={args.model}", f"epochs={args.epochs}",
           f"imgsz={args.imgsz}", f"batch={args.batch}", f"workers={args.workers}", "device=cpu", f"seed={args.seed}",
           f"project={args.out}", f"name={name}", "exist_ok=true", "plots=false", "verbose=false", "patience=0"]  # fmt: skip
    return cmd + ([f"weights={weights}"] if weights else []) + args.extra


def run_both(args, weights: str) -> dict[str, float]:
    """Start both trainings, wait for both; ``{name: wall seconds}``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    procs = {}
    for name, w in (("scratch", ""), ("finetune", weights)):
        log = open(args.out / f"{name}.log", "w")  # noqa: SIM115 (closed below)
        procs[name] = (subprocess.Popen(train_command(args, name, w), stdout=log, stderr=subprocess.STDOUT, env=env),
                       log, time.perf_counter())  # fmt: skip
    walls = {}
    for name, (proc, log, t0) in procs.items():
        rc = proc.wait()
        walls[name] = time.perf_counter() - t0
        log.close()
        if rc:
            raise SystemExit(f"{name} training failed (rc {rc}); see {args.out / f'{name}.log'}")
    return walls


def curve(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "results.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def table(args, walls: dict[str, float]) -> str:
    mid = max(1, args.epochs // 2)
    lines = [
        f"| start ({args.model}, {args.epochs} epochs at {args.imgsz}) | best mAP50-95 | best mAP50 "
        f"| best epoch | last mAP50-95 | mAP50-95 after epoch 1 / {mid} | wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("scratch", "finetune"):
        rows = curve(args.out / name)
        best = max(rows, key=lambda r: r["mAP50-95"])
        first, middle = rows[0]["mAP50-95"], rows[min(mid, len(rows)) - 1]["mAP50-95"]
        label = "from scratch" if name == "scratch" else f"weights= converted {Path(args.src).name}"
        lines.append(
            f"| {label} | {best['mAP50-95']:.3f} | {best['mAP50']:.3f} | {int(best['epoch'])} | "
            f"{rows[-1]['mAP50-95']:.3f} | {first:.3f} / {middle:.3f} | {walls[name] / 60:.1f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="another framework's checkpoint (anything `detector convert` reads)")
    ap.add_argument("--model", default="gelan-t", help="our zoo model it converts into")
    ap.add_argument("--recipe", default="bccd-gelan-t")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/finetune"))
    ap.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting for both runs (repeatable), e.g. --set augment.close_mosaic=5",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()
    walls = run_both(args, convert(args.src, args.model, args.out))
    print(table(args, walls))


if __name__ == "__main__":
    main()
