"""Capture a tensor function once per input shape as a CUDA graph and replay it.

A CUDA graph records every kernel launch of one call, with its pointers, and replays them with one launch:
the Python and launch overhead of a small model at batch 1 disappears. The price is static memory: a graph
reads its input from the buffer it was captured with and writes into the same output tensors every replay.
``GraphCache`` therefore owns, per key (batch, H, W), a static input buffer, the captured graph and its static
outputs; ``__call__`` copies the new input into the buffer, replays, and returns the static outputs. All graphs
share one memory pool (activations are not held once per shape), which is safe because replays never overlap,
but it means a replay of any shape may overwrite another shape's outputs: read or copy them before the next call. A shape whose capture fails (some op
synchronises with the host) is logged once and from then on runs eagerly, so results never depend on it.

The CUDA side is behind ``GraphOps`` so the capture/replay logic is testable without a GPU (the tests inject
ops whose graph records calls and "replays" by re-running the captured function).
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

GraphFn = Callable[[Tensor], tuple[Tensor, ...]]

LOG = logging.getLogger("detector.graph")
WARMUP_CALLS = 3
"""Eager calls on a side stream before capture: cuDNN/cuBLAS pick algorithms and allocate workspaces, Triton
compiles its kernels, and none of that may happen inside the capture."""


class GraphOps(Protocol):
    """What ``GraphCache`` needs from CUDA (``CudaGraphOps``) or from a test double."""

    def new_graph(self) -> Any: ...

    def capture(self, graph: Any, fn: GraphFn, static_input: Tensor, pool: Any) -> tuple[Tensor, ...]:
        """Record ``fn(static_input)`` into ``graph``; returns the outputs every replay rewrites."""
        ...

    def side_stream(self, device: torch.device) -> contextlib.AbstractContextManager: ...

    def pool(self) -> Any: ...

    def replay(self, graph: Any) -> None: ...


class CudaGraphOps:
    """The real thing: ``torch.cuda.CUDAGraph`` captured on a side stream, one memory pool for all graphs."""

    def new_graph(self) -> torch.cuda.CUDAGraph:
        return torch.cuda.CUDAGraph()

    def capture(self, graph: torch.cuda.CUDAGraph, fn: GraphFn, static_input: Tensor, pool: Any) -> tuple[Tensor, ...]:
        with torch.cuda.graph(graph, pool=pool):
            return tuple(fn(static_input))

    @contextlib.contextmanager
    def side_stream(self, device: torch.device) -> Iterator[None]:
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            yield
        torch.cuda.current_stream(device).wait_stream(stream)

    def pool(self) -> Any:
        return torch.cuda.graph_pool_handle()

    def replay(self, graph: torch.cuda.CUDAGraph) -> None:
        graph.replay()


@dataclass
class Captured:
    """One captured shape: the static input it reads and the static outputs it writes."""

    graph: Any
    static_input: Tensor
    outputs: tuple[Tensor, ...]
    replays: int = 0


class GraphCache:
    """``fn`` captured per input shape (and dtype), least recently used graphs dropped beyond ``max_graphs``.

    Args:
        fn: ``input (Tensor[B, ...]) -> tuple of Tensors``; must be capturable: no host synchronisation, no
            data-dependent shapes, no CPU tensors created from GPU values.
        ops: the CUDA graph primitives (``CudaGraphOps()`` by default).
        max_graphs: how many shapes stay captured; each holds its activations in the shared pool.
    """

    def __init__(self, fn: GraphFn, ops: GraphOps | None = None, max_graphs: int = 8) -> None:
        self.fn = fn
        self.ops = ops or CudaGraphOps()
        self.max_graphs = max(1, int(max_graphs))
        self.graphs: OrderedDict[tuple, Captured] = OrderedDict()
        self.eager: set[tuple] = set()  # shapes whose capture failed: they run uncaptured
        self._pool = None

    @staticmethod
    def key(x: Tensor) -> tuple:
        return (tuple(x.shape), x.dtype, x.device)

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> tuple[Tensor, ...]:
        """Replay the graph for ``x``'s shape (capturing it first if new); returns its static outputs."""
        key = self.key(x)
        if key in self.eager:
            return tuple(self.fn(x))
        entry = self.graphs.get(key)
        if entry is None:
            try:
                entry = self._capture(x)
            except RuntimeError as e:  # an op that cannot be captured (a host sync, a pageable copy): run eagerly
                LOG.warning("CUDA graph capture failed for input %s (%s); running that shape eagerly", key[0], e)
                self.eager.add(key)
                return tuple(self.fn(x))
            self.graphs[key] = entry
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(key)
        entry.static_input.copy_(x)
        self.ops.replay(entry.graph)
        entry.replays += 1
        return entry.outputs

    def _capture(self, x: Tensor) -> Captured:
        static = x.clone()
        with self.ops.side_stream(x.device):
            for _ in range(WARMUP_CALLS):
                self.fn(static)
        if self._pool is None:
            self._pool = self.ops.pool()
        graph = self.ops.new_graph()
        outputs = self.ops.capture(graph, self.fn, static, self._pool)
        return Captured(graph, static, outputs)
