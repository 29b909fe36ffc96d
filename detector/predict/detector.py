"""``Detector``: one object to run any model (zoo name, checkpoint, ONNX, TensorRT) on any image source."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.data.letterbox import letterbox
from detector.engine.postprocess import non_max_suppression, scale_boxes
from detector.predict.backends import Backend
from detector.predict.facade import ModelModes
from detector.predict.results import Results
from detector.predict.sources import Frame, iter_frames

PAD_MULTIPLE = 32
"""Letterboxed sides are multiples of this (or of a larger model stride), as in validation's rect batches."""


def _filter(det: torch.Tensor, conf: float, classes: list[int] | None, max_det: int) -> torch.Tensor:
    """Apply the user's thresholds to detections that already went through NMS (sorted by score)."""
    keep = det[:, 4] > conf
    if classes is not None:
        keep &= torch.isin(det[:, 5].long(), torch.as_tensor(classes))
    return det[keep][:max_det]


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
        conf: float = 0.25,
        iou: float = 0.7,
        imgsz: int = 640,
        max_det: int = 300,
        classes: list[int] | None = None,
        batch: int = 1,
        stream: bool = False,
        agnostic: bool = False,
        multi_label: bool = False,
    ) -> list[Results] | Iterator[Results]:
        """Detect objects in ``source`` (path, directory, glob, list, numpy/PIL image, tensor or video).

        Returns a list of ``Results`` in source order, or with ``stream=True`` a generator that yields them one
        by one (bounded memory for long videos). Unreadable images inside a directory/list are skipped and
        listed in ``self.skipped`` as ``(path, reason)``. ``multi_label=True`` lets a box carry several classes
        (what validation does for mAP); the default keeps each box's best class.
        """
        gen = self._run(source, conf, iou, imgsz, max_det, classes, batch, agnostic, multi_label)
        return gen if stream else list(gen)

    __call__ = predict

    def _run(self, source, conf, iou, imgsz, max_det, classes, batch, agnostic, multi_label) -> Iterator[Results]:
        self.skipped = []

        def on_skip(path: str, reason: str) -> None:
            self.skipped.append((path, reason))
            print(f"skipped {path}: {reason}")

        for frames in _batched(iter_frames(source, on_skip), max(int(batch), 1)):
            t0 = time.perf_counter()
            images, ratio_pads = self.preprocess([f.image for f in frames], imgsz)
            t1 = time.perf_counter()
            pred = self.backend(images)
            if isinstance(pred, torch.Tensor) and pred.device.type == "cuda":
                torch.cuda.synchronize(pred.device)
            t2 = time.perf_counter()
            if self.backend.has_nms:  # the model ran NMS with its exported thresholds: filter what it kept
                dets = [_filter(d, conf, classes, max_det) for d in pred]
            else:
                dets = non_max_suppression(pred, conf, iou, max_det, multi_label, classes, agnostic)
            out = []
            for f, d, rp in zip(frames, dets, ratio_pads):
                d = d.cpu()
                boxes = scale_boxes(d[:, :4].clone(), rp, f.image.shape[:2])
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

    def preprocess(self, images: list[np.ndarray], imgsz: int) -> tuple[torch.Tensor, list]:
        """BGR images -> letterboxed float RGB batch ``(B, 3, H, W)`` on the backend's device, and ratio_pads.

        One image (or a batch of equal shapes) gets minimal padding to a multiple of the stride, like
        validation's rectangular batches; a fixed-shape backend always gets ``fixed_shape``.
        """
        fixed = self.backend.fixed_shape
        same = all(im.shape == images[0].shape for im in images)
        shape = fixed or (imgsz, imgsz)
        auto = fixed is None and same
        boxed, ratio_pads = [], []
        for im in images:
            out, ratio, pad = letterbox(im, shape, stride=max(self.backend.stride, PAD_MULTIPLE), auto=auto)
            boxed.append(out)
            ratio_pads.append((ratio, pad))
        arr = np.stack(boxed)[..., ::-1].transpose(0, 3, 1, 2)  # BGR HWC -> RGB CHW
        tensor = torch.from_numpy(np.ascontiguousarray(arr)).to(self.backend.device)
        return tensor.to(self.backend.dtype) / 255.0, ratio_pads
