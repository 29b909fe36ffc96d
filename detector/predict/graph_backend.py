"""The ``graph`` backend: the deploy form in fp16, channels-last, our kernels inside, replayed as CUDA graphs.

One batch of uint8 BGR frames takes this path, every step on the GPU:

1. ``cuda_ops.letterbox_frames``: resize + pad + BGR->RGB + /255 + CHW in one kernel, at the geometry
   ``PreprocessSpec.plan`` gives (``deploy.contract``: the batch canvas, each image's ratio and centred pad), so
   the input equals ``Detector.preprocess``'s and boxes map back with the same ``LetterboxPlan``;
2. the captured graph for this (batch, H, W): the model body (SKA through ``cuda_ops.ska``, depthwise 3x3 +
   pointwise pairs through ``cuda_ops.dw_pw``) -> raw head maps -> ``cuda_ops.decode_topk`` (DFL, anchors,
   class scores, threshold, per-image top-K) into static buffers;
3. class-aware NMS over each image's K candidates (``cuda_ops.batched_nms``, torchvision's), outside the graph
   because its output size depends on the data.

``kernels``: ``"auto"`` runs our Triton kernels where they can run and their PyTorch references elsewhere;
``True`` insists on the kernels. ``False`` is the "graph without our kernels" baseline: the same fp16
channels-last deploy form captured with PyTorch ops only (dense decode inside the graph, the usual
``non_max_suppression`` after it). ``capture=False`` runs the same steps eagerly: that is how the CPU tests prove
the steps equal the ``torch`` backend, while capture/replay itself is tested with a fake
(``detector.predict.cuda_graph``). Without CUDA, ``Detector(..., backend="graph")`` stops with one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from torch import Tensor

from detector.errors import DetectorError
from detector.model import DetectionModel
from detector.nn.heads import BinnedHead
from detector.nn.kernel_swap import swap_dw_pw, swap_ska
from detector.ops import LetterboxPlan, NMSConfig, PreprocessSpec
from detector.ops.nms import non_max_suppression
from detector.predict.backends import model_input_spec
from detector.predict.cuda_graph import GraphCache, GraphOps

DEFAULT_TOPK = 1000
"""Candidates kept per image before NMS: at predict thresholds (conf 0.25) a trained model has far fewer; the
dense path (validation at conf 0.001, the torch backend) keeps up to 30000."""
IMPLS = {"auto": "auto", True: "kernel", False: "reference"}


def _impl(kernels: bool | str) -> str:
    try:
        return IMPLS[kernels]
    except (KeyError, TypeError):
        raise DetectorError(f"graph backend: kernels={kernels!r}; use True, False or 'auto'") from None


class GraphBackend:
    """A deploy-form ``DetectionModel`` run as described in the module docstring.

    Args:
        model: deploy form (``to_deploy()`` done); it is moved, cast and modified in place.
        device: a CUDA device (any device with ``capture=False``).
        half: fp16 weights and activations on CUDA (float32 on CPU, where fp16 convs are not a target).
        kernels: see the module docstring. capture: replay CUDA graphs (needs CUDA, or ``graph_ops``).
        topk: candidates per image kept by the fused post-processing. graph_ops: CUDA graph primitives
            (tests inject a fake). max_graphs: captured shapes kept per setting.
    """

    fixed_shape = None
    has_nms = False  # __call__ returns the dense output; ``detect`` runs NMS itself
    nms = NMSConfig.predict()

    def __init__(
        self,
        model: DetectionModel,
        device: torch.device,
        half: bool = True,
        kernels: bool | str = "auto",
        capture: bool = True,
        topk: int = DEFAULT_TOPK,
        graph_ops: GraphOps | None = None,
        max_graphs: int = 8,
    ) -> None:
        if capture and graph_ops is None:
            require_cuda(device)
        import cuda_ops

        self.impl = _impl(kernels)
        self.device = device
        self.half = bool(half and device.type == "cuda")
        self.dtype = torch.float16 if self.half else torch.float32
        self.n_swapped = 0
        if kernels is not False:
            self.n_swapped = swap_ska(model, partial(cuda_ops.ska, impl=self.impl)) + swap_dw_pw(model, self.impl)
        model = model.to(device, self.dtype).eval()
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.head = model.main_head
        # decode_topk computes BinnedHead.decode (every DFL/GFL head); kernels=False: the dense PyTorch decode
        self.fused_post = kernels is not False and isinstance(self.head, BinnedHead)
        self.tag = model.main_tag
        self.names = dict(model.names)
        self.stride = int(max(model.strides))
        self.topk = int(topk)
        self.capture = capture
        self._graph_ops, self._max_graphs = graph_ops, max_graphs
        self._graphs: dict[tuple, GraphCache] = {}

    # -- the captured functions ------------------------------------------------------------------------------
    def _maps(self, images: Tensor) -> list[Tensor]:
        return self.model(images, decode=False)[self.tag]

    def _dense(self, images: Tensor) -> tuple[Tensor]:
        """``(B, 4 + nc, A)`` float32, as every other backend returns it."""
        return (self.model.decode(self._maps(images)),)

    def _topk(self, images: Tensor, conf: float, multi_label: bool, classes: tuple | None) -> tuple[Tensor, ...]:
        """decode_topk's ``boxes (B, K, 4)``, ``scores (B, K)``, ``labels (B, K)``, ``valid (B, K)``."""
        import cuda_ops

        h = self.head
        return cuda_ops.decode_topk(
            self._maps(images), h.strides, h.bins, conf, self.topk, multi_label, classes, h.anchor_offset, self.impl
        )

    def _run(self, key: tuple, fn, images: Tensor) -> tuple[Tensor, ...]:
        """``fn(images)``, replayed from a graph captured for this shape (one cache per ``key``)."""
        if not self.capture:
            with torch.inference_mode():
                return tuple(fn(images))
        cache = self._graphs.get(key)
        if cache is None:
            cache = self._graphs[key] = GraphCache(fn, self._graph_ops, self._max_graphs)
        return cache(images)

    # -- the backend API -------------------------------------------------------------------------------------
    def input_spec(self, imgsz: int | tuple[int, int] | None) -> PreprocessSpec:
        """A PyTorch model's spec: any multiple of the stride, minimal padding (as the torch backend)."""
        return model_input_spec(self.stride, imgsz)

    def prepare(self, images: Tensor) -> Tensor:
        """Any float batch -> this model's device, dtype and memory format."""
        x = images.to(self.device, self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    def __call__(self, images: Tensor) -> Tensor:
        """``images (Tensor[B, 3, H, W])`` float 0..1 -> ``(B, 4 + nc, A)`` float32 (a fresh tensor)."""
        (out,) = self._run(("dense",), self._dense, self.prepare(images))
        return out.clone()

    def letterbox(self, frames: Sequence[np.ndarray], spec: PreprocessSpec) -> tuple[Tensor, list[LetterboxPlan]]:
        """uint8 BGR frames -> ``(Tensor[B, 3, H, W])`` on the device in the model's dtype, and each frame's plan.

        The geometry is the contract's, computed on the host: the batch canvas ``spec.batch_canvas`` and each
        frame's ``spec.plan`` into it (ratio from ``spec.size``, centred padding), the same numbers
        ``Detector.preprocess`` uses; ``letterbox_frames`` only moves the pixels.
        """
        import cuda_ops

        canvas = spec.batch_canvas([f.shape[:2] for f in frames])
        plans = [spec.plan(f.shape[0], f.shape[1], canvas) for f in frames]
        images, _ = cuda_ops.letterbox_frames(  # host frames travel as uint8 in one pinned copy
            list(frames),
            canvas,
            self.dtype,
            spec.pad_value,
            scaleup=spec.scaleup,
            device=self.device,
            impl=self.impl,
            geometry=[(p.ratio, *p.resized, p.pad[1], p.pad[0]) for p in plans],  # (r, rh, rw, top, left)
        )
        return self.prepare(images), plans

    def detect(
        self, frames: Sequence[np.ndarray], spec: PreprocessSpec, nms: NMSConfig | None = None
    ) -> tuple[list[Tensor], list[LetterboxPlan]]:
        """Frames -> per-image ``Tensor[n, 6]`` (letterboxed pixels, best first) and each frame's plan."""
        import cuda_ops

        nms = nms or self.nms
        images, plans = self.letterbox(frames, spec)
        if not self.fused_post:
            return non_max_suppression(self(images), nms), plans
        cand = self.candidates(images, nms.conf, nms.multi_label, nms.classes)
        return cuda_ops.batched_nms(*cand, iou=nms.iou, max_det=nms.max_det, agnostic=nms.agnostic), plans

    def replay(self, images: Tensor, conf: float = 0.25) -> tuple[Tensor, ...]:
        """Only the captured part, on a ``prepare``d batch (what benchmarks time): the top-K candidates, or with
        ``kernels=False`` the dense ``(B, 4 + nc, A)`` output (static buffers either way)."""
        if self.fused_post:
            return self.candidates(images, conf)
        return self._run(("dense",), self._dense, images)

    def candidates(
        self, images: Tensor, conf: float, multi_label: bool = False, classes: Sequence[int] | None = None
    ) -> tuple[Tensor, ...]:
        """Letterboxed ``images`` (from ``letterbox``/``prepare``) -> each image's top-K candidates above ``conf``
        (``cuda_ops.decode_topk``'s four tensors), replayed from the graph of this shape and these settings.
        The tensors are the graph's static buffers: read or copy them before the next call (graphs of other
        shapes share one memory pool, so any replay may overwrite them)."""
        cls = None if classes is None else tuple(int(c) for c in classes)
        fn = partial(self._topk, conf=float(conf), multi_label=bool(multi_label), classes=cls)
        return self._run(("topk", float(conf), bool(multi_label), cls), fn, images)


def require_cuda(device: torch.device) -> None:
    """One sentence when the graph backend cannot run on ``device``."""
    if device.type != "cuda":
        why = "no CUDA device is visible to PyTorch" if not torch.cuda.is_available() else "use device=0 (or cuda:N)"
        raise DetectorError(f"the graph backend replays CUDA graphs and needs a CUDA GPU, not device={device}: {why}")


def load_graph_backend(
    model: str, device: torch.device, half: bool = True, kernels: bool | str = "auto"
) -> GraphBackend:
    """``Detector(..., backend="graph")``: a checkpoint, zoo name or model YAML, in deploy form, on ``device``."""
    from pathlib import Path

    from detector.export import CHECKPOINT_SUFFIXES, load_deploy_model

    require_cuda(device)  # before loading anything
    suffix = Path(str(model)).suffix.lower()
    if suffix and suffix not in (*CHECKPOINT_SUFFIXES, ".yaml", ".yml"):
        raise DetectorError(
            f"{model}: the graph backend runs a PyTorch model (a .pt checkpoint, a zoo name or a model YAML), "
            f"not a {suffix} file; use backend=auto for exported models"
        )
    if suffix in CHECKPOINT_SUFFIXES and not Path(str(model)).is_file():
        raise DetectorError(f"{model}: model file not found")
    return GraphBackend(load_deploy_model(model), device, half=half, kernels=kernels)
