"""Training-step speed on a GPU: eager vs fused BatchNorm vs CUDA-graph capture, and the BCCD recipe end to end.

    python tools/bench_train_step.py                         # gelan-t, yolov9-t at 640, batch 16 and 64, AMP
    python tools/bench_train_step.py --models gelan-t --batch 16 --no-recipe
    python tools/bench_train_step.py --dry-run               # CPU check of the script itself (tiny sizes)

Per model x batch x variant (eager, eager + fused BN, graph, graph + fused BN): the median wall time of one
training step (forward, loss, backward, clip, optimiser step; the host waits for the device after each step)
over ``--steps`` steps after ``--warmup``; GPU busy time per step from ``torch.profiler`` (kernel time summed);
images/s; peak allocated memory. Synthetic batches (random images, 20 random boxes per image) with the real
losses. Then, unless ``--no-recipe``, ``detector train bccd-gelan-t device=0`` (and with ``graph=True``): wall
time and the final val mAP50-95. Without CUDA it stops with a message (``--dry-run`` runs on the CPU instead).
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.engine.settings import TrainConfig  # noqa: E402
from detector.engine.step import TrainStep  # noqa: E402
from detector.engine.train_step import CapturedTrainStep, make_train_step, standalone_parts  # noqa: E402
from detector.model import build_model  # noqa: E402
from detector.nn.conv import use_fused_bn  # noqa: E402

VARIANTS = {
    "eager": (False, False),
    "eager+fusedBN": (False, True),
    "graph": (True, False),
    "graph+fusedBN": (True, True),
}


def synthetic_batch(batch: int, imgsz: int, nc: int, boxes: int = 20, seed: int = 0) -> dict:
    """Random uint8 images and ``boxes`` random boxes per image, in the loader's batch layout (pinned on CUDA)."""
    gen = torch.Generator().manual_seed(seed)
    n = batch * boxes
    xy = torch.rand(n, 2, generator=gen) * imgsz * 0.8
    wh = torch.rand(n, 2, generator=gen) * imgsz * 0.2 + 8
    img = torch.randint(0, 256, (batch, 3, imgsz, imgsz), dtype=torch.uint8, generator=gen)
    return {
        "img": img.pin_memory() if torch.cuda.is_available() else img,
        "cls": torch.randint(0, nc, (n,), generator=gen).float(),
        "bboxes": torch.cat((xy, (xy + wh).clamp(max=imgsz)), 1),
        "batch_idx": torch.arange(batch).repeat_interleave(boxes),
    }


def make_step(model_name: str, batch: int, device: torch.device, graph: bool, fused_bn: bool, amp: bool) -> TrainStep:
    model = build_model(model_name, nc=80).to(device).train()
    use_fused_bn(model, fused_bn)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    cfg = TrainConfig(batch=batch, amp=amp, graph=graph, fused_bn=fused_bn)
    return make_train_step(standalone_parts(model, cfg, device, "SGD"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_busy_ms(step: TrainStep, batch: dict, device: torch.device, steps: int = 5) -> float | None:
    """Kernel time per step from ``torch.profiler`` (None on the CPU)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step.forward_backward(batch)
            step.optimizer_step()
        sync(device)
    total_us = sum(e.self_device_time_total for e in prof.key_averages())
    return total_us / 1000 / steps


def bench_variant(args, model_name: str, batch: int, variant: str, device: torch.device) -> dict:
    graph, fused_bn = VARIANTS[variant]
    torch.manual_seed(0)
    step = make_step(model_name, batch, device, graph, fused_bn, amp=not args.no_amp)
    data = synthetic_batch(batch, args.imgsz, 80)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        items = step.forward_backward(data)
        step.optimizer_step()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    loss = float(items.sum())  # one read back, after timing
    busy = gpu_busy_ms(step, data, device)
    median = statistics.median(times)
    return {
        "model": model_name,
        "batch": batch,
        "variant": variant,
        "mode": "graph" if isinstance(step, CapturedTrainStep) else "eager",
        "step_ms": median * 1000,
        "gpu_busy_ms": busy,
        "images_per_s": batch / median,
        "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
        "loss": loss,
    }


def run_recipe(graph: bool, device: str) -> dict:
    """``detector train bccd-gelan-t device=...`` in a subprocess: wall time and the final val mAP50-95."""
    project = Path(tempfile.mkdtemp(prefix="bench_train_"))
    cmd = [sys.executable, "-m", "detector", "train", "bccd-gelan-t", f"device={device}", f"graph={graph}"]
    cmd += [f"project={project}", "name=run", "plots=False"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    with open(project / "run" / "results.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return {"recipe": "bccd-gelan-t", "graph": graph, "wall_s": wall, "mAP50-95": float(last["mAP50-95"])}


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["gelan-t", "yolov9-t"])
    p.add_argument("--batch", nargs="+", type=int, default=[16, 64])
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--no-recipe", action="store_true", help="skip the end-to-end BCCD recipe runs")
    p.add_argument("--dry-run", action="store_true", help="CPU, gelan-t at 64 px, batch 2, 2 steps: checks the script")
    args = p.parse_args(argv)
    logging.getLogger("detector").addHandler(logging.StreamHandler(sys.stdout))  # graph fallback / capture lines
    logging.getLogger("detector").setLevel(logging.INFO)
    if args.dry_run:
        args.models, args.batch, args.imgsz, args.steps, args.warmup = ["gelan-t"], [2], 64, 2, 1
        args.no_recipe = True
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print(
            "bench_train_step: needs a CUDA GPU (torch.cuda.is_available() is False here); "
            "run with --dry-run for a CPU check of the script",
            file=sys.stderr,
        )
        return 2
    else:
        device = torch.device("cuda", 0)
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    rows = [bench_variant(args, m, b, v, device) for m in args.models for b in args.batch for v in args.variants]
    print(
        f"\n{'model':10} {'batch':>5} {'variant':14} {'mode':6} {'step ms':>8} {'GPU ms':>7} {'img/s':>7} {'peak GB':>7}"
    )
    for r in rows:
        print(
            f"{r['model']:10} {r['batch']:>5} {r['variant']:14} {r['mode']:6} {r['step_ms']:>8.1f} "
            f"{fmt(r['gpu_busy_ms'], '>7.1f')} {r['images_per_s']:>7.1f} {fmt(r['peak_mem_gb'], '>7.2f')}"
        )
    if not args.no_recipe:
        for graph in (False, True):
            r = run_recipe(graph, "0")
            print(f"recipe {r['recipe']} graph={graph}: {r['wall_s']:.1f} s, val mAP50-95 {r['mAP50-95']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
