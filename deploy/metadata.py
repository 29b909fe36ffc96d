"""What an exported model says about itself: class names, strides, input size and dtype, NMS mode.

Stored as string key/value pairs: in the ONNX ``metadata_props``, and for TensorRT engines in a JSON sidecar
``NAME.engine.json`` (a header inside the engine file would break ``trtexec`` and other TensorRT tools).
Values that are not plain strings are JSON-encoded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from deploy.errors import DeployError

NMS_MODES = ("none", "onnx", "trt")
NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
RAW_OUTPUT = "output0"
INPUT_NAME = "images"


@dataclass
class ModelMetadata:
    """Facts the runners and ``deploy.predict`` need; written by ``detector.export``.

    ``imgsz`` is (H, W) of the export (the largest size for dynamic H/W). ``input_dtype`` is the numpy dtype
    name of the ``images`` input ("float32", or "float16" for a half-input graph). ``precision`` is the
    compute precision inside the graph ("fp32", "fp16", or "int8" for an explicitly quantized QDQ graph, whose
    ``quantization`` says how it was calibrated and which layers stayed float). ``conf``/``iou``/``max_det`` are the thresholds
    baked into an in-graph NMS (``nms`` "onnx" or "trt").
    """

    names: dict[int, str] = field(default_factory=dict)
    strides: list[float] = field(default_factory=lambda: [8.0, 16.0, 32.0])
    imgsz: tuple[int, int] = (640, 640)
    batch: int = 1
    dynamic: bool = False
    dynamic_hw: bool = False
    nms: str = "none"
    input_dtype: str = "float32"
    precision: str = "fp32"
    task: str = "detect"
    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None
    model: str = ""
    version: str = ""
    framework: str = "detector"
    opset: int | None = None
    quantization: dict | None = None

    @property
    def stride(self) -> int:
        """Largest stride: letterboxed sizes must be multiples of it."""
        return int(max(self.strides)) if self.strides else 32

    @property
    def nc(self) -> int:
        return len(self.names)

    def to_props(self) -> dict[str, str]:
        """Flat ``{key: str}`` for ONNX ``metadata_props`` (strings stay strings, the rest JSON)."""
        out = {}
        for k, v in asdict(self).items():
            if k == "names":
                v = {str(i): n for i, n in v.items()}
            out[k] = v if isinstance(v, str) else json.dumps(v)
        return out

    @classmethod
    def from_props(cls, props: dict[str, str], origin: str = "model") -> ModelMetadata:
        """Inverse of ``to_props``; unknown keys are ignored (newer exporters), bad values raise ``DeployError``."""
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, raw in props.items():
            if key not in known:
                continue
            is_str = known[key].type in ("str",)
            try:
                value = raw if is_str else json.loads(raw)
            except json.JSONDecodeError:
                raise DeployError(f"{origin}: metadata `{key}` is not valid JSON: {raw!r}") from None
            kwargs[key] = value
        if "names" in kwargs:
            if not isinstance(kwargs["names"], dict):
                raise DeployError(f"{origin}: metadata `names` must map class ids to names")
            kwargs["names"] = {int(i): str(n) for i, n in kwargs["names"].items()}
        if "imgsz" in kwargs:
            kwargs["imgsz"] = tuple(int(s) for s in kwargs["imgsz"])
        meta = cls(**kwargs)
        if meta.nms not in NMS_MODES:
            raise DeployError(f"{origin}: metadata `nms` is {meta.nms!r}; expected one of {NMS_MODES}")
        return meta

    def write_json(self, path: str | Path) -> Path:
        """Write the sidecar JSON (used next to TensorRT engines)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_props(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> ModelMetadata:
        path = Path(path)
        try:
            props = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DeployError(f"{path}: unreadable metadata file ({e})") from None
        if not isinstance(props, dict):
            raise DeployError(f"{path}: metadata must be a JSON object")
        return cls.from_props({str(k): str(v) for k, v in props.items()}, origin=str(path))


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")
