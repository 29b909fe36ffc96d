"""detector: config-driven real-time object detection (GELAN/YOLOv9, DAMO-YOLO, LeYOLO, VoVNet, LSNet)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Boxes", "Detector", "Results", "__version__"]

if TYPE_CHECKING:
    from detector.predict.boxes import Boxes
    from detector.predict.detector import Detector
    from detector.predict.results import Results


def __getattr__(name: str):
    # Lazy: `import detector` must stay light (the CLI and deploy tooling import it without the model stack).
    if name == "Detector":
        from detector.predict.detector import Detector

        return Detector
    if name == "Boxes":
        from detector.predict.boxes import Boxes

        return Boxes
    if name == "Results":
        from detector.predict.results import Results

        return Results
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
