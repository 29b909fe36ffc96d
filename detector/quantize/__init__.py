"""INT8 post-training quantization for deployment: calibrated QDQ ONNX (``detector export int8=True``).

``options`` (what the user asks for), ``calibration`` (dataset images through the deploy pre-processing),
``data_free`` (images synthesised from BatchNorm statistics, ``calib=free``), ``graph`` (float-kept tail),
``sensitivity`` (per-layer error ranking), ``weight_clip`` (the re-parameterisation remedy) and ``ptq`` (the
ONNX Runtime quantizer run that ties them together).
"""

from detector.quantize.options import Int8Options

__all__ = ["Int8Options"]  # the quantizer itself (ptq.quantize_proto) loads onnx/onnxruntime, so import it on use
