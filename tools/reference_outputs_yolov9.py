"""Reference outputs of the YOLOv9 authors' own implementation, for the conversion tests (issue: pretrained weights).

Run it inside a checkout of the paper's repository (GPL-3.0: keep it in a scratch folder outside this project;
none of its code is copied here), with its folder and our tests/ (for convert_kit) on PYTHONPATH:

    git clone <yolov9 repository> /tmp/up/yolov9 && cd /tmp/up/yolov9
    PYTHONPATH=.:/path/to/detector/tests python /path/to/detector/tools/reference_outputs_yolov9.py \
        --out /path/to/detector/tests/assets/yolov9_reference

For each model it builds the upstream ``DetectionModel`` from ``models/detect/<name>.yaml``, fills it with
``convert_kit.reference_weights`` (deterministic from the key list), and writes ``<name>.json`` (the upstream
key list with shapes) and ``<name>.npz`` (the input and the upstream raw head maps, plus the decoded main
output); a checkpoint written the upstream way (``torch.save({'model': module.half(), ...})``) goes to
``--ckpt-dir`` for an end-to-end ``detector convert`` check that needs no fixture.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import torch
from convert_kit import reference_weights

MODELS = tuple(f"{family}-{scale}" for family in ("gelan", "yolov9") for scale in "tsmce")
IMGSZ = 64


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--ckpt-dir", default="/tmp/up/yolov9_ckpts")
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    from models.yolo import DetectionModel  # the upstream class (run inside its checkout)

    out, ckpts = Path(args.out), Path(args.ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpts.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for name in args.models.split(","):
        model = DetectionModel(f"models/detect/{name}.yaml", ch=3, nc=80)
        keys_shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        fixed = {k: v for k, v in model.state_dict().items() if ".dfl" in k}  # the DFL's arange weights stay
        model.load_state_dict({**reference_weights(keys_shapes), **fixed})
        model.eval()
        x = torch.randn(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y, raw = model(x)
        dual = isinstance(raw[0], list)
        main_raw, aux_raw = (raw[1], raw[0]) if dual else (raw, [])
        main_dec = y[1] if dual else y
        arrays = {"x": x.numpy(), "main_decoded": main_dec.numpy()}
        arrays.update({f"main_{i}": t.numpy() for i, t in enumerate(main_raw)})
        arrays.update({f"aux_{i}": t.numpy() for i, t in enumerate(aux_raw)})
        np.savez_compressed(out / f"{name}.npz", **arrays)
        (out / f"{name}.json").write_text(json.dumps({"upstream_commit": commit, "file": f"models/detect/{name}.yaml",
                                                      "keys": keys_shapes}))  # fmt: skip
        torch.save({"epoch": -1, "best_fitness": None, "model": model.half(), "ema": None, "updates": None,
                    "optimizer": None, "opt": {"imgsz": IMGSZ}}, ckpts / f"{name}.pt")  # fmt: skip
        print(f"{name}: {len(keys_shapes)} tensors, raw maps {[tuple(t.shape) for t in main_raw]}, dual={dual}")


if __name__ == "__main__":
    main()
