"""Shared bits of the cuda_ops tests: where kernels run, how to skip, how to compare."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cuda_ops.availability import kernel_runs_on, why_not

# CUDA where present (compiled kernels), else CPU through Triton's interpreter (tests/conftest.py sets it)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

needs_kernel = pytest.mark.skipif(not kernel_runs_on(DEVICE), reason=f"Triton kernels cannot run: {why_not(DEVICE)}")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64; NaN anywhere fails."""
    a, b = a.double().cpu(), b.double().cpu()
    assert torch.isfinite(a).all(), "non-finite values in the kernel output"
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


BCCD = Path(__file__).resolve().parents[1] / "datasets" / "bccd"
# (image, crop top, crop left, crop h, crop w): odd sizes that enlarge, shrink by non-integer and 2x factors
CROPS = [
    ("BloodImage_00000", 101, 203, 37, 53),
    ("BloodImage_00001", 0, 0, 101, 67),
    ("BloodImage_00002", 7, 3, 128, 160),
]


def bccd_crop(name: str, top: int, left: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A crop of a real BCCD image (uint8 BGR) and its VOC boxes clipped to the crop (xyxy, crop pixels)."""
    img = cv2.imread(str(BCCD / "JPEGImages" / f"{name}.jpg"))
    assert img is not None, f"missing {name}.jpg under {BCCD}"
    boxes = []
    for obj in ET.parse(BCCD / "Annotations" / f"{name}.xml").iter("object"):
        bb = obj.find("bndbox")
        x1, y1, x2, y2 = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        x1, x2 = np.clip([x1 - left, x2 - left], 0, w)
        y1, y2 = np.clip([y1 - top, y2 - top], 0, h)
        if x2 - x1 > 1 and y2 - y1 > 1:
            boxes.append((x1, y1, x2, y2))
    return np.ascontiguousarray(img[top : top + h, left : left + w]), np.array(boxes, dtype=np.float32).reshape(-1, 4)
