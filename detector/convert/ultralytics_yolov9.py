"""Ultralytics' YOLOv9 checkpoints (``yolov9t/s/m/c/e.pt``) -> our ``yolov9t-ul`` ... ``yolov9e-ul``.

Their file pickles an ``ultralytics.nn.tasks.DetectionModel`` (under ``model``, or ``ema`` in a checkpoint saved
mid-training) whose layers are ``model.{i}`` in the order of their YAML, with the same block names as ours
inside a layer (``cv1``, ``cv2.0.m.0.cv1.conv1``, ...). So a layer maps by its index alone:

- their yolov9e opens with a parameter-free ``nn.Identity`` (the second backbone reads the image from it; ours
  reads ``input``), so their keys start at ``model.1``: their index ``i`` is our ``i - s``, ``s`` = 1 when
  ``model.0`` holds no tensor;
- their last layer is the ``Detect`` head: ``cv2.{level}`` (box branch) -> our ``box.{level}``, ``cv3.{level}``
  (class branch) -> ``cls.{level}``; its ``dfl.conv.weight`` holds the fixed bin indices 0..15, which ours
  computes in the decode, so it is dropped. There is no PGI auxiliary branch in their models.

Their ``Detect`` differs from the YOLOv9 paper's ``DDetect`` in widths only (``models/components/ddetect-ul.yaml``).
"""

from __future__ import annotations

from torch import nn

from detector.convert.mapping import KeyMapping, UnmappedKey
from detector.convert.yolov9_official import LAYER_KEY, first_and_last_layer, head_indices

ARCH = "ultralytics.nn.tasks.DetectionModel"
_BRANCHES = {"cv2": "box", "cv3": "cls"}


def is_ultralytics_yolov9(keys: list[str], arch: str) -> bool:
    """Their pickled DetectionModel with GELAN blocks (a RepNCSPELAN4's RepCSP -> RepConv key), not a YOLOv8/11."""
    return arch == ARCH and any(".cv2.0.m.0.cv1.conv1." in k for k in keys)


def ultralytics_yolov9_mapping(keys: list[str], model: nn.Module) -> KeyMapping:
    """The mapping of one Ultralytics YOLOv9 state dict (``keys``) onto our ``model`` (a ``yolov9*-ul``)."""
    shift, detect = first_and_last_layer(keys, "an Ultralytics")
    main, aux = head_indices(model)
    if aux is not None:
        raise UnmappedKey(f"our model has an auxiliary head (layers.{aux}); Ultralytics' YOLOv9 has none: use *-ul")
    if detect - shift != main:
        raise UnmappedKey(
            f"model.{detect}: their detection layer would be our layers.{detect - shift}, but ours is layers.{main} "
            "(another architecture?)"
        )

    def drop(key: str) -> bool:
        return key.startswith(f"model.{detect}.dfl.")

    def map_key(key: str) -> str:
        m = LAYER_KEY.fullmatch(key)
        if m is None:
            raise UnmappedKey(key)
        i, rest = int(m[1]), m[2]
        if i != detect:
            return f"layers.{i - shift}.{rest}"
        part, _, tail = rest.partition(".")
        if part not in _BRANCHES or not tail:
            raise UnmappedKey(key)
        return f"layers.{main}.{_BRANCHES[part]}.{tail}"

    return KeyMapping("ultralytics-yolov9", map_key, drop=drop, classifier=(f"layers.{main}.cls.",))
