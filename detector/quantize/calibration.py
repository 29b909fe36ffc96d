"""Calibration inputs for post-training quantization: dataset images through the deploy pre-processing.

Calibration must see exactly the pixels the deployed model sees, so images go through ``model_input`` - one
small adapter over today's deploy pre-processing (letterbox to the export size, BGR -> RGB, 0..1 CHW float32)
that can be re-pointed when pre-processing moves, without touching the rest of this package. Unreadable images
are skipped and listed in the ``CalibrationReport`` (never silently dropped, never a crash mid-calibration).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from detector.errors import DetectorError

LOG = logging.getLogger("detector.quantize")


def model_input(rgb: np.ndarray, imgsz: tuple[int, int]) -> np.ndarray:
    """``rgb (ndarray[H0, W0, 3])`` uint8 -> ``(3, H, W)`` float32 0..1, letterboxed as the deploy runner does."""
    from deploy.preprocess import preprocess

    batch, _, _ = preprocess([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)], tuple(imgsz))  # a bare size: pad to exactly it
    return batch[0]


@dataclass
class CalibrationReport:
    """Which images calibrated the model and which were skipped (``(file, why)``)."""

    used: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def summary(self) -> str:
        text = f"calibration: {len(self.used)} images from {self.source}"
        if self.skipped:
            shown = "; ".join(f"{Path(f).name} ({why})" for f, why in self.skipped[:5])
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            text += f"; skipped {len(self.skipped)} unreadable image(s): {shown}{more}"
        return text


def calibration_files(data: str, n: int, seed: int = 0) -> tuple[list[str], list[tuple[str, str]]]:
    """Up to ``n`` image files of ``data``'s train split (a seeded random draw when there are more), and the
    images the dataset reader already rejected, as ``(file, why)``."""
    from detector.data.load import load_split

    labels = load_split(data, "train")
    files = [im.file for im in labels.images]
    if len(files) > n:
        pick = np.random.default_rng(seed).choice(len(files), n, replace=False)
        files = [files[i] for i in sorted(pick)]
    rejected = [(p["file"], p["problem"]) for p in labels.problems if _is_image_problem(p["file"])]
    return files, rejected


def _is_image_problem(file: str) -> bool:
    from detector.data.image_io import is_image

    return is_image(file)


class ImageFeeds:
    """ONNX Runtime's calibration-reader protocol (``get_next`` -> one input dict, then None) over image files.

    Files are decoded lazily (200 images at 640 px would be ~1 GB as float32), ``batch`` at a time to match a
    static-batch model (the last batch is padded by repeating its images). A file that does not decode is
    skipped and recorded in ``report``. The first ``keep`` inputs are kept in ``samples`` for the sensitivity
    pass.
    """

    def __init__(self, files: Sequence[str], imgsz: tuple[int, int], stride: int, batch: int,
                 report: CalibrationReport, keep: int = 0) -> None:  # fmt: skip
        self.imgsz, self.stride, self.batch, self.report, self.keep = imgsz, stride, batch, report, keep
        self.samples: list[np.ndarray] = []
        self._files = iter(files)

    def _next_image(self) -> np.ndarray | None:
        from detector.data.image_io import ImageReadError, read_image

        for f in self._files:
            try:
                x = model_input(read_image(f), self.imgsz)
            except ImageReadError as e:
                self.report.skipped.append((str(f), str(e)))
                LOG.warning("calibration: skipping %s: %s", f, e)
                continue
            self.report.used.append(str(f))
            if len(self.samples) < self.keep:
                self.samples.append(x)
            return x
        return None

    def get_next(self) -> dict[str, np.ndarray] | None:
        images = [x for x in (self._next_image() for _ in range(self.batch)) if x is not None]
        if not images:
            if not self.report.used:
                raise DetectorError(f"{self.report.summary()}: no calibration image could be read")
            return None
        return feeds(np.stack(images), self.batch)[0]


def feeds(images: np.ndarray, batch: int) -> list[dict[str, np.ndarray]]:
    """``images (N, 3, H, W)`` -> input dicts of ``batch`` images each (the last padded by repeating)."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        while len(x) < batch:
            x = np.concatenate([x, x[: batch - len(x)]])
        out.append({"images": np.ascontiguousarray(x)})
    return out


class ListFeeds:
    """The calibration-reader protocol over input dicts already in memory (e.g. the data-free set)."""

    def __init__(self, items: Sequence[dict[str, np.ndarray]]) -> None:
        self._it = iter(list(items))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)
