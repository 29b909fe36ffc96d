"""The inference contract an export records in its metadata: how inputs are letterboxed, which NMS applies.

``deploy`` reads both back (``ModelMetadata.preprocess`` / ``.postprocess``), so an exported model runs with
the same pre-processing and NMS as the PyTorch model it came from.
"""

from __future__ import annotations

from deploy.contract import MIN_PAD_MULTIPLE
from detector.config import ConfigError
from detector.ops import NMSConfig, PreprocessSpec


def export_preprocess(hw: tuple[int, int], model_stride: int, dynamic_hw: bool) -> PreprocessSpec:
    """A fixed-size graph takes exactly ``hw`` (padded to it); a dynamic one minimal padding at up to ``hw``."""
    return PreprocessSpec(hw, max(int(model_stride), MIN_PAD_MULTIPLE), auto=dynamic_hw)


def export_nms(
    nms: str,
    conf: float | None,
    iou: float | None,
    max_det: int | None,
    multi_label: bool | None = None,
    agnostic: bool | None = None,
    classes: list[int] | None = None,
) -> NMSConfig:
    """The ``NMSConfig`` of an export: the prediction defaults with what the user set.

    In-graph NMS (``nms`` "onnx" or "trt") suppresses per class and keeps every class above ``conf``: it is
    multi-label and not agnostic by construction, so asking for anything else is an error, not a silent no-op.
    """
    try:
        base = NMSConfig.predict(multi_label=True) if nms != "none" else NMSConfig.predict()
        cfg = base.updated(conf=conf, iou=iou, max_det=max_det, multi_label=multi_label, agnostic=agnostic,
                           classes=classes)  # fmt: skip
    except ValueError as e:
        raise ConfigError(f"export: {e}") from None
    if nms != "none" and (not cfg.multi_label or cfg.agnostic or cfg.classes is not None):
        raise ConfigError(
            f"export: nms={nms} suppresses per class and keeps every class above conf (multi_label=True, "
            "agnostic=False, all classes); export with nms=none to choose multi_label/agnostic/classes at run time"
        )
    return cfg
