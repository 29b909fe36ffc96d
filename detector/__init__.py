"""detector: config-driven real-time object detection (GELAN/YOLOv9, DAMO-YOLO, LeYOLO, VoVNet, LSNet)."""

__version__ = "0.1.0"
