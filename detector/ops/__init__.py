"""The inference contract in one place: letterbox, box scaling, anchors and decode, NMS.

Two records say how a model is run (``deploy.contract``, shared with the torch-free ``deploy`` package and
written into every export's metadata): ``PreprocessSpec`` (size, stride, pad value, minimal padding,
scale-up) and ``NMSConfig`` (conf, iou, max_det, multi_label, agnostic, classes, with the ``val()`` and
``predict()`` presets). Validation, ``Detector``, export and ``deploy`` all go through these; see
docs/interfaces.md for the contract and which mode uses which defaults.

- ``detector.ops.letterbox``: images -> input tensor (pixels by ``deploy.preprocess``, the one letterbox).
- ``detector.ops.boxes``: ``scale_boxes`` (input pixels -> original pixels).
- ``detector.ops.decode``: anchors, DFL expectation, raw head maps -> ``(B, 4 + nc, A)`` in float32.
- ``detector.ops.nms``: ``non_max_suppression(pred, NMSConfig)``.
"""

from deploy.contract import LetterboxPlan, NMSConfig, PreprocessSpec

__all__ = ["LetterboxPlan", "NMSConfig", "PreprocessSpec"]
