"""Batch-inference throughput: plain ``Detector.predict`` against ``predict_dataset`` on Ray with N workers.

    python tools/bench_ray.py                                # gelan-t ONNX at 320, BCCD's 364 images, 1 and 2 workers
    python tools/bench_ray.py --model best.onnx --imgsz 640 --workers 1,2,4 --batch 8
    python tools/bench_ray.py --device cuda                  # on a GPU machine: one actor per GPU (workers=0)

Each row reads, decodes, letterboxes, infers and post-processes every image; Ray rows include starting the
actors (one model load each) and writing Parquet, i.e. what a user waits for. The model defaults to gelan-t
with fresh weights exported to a dynamic ONNX (throughput does not depend on the weights beyond NMS load).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector import Detector  # noqa: E402
from detector.export import export  # noqa: E402
from detector.scale import list_images, predict_dataset  # noqa: E402


def plain_predict(model: str, paths: list[str], args: argparse.Namespace) -> float:
    det = Detector(model, device=args.device)
    t0 = time.perf_counter()
    n = sum(1 for _ in det.predict(paths, imgsz=args.imgsz, conf=args.conf, batch=args.batch, stream=True))
    assert n == len(paths), (n, len(paths))
    return time.perf_counter() - t0


def ray_predict(model: str, paths: list[str], workers: int, out: Path, args: argparse.Namespace) -> float:
    run = predict_dataset(
        model, paths, out, workers=workers, batch=args.batch, imgsz=args.imgsz, conf=args.conf, device=args.device,
        verbose=False,
    )  # fmt: skip
    return run.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="ONNX/.pt/.engine model (default: gelan-t exported to ONNX)")
    ap.add_argument("--source", default=str(Path(__file__).resolve().parents[1] / "datasets/bccd/JPEGImages"))
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts (0: one per GPU)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    model = args.model or str(
        export("gelan-t", format="onnx", imgsz=args.imgsz, dynamic=True, out=tmp / "gelan-t.onnx")
    )
    paths = list_images(args.source)
    local = {} if ray.is_initialized() else {"_node_ip_address": "127.0.0.1"}
    ray.init(include_dashboard=False, logging_level="ERROR", **local)
    rows = [("detector predict (one process)", plain_predict(model, paths, args))]
    for w in (int(x) for x in args.workers.split(",")):
        rows.append((f"engine=ray workers={w}", ray_predict(model, paths, w, tmp / f"out{w}", args)))
    ray.shutdown()
    print(f"\n{len(paths)} images, {Path(model).name}, imgsz {args.imgsz}, batch {args.batch}, device {args.device}")
    print(f"| {'run':<32} | {'seconds':>8} | {'images/s':>9} |\n|{'-' * 34}|{'-' * 10}|{'-' * 11}|")
    for name, s in rows:
        print(f"| {name:<32} | {s:8.1f} | {len(paths) / s:9.1f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
