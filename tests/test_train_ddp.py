"""The same trainer under torchrun: 2 CPU processes (gloo), a PGI model, identical weights on both ranks."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _engine_kit import REPO, bccd_subset

from detector.model import build_model


def test_two_process_ddp_pgi_model_keeps_ranks_identical(tmp_path):
    data = bccd_subset(tmp_path / "data", 4)
    out = tmp_path / "out"
    out.mkdir()
    keys = [
        "model=yolov9-t", f"data={data}", "epochs=2", "imgsz=64", "batch=4", "workers=0", "device=cpu",
        "optim.nbs=4", "plots=false", "augment.mosaic=0",
    ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests" / "_ddp_train.py"), str(out), *keys, f"project={tmp_path / 'runs'}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = [sys.executable, "-m", "detector", "train", *keys, f"project={tmp_path / 'single'}"]
    proc = subprocess.run(single, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the reported train losses are the single-process numbers (the mean over ranks of each rank's mean, with
    # loss normalisers over the whole batch); they used to be about 1/world of them. What still differs:
    # BatchNorm statistics over 2 images per rank instead of 4 (compared: the mean of the 2 epochs).
    ddp_rows, single_rows = (
        list(csv.DictReader(open(p / "exp" / "results.csv"))) for p in (tmp_path / "runs", tmp_path / "single")
    )
    for part in ("box", "cls", "dfl", "aux_box", "aux_cls", "aux_dfl"):
        d, s = (sum(float(r[f"train/{part}"]) for r in rows) / 2 for rows in (ddp_rows, single_rows))
        assert d == pytest.approx(s, rel=0.3), (part, d, s)
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


@pytest.mark.parametrize("model_name", ["gelan-t", "damoyolo-t"])  # TAL and AlignedOTA normalisers
def test_loss_mean_over_ranks_equals_one_process_exactly(tmp_path, model_name):
    """2 gloo ranks, each with half of one batch of raw maps: the mean over ranks of the reported loss parts is
    the single-process value on the whole batch (without the cross-rank normaliser it is not)."""
    import torch.multiprocessing as mp
    from _ddp_loss import loss_inputs, run

    from detector.registry import LOSSES

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "items.pt"
    mp.spawn(run, args=(port, model_name, str(out)), nprocs=2, join=True)
    ranks_mean, plain_mean = torch.load(out, weights_only=True)
    head, maps, batch = loss_inputs(model_name)
    _, single = LOSSES.get(head.loss)(head, {})(maps, batch)
    torch.testing.assert_close(ranks_mean, single, rtol=1e-5, atol=1e-6)
    assert (plain_mean - single).abs().max() > 1e-2  # per-rank normalisers (and their clamp) do not give it
