"""Reference outputs of the LSNet authors' own implementation, for the conversion tests (issue: pretrained weights).

Run it inside a checkout of the LSNet repository (keep it in a scratch folder outside this project; none of its
code is copied here), with the authors' pinned timm (0.5.4; newer timm rejects their model registration) and our
tests/ (for convert_kit) on PYTHONPATH. Their SKA is a Triton kernel; on a machine without CUDA it runs under
Triton's interpreter (``TRITON_INTERPRET=1``), so the reference is their kernel, not a stand-in:

    git clone <lsnet repository> /tmp/up/lsnet && cd /tmp/up/lsnet
    pip install --no-deps --target /tmp/up/timm054 timm==0.5.4
    TRITON_INTERPRET=1 PYTHONPATH=.:/tmp/up/timm054:/path/to/detector/tests \\
        python /path/to/detector/tools/reference_outputs_lsnet.py --out /path/to/detector/tests/assets/lsnet_reference

For each model it builds the upstream ``LSNet`` through their registered constructor (``model.lsnet.lsnet_t``,
...), fills it with ``convert_kit.reference_weights`` (deterministic from the key list; the integer
``attention_bias_idxs`` buffers keep their values), and writes ``<name>.json`` (key list with shapes, one
attention index table, the upstream commit) and ``<name>.npz`` (the logits and each stage's spatial mean on a
fixed input ``input_batch()``; the input itself is regenerated from its seed, a few of its values are stored as a
check). Their attention only accepts the map size of its index table (4x4 at stride 64), so the input is
224x200 (stage maps 28x25, 14x13, 7x7, 4x4).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import torch
from convert_kit import reference_weights

MODELS = ("lsnet_t", "lsnet_s", "lsnet_b", "lsnet_t_distill")
INPUT = (2, 3, 224, 200)
SEED = 1


def input_batch() -> torch.Tensor:
    """The fixed input (2, 3, 224, 200), the same here and in the tests."""
    return torch.randn(*INPUT, generator=torch.Generator().manual_seed(SEED))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    import timm
    from model import lsnet  # the upstream module (run inside its checkout)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    x = input_batch()
    for name in args.models.split(","):
        model = getattr(lsnet, name)()
        state = model.state_dict()
        keys_shapes = [(k, list(v.shape)) for k, v in state.items()]
        fixed = {k: v for k, v in state.items() if k.endswith("attention_bias_idxs")}
        model.load_state_dict({**reference_weights(keys_shapes), **fixed})
        model.eval()  # also caches their attention bias (Attention.train(False))
        stages = {}
        for i in range(1, 5):
            getattr(model, f"blocks{i}").register_forward_hook(
                lambda mod, inp, y, i=i, stages=stages: stages.update({f"stage{i}_mean": y.mean((2, 3)).numpy()})
            )
        with torch.no_grad():
            logits = model(x)
        arrays = {"logits": logits.numpy(), "x_head": x.flatten()[:16].numpy(), **stages}
        np.savez_compressed(out / f"{name}.npz", **arrays)
        idxs = next(iter(fixed.values())).tolist() if fixed else []
        meta = {"upstream_commit": commit, "file": "model/lsnet.py", "constructor": f"model.lsnet.{name}",
                "timm": timm.__version__, "input": {"shape": list(INPUT), "seed": SEED}, "keys": keys_shapes,
                "attention_bias_idxs": idxs}  # fmt: skip
        (out / f"{name}.json").write_text(json.dumps(meta))
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {len(keys_shapes)} tensors, {params} parameters, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
