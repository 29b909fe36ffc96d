"""Per-kernel micro-benchmarks: each op's Triton kernel against the PyTorch path it replaces, plus a floor.

The shapes are those of gelan-t at 640 and batch 32 (the targets of issue 11), with LSNet / LeYOLO-sized
layers for the two ops gelan-t does not have. :func:`cases` builds them; :func:`run` times them on CUDA with
``triton.testing.do_bench`` (median of many replays after a warm-up) and returns one row per case; the floor is
the fewest bytes the op must move over the measured device-to-device copy bandwidth. ``tools/bench_gpu.py``
prints these rows; ``python -m cuda_ops.bench`` prints them alone. On CPU, ``run(device="cpu")`` executes
every case once (through Triton's interpreter for the kernels) to prove the benchmark itself works.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import cuda_ops
from cuda_ops.letterbox import PAD_VALUE


@dataclass
class Case:
    """One benchmark: a kernel call, the PyTorch baseline it replaces, and the bytes it must move at least."""

    name: str
    shape: str
    kernel: Callable[[], object]
    baseline: Callable[[], object]
    min_bytes: int


def torch_letterbox(frames: list[torch.Tensor], size: int, dtype: torch.dtype) -> torch.Tensor:
    """The stock PyTorch way to letterbox on the GPU: per frame interpolate + pad, then flip, scale, stack."""
    out = []
    for f in frames:
        h, w, _ = f.shape
        r = min(size / h, size / w)
        rh, rw = max(1, round(h * r)), max(1, round(w * r))
        x = f.permute(2, 0, 1)[None].float()
        x = F.interpolate(x, (rh, rw), mode="area" if r < 1 else "bilinear", align_corners=None if r < 1 else False)
        top, left = (size - rh) // 2, (size - rw) // 2
        x = F.pad(x, (left, size - rw - left, top, size - rh - top), value=PAD_VALUE)
        out.append(x[0].flip(0))
    return (torch.stack(out) / 255).to(dtype)


def cases(batch: int = 32, imgsz: int = 640, device: str | torch.device = "cuda") -> list[Case]:
    """The benchmark cases at ``batch`` x ``imgsz`` (gelan-t head: nc 80, reg_max 16, strides 8/16/32)."""
    dev = torch.device(device)
    half = torch.float16 if dev.type == "cuda" else torch.float32  # CPU conv has no fp16 everywhere
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape, dtype=half):
        return torch.randn(*shape, generator=g).to(dev, dtype)

    out = []
    # fused input: 720p video frames -> imgsz letterbox, fp16
    fh, fw = imgsz * 9 // 8, imgsz * 2
    frames = [torch.randint(0, 256, (fh, fw, 3), generator=g, dtype=torch.uint8).to(dev) for _ in range(batch)]
    out.append(
        Case(
            "letterbox_frames",
            f"{batch}x{fh}x{fw}x3 u8 -> {batch}x3x{imgsz}x{imgsz} {str(half)[6:]}",
            lambda: cuda_ops.letterbox_frames(frames, imgsz, half, impl="kernel"),
            lambda: torch_letterbox(frames, imgsz, half),
            batch * fh * fw * 3 + batch * 3 * imgsz * imgsz * half.itemsize,
        )
    )
    # fused head post-processing: gelan-t raw maps, conf 0.25 (predict), single label
    nc, reg_max, strides = 80, 16, (8, 16, 32)
    maps = [randn(batch, 4 * reg_max + nc, imgsz // s, imgsz // s) for s in strides]
    a = sum(m.shape[2] * m.shape[3] for m in maps)
    k = 1000
    out.append(
        Case(
            "decode_topk",
            f"{batch}x{4 * reg_max + nc}x{a} -> top-{k}",
            lambda: cuda_ops.decode_topk(maps, strides, reg_max, 0.25, k, impl="kernel"),
            lambda: cuda_ops.decode_topk(maps, strides, reg_max, 0.25, k, impl="reference"),
            batch * nc * a * half.itemsize + batch * a * 8 + batch * k * (4 * reg_max + nc) * half.itemsize,
        )
    )
    # LSNet SKA at stride 16 of a 640 input: C 128, 16 weight groups, 3x3
    c, grp, hw = 128, 16, imgsz // 16
    x, w = randn(batch, c, hw, hw), randn(batch, grp, 9, hw, hw)
    ska_bytes = (2 * batch * c * hw * hw + batch * grp * 9 * hw * hw) * half.itemsize
    out.append(
        Case(
            "ska forward",
            f"x {batch}x{c}x{hw}x{hw}, w {batch}x{grp}x9x{hw}x{hw}",
            lambda: cuda_ops.ska(x, w, impl="kernel"),
            lambda: cuda_ops.ska(x, w, impl="reference"),
            ska_bytes,
        )
    )
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

    def fwd_bwd(impl: str) -> None:
        torch.autograd.grad(cuda_ops.ska(xg, wg, impl=impl).sum(), (xg, wg))

    out.append(
        Case(
            "ska forward+backward",
            f"x {batch}x{c}x{hw}x{hw}, w {batch}x{grp}x9x{hw}x{hw}",
            lambda: fwd_bwd("kernel"),
            lambda: fwd_bwd("reference"),
            ska_bytes + (2 * batch * c * hw * hw + 2 * batch * grp * 9 * hw * hw) * half.itemsize,
        )
    )
    # depthwise + pointwise at stride 8 of a 640 input (LeYOLO-sized): 96 -> 96, NHWC fp16
    c, n, hw = 96, 96, imgsz // 8
    xd = randn(batch, c, hw, hw).contiguous(memory_format=torch.channels_last)
    weights = (randn(c, 1, 3, 3), randn(c), randn(n, c, 1, 1) * c**-0.5, randn(n))
    out.append(
        Case(
            "dw_pw",
            f"{batch}x{c}x{hw}x{hw} -> {n} NHWC, SiLU",
            lambda: cuda_ops.dw_pw(xd, *weights, act="silu", impl="kernel"),
            lambda: cuda_ops.dw_pw(xd, *weights, act="silu", impl="reference"),
            (batch * c * hw * hw + batch * n * hw * hw) * half.itemsize,
        )
    )
    return out


def copy_bandwidth(device: str | torch.device = "cuda", nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (bytes read + bytes written)."""
    import triton.testing

    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    return 2 * nbytes / (ms * 1e-3)


def run(
    batch: int = 32, imgsz: int = 640, device: str | torch.device = "cuda", warmup_ms: int = 25, rep_ms: int = 200
) -> list[dict]:
    """Time every case; one dict per case: name, shape, kernel_ms, baseline_ms, speedup, floor_ms.

    On CUDA: medians from ``triton.testing.do_bench``. Elsewhere: one call each (a smoke run, not a timing).
    """
    dev = torch.device(device)
    rows = []
    bandwidth = copy_bandwidth(dev) if dev.type == "cuda" else None
    for case in cases(batch, imgsz, dev):
        if dev.type == "cuda":
            import triton.testing

            kernel_ms = triton.testing.do_bench(case.kernel, warmup=warmup_ms, rep=rep_ms, return_mode="median")
            baseline_ms = triton.testing.do_bench(case.baseline, warmup=warmup_ms, rep=rep_ms, return_mode="median")
        else:
            kernel_ms, baseline_ms = _once(case.kernel), _once(case.baseline)
        rows.append(
            {
                "name": case.name,
                "shape": case.shape,
                "kernel_ms": kernel_ms,
                "baseline_ms": baseline_ms,
                "speedup": baseline_ms / kernel_ms if kernel_ms > 0 else float("nan"),
                "floor_ms": case.min_bytes / bandwidth * 1e3 if bandwidth else float("nan"),
            }
        )
    return rows


def _once(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width table."""
    lines = [f"{'op':22s} {'kernel ms':>10s} {'torch ms':>10s} {'speedup':>8s} {'floor ms':>9s}  shape"]
    for r in rows:
        lines.append(
            f"{r['name']:22s} {r['kernel_ms']:10.3f} {r['baseline_ms']:10.3f} {r['speedup']:8.2f} "
            f"{r['floor_ms']:9.3f}  {r['shape']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="cuda_ops kernels vs their PyTorch baselines (CUDA)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("cuda_ops.bench: no CUDA device is visible to PyTorch; timings need a GPU")
    print(format_table(run(args.batch, args.imgsz, args.device)))


if __name__ == "__main__":
    main()
