"""Reading images the way they are displayed: EXIF orientation applied, any depth or channel count -> 8-bit RGB."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from detector.errors import DetectorError

IMG_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 10
"""Images with a side shorter than this (pixels) are rejected as unusable."""

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class ImageReadError(DetectorError):
    """An image file that cannot be used; the message says why (without the path, which callers add)."""


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMG_EXTS


def probe_image(path: str | Path) -> tuple[int, int]:
    """``(h, w)`` of the image as displayed, after checking the file decodes to the end.

    Raises ``ImageReadError`` for an empty, unidentifiable, truncated or too small file.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})") from None
    if size == 0:
        raise ImageReadError("empty file (0 bytes)")
    try:
        with Image.open(p) as im:
            w, h = im.size
            fmt = im.format
            orientation = _orientation(im)
        _check_complete(p, fmt)
    except UnidentifiedImageError:
        raise ImageReadError("not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"corrupt or truncated image ({e})") from None
    if min(w, h) < MIN_SIDE:
        raise ImageReadError(f"image too small ({w}x{h} px, need at least {MIN_SIDE} px a side)")
    return (w, h) if orientation in _TRANSPOSED else (h, w)


def read_image(path: str | Path, bgr: bool = False) -> np.ndarray:
    """Decode ``path`` to ``ndarray[H, W, 3]`` uint8 RGB (``bgr``: BGR, OpenCV's own order) as displayed.

    OpenCV applies the EXIF orientation and maps grayscale, RGBA (alpha dropped) and 16-bit images to 8-bit
    three-channel; Pillow is the fallback for what OpenCV cannot decode. Raises ``ImageReadError``.
    ``bgr=True`` skips a colour conversion the training pipeline folds into its final layout copy instead.
    """
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"cannot read file ({e.strerror or e})") from None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is not None:
        return img if bgr else cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            return np.ascontiguousarray(rgb[..., ::-1] if bgr else rgb)
    except Exception as e:  # noqa: BLE001 - any decoder failure means the same thing to the caller
        raise ImageReadError(f"cannot decode image ({e})") from None


def resize_long_side(img: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize so the longer side is ``size`` pixels, keeping the aspect ratio; returns ``(img, ratio)``."""
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r != 1:
        interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=interp)
    return img, r


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
        return 1


def _check_complete(p: Path, fmt: str | None) -> None:
    """Cheap integrity checks by format; a full decode only where no cheaper check exists."""
    if fmt == "JPEG":
        with open(p, "rb") as f:
            f.seek(-2, 2)
            if f.read() == b"\xff\xd9":
                return
    with Image.open(p) as im:
        if fmt == "PNG":
            im.verify()  # walks every chunk and checks its CRC
        else:
            im.load()  # JPEG without end marker at the very end, or another format: decode fully
