"""``Results``: the detections of one image, with box formats, drawing, saving, crops, and JSON / YOLO-txt /
table (pandas) export, in the shape Ultralytics users know (see docs/ultralytics.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detector.errors import DetectorError
from detector.predict.boxes import Boxes

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


class Results:
    """Detections for one image, in original-image pixel coordinates.

    Args / attributes:
        boxes: a ``Boxes`` (``r.boxes.xyxy``, ``.conf``, ``.cls``, ``.xywhn`` ...); the constructor also takes the
            (N, 4) x1, y1, x2, y2 pixel array with ``scores`` and ``cls`` beside it.
        scores (ndarray[N]): confidence in 0..1 (= ``boxes.conf``). cls (ndarray[N]): class ids (int64).
        names: class id -> name. orig_shape: (height, width) of the original image.
        path: source file ('' for in-memory images; for videos the video path, for streams the URL).
        frame: video frame index or None.
        speed: per-stage milliseconds {"preprocess", "inference", "postprocess"}, per image.
        orig_img: the original BGR image (kept for ``plot`` and ``save_crop``; None after ``from_json``).
    """

    def __init__(
        self,
        boxes: np.ndarray | Boxes,
        scores: np.ndarray | None = None,
        cls: np.ndarray | None = None,
        names: dict[int, str] | None = None,
        orig_shape: tuple[int, int] = (0, 0),
        path: str = "",
        frame: int | None = None,
        speed: dict[str, float] | None = None,
        orig_img: np.ndarray | None = None,
    ) -> None:
        shape = (int(orig_shape[0]), int(orig_shape[1]))
        if isinstance(boxes, Boxes):
            self.boxes = boxes
        else:
            n = len(np.asarray(boxes).reshape(-1, 4))
            scores = np.zeros(n) if scores is None else scores
            cls = np.zeros(n) if cls is None else cls
            self.boxes = Boxes.from_parts(boxes, scores, cls, shape)
        self.names = dict(names or {})
        self.orig_shape = shape
        self.path, self.frame = path, frame
        self.speed = dict(speed or {})
        self.orig_img = orig_img

    def __len__(self) -> int:
        return len(self.boxes)

    # -- the accessors of the first API (kept) ---------------------------------------------------------------------
    @property
    def scores(self) -> np.ndarray:
        """(N,) confidence in 0..1."""
        return self.boxes.conf

    @property
    def cls(self) -> np.ndarray:
        """(N,) class ids, int64."""
        return self.boxes.cls.astype(np.int64)

    @property
    def xyxy(self) -> np.ndarray:
        """(N, 4) corners in pixels."""
        return self.boxes.xyxy

    @property
    def xywh(self) -> np.ndarray:
        """(N, 4) centre x, centre y, width, height in pixels."""
        return self.boxes.xywh

    @property
    def xyxyn(self) -> np.ndarray:
        """(N, 4) corners normalised by the original width/height."""
        return self.boxes.xyxyn

    @property
    def xywhn(self) -> np.ndarray:
        """(N, 4) centre/size normalised by the original width/height (YOLO label format)."""
        return self.boxes.xywhn

    @property
    def class_names(self) -> list[str]:
        """Name of each detection's class."""
        return [self.names.get(int(c), str(int(c))) for c in self.cls]

    def numpy(self) -> Results:
        """Already numpy: returns ``self`` (so ``r.cpu().numpy()`` habits work)."""
        return self

    cpu = numpy

    def verbose(self) -> str:
        """``"2 RBC, 1 WBC"`` (or ``"no detections"``)."""
        counts: dict[str, int] = {}
        for n in self.class_names:
            counts[n] = counts.get(n, 0) + 1
        return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no detections"

    # -- output -------------------------------------------------------------------------------------------------
    def plot(self, line_width: int | None = None, labels: bool = True, img: np.ndarray | None = None) -> np.ndarray:
        """A copy of the original image (BGR) with boxes and ``name score`` labels drawn."""
        base = img if img is not None else self.orig_img
        if base is None:
            raise ValueError("Results.plot: no image kept; pass img=")
        canvas = np.ascontiguousarray(base.copy())
        lw = line_width or max(round(sum(canvas.shape[:2]) / 2 * 0.003), 2)
        for (x1, y1, x2, y2), s, c in zip(self.xyxy, self.scores, self.cls):
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

    def save_txt(self, path: str | Path, save_conf: bool = False) -> Path:
        """Write YOLO label lines (``to_txt``) to ``path``; an image without detections gets an empty file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in self.to_txt(with_conf=save_conf)))
        return path

    def save_crop(self, save_dir: str | Path, file_name: str | Path = "") -> list[Path]:
        """Each detection cut from the original image into ``save_dir/CLASS_NAME/STEM_I.jpg``; returns the files.

        ``STEM`` is ``file_name``'s stem, else the source file's (plus ``_FRAME`` for video frames), else ``image``.
        """
        if self.orig_img is None:
            raise DetectorError("Results.save_crop: no original image kept (results read back from JSON)")
        stem = Path(file_name).stem if file_name else (Path(self.path).stem if self.path else "image")
        if self.frame is not None and not file_name:
            stem = f"{stem}_{self.frame}"
        h, w = self.orig_img.shape[:2]
        written = []
        for i, ((x1, y1, x2, y2), name) in enumerate(zip(self.xyxy, self.class_names)):
            x1, y1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
            x2, y2 = min(int(np.ceil(x2)), w), min(int(np.ceil(y2)), h)
            if x2 <= x1 or y2 <= y1:
                continue  # a box of zero area after clipping has no pixels to save
            out = Path(save_dir) / name / f"{stem}_{i}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(out), self.orig_img[y1:y2, x1:x2]):
                raise OSError(f"{out}: could not write crop")
            written.append(out)
        return written

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict[str, Any]]:
        """One dict per detection: ``{"name", "class", "confidence", "box": {"x1", "y1", "x2", "y2"}}``
        (pixels, or 0..1 with ``normalize``)."""
        xyxy = self.xyxyn if normalize else self.xyxy
        return [
            {
                "name": n,
                "class": int(c),
                "confidence": round(float(s), decimals),
                "box": dict(zip(("x1", "y1", "x2", "y2"), (round(float(v), decimals) for v in b))),
            }
            for b, s, c, n in zip(xyxy, self.scores, self.cls, self.class_names)
        ]

    def to_df(self, normalize: bool = False, decimals: int = 5):
        """A pandas ``DataFrame``, one row per detection: name, class, confidence, x1, y1, x2, y2.

        pandas is optional: ``pip install 'detector[pandas]'``.
        """
        try:
            import pandas as pd
        except ImportError:
            raise DetectorError("Results.to_df needs pandas: pip install 'detector[pandas]' (or pandas)") from None
        rows = [{k: v for k, v in d.items() if k != "box"} | d["box"] for d in self.summary(normalize, decimals)]
        return pd.DataFrame(rows, columns=["name", "class", "confidence", "x1", "y1", "x2", "y2"])

    def to_csv(self, path: str | Path | None = None, normalize: bool = False, decimals: int = 5) -> str | Path:
        """``to_df()`` as CSV: the text, or written to ``path`` (then the path is returned). Needs pandas."""
        df = self.to_df(normalize, decimals)
        if path is None:
            return df.to_csv(index=False)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
        return Path(path)

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
                for b, s, c, n in zip(self.xyxy, self.scores, self.cls, self.class_names)
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
        summary = self.verbose()
        where = self.path + (f"#{self.frame}" if self.frame is not None else "")
        return f"Results({where or 'image'} {self.orig_shape[1]}x{self.orig_shape[0]}: {summary})"
