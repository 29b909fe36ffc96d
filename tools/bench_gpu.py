"""GPU inference benchmark: one table for issue 11's targets (runs in a few minutes on one H100/H200).

    python tools/bench_gpu.py                  # on a CUDA machine; CSV beside the table with --out
    python tools/bench_gpu.py --dry-run        # CPU: tiny sizes, references, no graphs; checks the script only

Rows, all fp16 on the GPU:

- ``gelan-t`` and ``gelan-c`` at 640, batch 1 and 32, for ``torch`` (eval form, unfused, eager),
  ``torch-fused`` (deploy form, eager), ``graph`` (deploy form, channels-last, CUDA graph, PyTorch ops only:
  dense decode, letterbox through its PyTorch reference) and ``graph+kernels`` (the same with our Triton
  kernels: letterbox_frames, SKA/dw_pw where the model has them, decode_topk);
  ``model ms`` = one forward from a letterboxed fp16 batch already on the GPU to decoded output (dense for
  torch, top-K candidates for graph); ``e2e ms`` = ``Detector.predict`` from host uint8 BGR frames (real BCCD
  photos, 640x480) to ``Results`` (letterbox, forward, NMS, boxes back to the frame);
- each kernel against the PyTorch path it replaces (same inputs, same GPU): ``cuda_ops.bench``'s cases at
  gelan-t 640 batch-32 shapes (SKA and dw_pw, which gelan-t lacks, at LSNet / LeYOLO-sized layers);
- floors: FLOPs over the measured fp16 matmul rate, and bytes over the measured copy bandwidth (both measured
  here first); a model's bytes are the frames read, the weights read and every layer's output written and read
  once (what a layer-by-layer runtime cannot avoid), a kernel's bytes its inputs read and outputs written once.

Timing: CUDA events around each call after warm-up, median of ``--runs`` (host clock for the end-to-end rows,
which end in a host synchronisation anyway). Without CUDA the script stops and says so; ``--dry-run`` runs every
code path on the CPU at tiny sizes, the kernels through Triton's interpreter (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("torch", "torch-fused", "graph", "graph+kernels")


@dataclass
class Row:
    """One line of the table."""

    what: str
    batch: int
    ms: float | None
    e2e_ms: float | None = None
    floor_ms: float | None = None
    note: str = ""

    @property
    def images_per_s(self) -> float | None:
        """End-to-end throughput (model rows only)."""
        return None if self.e2e_ms is None else self.batch / self.e2e_ms * 1e3


@dataclass
class Settings:
    device: torch.device
    models: list[str]
    imgsz: int
    batches: list[int]
    runs: int
    warmup: int
    dry: bool


# ---------------------------------------------------------------------------------------------------- timing ---


def time_device(fn: Callable[[], object], s: Settings) -> float:
    """Median milliseconds of ``fn`` with CUDA events (host clock on CPU) after ``warmup`` calls."""
    for _ in range(s.warmup):
        fn()
    times = []
    for _ in range(s.runs):
        if s.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_host(fn: Callable[[], object], s: Settings) -> float:
    """Median milliseconds of ``fn``, which ends in a host synchronisation (``Detector.predict``)."""
    for _ in range(s.warmup):
        fn()
    times = []
    for _ in range(s.runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------- ceilings ---


@dataclass
class Ceilings:
    bytes_per_ms: float  # device memory bandwidth, read + write
    flops_per_ms: float  # fp16 matmul rate

    def floor_ms(self, flops: float, nbytes: float) -> float:
        return max(flops / self.flops_per_ms, nbytes / self.bytes_per_ms)


def measure_ceilings(s: Settings) -> tuple[Ceilings, list[Row]]:
    """A large device copy (bytes read + written) and a large fp16 matmul, as the floors' denominators."""
    n_bytes = (1 << 24) if s.dry else (1 << 30)
    src = torch.empty(n_bytes, dtype=torch.uint8, device=s.device).random_(0, 255)
    dst = torch.empty_like(src)
    copy_ms = time_device(lambda: dst.copy_(src), s)
    n = 256 if s.dry else 8192
    dtype = torch.float32 if s.dry else torch.float16  # fp16 matmul on CPU is not a thing worth timing
    a = torch.randn(n, n, device=s.device, dtype=dtype)
    b = torch.randn(n, n, device=s.device, dtype=dtype)
    mm_ms = time_device(lambda: a @ b, s)
    ceil = Ceilings(bytes_per_ms=2 * n_bytes / copy_ms, flops_per_ms=2 * n**3 / mm_ms)
    rows = [
        Row("ceiling: device copy", 1, copy_ms, note=f"{ceil.bytes_per_ms / 1e9:.2f} TB/s (read + write)"),
        Row("ceiling: fp16 matmul", 1, mm_ms, note=f"{ceil.flops_per_ms / 1e9:.1f} TFLOP/s ({n}^3)"),
    ]
    return ceil, rows


# --------------------------------------------------------------------------------------------------- models ---


def model_bytes(model, imgsz: int, batch: int, frame_hw: tuple[int, int]) -> float:
    """Frames read + fp16 weights read + each layer's fp16 output written and read once, for one batch."""
    from detector.info import shape_only_copy

    meta = shape_only_copy(model).eval()
    elements = 0

    def count(_m, _inp, out) -> None:
        nonlocal elements
        outs = out if isinstance(out, (list, tuple)) else [out]
        elements += sum(o.numel() for o in outs if isinstance(o, torch.Tensor))

    hooks = [layer.register_forward_hook(count) for layer in meta.layers]
    with torch.no_grad():
        meta(torch.empty(1, 3, imgsz, imgsz, device="meta"))
    for h in hooks:
        h.remove()
    weights = sum(p.numel() for p in model.parameters()) * 2
    frames = frame_hw[0] * frame_hw[1] * 3
    return weights + batch * (frames + 2 * 2 * elements)


def make_detector(variant: str, name: str, s: Settings):
    """A ``Detector`` running ``name`` (fresh weights) the way ``variant`` says."""
    from detector import Detector
    from detector.export import load_deploy_model
    from detector.predict.backends import TorchBackend
    from detector.predict.graph_backend import GraphBackend

    half = s.device.type == "cuda"
    if variant in ("torch", "torch-fused"):
        from detector.model import build_model

        model = build_model(name)
        model = model.to_deploy() if variant == "torch-fused" else model.drop_auxiliary().eval()
        return Detector(TorchBackend(model, s.device, half=half))
    kernels = "auto" if variant == "graph+kernels" else False
    backend = GraphBackend(load_deploy_model(name), s.device, half=half, kernels=kernels, capture=not s.dry)
    return Detector(backend)


def model_forward(det, images: torch.Tensor) -> Callable[[], object]:
    """One forward of the detector's backend on a letterboxed batch already on the device."""
    backend = det.backend
    if hasattr(backend, "replay"):
        x = backend.prepare(images)
        return lambda: backend.replay(x, conf=0.25)
    x = images.to(backend.device, backend.dtype)
    return lambda: backend(x)


def bench_models(s: Settings, ceil: Ceilings) -> list[Row]:
    from detector.info import count_flops
    from detector.model import build_model
    from detector.ops import PreprocessSpec
    from detector.ops.letterbox import to_input

    frames_all = [np.ascontiguousarray(f) for f in _bccd_frames(max(s.batches))]
    rows = []
    for name in s.models:
        deploy = build_model(name).to_deploy()
        flops = count_flops(deploy, s.imgsz)
        for batch in s.batches:
            frames = frames_all[:batch]
            images, _ = to_input(frames, PreprocessSpec(s.imgsz, auto=False), s.device)  # the square, as the FLOPs
            floor = ceil.floor_ms(flops * batch, model_bytes(deploy, s.imgsz, batch, frames[0].shape[:2]))
            rows.append(Row(f"{name} floor", batch, None, floor_ms=floor, note=f"{flops / 1e9:.1f} GFLOPs/img"))
            for variant in VARIANTS:
                det = make_detector(variant, name, s)
                fwd = time_device(model_forward(det, images), s)
                e2e = time_host(lambda det=det, frames=frames: det.predict(frames, imgsz=s.imgsz, batch=len(frames)), s)
                rows.append(Row(f"{name} {variant}", batch, fwd, e2e, floor))
                del det
                if s.device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _bccd_frames(n: int) -> list[np.ndarray]:
    import cv2

    files = sorted((ROOT / "datasets/bccd/JPEGImages").glob("*.jpg"))
    if not files:
        raise SystemExit(f"bench_gpu: no BCCD images under {ROOT / 'datasets/bccd/JPEGImages'}")
    return [cv2.imread(str(files[i % len(files)])) for i in range(n)]


# -------------------------------------------------------------------------------------------------- kernels ---


def bench_kernels(s: Settings, ceil: Ceilings) -> list[Row]:
    """``cuda_ops.bench``'s cases (gelan-t 640 batch-32 shapes; LSNet/LeYOLO-sized layers for SKA and dw_pw):
    each Triton kernel and the PyTorch path it replaces, on the same inputs."""
    from cuda_ops.bench import cases

    batch, size = (1, 32) if s.dry else (32, s.imgsz)  # dry: the interpreter is slow
    rows = []
    for case in cases(batch, size, s.device):
        base = time_device(case.baseline, s)
        got = time_device(case.kernel, s)
        floor = ceil.floor_ms(0.0, case.min_bytes)
        rows.append(Row(f"kernel {case.name} (PyTorch)", batch, base, floor_ms=floor, note=case.shape))
        rows.append(Row(f"kernel {case.name}", batch, got, floor_ms=floor, note=f"{base / got:.2f}x the PyTorch path"))
    return rows


# ------------------------------------------------------------------------------------------------ the table ---


def format_table(rows: list[Row]) -> str:
    def num(v: float | None, width: int, digits: int) -> str:
        return f"{v:{width}.{digits}f}" if v is not None else f"{'-':>{width}}"

    head = f"{'what':<38} {'batch':>5} {'model ms':>9} {'e2e ms':>8} {'img/s':>8} {'floor ms':>9}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.what:<38} {r.batch:>5} {num(r.ms, 9, 3)} {num(r.e2e_ms, 8, 3)} "
            f"{num(r.images_per_s, 8, 0)} {num(r.floor_ms, 9, 3)}  {r.note}"
        )
    return "\n".join(lines)


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["what", "batch", "model_ms", "e2e_ms", "images_per_s", "floor_ms", "note"])
        for r in rows:
            w.writerow([r.what, r.batch, r.ms, r.e2e_ms, r.images_per_s, r.floor_ms, r.note])


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, references: checks the script only")
    p.add_argument("--models", default=None, help="comma-separated zoo names (default gelan-t,gelan-c)")
    p.add_argument("--imgsz", type=int, default=None)
    p.add_argument("--batch", default=None, help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the rows as CSV here")
    a = p.parse_args(argv)
    dry = a.dry_run
    if dry:  # the kernels run on the CPU through Triton's interpreter, read when the first kernel is compiled
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if not dry and not torch.cuda.is_available():
        raise SystemExit(
            "bench_gpu: needs a CUDA GPU and torch sees none; run it on a GPU machine, or --dry-run to check the script"
        )
    settings = Settings(
        device=torch.device("cpu" if dry else "cuda"),
        models=(a.models or ("gelan-t" if dry else "gelan-t,gelan-c")).split(","),
        imgsz=a.imgsz or (64 if dry else 640),
        batches=[int(b) for b in (a.batch or ("1,2" if dry else "1,32")).split(",")],
        runs=a.runs or (2 if dry else 50),
        warmup=0 if dry else 10,
        dry=dry,
    )
    return settings, a


def main(argv: list[str] | None = None) -> int:
    s, a = parse_args(argv)
    torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    ceil, rows = measure_ceilings(s)
    rows += bench_models(s, ceil)
    rows += bench_kernels(s, ceil)
    where = "DRY RUN on CPU (tiny sizes, references; not a measurement)" if s.dry else torch.cuda.get_device_name()
    print(f"bench_gpu: {where}; imgsz {s.imgsz}; median of {s.runs}; {time.perf_counter() - t0:.0f} s")
    print(format_table(rows))
    if a.out:
        write_csv(rows, Path(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
