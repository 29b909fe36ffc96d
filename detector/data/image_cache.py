"""Decoded images kept resized to the training size, so epochs after the first skip JPEG decoding.

``ram``: one shared-memory block holding every image (shared with the loader workers, not copied into each).
``disk``: one ``.npy`` file per image in ``ROOT/.cache/images-SIZE-bgr/`` (user cache folder if read-only), in
the BGR channel order the dataset works in (the ``-bgr`` name keeps caches of older, RGB versions apart).
Both are sized first against what is free (``psutil``); if the images do not fit, caching is skipped with
a warning and images are decoded on the fly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch

from detector.data.cache import user_cache_dir
from detector.data.formats import thread_map
from detector.errors import DetectorError

LOG = logging.getLogger("detector.data")
RAM_FRACTION = 0.5
"""Use at most this share of the currently available memory (or free disk space)."""


def resized_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """``(h, w)`` after scaling the longer side to ``size`` (as ``image_io.resize_long_side`` does)."""
    h, w = shape
    r = size / max(h, w)
    return max(1, round(h * r)), max(1, round(w * r))


class ImageCache:
    """Resized images by dataset index; ``get(i)`` is None for images not cached (or failed to decode)."""

    def __init__(self, mode: str, files: list[str], shapes: list[tuple[int, int]], size: int, root: Path) -> None:
        if mode not in ("ram", "disk"):
            raise DetectorError(f"cache must be 'ram', 'disk' or None, got {mode!r}")
        self.mode = mode
        self.files = files
        self.size = size
        self.shapes = [resized_shape(s, size) for s in shapes]
        nbytes = np.array([h * w * 3 for h, w in self.shapes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(nbytes)])
        self.enabled = False
        self._ram: torch.Tensor | None = None
        self._filled: torch.Tensor | None = None
        self._dir: Path | None = None
        need = int(self.offsets[-1])
        if mode == "ram":
            free = psutil.virtual_memory().available
            if need > RAM_FRACTION * free:
                LOG.warning("ram cache needs %.1f GB, only %.1f GB available: not caching", need / 1e9, free / 1e9)
                return
            self._ram = torch.empty(need, dtype=torch.uint8).share_memory_()
            self._filled = torch.zeros(len(files), dtype=torch.bool).share_memory_()
        else:
            self._dir = self._disk_dir(root)
            if self._dir is None:
                LOG.warning("no writable folder for the disk image cache: not caching")
                return
            free = shutil.disk_usage(self._dir).free
            if need > RAM_FRACTION * free:
                LOG.warning("disk cache needs %.1f GB, only %.1f GB free: not caching", need / 1e9, free / 1e9)
                return
        self.enabled = True

    def fill(self, load: Callable[[int], np.ndarray]) -> int:
        """Decode every image not yet cached with ``load(i) -> resized image``; returns how many are cached."""
        if not self.enabled:
            return 0

        def one(i: int) -> bool:
            if self.get(i) is not None:
                return True
            try:
                img = load(i)
            except DetectorError:
                return False  # left out; the dataset reports it when it meets it
            self.put(i, img)
            return True

        return sum(thread_map(one, range(len(self.files)), desc=f"caching images ({self.mode})"))

    def get(self, i: int) -> np.ndarray | None:
        if not self.enabled:
            return None
        h, w = self.shapes[i]
        if self._ram is not None:
            if not bool(self._filled[i]):
                return None
            img = self._ram[int(self.offsets[i]) : int(self.offsets[i + 1])].numpy().reshape(h, w, 3)
            img.flags.writeable = False  # no copy: the pipeline copies read-only images before writing in place
            return img
        try:
            img = np.load(self._path(i), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return img if img.shape == (h, w, 3) and img.dtype == np.uint8 else None

    def put(self, i: int, img: np.ndarray) -> None:
        if img.shape != (*self.shapes[i], 3):
            return  # a file that changed since the labels were read: do not cache a wrong size
        if self._ram is not None:
            self._ram[int(self.offsets[i]) : int(self.offsets[i + 1])] = torch.from_numpy(
                np.ascontiguousarray(img).reshape(-1)
            )
            self._filled[i] = True
            return
        path = self._path(i)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, img, allow_pickle=False)
        os.replace(tmp, path)

    def _path(self, i: int) -> Path:
        f = self.files[i]
        try:
            st = os.stat(f)
            key = f"{f}|{st.st_size}|{st.st_mtime_ns}|{self.size}"
        except OSError:
            key = f"{f}|missing|{self.size}"
        return self._dir / f"{hashlib.sha1(key.encode('utf-8', 'surrogateescape')).hexdigest()[:20]}.npy"  # type: ignore[operator]

    def _disk_dir(self, root: Path) -> Path | None:
        tag = hashlib.sha1(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:10]
        name = f"images-{self.size}-bgr"
        for d in (root / ".cache" / name, user_cache_dir() / f"{tag}-{name}"):
            try:
                d.mkdir(parents=True, exist_ok=True)
                probe = tempfile.NamedTemporaryFile(dir=d, delete=True)
                probe.close()
                return d
            except OSError:
                continue
        return None
