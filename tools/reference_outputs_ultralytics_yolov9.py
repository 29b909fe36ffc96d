"""Reference outputs of Ultralytics' own YOLOv9 models, for the conversion tests (issue: pretrained weights).

Run it with a Python that has the ``ultralytics`` package (AGPL-3.0: install it in a scratch virtual environment
outside this project; none of its code is copied here), offline, with our tests/ (for convert_kit) on PYTHONPATH:

    python -m venv /tmp/ulvenv && /tmp/ulvenv/bin/pip install ultralytics
    cd /tmp/scratch && YOLO_OFFLINE=1 PYTHONPATH=/path/to/detector/tests /tmp/ulvenv/bin/python \
        /path/to/detector/tools/reference_outputs_ultralytics_yolov9.py \
        --out /path/to/detector/tests/assets/ultralytics_yolov9_reference

For each model it builds their ``DetectionModel`` from their packaged ``yolov9<s>.yaml``, fills it with
``convert_kit.reference_weights`` (deterministic from the key list; the DFL's fixed bin weights stay), and writes
``<name>.json`` (their key list with shapes, version, parameter counts) and ``<name>.npz``: the input ``x``, the
raw head outputs as their head returns them (``boxes`` (B, 64, A) DFL logits, ``scores`` (B, nc, A) class logits,
levels concatenated) and the decoded output ``decoded`` (B, 4 + nc, A; xywh pixel boxes, sigmoid scores).

It also writes checkpoints the way their trainer does (``--ckpt-dir``): ``<name>-last.pt`` as ``save_model``
writes it (``ema``: the model in fp16, their argument namespace on it, optimizer state) and ``<name>.pt`` after
their own ``strip_optimizer`` (the form of their released weights), for a by-hand ``detector convert`` check.
"""

from __future__ import annotations

import argparse
import json
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from convert_kit import reference_weights

SIZES = ("t", "s", "m", "c", "e")
IMGSZ = 64
NAMES = {i: f"class{i}" for i in range(80)}  # not their COCO names: the test checks names are carried over


def reference(size: str, out: Path, ckpts: Path) -> None:
    import ultralytics
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import strip_optimizer

    name = f"yolov9{size}"
    model = DetectionModel(f"{name}.yaml", ch=3, nc=80, verbose=False)
    keys_shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    fixed = {k: v for k, v in model.state_dict().items() if ".dfl." in k}  # the DFL's arange weights stay
    model.load_state_dict({**reference_weights(keys_shapes), **fixed})
    model.names = dict(NAMES)
    model.eval()
    x = torch.randn(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        decoded, raw = model(x)
    arrays = {"x": x, "boxes": raw["boxes"], "scores": raw["scores"], "decoded": decoded}
    np.savez_compressed(out / f"{name}.npz", **{k: v.numpy() for k, v in arrays.items()})
    params = sum(p.numel() for p in model.parameters())
    fused = sum(p.numel() for p in deepcopy(model).fuse(verbose=False).parameters())
    meta = {"ultralytics": ultralytics.__version__, "file": f"ultralytics/cfg/models/v9/{name}.yaml",
            "params": params, "fused_params": fused, "keys": keys_shapes}  # fmt: skip
    (out / f"{name}.json").write_text(json.dumps(meta))

    ema = deepcopy(model).half()  # what their trainer's save_model writes, then strip_optimizer finalises
    ema.args = get_cfg()  # their IterableSimpleNamespace, as the trainer sets it
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    torch.save({"epoch": 0, "best_fitness": 0.0, "model": None, "ema": ema, "updates": 1,
                "optimizer": opt.state_dict(), "train_args": vars(get_cfg()), "train_metrics": {},
                "train_results": {}}, ckpts / f"{name}-last.pt")  # fmt: skip
    strip_optimizer(ckpts / f"{name}-last.pt", ckpts / f"{name}.pt")
    print(f"{name}: {len(keys_shapes)} tensors, {params} params ({fused} fused), raw {tuple(raw['boxes'].shape)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--ckpt-dir", default="/tmp/ul_yolov9_ckpts")
    ap.add_argument("--sizes", default=",".join(SIZES))
    args = ap.parse_args()
    out, ckpts = Path(args.out), Path(args.ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpts.mkdir(parents=True, exist_ok=True)
    for size in args.sizes.split(","):
        reference(size, out, ckpts)


if __name__ == "__main__":
    main()
