"""The same trainer under torchrun: 2 CPU processes (gloo), a PGI model, identical weights on both ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from _engine_kit import REPO, bccd_subset

from detector.model import build_model


def test_two_process_ddp_pgi_model_keeps_ranks_identical(tmp_path):
    data = bccd_subset(tmp_path / "data", 4)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests" / "_ddp_train.py"), str(out),
        "model=yolov9-t", f"data={data}", "epochs=2", "imgsz=64", "batch=4", "workers=0", "device=cpu",
        f"project={tmp_path / 'runs'}", "optim.nbs=4", "plots=false", "augment.mosaic=0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["steps"] == r1["steps"] == 2  # 2 epochs of one batch of 2 images per rank
    params = [k for k in r0["final"] if "running_" not in k and "num_batches" not in k]
    for k in params:
        assert torch.equal(r0["final"][k], r1["final"][k]), k
    model = build_model("yolov9-t", nc=3)
    aux = next(i for i, tag in model.head_tags.items() if tag == "aux")
    aux_params = [k for k in params if k.startswith(f"layers.{aux}.")]
    assert aux_params  # the PGI auxiliary head trained alongside the main one
    assert r0["without_grad"] == r1["without_grad"] == []  # so DDP needs no find_unused_parameters
    changed = [k for k in params if not torch.equal(r0["initial"][k], r0["final"][k])]
    assert len(changed) > 0.95 * len(params)  # (the stride-32 box branch sees no object at 64 px)
    assert all(k in changed for k in aux_params if k.endswith("conv.weight"))
    run = Path(tmp_path / "runs" / "exp")
    assert (run / "weights" / "last.pt").is_file() and (run / "results.csv").is_file()  # rank 0 wrote them
    assert not (tmp_path / "runs" / "exp2").exists()
