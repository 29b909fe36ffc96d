"""Reading an exported ONNX graph for quantization: which nodes stay float, which convs may be quantized.

The float-kept tail is found by data flow, not by names, so it holds for every head family: the head's
prediction convs are the convolutions after which no other convolution follows (the last conv of each box and
class branch per level), and everything downstream of them (reshape/concat, DFL softmax and expectation, anchor
arithmetic, sigmoid) is the decode. Quantizing that tail buys no speed (a handful of tiny ops) and costs the
most accuracy: box bins and class logits feed a softmax/sigmoid whose inputs must resolve small differences.
"""

from __future__ import annotations

from collections import defaultdict

import onnx

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it."""
    out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                out[name].append(node)
    return out


def downstream(graph: onnx.GraphProto, starts: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Every node reachable from the outputs of ``starts`` (``starts`` excluded), in graph order."""
    readers = consumers(graph)
    seen: set[str] = set()
    stack = [t for n in starts for t in n.output]
    while stack:
        for node in readers.get(stack.pop(), []):
            if node.name not in seen:
                seen.add(node.name)
                stack.extend(node.output)
    return [n for n in graph.node if n.name in seen]


def prediction_convs(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The head's last convolutions: Conv nodes with no Conv anywhere downstream of them."""
    readers = consumers(graph)
    conv_below: dict[str, bool] = {}  # node name -> a Conv lies downstream of it
    for node in reversed(graph.node):  # ONNX keeps nodes in topological order: readers come later
        nxt = [r for t in node.output for r in readers.get(t, [])]
        conv_below[node.name] = any(r.op_type == "Conv" or conv_below.get(r.name, False) for r in nxt)
    return [n for n in graph.node if n.op_type == "Conv" and not conv_below[n.name]]


def float_tail(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes kept in float by default: the prediction convs, DFL and decode."""
    heads = prediction_convs(graph)
    return [n.name for n in heads] + [n.name for n in downstream(graph, heads)]


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a unique name (the quantizer addresses nodes by name); in place."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    return model


def quantized_inputs(graph: onnx.GraphProto) -> dict[str, list[str]]:
    """Node name -> which of its inputs come out of a DequantizeLinear (i.e. were quantized)."""
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: [i for i in n.input if i in dq_out] for n in graph.node if n.op_type not in QDQ_OPS}
