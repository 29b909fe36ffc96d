"""GPU smoke test: every CUDA path of the framework end to end on BCCD, one PASS/FAIL/SKIP line per step.

    python tools/gpu_smoke.py                 # on a GPU machine: < 5 min on one GPU
    python tools/gpu_smoke.py --device cpu --images 8 --imgsz 64 --epochs 2   # CPU mode (what the test runs)

Steps: train gelan-t and yolov9-t (PGI) with AMP (bf16 where the GPU has it, else fp16 + GradScaler) and
channels_last; interrupt a run after its first epoch and resume it; validate best.pt; predict with
``device=cuda half=True``; export ONNX fp16 traced on the GPU and run it through ONNX Runtime's CUDA provider,
asserting the session really uses it (and matching the PyTorch output); build and run a TensorRT engine when
TensorRT is installed; initialise a single-process NCCL group and all-reduce on it. Without a GPU the same
flow runs on the CPU (fp32, ORT's CPU provider) and the CUDA-only steps are skipped with the reason.
Exit status 1 when a step fails.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the engine test kit's BCCD subsets (symlinks, nothing copied)

from _engine_kit import BCCD, bccd_subset  # noqa: E402


class Skip(Exception):
    """This step cannot run here; the message says why."""


class SimulatedCrash(RuntimeError):
    """Raised after a checkpoint to stand for a killed run."""


@dataclass
class Smoke:
    """Settings and what the steps hand to each other (run dirs, checkpoints, exported files)."""

    device: str
    epochs: int
    imgsz: int
    batch: int
    images: int
    work: Path
    cuda: bool = False
    data: str = "bccd"
    state: dict = field(default_factory=dict)
    failures: int = 0

    def step(self, name: str, fn: Callable[[Smoke], str]) -> None:
        t = time.perf_counter()
        try:
            detail, status = fn(self), "PASS"
        except Skip as e:
            detail, status = str(e), "SKIP"
        except Exception as e:  # noqa: BLE001 - report every failure and go on with the steps that do not need it
            detail, status = f"{type(e).__name__}: {e}", "FAIL"
            self.failures += 1
            traceback.print_exc(file=sys.stderr)
        print(f"{status:<5} {name:<34} {time.perf_counter() - t:7.1f} s  {detail}", flush=True)

    def needs_cuda(self) -> None:
        if not self.cuda:
            raise Skip(
                f"needs a CUDA GPU (device={self.device}; torch.cuda.is_available()={torch.cuda.is_available()})"
            )

    def need(self, key: str):
        if key not in self.state:
            raise Skip(f"needs the result of an earlier step ({key}), which did not pass")
        return self.state[key]


def train_config(s: Smoke, model: str, name: str, epochs: int | None = None):
    from detector.engine.settings import OptimConfig, TrainConfig, ValConfig

    return TrainConfig(
        model=model, data=s.data, epochs=epochs or s.epochs, imgsz=s.imgsz, batch=s.batch, device=s.device,
        workers=-1 if s.cuda else 0, project=str(s.work / "runs"), name=name, exist_ok=True, plots=False,
        amp=True, optim=OptimConfig(warmup_min_iters=2), val=ValConfig(plots=False),
    )  # fmt: skip


def _train(s: Smoke, model: str) -> str:
    from detector.engine.trainer import Trainer

    trainer = Trainer(train_config(s, model, model))
    result = trainer.train()
    parts = trainer.parts
    amp = str(parts.amp_dtype).replace("torch.", "") if parts.amp_dtype else "off"
    weights = trainer.run_dir / "weights" / "best.pt"
    assert weights.is_file(), f"{weights} was not written"
    layout = next(p for p in trainer.model.parameters() if p.dim() == 4).is_contiguous(
        memory_format=torch.channels_last
    )
    losses = trainer.epoch_losses()
    assert all(np.isfinite(v) for v in losses.values()), losses
    s.state[f"best:{model}"] = weights
    return (
        f"AMP {amp}, channels_last {layout}, {parts.device}; loss box {losses['box']:.3f}, "
        f"mAP50 {result.stats['mAP50']:.3f}"
    )


def train_gelan(s: Smoke) -> str:
    return _train(s, "gelan-t")


def train_pgi(s: Smoke) -> str:
    return _train(s, "yolov9-t")


def resume(s: Smoke) -> str:
    """A run killed after its first checkpoint, then resumed: it must finish the remaining epochs."""
    from detector.engine.callbacks import Callback
    from detector.engine.trainer import Trainer

    class Crash(Callback):
        def after_epoch(self, trainer) -> None:  # runs after the Checkpointer wrote last.pt
            raise SimulatedCrash("after epoch 1")

    epochs = max(s.epochs, 2)
    cfg = train_config(s, "gelan-t", "resume", epochs)
    try:
        Trainer(cfg, callbacks=[Crash()]).train()
        raise AssertionError("the simulated crash did not happen")
    except SimulatedCrash:
        pass
    last = s.work / "runs" / "resume" / "weights" / "last.pt"
    cfg.resume = str(last)
    trainer = Trainer(cfg)
    trainer.train()
    assert trainer.start_epoch == 1 and trainer.epoch == epochs - 1, (trainer.start_epoch, trainer.epoch)
    return f"resumed at epoch 2 of {epochs} and finished; scaler enabled {trainer.parts.scaler.is_enabled()}"


def validate(s: Smoke) -> str:
    from detector.engine.settings import ValRunConfig
    from detector.engine.validator import validate_checkpoint

    best = s.need("best:gelan-t")
    cfg = ValRunConfig(model=str(best), data=s.data, imgsz=s.imgsz, batch=s.batch * 2, device=s.device,
                       project=str(s.work / "val"), plots=False)  # fmt: skip
    tuned = torch.backends.cudnn.benchmark
    result = validate_checkpoint(cfg)
    assert torch.backends.cudnn.benchmark == tuned
    speed = ", ".join(f"{k} {v:.2f}" for k, v in result.speed_ms.items())
    return f"mAP50 {result.stats['mAP50']:.3f} on {result.images} images; ms/image: {speed}"


def predict_half(s: Smoke) -> str:
    from detector.predict.detector import Detector

    s.needs_cuda()
    best = s.need("best:gelan-t")
    det = Detector(best, device=s.device, half=True)
    assert det.backend.dtype == torch.float16 and det.backend.device.type == "cuda"
    images = sorted((BCCD / "JPEGImages").glob("*.jpg"))[:8]
    results = det.predict(images, imgsz=s.imgsz, conf=0.01, batch=4)
    boxes = sum(len(r.scores) for r in results)
    assert all(np.isfinite(r.scores).all() for r in results)
    return f"{len(results)} images, {boxes} boxes at conf 0.01, fp16 on {det.backend.device}"


def predict_cpu(s: Smoke) -> str:
    from detector.predict.detector import Detector

    if s.cuda:
        raise Skip("the GPU run predicts with half=True instead")
    det = Detector(s.need("best:gelan-t"), device="cpu")
    results = det.predict(sorted((BCCD / "JPEGImages").glob("*.jpg"))[:4], imgsz=s.imgsz, conf=0.01)
    return f"{len(results)} images, {sum(len(r.scores) for r in results)} boxes at conf 0.01 (fp32 CPU)"


def export_onnx(s: Smoke) -> str:
    """fp16 on CUDA (traced there, run by ORT's CUDA provider, which must really be used), fp32 on the CPU."""
    from deploy import load_runner
    from detector.export import export
    from detector.export_trace import plan_trace

    best = s.need("best:gelan-t")
    half = s.cuda
    plan = plan_trace(half, 4, True, s.device if s.cuda else None)
    assert plan.batch == 1 and plan.device.type == ("cuda" if s.cuda else "cpu"), plan
    path = export(best, imgsz=s.imgsz, batch=4, dynamic=True, half=half, out=s.work / "gelan-t.onnx",
                  device=s.device if s.cuda else None)  # fmt: skip
    runner = load_runner(path, device=s.device if s.cuda else "cpu")  # raises if CUDA was asked but not used
    want = "CUDAExecutionProvider" if s.cuda else "CPUExecutionProvider"
    assert runner.providers[0] == want, runner.providers
    from detector.checkpoint import model_from_checkpoint

    x = np.random.default_rng(0).random((2, 3, s.imgsz, s.imgsz), dtype=np.float32)
    got = runner(x)["output0"]
    model = model_from_checkpoint(best, deploy=True).eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x))["main"].numpy()
    scores_err = float(np.abs(got[:, 4:] - ref[:, 4:]).max())
    assert scores_err < (2e-2 if half else 1e-3), scores_err
    s.state["onnx"] = path
    return f"{'fp16' if half else 'fp32'} traced on {plan.device}, run on {runner.providers[0]}; max score error {scores_err:.2g}"


def tensorrt_engine(s: Smoke) -> str:
    s.needs_cuda()
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Skip('tensorrt is not installed (pip install "detector[gpu]")') from None
    from deploy import load_runner
    from detector.export import export

    path = export(s.need("best:gelan-t"), format="engine", imgsz=s.imgsz, batch=4, dynamic=True, half=True,
                  input_dtype="uint8", out=s.work / "gelan-t.engine", device=s.device)  # fmt: skip
    runner = load_runner(path, device=s.device)
    x = np.random.default_rng(0).integers(0, 256, (4, 3, s.imgsz, s.imgsz), dtype=np.uint8)
    out = runner(x)["output0"]
    assert out.shape[0] == 4 and np.isfinite(out).all()
    return f"fp16 engine with uint8 input on GPU {runner.device}, output {tuple(out.shape)}"


def nccl_init(s: Smoke) -> str:
    import torch.distributed as dist

    s.needs_cuda()
    if not dist.is_nccl_available():
        raise AssertionError("this torch build has no NCCL")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    dev = torch.device("cuda", torch.cuda.current_device())
    dist.init_process_group("nccl", device_id=dev)
    try:
        t = torch.ones(4, device=dev)
        dist.all_reduce(t)
        torch.cuda.synchronize(dev)
        assert t.tolist() == [1.0] * 4
    finally:
        dist.destroy_process_group()
        for k in ("RANK", "WORLD_SIZE"):
            os.environ.pop(k, None)
    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
    return f"NCCL {'.'.join(map(str, version)) if isinstance(version, tuple) else version}, all_reduce on {dev}"


STEPS: list[tuple[str, Callable[[Smoke], str]]] = [
    ("train gelan-t (AMP)", train_gelan),
    ("train yolov9-t (PGI, AMP)", train_pgi),
    ("crash after epoch 1, resume", resume),
    ("val best.pt", validate),
    ("predict device=cuda half=True", predict_half),
    ("predict on the CPU", predict_cpu),
    ("export ONNX, run in ONNX Runtime", export_onnx),
    ("TensorRT engine (uint8 input)", tensorrt_engine),
    ("single-process NCCL init", nccl_init),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=416)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=0, help="use the first N BCCD train images (0: the bccd recipe)")
    ap.add_argument("--out", default="", help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)
    from detector.engine.distributed import select_device

    device = select_device("" if args.device == "auto" else args.device)
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as tmp:
        work = Path(args.out or tmp)
        s = Smoke(str(device), args.epochs, args.imgsz, args.batch, args.images, work, cuda=device.type == "cuda")
        if args.images:
            s.data = str(bccd_subset(work / "data", args.images))
        name = torch.cuda.get_device_name(device) if s.cuda else "no GPU"
        print(f"gpu_smoke: torch {torch.__version__}, device {device} ({name}), imgsz {s.imgsz}, "
              f"{s.epochs} epochs, data {s.data}", flush=True)  # fmt: skip
        t = time.perf_counter()
        for title, fn in STEPS:
            s.step(title, fn)
        verdict = "FAILED" if s.failures else "OK"
        print(f"gpu_smoke: {verdict} ({s.failures} failed) in {time.perf_counter() - t:.0f} s", flush=True)
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
