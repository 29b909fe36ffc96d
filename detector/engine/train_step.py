"""One training iteration, eager or captured in CUDA graphs: ``build_train_step(...)`` picks which.

A step has two phases, so the trainer can fire ``after_backward`` between them and accumulate gradients:

- ``forward_backward(batch)``: targets padded on the host (from the loader's CPU tensors, so the device never
  waits for the checks), images and targets moved, forward under autocast, the loss of every head, the scaled
  backward; returns the detached loss parts on the device (read back only when the progress bar redraws);
- ``optimizer_phase()``: unscale, clip the gradient norm, optimiser step, scaler update, gradients cleared.

``CapturedTrainStep`` records each phase once in a ``torch.cuda.CUDAGraph`` and replays it: inputs are copied
into fixed buffers (images of the run's fixed shape, targets padded to a fixed maximum per image), gradients
accumulate into fixed ``.grad`` tensors. The losses and assigners are written without host synchronisation
(``tests/test_capture_safe_step.py`` proves it), which capture requires. The EMA is not captured: its decay
changes every update (a Python number a graph would freeze), so ``EMAHook`` updates it after the replay.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from detector.losses.targets import PaddedTargets, pad_targets

LOGGER = logging.getLogger("detector")
CAPTURABLE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
_CAPACITY_STEP = 32  # target capacity grows in steps of this many boxes per image


class TrainStep:
    """The eager step. ``heads`` maps output tags to heads (main head first), ``losses`` the tags to their loss
    callables ``loss(maps, batch) -> (loss, items)``; ``world_size`` scales the loss back to the full batch
    under DDP (which averages gradients over ranks)."""

    mode = "eager"
    autocast_cache = True  # autocast's cache of cast weights; a CUDA graph capture needs it off

    def __init__(
        self,
        model: nn.Module,
        heads: dict[str, Any],
        losses: dict[str, Callable],
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        clip_grad: float = 10.0,
        world_size: int = 1,
    ) -> None:
        self.model, self.heads, self.losses = model, heads, losses
        self.optimizer, self.scaler = optimizer, scaler
        self.device, self.amp_dtype, self.clip_grad, self.world_size = device, amp_dtype, clip_grad, world_size
        self.nc = int(next(iter(heads.values())).nc)

    # -- inputs ------------------------------------------------------------------------------------------------
    def host_targets(self, batch: dict, max_boxes: int | None = None) -> PaddedTargets:
        """The batch's ground truth padded on the host, ``(B, M)`` with ``M = max_boxes`` or the largest count."""
        cpu = {k: batch[k].cpu() for k in ("cls", "bboxes", "batch_idx")}
        return pad_targets(cpu, len(batch["img"]), self.nc, torch.device("cpu"), max_boxes)

    def to_device(self, batch: dict, targets: PaddedTargets) -> tuple[Tensor, dict]:
        """uint8 images -> float 0..1 on the device; every tensor of the batch and the padded targets moved."""
        nb = self.device.type == "cuda"
        images = batch["img"].to(self.device, non_blocking=nb).float().div_(255)
        moved = {
            k: (v.to(self.device, non_blocking=nb) if isinstance(v, Tensor) and k != "img" else v)
            for k, v in batch.items()
        }
        moved["targets"] = targets.to(self.device, non_blocking=nb)
        return images, moved

    # -- the two phases ----------------------------------------------------------------------------------------
    def forward_backward(self, batch: dict, defer_sync: bool = False) -> Tensor:
        """Forward, loss, scaled backward (gradients accumulate). ``defer_sync``: skip DDP's gradient all-reduce
        (an accumulation step). Returns every head's detached loss parts, ``Tensor[sum of parts]``."""
        images, moved = self.to_device(batch, self.host_targets(batch))
        with self.model.no_sync() if defer_sync else contextlib.nullcontext():  # type: ignore[operator]
            loss, items = self.forward_loss(images, moved)
            self.scaler.scale(loss * self.world_size).backward()
        return items

    def optimizer_phase(self) -> None:
        """Unscale, clip, step, update the scaler, clear the gradients."""
        self.scaler.unscale_(self.optimizer)
        if self.clip_grad > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    # -- shared pieces -----------------------------------------------------------------------------------------
    def forward_loss(self, images: Tensor, batch: dict) -> tuple[Tensor, Tensor]:
        """Forward under autocast, then the loss of every head in float32."""
        amp = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=amp, cache_enabled=self.autocast_cache):
            outputs = self.model(images)
        return self.compute_loss(outputs, batch)

    def compute_loss(self, outputs: dict[str, list[Tensor]], batch: dict) -> tuple[Tensor, Tensor]:
        """Sum over heads of ``head.loss_weight * loss``, in float32 (outside autocast).

        Returns the total loss (scaled by batch size, as the losses return it) and every head's detached parts.
        """
        total: Tensor | float = 0.0
        parts = []
        for tag, head in self.heads.items():
            maps = [m.float() for m in outputs[tag]]
            loss, items = self.losses[tag](maps, batch)
            # ties every output map into the graph: with no foreground in a batch the box branch would get no
            # gradient, which DDP (find_unused_parameters=False) treats as an error
            anchor = sum(m.sum() for m in maps) * 0.0
            total = total + head.loss_weight * loss + anchor
            parts.append(items.detach().to(torch.float32))
        return total, torch.cat(parts)  # type: ignore[return-value]

    def describe(self) -> str:
        return "training step: eager"


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
    eagerly.
    """

    mode = "graph"
    autocast_cache = False

    def __init__(self, *args, capture: GraphCapture, warmup_steps: int = 3, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.graphs = capture
        self.warmup_steps = warmup_steps
        self.steps_done = 0
        self.capacity = 0
        self.shape: tuple[int, ...] | None = None  # the captured image shape (B, 3, H, W)
        self.eager_shapes: set[tuple[int, ...]] = set()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
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
        images = images_u8.float().div(255)
        loss, items = self.forward_loss(images, {"targets": targets})
        # unscaled and single-process: graph_unavailable() keeps fp16 GradScaler and DDP runs eager
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        used = [(buf, g) for buf, g in zip(self.grads, grads) if g is not None]
        torch._foreach_add_([b for b, _ in used], [g for _, g in used])
        return items

    def forward_backward(self, batch: dict, defer_sync: bool = False) -> Tensor:
        shape = tuple(batch["img"].shape)
        targets = self.host_targets(batch)
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
        padded = self.host_targets(batch, self.capacity)
        s = self.static
        s["img"].copy_(batch["img"], non_blocking=True)
        for name in ("labels", "boxes", "mask"):
            getattr(s["targets"], name).copy_(getattr(padded, name), non_blocking=True)
        self.replay_fb()  # type: ignore[misc]
        return s["items"]

    def _eager_accumulate(self, batch: dict, targets: PaddedTargets) -> Tensor:
        return self.accumulate(batch["img"].to(self.device), targets.to(self.device))

    def _record_forward_backward(self, shape: tuple[int, ...], boxes: int) -> None:
        grown = self.replay_fb is not None
        self.capacity = max(_CAPACITY_STEP, -(-boxes // _CAPACITY_STEP) * _CAPACITY_STEP)
        b = shape[0]
        s = self.static
        s["img"] = torch.zeros(shape, dtype=torch.uint8, device=self.device)
        s["targets"] = PaddedTargets(
            torch.zeros(b, self.capacity, dtype=torch.long, device=self.device),
            torch.zeros(b, self.capacity, 4, device=self.device),
            torch.zeros(b, self.capacity, dtype=torch.bool, device=self.device),
        )

        def body() -> None:
            s["items"] = self.accumulate(s["img"], s["targets"])

        self.replay_fb = self.graphs.capture(body)
        self.shape = shape
        why = "a batch had more boxes than the capacity; " if grown else ""
        LOGGER.info(f"graph: {why}captured forward/backward for images {shape}, up to {self.capacity} boxes/image")

    # -- optimiser ---------------------------------------------------------------------------------------------
    def _optimizer_body(self) -> None:
        if self.clip_grad > 0:
            nn.utils.clip_grad_norm_(self.params, max_norm=self.clip_grad)
        self.optimizer.step()
        torch._foreach_zero_(self.grads)  # in place: the graphs hold these buffers

    def optimizer_phase(self) -> None:
        key = hyper_parameters(self.optimizer)
        if key != self.last_opt_key:  # changing every step (warmup): a graph would be recorded for one replay
            self.last_opt_key = key
            self._optimizer_body()
            return
        if key != self.opt_key:
            self.replay_opt = self.graphs.capture(self._optimizer_body)
            self.opt_key = key
        self.replay_opt()  # type: ignore[misc]

    def describe(self) -> str:
        return "training step: captured in CUDA graphs (graph=True)"


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
    """Adam-family optimisers keep their step count on the device when capturable (a graph cannot read the host)."""
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return
    for group in optimizer.param_groups:
        group["capturable"] = True
    for state in optimizer.state.values():
        if "step" in state:
            state["step"] = state["step"].to(device=device, dtype=torch.float32)


def build_train_step(
    model: nn.Module,
    heads: dict[str, Any],
    losses: dict[str, Callable],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    clip_grad: float,
    world_size: int = 1,
    graph: bool = False,
    log: bool = True,
) -> TrainStep:
    """The captured step when ``graph`` is asked for and possible here, else the eager one (saying why once)."""
    parts = dict(device=device, amp_dtype=amp_dtype, clip_grad=clip_grad, world_size=world_size)
    if graph:
        why = graph_unavailable(device, optimizer, scaler, world_size > 1)
        if not why:
            make_capturable(optimizer, device)
            return CapturedTrainStep(model, heads, losses, optimizer, scaler, capture=CudaGraphCapture(device), **parts)
        if log:
            LOGGER.info(f"graph=True: training eagerly instead: {why}")
    return TrainStep(model, heads, losses, optimizer, scaler, **parts)
