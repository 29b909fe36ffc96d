"""``detector val model=MODEL.onnx|.engine data=DATA``: evaluate an exported model with the same Validator.

``ExportedModel`` presents a deploy runner (``detector.predict.backends.ExportedBackend``) the way the
Validator reads a ``DetectionModel``: one main head whose "raw maps" are already the decoded
``(B, 4 + nc, A)`` output, and whose ``decode`` therefore passes them through. So an INT8 or fp16 export is
scored by the very code that scores checkpoints (letterbox, NMS, COCO metrics), and the numbers compare.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from detector.errors import DetectorError

EXPORTED_SUFFIXES = (".onnx", ".engine", ".plan")


class _DecodedHead:
    """The exported graph decodes itself: ``decode`` returns its one "map" unchanged."""

    def decode(self, maps: list[Tensor]) -> Tensor:
        return maps[0]


class ExportedModel:
    """An exported model behind the ``DetectionModel`` surface the Validator uses (``main_head``,
    ``head_tags``, ``layers``, ``main_tag``, ``decode``, ``eval``/``train``, ``model(images, decode=False)[tag]``)."""

    training = False
    main_tag = "main"

    def __init__(self, path: str | Path, device: torch.device) -> None:
        from detector.predict.backends import ExportedBackend

        self.backend = ExportedBackend(Path(path), device)
        if self.backend.has_nms:
            raise DetectorError(
                f"{path}: exported with NMS inside the graph; validation needs the raw output "
                "(export with nms=none), since mAP is computed from every box down to conf=0.001"
            )
        self.main_head = _DecodedHead()
        self.layers = [self.main_head]
        self.head_tags = {0: "main"}
        self.names = self.backend.names
        self.fixed_shape = self.backend.fixed_shape

    def decode(self, maps: list[Tensor]) -> Tensor:
        """The graph's output is already decoded."""
        return maps[0]

    def eval(self) -> ExportedModel:
        return self

    def train(self, mode: bool = True) -> ExportedModel:
        return self

    def __call__(self, images: Tensor, decode: bool = False) -> dict[str, list[Tensor]]:
        """``images (Tensor[B, 3, H, W])`` float 0..1 -> ``{"main": [Tensor[B, 4 + nc, A]]}``."""
        return {"main": [self.backend(images.float().cpu())]}

    def to(self, *args, **kwargs) -> ExportedModel:
        return self


def exported_val_inputs(
    path: str, imgsz: int | None, device: torch.device
) -> tuple[ExportedModel, int, bool, list[str]]:
    """``(model, imgsz, rect, names)`` for validating an exported file: a fixed-size graph gets square
    letterboxed batches of its own size; a dynamic-size one rectangular batches like a checkpoint."""
    if not Path(path).is_file():
        raise DetectorError(f"val: {path}: model file not found")
    model = ExportedModel(path, device)
    if model.fixed_shape is not None:
        h, w = model.fixed_shape
        if h != w or (imgsz and imgsz != h):
            raise DetectorError(f"val: {path} takes {h}x{w} inputs only; export it with that size or dynamic_hw=True")
        return model, int(h), False, [model.names[i] for i in sorted(model.names)]
    meta_size = max(model.backend.runner.metadata.imgsz)
    return model, int(imgsz or meta_size), True, [model.names[i] for i in sorted(model.names)]
