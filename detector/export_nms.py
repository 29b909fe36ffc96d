"""End-to-end NMS appended to an exported graph, by editing the ONNX graph after the torch export.

The raw graph ends in ``output0 (B, 4 + nc, A)`` (xyxy pixels, class scores). Both variants replace that output
with the same four tensors, so users see one set of names whatever runs the model:

``num_dets (B, 1) int32``, ``det_boxes (B, K, 4) float32`` xyxy, ``det_scores (B, K) float32``,
``det_classes (B, K) int32`` with K = ``max_det``; rows past ``num_dets`` are zero.

* ``onnx``: the standard ``NonMaxSuppression`` op (runs in ONNX Runtime; TensorRT maps it to its NMS layer) with
  per-class suppression through the op's class axis (scores ``(B, nc, A)``), so a box may be kept for several
  classes, as with TensorRT's plugin. The selected (image, class, anchor) triples are scattered into a dense
  ``(B, nc * A + K)`` score table (unselected = -1, plus K always-invalid columns so TopK never runs short),
  and one ``TopK`` per image picks the K best.
* ``trt``: TensorRT's ``EfficientNMS_TRT`` plugin node (domain ``TRT``), which only TensorRT can run.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploy.metadata import NMS_OUTPUTS, RAW_OUTPUT

TRT_DOMAIN = "TRT"
TRT_PLUGIN = "EfficientNMS_TRT"
MIN_OPSET = 11  # NonMaxSuppression, GatherND and ScatterND in their current form


class _GraphBuilder:
    """Appends nodes and constants to a graph with unique ``nms/`` names."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"/nms/{stem}_{self.count}"

    def const(self, stem: str, value, dtype) -> str:
        name = self.name(stem)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, outputs: list[str] | None = None, **attrs):
        outs = outputs or [self.name(f"{op_type}_out") for _ in range(n_out)]
        self.graph.node.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if len(outs) == 1 else outs


def _batch_dim(model: onnx.ModelProto) -> int | str:
    """The batch dimension of ``output0``: a number (static) or its symbolic name (dynamic)."""
    (out,) = [o for o in model.graph.output if o.name == RAW_OUTPUT]
    d0 = out.type.tensor_type.shape.dim[0]
    return d0.dim_value if d0.HasField("dim_value") else (d0.dim_param or "batch")


def _split_boxes_scores(g: _GraphBuilder) -> tuple[str, str]:
    """``output0 (B, 4 + nc, A)`` -> ``boxes (B, A, 4)``, ``scores (B, A, nc)``."""
    t = g.op("Transpose", [RAW_OUTPUT], perm=[0, 2, 1])
    axis = g.const("axis2", [2], np.int64)
    boxes = g.op("Slice", [t, g.const("zero", [0], np.int64), g.const("four", [4], np.int64), axis])
    scores = g.op(
        "Slice", [t, g.const("four", [4], np.int64), g.const("end", [np.iinfo(np.int64).max], np.int64), axis]
    )
    return boxes, scores


def _set_outputs(model: onnx.ModelProto, batch: int | str, max_det: int) -> None:
    """Replace the graph outputs with the four NMS outputs (types and shapes declared)."""
    del model.graph.output[:]
    shapes = {
        "num_dets": (TensorProto.INT32, [batch, 1]),
        "det_boxes": (TensorProto.FLOAT, [batch, max_det, 4]),
        "det_scores": (TensorProto.FLOAT, [batch, max_det]),
        "det_classes": (TensorProto.INT32, [batch, max_det]),
    }
    for name in NMS_OUTPUTS:
        elem, shape = shapes[name]
        model.graph.output.append(helper.make_tensor_value_info(name, elem, shape))


def add_trt_nms(model: onnx.ModelProto, conf: float, iou: float, max_det: int, agnostic: bool = False) -> None:
    """Append TensorRT's ``EfficientNMS_TRT`` plugin after ``output0`` (in place)."""
    batch = _batch_dim(model)
    g = _GraphBuilder(model.graph)
    boxes, scores = _split_boxes_scores(g)
    g.op(
        TRT_PLUGIN,
        [boxes, scores],
        outputs=list(NMS_OUTPUTS),
        domain=TRT_DOMAIN,
        plugin_version="1",
        background_class=-1,
        box_coding=0,  # corners: our boxes are xyxy
        class_agnostic=int(agnostic),
        iou_threshold=float(iou),
        max_output_boxes=int(max_det),
        score_activation=0,  # scores are already sigmoid probabilities
        score_threshold=float(conf),
    )
    _set_outputs(model, batch, max_det)
    if not any(o.domain == TRT_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(TRT_DOMAIN, 1))


def add_onnx_nms(model: onnx.ModelProto, conf: float, iou: float, max_det: int, opset: int) -> None:
    """Append ONNX ``NonMaxSuppression`` + per-image top-K after ``output0`` (in place); see the module doc."""
    if opset < MIN_OPSET:
        raise ValueError(f"nms=onnx needs opset >= {MIN_OPSET}, got {opset}")
    batch = _batch_dim(model)
    g = _GraphBuilder(model.graph)
    i64 = np.int64
    boxes, scores = _split_boxes_scores(g)
    scores_t = g.op("Transpose", [scores], perm=[0, 2, 1])  # (B, nc, A)
    selected = g.op(  # (N, 3) int64: image, class, anchor
        "NonMaxSuppression",
        [
            boxes,
            scores_t,
            g.const("max_per_class", [max_det], i64),
            g.const("iou", [iou], np.float32),
            g.const("conf", [conf], np.float32),
        ],
        center_point_box=0,
    )
    shape = g.op("Shape", [scores_t])  # [B, nc, A]
    b_dim = g.op("Slice", [shape, g.const("s0", [0], i64), g.const("e1", [1], i64)])
    nc_dim = g.op("Slice", [shape, g.const("s1", [1], i64), g.const("e2", [2], i64)])
    a_dim = g.op("Slice", [shape, g.const("s2", [2], i64), g.const("e3", [3], i64)])

    def column(j: int) -> str:  # (N, 1)
        return g.op("Slice", [selected, g.const("c", [j], i64), g.const("c", [j + 1], i64), g.const("ax1", [1], i64)])

    flat = g.op("Add", [g.op("Mul", [column(1), a_dim]), column(2)])  # class * A + anchor, (N, 1)
    index = g.op("Concat", [column(0), flat], axis=1)  # (N, 2) into the (B, nc * A + K) table
    picked = g.op("GatherND", [scores_t, selected])  # (N,) scores of the selected triples
    width = g.op("Add", [g.op("Mul", [nc_dim, a_dim]), g.const("k", [max_det], i64)])
    table_shape = g.op("Concat", [b_dim, width], axis=0)
    empty = g.op("ConstantOfShape", [table_shape], value=helper.make_tensor("fill", TensorProto.FLOAT, [1], [-1.0]))
    table = g.op("ScatterND", [empty, index, picked])
    top_scores, top_index = g.op("TopK", [table, g.const("k", [max_det], i64)], n_out=2, axis=1, largest=1, sorted=1)
    valid = g.op("Greater", [top_scores, g.const("half_neg", -0.5, np.float32)])  # (B, K); scores are >= 0
    k_cols = g.const("bk1", [0, max_det, 1], i64)  # Reshape (B, K) -> (B, K, 1); 0 keeps the batch dim
    anchor = g.op("Mod", [top_index, a_dim])  # padding columns map to some anchor; masked below
    gather_idx = g.op("Expand", [g.op("Reshape", [anchor, k_cols]), g.const("x4", [1, 1, 4], i64)])
    picked_boxes = g.op("GatherElements", [boxes, gather_idx], axis=1)  # (B, K, 4)
    zero_f = g.const("zero_f", 0.0, np.float32)
    g.op("Where", [g.op("Reshape", [valid, k_cols]), picked_boxes, zero_f], outputs=["det_boxes"])
    g.op("Where", [valid, top_scores, zero_f], outputs=["det_scores"])
    classes = g.op("Where", [valid, g.op("Div", [top_index, a_dim]), g.const("zero_i", 0, i64)])
    g.op("Cast", [classes], outputs=["det_classes"], to=TensorProto.INT32)
    valid_i = g.op("Cast", [valid], to=TensorProto.INT32)
    if opset >= 13:
        g.op("ReduceSum", [valid_i, g.const("ax1", [1], i64)], outputs=["num_dets"], keepdims=1)
    else:
        g.op("ReduceSum", [valid_i], outputs=["num_dets"], axes=[1], keepdims=1)
    _set_outputs(model, batch, max_det)


def add_nms(model: onnx.ModelProto, mode: str, conf: float, iou: float, max_det: int, opset: int) -> None:
    """Append the NMS variant ``mode`` ("onnx" or "trt") to ``model`` in place."""
    if mode == "onnx":
        add_onnx_nms(model, conf, iou, max_det, opset)
    elif mode == "trt":
        add_trt_nms(model, conf, iou, max_det)
    else:
        raise ValueError(f"unknown nms mode {mode!r}")
