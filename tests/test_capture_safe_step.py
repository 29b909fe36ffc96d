"""The training step can be captured: forward, loss (task-aligned, AlignedOTA, PGI dual heads), gradients and
clipping compile as one graph (a graph break or a host read fails ``fullgraph=True``), the whole step including
the optimiser forces no host synchronisation, and the captured step (replayed here by re-running what it
recorded, which is what a CUDA graph replay computes) trains exactly like the eager one."""

from __future__ import annotations

import contextlib
import csv
import logging

import pytest
import torch
from tiny_models import tiny_detector

import detector.losses  # noqa: F401  (registers the losses)
from detector.engine.host_syncs import HostSyncCounter
from detector.engine.settings import TrainConfig
from detector.engine.step import TrainStep, host_targets
from detector.engine.train_step import CapturedTrainStep, make_train_step, standalone_parts
from detector.model import build_model

NC = 3
SIZE = 64


def pgi_detector() -> dict:
    """The tiny detector with a training-only auxiliary DDetect (a PGI dual head)."""
    d = tiny_detector()
    d["auxiliary"] = [{"DDetect": {"from": ["B3", "B4", "B5"], "tag": "aux", "loss_weight": 0.25}}]
    return d


def zerohead_detector() -> dict:
    """The tiny detector with DAMO-YOLO's ZeroHead (AlignedOTA assignment)."""
    d = tiny_detector()
    d["head"] = [{"ZeroHead": {"from": ["P3", "B4", "B5"], "reg_max": 8, "k": 1}}]
    return d


MODELS = {"tal": tiny_detector, "aota": zerohead_detector, "pgi": pgi_detector}


def make_step(kind: str, optimizer: str = "SGD", cls=TrainStep, **kwargs) -> TrainStep:
    torch.manual_seed(0)
    model = build_model(MODELS[kind](), nc=NC).train()
    cfg = TrainConfig(batch=2, amp=False)
    cfg.optim.lr0 = 0.01 if optimizer == "SGD" else 0.001
    parts = standalone_parts(model, cfg, torch.device("cpu"), optimizer)
    if optimizer == "AdamW":
        # fused: on CPU the capturable (device step count) variant is refused; fused keeps it off the host too
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in parts.optimizer.param_groups]
        parts.optimizer = torch.optim.AdamW(groups, lr=0.001, fused=True)
    return cls(parts, **kwargs)


def make_batch(seed: int, batch_size: int = 2, size: int = SIZE, boxes_per_image: int = 3) -> dict:
    gen = torch.Generator().manual_seed(seed)
    n = batch_size * boxes_per_image
    xy = torch.rand(n, 2, generator=gen) * size * 0.6
    wh = torch.rand(n, 2, generator=gen) * size * 0.3 + 4
    return {
        "img": torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=gen),
        "cls": torch.randint(0, NC, (n,), generator=gen).float(),
        "bboxes": torch.cat((xy, xy + wh), 1),
        "batch_idx": torch.arange(batch_size).repeat_interleave(boxes_per_image),
    }


@pytest.mark.parametrize("kind", ["tal", "aota", "pgi"])
def test_forward_loss_backward_and_clip_compile_as_one_graph(kind):
    step = make_step(kind, cls=CapturedTrainStep, capture=RerunCapture())
    batch = make_batch(0)
    images = batch["img"]
    targets = host_targets(batch, NC, 32)

    def body(images, targets):
        items = step.accumulate(images, targets)
        torch.nn.utils.clip_grad_norm_(step.params, max_norm=10.0)
        return items

    expected = body(images, targets)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(body, fullgraph=True, backend="eager")
        items = compiled(images, targets)  # fullgraph: any graph break or host read raises here
    torch.testing.assert_close(items, expected)
    assert len(items) == (6 if kind == "pgi" else 3) and items[0] > 0


@pytest.mark.parametrize("kind,optimizer", [("tal", "SGD"), ("aota", "AdamW"), ("pgi", "SGD")])
def test_whole_step_forces_no_host_sync(kind, optimizer):
    step = make_step(kind, optimizer, cls=CapturedTrainStep, capture=RerunCapture(), warmup_steps=0)
    batch = make_batch(1)
    step.forward_backward(batch)
    step.optimizer_step()  # first optimiser step: state allocated eagerly
    images, targets = batch["img"], host_targets(batch, NC, 32)
    with HostSyncCounter() as counter:
        step.accumulate(images, targets)
        step.optimizer_body()
    assert counter.total == 0, counter.by_op


class RerunCapture:
    """Records a phase by keeping the function and replays it by calling it again: on the fixed buffers that is
    exactly what replaying a CUDA graph of it computes."""

    def __init__(self) -> None:
        self.captured = 0

    def warmup(self):
        return contextlib.nullcontext()

    def capture(self, fn):
        self.captured += 1
        return fn


def run_steps(step: TrainStep, batches: list[dict], accumulate: int, lrs: list[float]) -> list[torch.Tensor]:
    items = []
    for i, batch in enumerate(batches):
        for g in step.parts.optimizer.param_groups:
            g["lr"] = lrs[i]
        items.append(step.forward_backward(batch).clone())
        if (i + 1) % accumulate == 0:
            step.optimizer_step()
    return items


@pytest.mark.parametrize("kind,optimizer", [("tal", "SGD"), ("pgi", "AdamW")])
def test_captured_step_trains_like_the_eager_step(kind, optimizer, caplog):
    # lr changes, then holds (the optimiser graph is recorded only once it holds), gradients accumulate over
    # 2 batches, one batch brings more boxes than the capacity (recorded again), the last is smaller (eager)
    batches = [make_batch(i) for i in range(10)] + [make_batch(10, boxes_per_image=40), make_batch(11, batch_size=1)]
    lrs = [0.01, 0.008, 0.006, 0.004] + [0.002] * 8
    eager = make_step(kind, optimizer)
    capture = RerunCapture()
    graphed = make_step(kind, optimizer, cls=CapturedTrainStep, capture=capture, warmup_steps=2)
    with caplog.at_level(logging.INFO, logger="detector"):
        expected = run_steps(eager, batches, 2, lrs)
        got = run_steps(graphed, batches, 2, lrs)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    for a, b in ((eager.parts.model, graphed.parts.model), (eager.parts.ema.ema, graphed.parts.ema.ema)):
        for pe, pg in zip(a.state_dict().values(), b.state_dict().values()):
            torch.testing.assert_close(pg, pe, rtol=1e-5, atol=1e-6)
    log = caplog.text
    assert "captured forward/backward for images (2, 3, 64, 64), up to 32 boxes/image" in log
    assert "more boxes than the capacity; captured forward/backward for images (2, 3, 64, 64), up to 64" in log
    assert "a batch of shape (1, 3, 64, 64) differs from the captured (2, 3, 64, 64); run eagerly" in log
    assert capture.captured == 3  # forward/backward twice (capacity 32, then 64), optimiser once (lr held)
    assert graphed.capacity == 64


def test_graph_on_cpu_falls_back_with_one_line(caplog):
    step = make_step("tal")
    step.parts.cfg.graph = True
    with caplog.at_level(logging.INFO, logger="detector"):
        built = make_train_step(step.parts)
    assert type(built) is TrainStep
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["graph=True: training eagerly instead: CUDA graphs need a CUDA device, this run trains on cpu"]


def test_trainer_graph_true_on_cpu_gives_the_fallback_line_and_the_eager_losses(tmp_path, capsys):
    from _engine_kit import bccd_subset, tiny_config

    from detector.engine.trainer import Trainer

    data = bccd_subset(tmp_path / "bccd", n=4)
    rows = {}
    for graph in (False, True):
        cfg = tiny_config(tmp_path, data, epochs=1, name=f"graph{graph}", graph=graph)
        Trainer(cfg).train()
        with open(tmp_path / "runs" / f"graph{graph}" / "results.csv") as f:
            rows[graph] = next(csv.DictReader(f))
    out = capsys.readouterr().out
    assert out.count("graph=True: training eagerly instead: CUDA graphs need a CUDA device") == 1
    losses = [k for k in rows[False] if k.startswith("train/")]
    assert losses and all(float(rows[True][k]) == float(rows[False][k]) for k in losses)
