"""``detector benchmark``: median latency and throughput of one model per backend and batch size.

Backends: ``torch`` (eval form: auxiliary branches dropped, nothing fused), ``torch-fused`` (the deploy form:
RepConv/BN fused), ``onnx`` (exported with dynamic batch, run by ONNX Runtime), ``onnx-int8`` (the same, INT8
QDQ, calibrated on ``calib`` images of ``data`` or with ``calib=free``; skipped without either), ``engine``
(TensorRT), ``graph`` (the deploy form in fp16, channels-last, with our kernels, replayed as a CUDA graph:
body + fused decode/top-K) and ``graph-ref`` (the same fp16 channels-last graph with PyTorch ops only: dense
decode, no kernels). Each
(backend, batch) is warmed up, then timed ``runs`` times around one forward; on CUDA the timing includes
``torch.cuda.synchronize()`` (torch) or the runner's stream synchronisation. Torch backends time the forward on
a batch already on the device; the deploy runners take a host batch, so their time includes the copies in and
out, as a deployed model pays them. A backend that cannot run here is reported as skipped with the reason.
"""

from __future__ import annotations

import copy
import csv
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deploy.device import parse_device
from detector.config import ConfigError
from detector.model import DetectionModel

Forward = Callable[[], object]
ALL_BACKENDS = ("torch", "torch-fused", "onnx", "onnx-int8", "engine", "graph", "graph-ref")


class BackendUnavailable(Exception):
    """This backend cannot run on this machine/configuration; the message says why."""


@dataclass
class BenchmarkArgs:
    """``detector benchmark`` keys."""

    model: str = ""  # .pt checkpoint, zoo name or model YAML
    backends: list[str] = field(default_factory=lambda: list(ALL_BACKENDS))  # torch, torch-fused, onnx, engine
    batch: list[int] = field(default_factory=lambda: [1, 8, 32])  # batch sizes to time
    imgsz: int = 640  # square input size
    half: bool = False  # fp16 (CUDA)
    device: str = "cpu"  # cpu, cuda, cuda:N
    runs: int = 20  # timed forwards per (backend, batch); the median is reported
    warmup: int = 5  # untimed forwards first
    threads: int | None = None  # CPU threads of torch and ONNX Runtime (default: their own)
    out: str | None = None  # CSV path (default runs/benchmark/NAME-IMGSZ-DEVICE-TIME.csv)
    data: str | None = None  # calibration images for the onnx-int8 backend
    calib: int | str = 32  # calibration images (or "free": data-free)


@dataclass
class Row:
    """One line of the result table."""

    backend: str
    batch: int
    median_ms: float | None = None
    images_per_s: float | None = None
    status: str = "ok"


class Bench:
    """Everything the backends share: the model (train form), settings and a scratch folder for exports."""

    def __init__(self, model: DetectionModel, args: BenchmarkArgs, workdir: Path) -> None:
        self.model, self.args, self.workdir = model, args, workdir
        from detector.engine.distributed import select_device

        self.device = select_device(args.device)
        self._exports: dict[str, Path] = {}

    def host_batch(self, batch: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        return rng.random((batch, 3, self.args.imgsz, self.args.imgsz), dtype=np.float32)

    def exported(self, fmt: str, int8: bool = False) -> Path:
        """The model exported once per format with a dynamic batch up to the largest benchmarked batch."""
        key = fmt + ("-int8" if int8 else "")
        if key not in self._exports:
            from detector.export import export
            from detector.quantize import Int8Options

            q = int8 and Int8Options(keep_float=0)  # the sensitivity pass changes accuracy, not speed
            self._exports[key] = export(
                self.model,
                format=fmt,
                imgsz=self.args.imgsz,
                batch=max(self.args.batch),
                dynamic=True,
                half=self.args.half,
                out=self.workdir / f"model-{key}.{fmt}",
                int8=q,
                data=self.args.data,
                calib=self.args.calib,
                device=str(self.device) if self.device.type == "cuda" else None,
            )
        return self._exports[key]


def _torch_backend(fused: bool) -> Callable[[Bench, int], Forward]:
    def prepare(bench: Bench, batch: int) -> Forward:
        if bench.args.half and bench.device.type == "cpu":
            raise BackendUnavailable("half=True needs device=cuda (fp16 on CPU is not a deployment target)")
        model = copy.deepcopy(bench.model)
        model = model.to_deploy() if fused else model.drop_auxiliary().eval()
        model = model.to(bench.device, torch.float16 if bench.args.half else torch.float32)
        x = torch.from_numpy(bench.host_batch(batch)).to(bench.device, next(model.parameters()).dtype)
        sync = torch.cuda.synchronize if bench.device.type == "cuda" else (lambda: None)

        def forward():
            with torch.inference_mode():
                out = model(x)
            sync()
            return out

        return forward

    return prepare


def _onnx_backend(bench: Bench, batch: int, int8: bool = False) -> Forward:
    from deploy.errors import DeployError
    from deploy.onnx_runner import OnnxRunner

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BackendUnavailable('onnxruntime is not installed (pip install "detector[ort]")') from None
    try:
        runner = OnnxRunner(bench.exported("onnx", int8), device=str(bench.device), threads=bench.args.threads)
    except DeployError as e:
        raise BackendUnavailable(str(e)) from None
    x = bench.host_batch(batch)
    return lambda: runner(x)


def _onnx_int8_backend(bench: Bench, batch: int) -> Forward:
    if bench.args.half:
        raise BackendUnavailable("half=True and INT8 exclude each other")
    if not bench.args.data and bench.args.calib != "free":
        raise BackendUnavailable("needs calibration images: data=DATASET (or calib=free)")
    return _onnx_backend(bench, batch, int8=True)


def _engine_backend(bench: Bench, batch: int) -> Forward:
    from deploy.errors import DeployError
    from deploy.tensorrt_runner import TensorRTRunner

    if bench.device.type != "cuda":
        raise BackendUnavailable("TensorRT needs device=cuda")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise BackendUnavailable('tensorrt is not installed (pip install "detector[gpu]")') from None
    try:
        runner = TensorRTRunner(bench.exported("engine"), device=bench.device.index or 0)
    except DeployError as e:
        raise BackendUnavailable(str(e)) from None
    x = bench.host_batch(batch)
    return lambda: runner(x)


def _graph_backend(kernels: bool | str) -> Callable[[Bench, int], Forward]:
    def prepare(bench: Bench, batch: int) -> Forward:
        if bench.device.type != "cuda":
            raise BackendUnavailable("the graph backend replays CUDA graphs: it needs device=cuda")
        from detector.predict.graph_backend import GraphBackend

        backend = GraphBackend(copy.deepcopy(bench.model).to_deploy(), bench.device, half=True, kernels=kernels)
        x = backend.prepare(torch.from_numpy(bench.host_batch(batch)))

        def forward():
            out = backend.replay(x, conf=0.25)
            torch.cuda.synchronize(bench.device)
            return out

        return forward

    return prepare


BACKENDS: dict[str, Callable[[Bench, int], Forward]] = {
    "torch": _torch_backend(fused=False),
    "torch-fused": _torch_backend(fused=True),
    "onnx": _onnx_backend,
    "onnx-int8": _onnx_int8_backend,
    "engine": _engine_backend,
    "graph": _graph_backend(kernels="auto"),
    "graph-ref": _graph_backend(kernels=False),
}


def time_forward(forward: Forward, runs: int, warmup: int) -> list[float]:
    """Seconds per call of ``forward`` (which synchronises itself), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        forward()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t0)
    return times


def benchmark(model: DetectionModel, args: BenchmarkArgs) -> list[Row]:
    """Time every requested backend at every batch size; unavailable backends become 'skipped' rows."""
    rows: list[Row] = []
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="detector-bench-") as tmp:
        bench = Bench(model, args, Path(tmp))
        for name in args.backends:
            for batch in args.batch:
                try:
                    forward = BACKENDS[name](bench, batch)
                    median = statistics.median(time_forward(forward, args.runs, args.warmup))
                    rows.append(Row(name, batch, median * 1e3, batch / median))
                except BackendUnavailable as e:
                    rows.append(Row(name, batch, status=f"skipped: {e}"))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [f"{'backend':<12} {'batch':>5} {'median ms':>10} {'images/s':>10}  status"]
    for r in rows:
        ms = f"{r.median_ms:10.2f}" if r.median_ms is not None else f"{'-':>10}"
        ips = f"{r.images_per_s:10.1f}" if r.images_per_s is not None else f"{'-':>10}"
        lines.append(f"{r.backend:<12} {r.batch:>5} {ms} {ips}  {r.status}")
    return "\n".join(lines)


def write_csv(rows: list[Row], path: Path, args: BenchmarkArgs, model_name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            ["model", "imgsz", "device", "half", "runs", "backend", "batch", "median_ms", "images_per_s", "status"]
        )
        for r in rows:
            ms = "" if r.median_ms is None else f"{r.median_ms:.4f}"
            ips = "" if r.images_per_s is None else f"{r.images_per_s:.2f}"
            w.writerow(
                [model_name, args.imgsz, args.device, args.half, args.runs, r.backend, r.batch, ms, ips, r.status]
            )
    return path


def _check(args: BenchmarkArgs) -> None:
    if not args.model:
        raise ConfigError("detector benchmark: name a model, e.g. `detector benchmark model=gelan-t`")
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        raise ConfigError(f"detector benchmark: unknown backend(s) {unknown}; choose from {list(BACKENDS)}")
    if not args.batch or min(args.batch) < 1 or args.runs < 1 or args.warmup < 0 or (args.threads or 1) < 1:
        raise ConfigError("detector benchmark: batch sizes, runs and threads must be >= 1, warmup >= 0")
    from detector.engine.distributed import select_device

    if len(parse_device(args.device).indices) > 1:
        raise ConfigError(f"detector benchmark: device={args.device!r}; benchmark one device at a time")
    select_device(args.device)  # the one device parser: a form it rejects or a GPU that is not there stops here


def load_train_form(source: str) -> DetectionModel:
    """A checkpoint (train form kept, so `torch` can time the unfused graph) or a zoo name / YAML."""
    from detector.checkpoint import model_from_checkpoint
    from detector.export import CHECKPOINT_SUFFIXES
    from detector.model import build_model

    if Path(source).suffix in CHECKPOINT_SUFFIXES:
        return model_from_checkpoint(source, deploy=False).eval()
    return build_model(source).eval()


def cli_benchmark(argv: list[str]) -> int:
    """``detector benchmark model=... [backends=torch,torch-fused,onnx,onnx-int8,engine,graph,graph-ref]
    [batch=1,8,32] [imgsz=640] [half=True] [device=cpu|cuda] [runs=20] [warmup=5] [threads=N] [data=DATA
    calib=32] [out=CSV]``; ``threads`` sets the CPU threads of torch and ONNX Runtime alike (default: their
    own); ``data``/``calib`` calibrate the ``onnx-int8`` backend."""
    from detector.cli_args import mode_args

    args = mode_args("benchmark", argv)
    if args is None:
        return 0
    run_benchmark(args)
    return 0


def run_benchmark(args: BenchmarkArgs, verbose: bool = True) -> list[Row]:
    """What ``detector benchmark`` does: check, time, write the CSV (``args.out`` or runs/benchmark/...), print."""
    _check(args)
    model = load_train_form(args.model)
    model_name = str(model.yaml.get("name", Path(args.model).stem))
    rows = benchmark(model, args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = (
        Path(args.out) if args.out else Path("runs/benchmark") / f"{model_name}-{args.imgsz}-{args.device}-{stamp}.csv"
    )
    write_csv(rows, out, args, model_name)
    if verbose:
        precision = "fp16" if args.half else "fp32"
        threads = f", {args.threads} threads" if args.threads else ""
        print(f"{model_name} @ {args.imgsz}, {args.device}{threads}, {precision}, median of {args.runs} runs")
        print(format_table(rows))
        print(f"\nsaved {out}")
    return rows
