"""``Results``: the detections of one image, with box formats, drawing, saving and JSON/YOLO-txt export."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# A fixed palette so a class keeps its colour across images and runs (BGR).
_PALETTE = np.array(
    [
        (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
        (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
        (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203),
        (200, 149, 255), (199, 55, 255),
    ],
    dtype=np.uint8,
)  # fmt: skip


def class_color(cls: int) -> tuple[int, int, int]:
    """BGR colour of class ``cls``."""
    c = _PALETTE[int(cls) % len(_PALETTE)]
    return int(c[0]), int(c[1]), int(c[2])


@dataclass
class Results:
    """Detections for one image, in original-image pixel coordinates.

    Attributes:
        boxes (ndarray[N, 4]): x1, y1, x2, y2 in pixels of the original image (float32).
        scores (ndarray[N]): confidence in 0..1. cls (ndarray[N]): class ids (int64).
        names: class id -> name. orig_shape: (height, width) of the original image.
        path: source file ('' for in-memory images; for videos the video path). frame: video frame index or None.
        speed: per-stage milliseconds {"preprocess", "inference", "postprocess"}, per image.
        orig_img: the original BGR image (kept for ``plot``; None after ``to_json`` round-trips).
    """

    boxes: np.ndarray
    scores: np.ndarray
    cls: np.ndarray
    names: dict[int, str]
    orig_shape: tuple[int, int]
    path: str = ""
    frame: int | None = None
    speed: dict[str, float] = field(default_factory=dict)
    orig_img: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.cls = np.asarray(self.cls, dtype=np.int64).reshape(-1)
        self.orig_shape = (int(self.orig_shape[0]), int(self.orig_shape[1]))

    def __len__(self) -> int:
        return len(self.scores)

    # -- box formats --------------------------------------------------------------------------------------------
    @property
    def xyxy(self) -> np.ndarray:
        """(N, 4) corners in pixels."""
        return self.boxes

    @property
    def xywh(self) -> np.ndarray:
        """(N, 4) centre x, centre y, width, height in pixels."""
        b = self.boxes
        return np.stack(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1)

    @property
    def xyxyn(self) -> np.ndarray:
        """(N, 4) corners normalised by the original width/height."""
        h, w = self.orig_shape
        return self.boxes / np.array([w, h, w, h], dtype=np.float32)

    @property
    def xywhn(self) -> np.ndarray:
        """(N, 4) centre/size normalised by the original width/height (YOLO label format)."""
        h, w = self.orig_shape
        return self.xywh / np.array([w, h, w, h], dtype=np.float32)

    @property
    def class_names(self) -> list[str]:
        """Name of each detection's class."""
        return [self.names.get(int(c), str(int(c))) for c in self.cls]

    # -- output -------------------------------------------------------------------------------------------------
    def plot(self, line_width: int | None = None, labels: bool = True, img: np.ndarray | None = None) -> np.ndarray:
        """A copy of the original image (BGR) with boxes and ``name score`` labels drawn."""
        base = img if img is not None else self.orig_img
        if base is None:
            raise ValueError("Results.plot: no image kept; pass img=")
        canvas = np.ascontiguousarray(base.copy())
        lw = line_width or max(round(sum(canvas.shape[:2]) / 2 * 0.003), 2)
        for (x1, y1, x2, y2), s, c in zip(self.boxes, self.scores, self.cls):
            color = class_color(int(c))
            p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
            cv2.rectangle(canvas, p1, p2, color, lw, cv2.LINE_AA)
            if labels:
                text = f"{self.names.get(int(c), int(c))} {s:.2f}"
                fs = max(lw / 3, 0.4)
                (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, max(lw - 1, 1))
                top = p1[1] - th - 3 >= 0
                q2 = (p1[0] + tw, p1[1] - th - 3 if top else p1[1] + th + 3)
                cv2.rectangle(canvas, p1, q2, color, -1, cv2.LINE_AA)
                org = (p1[0], p1[1] - 2 if top else p1[1] + th + 2)
                cv2.putText(
                    canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), max(lw - 1, 1), cv2.LINE_AA
                )
        return canvas

    def save(self, path: str | Path) -> Path:
        """Write the plotted image to ``path`` (format from the suffix)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), self.plot()):
            raise OSError(f"{path}: could not write image (unsupported suffix?)")
        return path

    def to_txt(self, with_conf: bool = False) -> list[str]:
        """YOLO label lines ``cls xc yc w h [conf]``, normalised to the original image."""
        lines = []
        for c, b, s in zip(self.cls, self.xywhn, self.scores):
            line = f"{int(c)} {b[0]:.6f} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f}"
            lines.append(f"{line} {s:.6f}" if with_conf else line)
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form: image info and one record per detection."""
        return {
            "path": self.path,
            "frame": self.frame,
            "orig_shape": list(self.orig_shape),
            "speed": {k: round(float(v), 3) for k, v in self.speed.items()},
            "names": {str(k): v for k, v in self.names.items()},
            "detections": [
                {"box": [float(v) for v in b], "score": float(s), "class": int(c), "name": n}
                for b, s, c, n in zip(self.boxes, self.scores, self.cls, self.class_names)
            ],
        }

    def to_json(self, indent: int | None = None) -> str:
        """JSON text of ``to_dict()``; ``Results.from_json`` reads it back."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str | dict) -> Results:
        """Inverse of ``to_json`` (the image itself is not stored)."""
        d = json.loads(text) if isinstance(text, str) else text
        dets = d["detections"]
        return cls(
            boxes=np.array([x["box"] for x in dets], dtype=np.float32).reshape(-1, 4),
            scores=np.array([x["score"] for x in dets], dtype=np.float32),
            cls=np.array([x["class"] for x in dets], dtype=np.int64),
            names={int(k): v for k, v in d["names"].items()},
            orig_shape=tuple(d["orig_shape"]),
            path=d.get("path", ""),
            frame=d.get("frame"),
            speed=dict(d.get("speed", {})),
        )

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for n in self.class_names:
            counts[n] = counts.get(n, 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no detections"
        where = self.path + (f"#{self.frame}" if self.frame is not None else "")
        return f"Results({where or 'image'} {self.orig_shape[1]}x{self.orig_shape[0]}: {summary})"
