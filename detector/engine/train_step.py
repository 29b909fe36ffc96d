"""The training step captured in CUDA graphs (``graph=True``): ``make_train_step(parts)`` picks it or the eager
``engine.step.TrainStep``, saying in one line why when capture is not possible here.

The eager step's two phases, ``forward_backward`` (host-padded targets, forward under autocast, the loss of every
head, backward) and ``optimizer_step`` (clip, step, clear, EMA), are each recorded once in a
``torch.cuda.CUDAGraph`` and replayed: inputs are copied into fixed buffers (images of the run's fixed shape,
targets padded to a fixed maximum per image), gradients accumulate into fixed ``.grad`` tensors. The losses and
assigners are written without host synchronisation (``tests/test_capture_safe_step.py`` proves it), which
capture requires. The EMA is not captured: its decay changes every update (a Python number a graph would
freeze), so it is updated eagerly after the replay through its public ``update()``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from detector.engine.amp import amp_dtype
from detector.engine.build import TrainParts
from detector.engine.distributed import DistInfo
from detector.engine.ema import ModelEMA
from detector.engine.optim import LRSchedule, build_optimizer, resolve_optimizer
from detector.engine.settings import TrainConfig
from detector.engine.step import TrainStep, host_targets
from detector.engine.train_loss import TrainLoss
from detector.losses.targets import PaddedTargets

LOGGER = logging.getLogger("detector")
CAPTURABLE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
_CAPACITY_STEP = 32  # target capacity grows in steps of this many boxes per image


class GraphCapture(Protocol):
    """How a ``CapturedTrainStep`` records and replays a phase (``CudaGraphCapture`` on a GPU)."""

    def warmup(self) -> contextlib.AbstractContextManager: ...
    def capture(self, fn: Callable[[], None]) -> Callable[[], None]: ...


class CudaGraphCapture:
    """Phases recorded with ``torch.cuda.graph`` into one shared memory pool; warm-up runs on a side stream."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: list[torch.cuda.CUDAGraph] = []  # kept alive: a graph's memory goes with it

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            yield
        torch.cuda.current_stream(self.device).wait_stream(stream)

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Record ``fn`` (without running it); returns the replay."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            fn()
        self.graphs.append(graph)
        return graph.replay


class CapturedTrainStep(TrainStep):
    """The step replayed from CUDA graphs (see the module docstring); ``capture`` records the phases.

    The forward/backward graph is recorded after ``warmup_steps`` eager steps (cuDNN autotuning, lazy state),
    for the first batch shape and a target capacity rounded up to 32 boxes per image; a batch with more boxes
    grows the capacity and records again; a batch of another image shape (a short last batch) runs eagerly.
    The optimiser graph is recorded once the optimiser's hyper-parameters (lr, momentum) are the same for two
    steps in a row and again when they change (each epoch); while they change every step (warmup) it runs
    eagerly. Single process, no fp16 GradScaler (``graph_unavailable`` sends those to the eager step).
    """

    def __init__(
        self,
        parts: TrainParts,
        after_backward: Callable[[], None] = lambda: None,
        *,
        capture: GraphCapture,
        warmup_steps: int = 3,
    ) -> None:
        super().__init__(parts, after_backward)
        self.graphs = capture
        self.warmup_steps = warmup_steps
        self.steps_done = 0
        self.capacity = 0
        self.shape: tuple[int, ...] | None = None  # the captured image shape (B, 3, H, W)
        self.eager_shapes: set[tuple[int, ...]] = set()
        self.params = [p for p in parts.model.parameters() if p.requires_grad]
        for p in self.params:
            p.grad = torch.zeros_like(p)  # fixed gradient buffers: every phase accumulates into / clears these
        self.grads = [p.grad for p in self.params]
        self.replay_fb: Callable[[], None] | None = None
        self.replay_opt: Callable[[], None] | None = None
        self.opt_key: tuple | None = None
        self.last_opt_key: tuple | None = None
        self.static: dict[str, Any] = {}

    # -- forward / backward ------------------------------------------------------------------------------------
    def accumulate(self, images_u8: Tensor, targets: PaddedTargets) -> Tensor:
        """Forward, loss and gradients of ``images_u8 (Tensor[B, 3, H, W])`` uint8 on the device, added into the
        fixed ``.grad`` buffers; returns the detached loss parts. The body of the forward/backward graph."""
        p = self.parts
        images = images_u8.float().div(255)
        amp = p.amp_dtype is not None
        # autocast's weight-cast cache must be off under capture
        with torch.autocast(p.device.type, dtype=p.amp_dtype, enabled=amp, cache_enabled=False):
            outputs = p.model(images)
        loss, items = p.loss(outputs, {"targets": targets})
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)  # unscaled: no fp16 GradScaler here
        used = [(buf, g) for buf, g in zip(self.grads, grads) if g is not None]
        torch._foreach_add_([b for b, _ in used], [g for _, g in used])
        return items

    def forward_backward(self, batch: dict, defer_sync: bool = False) -> Tensor:
        shape = tuple(batch["img"].shape)
        nc = self.parts.loss.nc
        targets = host_targets(batch, nc)
        if self.shape is not None and shape != self.shape:
            if shape not in self.eager_shapes:
                self.eager_shapes.add(shape)
                LOGGER.info(f"graph: a batch of shape {shape} differs from the captured {self.shape}; run eagerly")
            return self._eager_accumulate(batch, targets)
        if self.steps_done < self.warmup_steps:
            self.steps_done += 1
            with self.graphs.warmup():
                return self._eager_accumulate(batch, targets)
        if self.replay_fb is None or targets.max_boxes > self.capacity:
            self._record_forward_backward(shape, targets.max_boxes)
        padded = host_targets(batch, nc, self.capacity)
        s = self.static
        s["img"].copy_(batch["img"], non_blocking=True)
        for name in ("labels", "boxes", "mask"):
            getattr(s["targets"], name).copy_(getattr(padded, name), non_blocking=True)
        self.replay_fb()  # type: ignore[misc]
        return s["items"]

    def _eager_accumulate(self, batch: dict, targets: PaddedTargets) -> Tensor:
        device = self.parts.device
        return self.accumulate(batch["img"].to(device), targets.to(device))

    def _record_forward_backward(self, shape: tuple[int, ...], boxes: int) -> None:
        grown = self.replay_fb is not None
        self.capacity = max(_CAPACITY_STEP, -(-boxes // _CAPACITY_STEP) * _CAPACITY_STEP)
        b, device = shape[0], self.parts.device
        s = self.static
        s["img"] = torch.zeros(shape, dtype=torch.uint8, device=device)
        s["targets"] = PaddedTargets(
            torch.zeros(b, self.capacity, dtype=torch.long, device=device),
            torch.zeros(b, self.capacity, 4, device=device),
            torch.zeros(b, self.capacity, dtype=torch.bool, device=device),
        )

        def body() -> None:
            s["items"] = self.accumulate(s["img"], s["targets"])

        self.replay_fb = self.graphs.capture(body)
        self.shape = shape
        why = "a batch had more boxes than the capacity; " if grown else ""
        LOGGER.info(f"graph: {why}captured forward/backward for images {shape}, up to {self.capacity} boxes/image")

    # -- optimiser ---------------------------------------------------------------------------------------------
    def optimizer_body(self) -> None:
        """Clip, step, clear the gradient buffers in place: the body of the optimiser graph."""
        clip = self.parts.cfg.optim.clip_grad
        if clip > 0:
            nn.utils.clip_grad_norm_(self.params, max_norm=clip)
        self.parts.optimizer.step()
        torch._foreach_zero_(self.grads)  # in place: the graphs hold these buffers

    def optimizer_step(self) -> None:
        p = self.parts
        make_capturable(p.optimizer, p.device)  # also after a resume loaded host-side step counts
        key = hyper_parameters(p.optimizer)
        if key != self.last_opt_key:  # changing every step (warmup): a graph would be recorded for one replay
            self.last_opt_key = key
            self.optimizer_body()
        else:
            if key != self.opt_key:
                self.replay_opt = self.graphs.capture(self.optimizer_body)
                self.opt_key = key
            self.replay_opt()  # type: ignore[misc]
        p.ema.update(p.model)


def hyper_parameters(optimizer: torch.optim.Optimizer) -> tuple:
    """What a recorded optimiser step freezes: every group's lr, momentum and betas."""
    return tuple((g["lr"], g.get("momentum"), tuple(g.get("betas", ()))) for g in optimizer.param_groups)


def graph_unavailable(
    device: torch.device,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    distributed: bool,
) -> str:
    """Why the step cannot be captured here, in one sentence ("" when it can)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, this run trains on {device.type}"
    if distributed:
        return "capture under DistributedDataParallel is not supported (gradient all-reduce runs outside the graph)"
    if not isinstance(optimizer, CAPTURABLE_OPTIMIZERS):
        return f"optimizer {type(optimizer).__name__} is not one of SGD, Adam, AdamW"
    if scaler.is_enabled():
        return "fp16 AMP's GradScaler decides on the host whether to skip a step (bf16 or amp=False can capture)"
    return ""


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Adam-family optimisers keep their step count on the device when capturable (a graph cannot read the host).
    CPU optimisers are left alone (torch refuses capturable there; nothing is captured on a CPU)."""
    if device.type == "cpu" or not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return
    for group in optimizer.param_groups:
        group["capturable"] = True
    for state in optimizer.state.values():
        if "step" in state:
            state["step"] = state["step"].to(device=device, dtype=torch.float32)


def make_train_step(parts: TrainParts, after_backward: Callable[[], None] = lambda: None) -> TrainStep:
    """The captured step when ``cfg.graph`` asks for it and capture is possible here, else the eager one (saying
    why, once, on rank 0)."""
    if parts.cfg.graph:
        why = graph_unavailable(parts.device, parts.optimizer, parts.scaler, parts.dist.enabled)
        if not why:
            return CapturedTrainStep(parts, after_backward, capture=CudaGraphCapture(parts.device))
        if parts.dist.is_main:
            LOGGER.info(f"graph=True: training eagerly instead: {why}")
    return TrainStep(parts, after_backward)


def standalone_parts(
    model: nn.Module,
    cfg: TrainConfig,
    device: torch.device,
    optimizer: str = "SGD",
) -> TrainParts:
    """The parts a step needs for ``model`` alone, without data or a run directory (benchmarks, tests):
    the run's loss, EMA, optimiser (constant lr) and AMP settings from ``cfg``."""
    cfg.optim.optimizer = optimizer  # type: ignore[assignment]
    opt = resolve_optimizer(cfg.optim, 100_000, cfg.batch, 1)
    dtype = amp_dtype(device, cfg.amp)
    return TrainParts(
        cfg=cfg, dist=DistInfo(), device=device, run_dir=Path("."), names=[], train_loader=[], train_set=None,
        val_loader=None, model=model, loss=TrainLoss(model, cfg.loss), ema=ModelEMA(model, cfg.optim.ema_decay),
        opt=opt, optimizer=build_optimizer(model, opt), schedule=LRSchedule(cfg.optim, opt, cfg.epochs, 0),
        warmup_iters=0, accumulate=1, scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        amp_dtype=dtype,
    )  # fmt: skip
