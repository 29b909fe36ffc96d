"""``Detector``: one object to run any model (zoo name, checkpoint, ONNX, TensorRT) on any image source."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.predict import filter_detections
from detector.errors import DetectorError
from detector.ops import LetterboxPlan, NMSConfig, PreprocessSpec
from detector.ops.boxes import scale_boxes
from detector.ops.letterbox import to_input
from detector.ops.nms import non_max_suppression
from detector.predict.backends import Backend
from detector.predict.facade import ModelModes
from detector.predict.results import Results
from detector.predict.sources import Frame, iter_frames


def _batched(frames: Iterator[Frame], n: int) -> Iterator[list[Frame]]:
    while chunk := list(islice(frames, n)):
        yield chunk


class Detector(ModelModes):
    """Run a detection model on images and videos; train, validate, export, inspect and time it (``ModelModes``).

    >>> det = Detector("gelan-t")                       # architecture with fresh weights
    >>> det = Detector("runs/train/exp/weights/best.pt")  # trained checkpoint, deploy form
    >>> results = det.predict("images/", conf=0.25)      # list of Results, one per image
    >>> Detector("gelan-t").train(data="bccd", epochs=10, imgsz=320)  # then det runs the run's best.pt

    Args:
        model: zoo name, model YAML, ``.pt`` checkpoint, or an exported ``.onnx`` / ``.engine`` file.
        device: ``"cpu"``, ``"cuda"``, ``"0"``, or None for CUDA when available.
        half: fp16 inference on CUDA. deploy: fuse into the deploy form (PyTorch backends).
    """

    def __init__(
        self, model: str | Path = "gelan-t", device: str | None = None, half: bool = False, deploy: bool = True
    ):
        self._device_arg, self._half, self._deploy = device, half, deploy
        self._callbacks: list = []
        self.backend: Backend
        self._load(model)  # sets backend and model_path
        self.skipped: list[tuple[str, str]] = []

    @property
    def names(self) -> dict[int, str]:
        """Class id -> name."""
        return self.backend.names

    def predict(
        self,
        source: Any,
        conf: float | None = None,
        iou: float | None = None,
        imgsz: int | tuple[int, int] | None = None,
        max_det: int | None = None,
        classes: list[int] | None = None,
        batch: int = 1,
        stream: bool = False,
        agnostic: bool | None = None,
        multi_label: bool | None = None,
    ) -> list[Results] | Iterator[Results]:
        """Detect objects in ``source`` (path, directory, glob, list, numpy/PIL image, tensor or video).

        Returns a list of ``Results`` in source order, or with ``stream=True`` a generator that yields them one
        by one (bounded memory for long videos). Unreadable images inside a directory/list are skipped and
        listed in ``self.skipped`` as ``(path, reason)``.

        NMS options left None take the model's defaults (``self.nms``): the prediction preset (conf 0.25,
        iou 0.7, max_det 300, one label per box; an exported model's own ``NMSConfig``). ``multi_label=True``
        lets a box carry several classes, what validation does for mAP. ``imgsz`` None: 640 for PyTorch models,
        the export size for exported ones; a fixed-size export refuses any other size (``DetectorError``).
        """
        try:
            nms = self.nms.updated(conf=conf, iou=iou, max_det=max_det, multi_label=multi_label, agnostic=agnostic,
                                   classes=classes)  # fmt: skip
        except ValueError as e:
            raise DetectorError(f"predict: {e}") from None
        spec = self.backend.input_spec(imgsz)
        gen = self._run(source, spec, nms, batch)
        return gen if stream else list(gen)

    __call__ = predict

    @property
    def nms(self) -> NMSConfig:
        """The NMS options ``predict`` uses for those it is not given."""
        return self.backend.nms

    def _run(self, source, spec: PreprocessSpec, nms: NMSConfig, batch: int) -> Iterator[Results]:
        self.skipped = []

        def on_skip(path: str, reason: str) -> None:
            self.skipped.append((path, reason))
            print(f"skipped {path}: {reason}")

        for frames in _batched(iter_frames(source, on_skip), max(int(batch), 1)):
            t0 = time.perf_counter()
            images, plans = self.preprocess([f.image for f in frames], spec)
            t1 = time.perf_counter()
            pred = self.backend(images)
            if isinstance(pred, torch.Tensor) and pred.device.type == "cuda":
                torch.cuda.synchronize(pred.device)
            t2 = time.perf_counter()
            if self.backend.has_nms:  # the model ran NMS with its exported thresholds: filter what it kept
                dets = [torch.from_numpy(filter_detections(d.numpy(), nms)) for d in pred]
            else:
                dets = non_max_suppression(pred, nms)
            out = []
            for f, d, plan in zip(frames, dets, plans):
                d = d.cpu()
                boxes = scale_boxes(d[:, :4], plan.ratio_pad, f.image.shape[:2])
                out.append((f, boxes.numpy(), d[:, 4].numpy(), d[:, 5].numpy()))
            t3 = time.perf_counter()
            n = len(frames)
            speed = {
                "preprocess": (t1 - t0) * 1e3 / n,
                "inference": (t2 - t1) * 1e3 / n,
                "postprocess": (t3 - t2) * 1e3 / n,
            }
            for f, boxes, scores, cls in out:
                yield Results(boxes, scores, cls, self.names, f.image.shape[:2], f.path, f.frame, dict(speed), f.image)

    def preprocess(
        self, images: list[np.ndarray], spec: PreprocessSpec | int | None = None
    ) -> tuple[torch.Tensor, list[LetterboxPlan]]:
        """BGR images -> letterboxed RGB batch ``(B, 3, H, W)`` in 0..1 on the backend's device and dtype, and
        each image's ``LetterboxPlan``.

        ``spec`` (or an ``imgsz``) as ``self.backend.input_spec`` gives it: minimal padding to a multiple of the
        stride, the batch padded to its largest image (validation's rectangular batches); a fixed-size model
        always gets its own size.
        """
        if not isinstance(spec, PreprocessSpec):
            spec = self.backend.input_spec(spec)
        try:
            return to_input(images, spec, self.backend.device, self.backend.dtype)
        except ValueError as e:
            raise DetectorError(f"predict: {e}") from None
