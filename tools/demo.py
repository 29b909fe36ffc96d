"""`make demo`: the whole path on the bundled BCCD blood-cell data, from a fresh clone, on CPU or GPU.

check the data -> train gelan-t briefly -> validate -> export to ONNX -> predict through the ONNX model with the
same `Detector` API. Run `python tools/demo.py --epochs 60 --imgsz 640` for the full recipe (GPU advised).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from detector.cli import main as detector

ROOT = Path(__file__).resolve().parent.parent


def step(title: str, argv: list[str]) -> None:
    print(f"\n=== {title}\n$ detector {' '.join(argv)}", flush=True)
    t = time.perf_counter()
    status = detector(argv)
    if status != 0:
        sys.exit(status)
    print(f"({time.perf_counter() - t:.0f} s)")


def run(epochs: int, imgsz: int, device: str) -> None:
    run_dir = ROOT / "runs" / "train" / "demo"
    best = run_dir / "weights" / "best.pt"
    step("1. check the data", ["data", "check", "bccd"])
    step(
        "2. train gelan-t from scratch",
        ["train", "bccd-gelan-t", f"epochs={epochs}", f"imgsz={imgsz}", f"device={device}", "name=demo",
         "exist_ok=True", f"project={ROOT / 'runs' / 'train'}", "workers=2"],
    )  # fmt: skip
    step("3. validate the best checkpoint", ["val", f"model={best}", f"imgsz={imgsz}", f"device={device}",
                                             "name=demo", "exist_ok=True", f"project={ROOT / 'runs' / 'val'}"])  # fmt: skip
    onnx = run_dir / "weights" / "best.onnx"
    step("4. export the deploy form to ONNX", ["export", f"model={best}", "format=onnx", f"imgsz={imgsz}",
                                               "dynamic=True", f"out={onnx}"])  # fmt: skip

    print("\n=== 5. predict with the ONNX model through the Python API")
    from detector import Detector

    det = Detector(onnx, device="cpu")
    images = sorted((ROOT / "datasets" / "bccd" / "JPEGImages").glob("*.jpg"))[:4]
    out_dir = ROOT / "runs" / "predict" / "demo"
    for r in det.predict(images, imgsz=imgsz, conf=0.25):
        saved = r.save(out_dir / Path(r.path).name)
        print(f"{r}  {r.speed['inference']:.1f} ms  -> {saved.relative_to(ROOT)}")
    print(f"\ntraining run: {run_dir.relative_to(ROOT)} (results.csv, plots, weights)")
    print(f"validation:   {(ROOT / 'runs' / 'val' / 'demo').relative_to(ROOT)}")
    print(f"ONNX model:   {onnx.relative_to(ROOT)}; annotated images: {out_dir.relative_to(ROOT)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--device", default="", help="cpu, 0 (first GPU), or empty for the GPU when there is one")
    args = ap.parse_args()
    run(args.epochs, args.imgsz, args.device)
