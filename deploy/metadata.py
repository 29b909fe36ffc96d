"""What an exported model says about itself: class names, strides, input size and dtype, NMS mode, and the
inference contract (``deploy.contract``): the ``PreprocessSpec`` its inputs were made with and the ``NMSConfig``
its raw outputs should get.

Stored as string key/value pairs: in the ONNX ``metadata_props``, and for TensorRT engines in a JSON sidecar
``NAME.engine.json`` (a header inside the engine file would break ``trtexec`` and other TensorRT tools).
Values that are not plain strings are JSON-encoded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from deploy.contract import MIN_PAD_MULTIPLE, NMSConfig, PreprocessSpec
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
    ``quantization`` says how it was calibrated and which layers stayed float). ``preprocess`` is how inputs must be letterboxed
    (a fixed-size graph: ``auto`` False at its size; dynamic H/W: minimal padding). ``postprocess`` is the NMS
    the export was made with: baked into the graph when ``nms`` is "onnx" or "trt" (then multi-label, not
    agnostic), else the defaults ``deploy.predict`` and ``Detector`` apply. Files written before these two
    keys existed get them derived from the other keys.
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
    preprocess: PreprocessSpec | None = None
    postprocess: NMSConfig | None = None
    model: str = ""
    version: str = ""
    framework: str = "detector"
    opset: int | None = None
    quantization: dict | None = None

    def __post_init__(self) -> None:
        self.imgsz = (int(self.imgsz[0]), int(self.imgsz[1]))
        if self.preprocess is None:
            self.preprocess = PreprocessSpec(self.imgsz, max(self.stride, MIN_PAD_MULTIPLE), auto=self.dynamic_hw)
        if self.postprocess is None:
            self.postprocess = NMSConfig.predict(multi_label=True if self.nms != "none" else None)

    @property
    def conf(self) -> float | None:
        """Score threshold baked into an in-graph NMS (None for a raw graph)."""
        return self.postprocess.conf if self.nms != "none" else None

    @property
    def iou(self) -> float | None:
        return self.postprocess.iou if self.nms != "none" else None

    @property
    def max_det(self) -> int | None:
        return self.postprocess.max_det if self.nms != "none" else None

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
            elif k in ("preprocess", "postprocess"):
                v = getattr(self, k).to_dict()
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
        try:
            legacy = {k: json.loads(props[k]) for k in ("conf", "iou", "max_det") if k in props}  # before `postprocess`
            if "preprocess" in kwargs:
                kwargs["preprocess"] = PreprocessSpec.from_dict(kwargs["preprocess"])
            if "postprocess" in kwargs:
                kwargs["postprocess"] = NMSConfig.from_dict(kwargs["postprocess"])
            elif any(v is not None for v in legacy.values()):
                kwargs["postprocess"] = NMSConfig.predict(multi_label=True, **legacy)
            meta = cls(**kwargs)
        except (TypeError, ValueError, AttributeError) as e:  # JSONDecodeError is a ValueError
            raise DeployError(f"{origin}: bad preprocess/postprocess metadata ({e})") from None
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
