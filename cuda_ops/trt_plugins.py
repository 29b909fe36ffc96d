"""SKA and the fused head post-processing as TensorRT plugins, through TensorRT's Python plugin API.

``tensorrt.plugin`` (TensorRT 10.6+, also 11.x; "quickly deployable plugins") registers a plugin from two
decorated Python functions: ``register`` describes the outputs from the inputs' descriptors and the
attributes, ``impl`` computes them on the stream TensorRT gives. Our ``impl`` wraps TensorRT's buffers as
torch tensors (zero copy, through ``__cuda_array_interface__``) and runs the same op as everywhere else
(``cuda_ops.ska`` / ``cuda_ops.decode_topk``, kernel where it can run). ``autotune`` states the types.

The ONNX side is written by ``detector export format=onnx plugins=True`` (``detector.export_plugins``); the
contract both sides share lives here:

- ``SKA`` (``detector::SKA``): inputs ``x (B, C, H, W)``, ``w (B, G, k*k, H, W)``, same dtype (float32 or
  float16); attributes ``kernel_size`` (int k), ``groups`` (int G); output ``y (B, C, H, W)``, x's dtype.
- ``DecodeTopK`` (``detector::DecodeTopK``): inputs the head's three raw maps ``(B, 4*reg_max + nc, H_i, W_i)``
  (strides 8/16/32 order), float32 or float16; attributes ``strides`` (floats, one per map), ``reg_max``,
  ``conf_threshold``, ``max_candidates`` (K), ``multi_label`` (0/1), ``anchor_offset``; outputs
  ``boxes (B, K, 4)`` float32 xyxy input pixels, ``scores (B, K)`` float32 descending, ``labels (B, K)`` int32,
  ``counts (B,)`` int32: each row's first ``counts[b]`` slots are the candidates scoring above the threshold
  (``fixed_k`` pads decode_topk's ``min(K, A)`` slots to K).

Both ONNX nodes carry ``plugin_namespace="detector"`` and ``plugin_version="1"``: TensorRT's ONNX parser maps a
node whose op_type equals a registered plugin name, in that namespace, onto the plugin. The plugins run as
Python callbacks (JIT ``impl``), so the process that builds *and* the one that runs such an engine must call
``register_plugins()`` first; ``tensorrt`` is imported only then.
"""

import contextlib
import importlib
import math
from collections.abc import Callable
from typing import Any

import torch

NAMESPACE = "detector"
VERSION = "1"
SKA = "SKA"
DECODE_TOPK = "DecodeTopK"
ATTRIBUTES = {
    SKA: ("kernel_size", "groups"),
    DECODE_TOPK: ("strides", "reg_max", "conf_threshold", "max_candidates", "multi_label", "anchor_offset"),
}
"""The plugin attributes of each op, in the order the ONNX node and ``register`` declare them."""

_registered: set[tuple[int, str]] = set()  # (id of the tensorrt.plugin module, plugin id)


def plugin_id(name: str) -> str:
    """``"SKA"`` -> ``"detector::SKA"``."""
    return f"{NAMESPACE}::{name}"


def fixed_k(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cuda_ops.decode_topk``'s ``(B, K', ...)`` candidates as the plugin's outputs: exactly ``k`` slots (new
    slots invalid and zero), float32 boxes/scores, int32 labels and per-row valid counts."""
    n = boxes.shape[1]
    if n < k:
        b, pad = boxes.shape[0], k - n
        boxes = torch.cat((boxes, boxes.new_zeros(b, pad, 4)), 1)
        scores = torch.cat((scores, scores.new_zeros(b, pad)), 1)
        labels = torch.cat((labels, labels.new_zeros(b, pad)), 1)
        valid = torch.cat((valid, valid.new_zeros(b, pad)), 1)
    return boxes[:, :k].float(), scores[:, :k].float(), labels[:, :k].int(), valid[:, :k].sum(1).int()


def _cuda_tensor(t: Any) -> torch.Tensor:
    return torch.as_tensor(t, device="cuda")


def _on_stream(stream: int) -> contextlib.AbstractContextManager:
    if not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.ExternalStream(stream))


def register_plugins(
    trtp: Any = None, trt: Any = None, as_torch: Callable[[Any], torch.Tensor] | None = None
) -> list[str]:
    """Register ``detector::SKA`` and ``detector::DecodeTopK`` with TensorRT (once per process); returns their ids.

    ``trtp``/``trt``: the ``tensorrt.plugin`` and ``tensorrt`` modules (imported here when not given);
    ``as_torch``: how a TensorRT buffer becomes a torch tensor (``torch.as_tensor(t, device="cuda")``).
    Raises ``ImportError`` with what to install when TensorRT (10.6 or newer) is missing.
    """
    if trtp is None or trt is None:
        try:
            trt = trt or importlib.import_module("tensorrt")
            trtp = trtp or importlib.import_module("tensorrt.plugin")
        except ImportError as e:
            raise ImportError(
                f"TensorRT plugins need TensorRT >= 10.6 with its Python plugin API (tensorrt.plugin): {e}; "
                'install it with pip install "detector[gpu]"'
            ) from None
    as_torch = as_torch or _cuda_tensor
    for name, define in ((SKA, _define_ska), (DECODE_TOPK, _define_decode_topk)):
        if (id(trtp), plugin_id(name)) not in _registered:  # TensorRT refuses a second registration
            define(trtp, trt, as_torch)
            _registered.add((id(trtp), plugin_id(name)))
    return [plugin_id(SKA), plugin_id(DECODE_TOPK)]


# The decorated functions are defined inside functions so that ``register``'s annotations (which tensorrt.plugin
# requires and validates) name the types of the module passed in; ``impl``/``autotune`` need none, so they have
# none (tensorrt.plugin would check any it found against ``register``'s signature).


def _define_ska(trtp: Any, trt: Any, as_torch: Callable[[Any], torch.Tensor]) -> None:
    pid = plugin_id(SKA)

    @trtp.register(pid)
    def ska_desc(x: trtp.TensorDesc, w: trtp.TensorDesc, kernel_size: int, groups: int) -> trtp.TensorDesc:
        return x.like()

    @trtp.autotune(pid)
    def ska_autotune(x, w, outputs):
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16")]

    @trtp.impl(pid)
    def ska_impl(x, w, kernel_size, groups, outputs, stream):
        import cuda_ops

        xt, wt, out = as_torch(x), as_torch(w), as_torch(outputs[0])
        if wt.shape[1] != groups or math.isqrt(wt.shape[2]) != kernel_size:
            raise ValueError(
                f"{pid}: weights {tuple(wt.shape)} disagree with kernel_size={kernel_size}, groups={groups}"
            )
        with _on_stream(stream):
            out.copy_(cuda_ops.ska(xt, wt, impl="auto"))


def _define_decode_topk(trtp: Any, trt: Any, as_torch: Callable[[Any], torch.Tensor]) -> None:
    import numpy as np
    import numpy.typing as npt

    pid = plugin_id(DECODE_TOPK)

    @trtp.register(pid)
    def decode_desc(
        maps0: trtp.TensorDesc,
        maps1: trtp.TensorDesc,
        maps2: trtp.TensorDesc,
        strides: npt.NDArray[np.float32],
        reg_max: int,
        conf_threshold: float,
        max_candidates: int,
        multi_label: int,
        anchor_offset: float,
    ) -> tuple[trtp.TensorDesc, trtp.TensorDesc, trtp.TensorDesc, trtp.TensorDesc]:
        b, k = maps0.shape_expr[0], max_candidates
        return (
            trtp.from_shape_expr((b, k, 4), dtype=trt.DataType.FLOAT),
            trtp.from_shape_expr((b, k), dtype=trt.DataType.FLOAT),
            trtp.from_shape_expr((b, k), dtype=trt.DataType.INT32),
            trtp.from_shape_expr((b,), dtype=trt.DataType.INT32),
        )

    @trtp.autotune(pid)
    def decode_autotune(maps0, maps1, maps2, outputs):
        return [
            trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP32, FP32|FP32, INT32|INT32, INT32|INT32")
        ]

    @trtp.impl(pid)
    def decode_impl(
        maps0,
        maps1,
        maps2,
        strides,
        reg_max,
        conf_threshold,
        max_candidates,
        multi_label,
        anchor_offset,
        outputs,
        stream,
    ):
        import cuda_ops

        maps = [as_torch(t) for t in (maps0, maps1, maps2)]
        with _on_stream(stream):
            got = cuda_ops.decode_topk(
                maps, [float(s) for s in strides], reg_max=reg_max, conf=conf_threshold,
                max_candidates=max_candidates, multi_label=bool(multi_label), offset=anchor_offset, impl="auto",
            )  # fmt: skip
            for dst, src in zip((as_torch(t) for t in outputs), fixed_k(*got, max_candidates)):
                dst.copy_(src)
