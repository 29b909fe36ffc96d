"""``export plugins=True``: SKA and the head post-processing exported as custom ONNX nodes for TensorRT plugins.

Two node types (domain ``detector``, opset 1; op_type = the TensorRT plugin name; the contract and the plugins
themselves are in ``cuda_ops.trt_plugins``):

- ``SKA`` replaces the nine Pad/Slice/Mul/Add chains of each LSNet small-kernel aggregation (which move 9x the
  bytes) by one node; attributes ``kernel_size``, ``groups``.
- ``DecodeTopK`` replaces the dense decode (DFL softmax, anchors, sigmoid, the full ``(B, 4 + nc, A)``) by the
  fused decode + class scores + threshold + per-image top-K over the three raw head maps; attributes
  ``strides``, ``reg_max``, ``conf_threshold`` (the export's ``conf``), ``max_candidates`` (K),
  ``multi_label`` (1: one candidate per (anchor, class) above the threshold, as the exported NMS variants keep
  them; 0: each anchor's best class, the export's ``multi_label=False`` with ``nms=none``), ``anchor_offset``.

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

from cuda_ops.trt_plugins import DECODE_TOPK, NAMESPACE, SKA, VERSION, fixed_k
from detector.errors import DetectorError
from detector.model import DetectionModel
from detector.nn.kernel_swap import swap_ska
from detector.nn.ska import ska
from detector.ops import NMSConfig
from detector.predict.graph_backend import DEFAULT_TOPK

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
    """Traced as one ``detector::DecodeTopK`` node (three raw maps in, four outputs); eagerly the reference."""

    @staticmethod
    def forward(ctx, m0, m1, m2, strides: tuple, reg_max: int, conf: float, k: int, multi_label: bool, offset: float):
        if torch.jit.is_tracing():
            b = m0.shape[0]
            z = m0.new_zeros
            return z(b, k, 4).float(), z(b, k).float(), z(b, k, dtype=torch.int32), z(b, dtype=torch.int32)
        import cuda_ops

        got = cuda_ops.decode_topk(
            [m0, m1, m2], list(strides), reg_max, conf, k, multi_label, offset=offset, impl="reference"
        )
        return fixed_k(*got, k)

    @staticmethod
    def symbolic(g, m0, m1, m2, strides: tuple, reg_max: int, conf: float, k: int, multi_label: bool, offset: float):
        boxes, scores, labels, counts = g.op(
            f"{DOMAIN}::{DECODE_TOPK}", m0, m1, m2, outputs=4,
            strides_f=[float(s) for s in strides], reg_max_i=reg_max, conf_threshold_f=conf, max_candidates_i=k,
            multi_label_i=int(multi_label), anchor_offset_f=offset, **PLUGIN_ATTRS,
        )  # fmt: skip
        b = m0.type().sizes()[0] if m0.type().sizes() else None
        return (
            _typed(boxes, m0, torch.float32, [b, k, 4]),
            _typed(scores, m0, torch.float32, [b, k]),
            _typed(labels, m0, torch.int32, [b, k]),
            _typed(counts, m0, torch.int32, [b]),
        )


def pack_dense(boxes: Tensor, scores: Tensor, labels: Tensor, counts: Tensor, nc: int) -> Tensor:
    """Candidates -> ``(Tensor[B, 4 + nc, K])`` in ``output0``'s layout: boxes, then the score in its class's
    row (0 in the others); slots past ``counts`` score -1 in every row, so a threshold >= 0 never keeps them."""
    k = scores.shape[1]
    valid = torch.arange(k, device=scores.device)[None, :] < counts.long().reshape(-1, 1)  # (B, K)
    onehot = labels.long()[..., None] == torch.arange(nc, device=scores.device)  # (B, K, nc)
    per_class = torch.where(onehot, scores[..., None], torch.zeros((), dtype=scores.dtype))
    per_class = torch.where(valid[..., None], per_class, torch.full((), -1.0, dtype=scores.dtype))
    return torch.cat((boxes, per_class), 2).transpose(1, 2)  # (B, 4 + nc, K)


class PluginDeployGraph(nn.Module):
    """What gets traced with ``plugins=True``: ``images (Tensor[B, 3, H, W])`` float32 -> ``(Tensor[B, 4 + nc, K])``.

    The body runs in the model's dtype with every SKA as a plugin node; the head's three raw maps go into one
    ``DecodeTopK`` node, whose candidates are laid out like ``output0`` (see ``pack_dense``).
    """

    def __init__(self, model: DetectionModel, conf: float, k: int = DEFAULT_TOPK, multi_label: bool = True) -> None:
        super().__init__()
        head = model.main_head
        if len(head.strides) != 3:
            raise DetectorError(
                f"export plugins=True: the DecodeTopK plugin takes 3 head levels, {model.yaml.get('name')} has "
                f"{len(head.strides)}; export without plugins"
            )
        self.model, self.head, self.tag = model, head, model.main_tag
        self.dtype = next(model.parameters()).dtype
        self.conf, self.k, self.multi_label = float(conf), int(k), bool(multi_label)
        self.n_ska = swap_ska(model, ska_node)

    def forward(self, images: Tensor) -> Tensor:
        h = self.head
        maps = self.model(images.to(self.dtype), decode=False)[self.tag]
        args = (tuple(h.strides), h.bins, self.conf, self.k, self.multi_label, float(h.anchor_offset))
        return pack_dense(*_DecodeTopKNode.apply(*maps, *args), h.nc)


def plugin_graph(model: DetectionModel, nms: NMSConfig, k: int = DEFAULT_TOPK) -> PluginDeployGraph:
    """The plugin form of a deploy model (modified in place: export passes its own copy). The candidates are
    those the export's ``NMSConfig`` would consider: above ``nms.conf``, one per (anchor, class) with
    ``nms.multi_label`` (always so for in-graph NMS), else each anchor's best class, so the NMS after the node
    sees what it would see in the dense output."""
    return PluginDeployGraph(model, nms.conf, k, nms.multi_label).eval()


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
