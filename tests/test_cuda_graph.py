"""GraphCache: capture once per shape, replay with the new input copied into the static buffer, LRU eviction."""

from __future__ import annotations

import pytest
import torch
from graph_fakes import FakeGraphOps

from detector.predict.cuda_graph import WARMUP_CALLS, GraphCache


def make(max_graphs: int = 8):
    calls = []

    def fn(x: torch.Tensor):
        calls.append(tuple(x.shape))
        return x * 2 + 1, x.sum(dim=(1, 2, 3))

    ops = FakeGraphOps()
    return GraphCache(fn, ops, max_graphs=max_graphs), ops, calls


def test_first_call_warms_up_then_captures_and_replays():
    cache, ops, calls = make()
    x = torch.rand(2, 3, 8, 8)
    y, s = cache(x)
    torch.testing.assert_close(y, x * 2 + 1)
    torch.testing.assert_close(s, x.sum(dim=(1, 2, 3)))
    assert ops.warmup_streams == 1 and ops.captures == 1 and ops.pools == 1
    assert ops.log == [("capture", (2, 3, 8, 8)), ("replay", (2, 3, 8, 8))]
    assert len(calls) == WARMUP_CALLS + 1 + 1  # warm-up, capture, the (fake) replay


def test_same_shape_replays_into_the_same_static_outputs_with_new_data():
    cache, ops, _ = make()
    y1, _ = cache(torch.zeros(1, 3, 8, 8))
    x2 = torch.rand(1, 3, 8, 8)
    y2, s2 = cache(x2)
    assert y2 is y1, "a replay writes into the captured output tensors"
    torch.testing.assert_close(y2, x2 * 2 + 1)
    torch.testing.assert_close(s2, x2.sum(dim=(1, 2, 3)))
    assert ops.captures == 1 and ops.pools == 1
    (entry,) = cache.graphs.values()
    assert entry.replays == 2 and entry.graph.replays == 2


def test_new_shape_or_dtype_is_a_new_graph_and_lru_evicts_the_oldest():
    cache, ops, _ = make(max_graphs=2)
    a, b, c = torch.rand(1, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.rand(1, 3, 16, 8)
    cache(a), cache(b)
    cache(a)  # a becomes the most recent
    cache(c)  # evicts b
    assert ops.captures == 3 and ops.pools == 1, "one memory pool shared by every graph"
    assert [k[0] for k in cache.graphs] == [(1, 3, 8, 8), (1, 3, 16, 8)]
    cache(b)
    assert ops.captures == 4
    cache(a.double())
    assert ops.captures == 5, "the dtype is part of the key"


def test_outputs_are_correct_for_every_cached_shape_after_many_calls():
    cache, _, _ = make(max_graphs=3)
    for i in range(6):
        x = torch.rand(1 + i % 3, 3, 4, 4)
        y, _ = cache(x)
        torch.testing.assert_close(y, x * 2 + 1)


def test_a_failed_capture_runs_that_shape_eagerly(caplog):
    cache, ops, calls = make()

    def refuse(graph, fn, static_input, pool):
        raise RuntimeError("operation not permitted when stream is capturing")

    ops.capture = refuse
    x = torch.rand(1, 3, 4, 4)
    with caplog.at_level("WARNING", logger="detector.graph"):
        y, _ = cache(x)
        y2, _ = cache(x + 1)
    torch.testing.assert_close(y, x * 2 + 1)
    torch.testing.assert_close(y2, x * 2 + 3)
    assert cache.eager == {GraphCache.key(x)} and not cache.graphs
    assert sum("capture failed" in r.message for r in caplog.records) == 1


@pytest.mark.gpu
def test_real_cuda_graph_replays_new_inputs():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.CUDAGraph)")
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).cuda().eval()
    cache = GraphCache(lambda x: (conv(x),))
    for _ in range(3):
        x = torch.rand(2, 3, 32, 32, device="cuda")
        (y,) = cache(x)
        with torch.no_grad():
            torch.testing.assert_close(y, conv(x))
    assert len(cache.graphs) == 1
