"""Reference outputs of the DAMO-YOLO authors' own implementation, for the conversion tests (pretrained weights).

Run it inside a checkout of tinyvision/DAMO-YOLO (Apache-2.0; keep it in a scratch folder outside this project,
none of its code is copied here), with its folder, its small pure-Python dependencies (loguru, easydict,
omegaconf, tabulate; ``thop`` is only imported for FLOP counting and may be a stub) and our tests/ (for
damoyolo_kit) on PYTHONPATH:

    git clone <DAMO-YOLO repository> /tmp/up/damo && cd /tmp/up/damo
    PYTHONPATH=.:/tmp/up/site:/path/to/detector/tests python /path/to/detector/tools/reference_outputs_damoyolo.py \
        --out /path/to/detector/tests/assets/damoyolo_reference

For each scale it builds the upstream ``Detector`` from ``configs/damoyolo_tinynas*.py`` the way their tools do
(``build_local_model``, which also sets BatchNorm eps 1e-3), fills it with
``damoyolo_kit.damoyolo_reference_weights`` (deterministic from the key list; the fixed GFL integral
``head.integral.project`` keeps its value), runs it in eval mode on a fixed batch and writes ``<name>.json`` (the upstream key list with shapes) and ``<name>.npz``:

- ``x``: the input batch (2, 3, 64, 64), integer pixel values 0..255 as their data pipeline feeds them (ours
  reads x / 255);
- ``raw_{i}``: per level i, the head's raw map as our ZeroHead lays it out: the regression conv's output times
  the level's ``Scale`` (4 * 17 distribution logits), then the class conv's logits (80), (2, 148, H_i, W_i);
- ``scores`` (2, A, 80) sigmoid scores and ``boxes`` (2, A, 4) xyxy pixels: the upstream head's own decoding
  (``export_with_post`` with NMS off).

``--ckpt-dir`` gets checkpoints written as their trainer writes them (``{'epoch', 'model': state_dict,
'optimizer', 'feature_loss'}``), for a hand check of ``detector convert`` on the upstream file itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import torch
from damoyolo_kit import damoyolo_reference_weights

CONFIGS = {
    "damoyolo-t": "configs/damoyolo_tinynasL20_T.py",
    "damoyolo-s": "configs/damoyolo_tinynasL25_S.py",
    "damoyolo-m": "configs/damoyolo_tinynasL35_M.py",
    "damoyolo-l": "configs/damoyolo_tinynasL45_L.py",
}
FIXED = ("head.integral.project",)  # not learned: linspace(0, reg_max, reg_max + 1)
IMGSZ = 64


def reference(name: str, config: str) -> tuple[list, dict[str, np.ndarray], torch.nn.Module]:
    """Build the upstream model for ``config``, fill it, and return its key list, outputs and the model."""
    from damo.config.base import parse_config  # the upstream code (run inside its checkout)
    from damo.detectors.detector import build_local_model

    model = build_local_model(parse_config(config), "cpu")
    sd = model.state_dict()
    keys_shapes = [(k, list(v.shape)) for k, v in sd.items()]
    model.load_state_dict({**damoyolo_reference_weights(keys_shapes), **{k: sd[k] for k in FIXED}})
    model.eval()
    head = model.head
    head.nms = False  # return (scores, boxes) instead of NMS'd box lists
    reg, cls = {}, {}
    for i in range(len(head.strides)):
        head.scales[i].register_forward_hook(lambda m, inp, out, i=i: reg.__setitem__(i, out))
        head.gfl_cls[i].register_forward_hook(lambda m, inp, out, i=i: cls.__setitem__(i, out))
    x = torch.randint(0, 256, (2, 3, IMGSZ, IMGSZ), generator=torch.Generator().manual_seed(1)).float()
    with torch.no_grad():
        scores, boxes = model(x)
    arrays = {"x": x.numpy(), "scores": scores.numpy(), "boxes": boxes.numpy()}
    arrays.update({f"raw_{i}": torch.cat((reg[i], cls[i]), 1).numpy() for i in sorted(reg)})
    return keys_shapes, arrays, model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--ckpt-dir", default="/tmp/up/damoyolo_ckpts")
    ap.add_argument("--models", default=",".join(CONFIGS))
    ap.add_argument("--commit", default="", help="the upstream commit, when the checkout is not a git work tree")
    args = ap.parse_args()
    out, ckpts = Path(args.out), Path(args.ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpts.mkdir(parents=True, exist_ok=True)
    commit = args.commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for name in args.models.split(","):
        keys_shapes, arrays, model = reference(name, CONFIGS[name])
        np.savez_compressed(out / f"{name}.npz", **arrays)
        meta = {"upstream_commit": commit, "file": CONFIGS[name], "keys": keys_shapes}
        (out / f"{name}.json").write_text(json.dumps(meta))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        ckpt = {"epoch": 1, "model": model.state_dict(), "optimizer": opt.state_dict(), "feature_loss": None}
        torch.save(ckpt, ckpts / f"{Path(CONFIGS[name]).stem}.pth")
        raw = [arrays[f"raw_{i}"] for i in range(3)]
        print(f"{name}: {len(keys_shapes)} tensors, raw maps {[r.shape for r in raw]}, "
              f"max |raw| {max(float(np.abs(r).max()) for r in raw):.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
