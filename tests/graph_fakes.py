"""A stand-in for CUDA graphs (``detector.predict.cuda_graph.GraphOps``) so capture/replay logic runs on the CPU.

"Capturing" runs the function once on the static input and remembers it; "replaying" runs it again on whatever
the static input holds now and writes the results into the captured output tensors, which is what a real graph
replay does to its static buffers. Every step is counted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch


@dataclass
class FakeGraph:
    fn: object = None
    static_input: torch.Tensor | None = None
    outputs: tuple = ()
    replays: int = 0


@dataclass
class FakeGraphOps:
    captures: int = 0
    warmup_streams: int = 0
    pools: int = 0
    log: list = field(default_factory=list)  # ("capture" | "replay", input shape)

    def new_graph(self) -> FakeGraph:
        return FakeGraph()

    def capture(self, graph: FakeGraph, fn, static_input: torch.Tensor, pool) -> tuple:
        assert pool == "pool", "every graph is captured into the shared pool"
        self.captures += 1
        self.log.append(("capture", tuple(static_input.shape)))
        graph.fn, graph.static_input = fn, static_input
        graph.outputs = tuple(t.clone() for t in fn(static_input))
        return graph.outputs

    @contextlib.contextmanager
    def side_stream(self, device):
        self.warmup_streams += 1
        yield

    def pool(self):
        self.pools += 1
        return "pool"

    def replay(self, graph: FakeGraph) -> None:
        graph.replays += 1
        self.log.append(("replay", tuple(graph.static_input.shape)))
        for out, new in zip(graph.outputs, graph.fn(graph.static_input)):
            out.copy_(new)
