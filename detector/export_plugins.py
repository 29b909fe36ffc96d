"""``export plugins=True``: SKA and the head post-processing exported as custom ONNX nodes for TensorRT plugins.

Two node types (domain ``detector``, opset 1; op_type = the TensorRT plugin name; the contract and the plugins
themselves are in ``cuda_ops.trt_plugins``):

- ``SKA`` replaces the nine Pad/Slice/Mul/Add chains of each LSNet small-kernel aggregation (which move 9x the
  bytes) by one node; attributes ``kernel_size``, ``groups``.
- ``DecodeTopK`` replaces the dense decode (DFL softmax, anchors, sigmoid, the full ``(B, 4 + nc, A)``) by the
  fused decode + class scores + threshold + per-image top-K; attributes ``num_classes``, ``reg_max``,
  ``conf_threshold`` (the export's ``conf``), ``max_candidates`` (K), ``multi_label`` (1: one candidate per
  (anchor, class) above the threshold, as the exported NMS variants keep them).

The graph still ends in ``output0 (B, 4 + nc, K)`` in the usual layout (boxes, then per-class scores; the K
candidates instead of all A anchors, empty slots scored -1), so ``nms=onnx``/``nms=trt`` append to it exactly as
to a dense graph, and a runner's host NMS reads it unchanged. Such a graph runs only on TensorRT with
``cuda_ops.trt_plugins.register_plugins()`` called in the process (ONNX Runtime has no kernel for the nodes).
Eager calls of the node functions run the ops' PyTorch references (the tests compare that path with the dense
graph); while tracing they return zeros of the real shapes and dtypes instead, because the TorchScript tracer
records a Function's forward as a subgraph that the symbolic replaces anyway, and its peephole pass fails on some
ops in that subgraph (``F.pad``).
"""

from __future__ import annotations

import json
import math

import onnx
import torch
from onnx import helper
from torch import Tensor, nn

from cuda_ops.trt_plugins import DECODE_TOPK, NAMESPACE, SKA, VERSION
from detector.model import DetectionModel
from detector.nn.kernel_swap import swap_ska
from detector.nn.ska import ska
from detector.predict.candidates import DEFAULT_TOPK, Candidates, decode_candidates, head_inputs, pack_dense

DOMAIN = NAMESPACE
DOMAIN_VERSION = 1
PLUGIN_ATTRS = {"plugin_namespace_s": NAMESPACE, "plugin_version_s": VERSION}


def _typed(value, like, dtype: torch.dtype, sizes: list[int | None]):
    """Give a custom node's output its ONNX type (the exporter cannot infer it for an unknown op)."""
    value.setType(like.type().with_dtype(dtype).with_sizes(sizes))
    return value


class _SkaNode(torch.autograd.Function):
    """Traced as one ``detector::SKA`` node; computes the PyTorch reference while tracing."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, kernel_size: int, groups: int) -> Tensor:
        if torch.jit.is_tracing():
            return torch.zeros_like(x)
        return ska(x, w)

    @staticmethod
    def symbolic(g, x, w, kernel_size: int, groups: int):
        y = g.op(f"{DOMAIN}::{SKA}", x, w, kernel_size_i=kernel_size, groups_i=groups, **PLUGIN_ATTRS)
        y.setType(x.type())
        return y


def ska_node(x: Tensor, w: Tensor) -> Tensor:
    """``ska(x, w)`` that exports as a ``detector::SKA`` node. Shapes as ``detector.nn.ska.ska``."""
    return _SkaNode.apply(x, w, math.isqrt(int(w.shape[2])), int(w.shape[1]))


class _DecodeTopKNode(torch.autograd.Function):
    """Traced as one ``detector::DecodeTopK`` node with four outputs; computes the reference while tracing."""

    @staticmethod
    def forward(ctx, raw, points, strides, nc: int, bins: int, conf: float, k: int, multi_label: bool):
        if torch.jit.is_tracing():
            b = raw.shape[0]
            z = raw.new_zeros
            return z(b, k, 4), z(b, k), z(b, k, dtype=torch.int32), z(b, dtype=torch.int32)
        c = decode_candidates(raw, points, strides, nc, bins, conf, k, multi_label, impl="reference")
        return c.boxes.float(), c.scores.float(), c.classes.to(torch.int32), c.counts.to(torch.int32).reshape(-1)

    @staticmethod
    def symbolic(g, raw, points, strides, nc: int, bins: int, conf: float, k: int, multi_label: bool):
        boxes, scores, classes, counts = g.op(
            f"{DOMAIN}::{DECODE_TOPK}", raw, points, strides, outputs=4,
            num_classes_i=nc, reg_max_i=bins, conf_threshold_f=conf, max_candidates_i=k,
            multi_label_i=int(multi_label), **PLUGIN_ATTRS,
        )  # fmt: skip
        b = raw.type().sizes()[0] if raw.type().sizes() else None
        return (
            _typed(boxes, raw, torch.float32, [b, k, 4]),
            _typed(scores, raw, torch.float32, [b, k]),
            _typed(classes, raw, torch.int32, [b, k]),
            _typed(counts, raw, torch.int32, [b]),
        )


class PluginDeployGraph(nn.Module):
    """What gets traced with ``plugins=True``: ``images (Tensor[B, 3, H, W])`` float32 -> ``(Tensor[B, 4 + nc, K])``.

    The body runs in the model's dtype with every SKA as a plugin node; the head's raw maps go, in float32,
    into one ``DecodeTopK`` node, whose candidates are laid out like ``output0`` (see ``pack_dense``).
    """

    def __init__(self, model: DetectionModel, conf: float, k: int = DEFAULT_TOPK, multi_label: bool = True) -> None:
        super().__init__()
        self.model = model
        self.tag = next(t for i, t in model.head_tags.items() if model.layers[i] is model.main_head)
        self.dtype = next(model.parameters()).dtype
        self.conf, self.k, self.multi_label = float(conf), int(k), bool(multi_label)
        self.n_ska = swap_ska(model, ska_node)

    def forward(self, images: Tensor) -> Tensor:
        head = self.model.main_head
        maps = self.model(images.to(self.dtype), decode=False)[self.tag]
        raw, points, strides = head_inputs(head, maps)
        out = _DecodeTopKNode.apply(raw, points, strides, head.nc, head.bins, self.conf, self.k, self.multi_label)
        return pack_dense(Candidates(*out), head.nc)


def plugin_graph(model: DetectionModel, conf: float, k: int = DEFAULT_TOPK) -> PluginDeployGraph:
    """The plugin form of a deploy model (modified in place: export passes its own copy)."""
    return PluginDeployGraph(model, conf, k).eval()


def declare_plugin_graph(proto: onnx.ModelProto, batch: int | None, nc: int, k: int = DEFAULT_TOPK) -> None:
    """Declare the ``detector`` domain and ``output0``'s shape ``(B, 4 + nc, K)``, which ONNX shape inference
    cannot derive through custom nodes (``batch`` None: dynamic). Call before NMS is appended to ``output0``."""
    if not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    (out,) = [o for o in proto.graph.output if o.name == "output0"]
    dims = out.type.tensor_type.shape.dim
    for d, value in zip(dims, (batch, 4 + nc, k)):
        if value is None:
            d.dim_param = "batch"
        else:
            d.dim_value = value


def add_plugin_metadata(proto: onnx.ModelProto, k: int = DEFAULT_TOPK) -> list[str]:
    """Record the plugin ops present (``plugins``, what an engine build must register) and ``plugin_topk``."""
    ops = sorted({n.op_type for n in proto.graph.node if n.domain == DOMAIN})
    for key, value in (("plugins", json.dumps(ops)), ("plugin_topk", json.dumps(k))):
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return ops


def register_for_engine() -> None:
    """Register our TensorRT plugins before the ONNX parser meets their nodes (a clear error without TRT)."""
    from cuda_ops.trt_plugins import register_plugins
    from detector.errors import DetectorError

    try:
        register_plugins()
    except ImportError as e:
        raise DetectorError(f"export plugins=True format=engine: {e}") from None
