"""Serving exported detectors without the training stack: ONNX Runtime and TensorRT runners, engine building,
numpy pre- and post-processing. This package never imports torch; tensorrt, onnxruntime and the CUDA bindings
are imported only by the runner that needs them.

Typical use::

    from deploy import load_runner, predict
    runner = load_runner("gelan-t.onnx")          # or "gelan-t.engine"
    dets = predict(runner, [cv2.imread("a.jpg")])  # list of Detections (xyxy boxes in original pixels)
"""

from deploy.errors import DeployError, MissingDependencyError
from deploy.metadata import ModelMetadata
from deploy.predict import Detections, predict
from deploy.runner import Runner, load_runner

__all__ = [
    "DeployError",
    "Detections",
    "MissingDependencyError",
    "ModelMetadata",
    "Runner",
    "load_runner",
    "predict",
]
