"""Label cache: a split's validated ``LabelSet`` saved beside the data, rebuilt when any source file changes.

The cache lives in ``ROOT/.cache/`` of the dataset; where that cannot be written (read-only data) it goes to
the user cache folder (``$DETECTOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/detector``, else ``~/.cache/detector``).
Validity is a SHA-1 over every source file's path, size and modification time plus the reader's settings.
The file is a NumPy ``.npz`` read with ``allow_pickle=False``, so a cache file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from detector.data.labels import ImageLabels, LabelSet

CACHE_VERSION = 2  # 2: ignore regions (crowd / difficult)


def user_cache_dir() -> Path:
    env = os.environ.get("DETECTOR_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "detector"


def fingerprint(paths: Iterable[Path], extra: object = None) -> str:
    """SHA-1 over ``(path, size, mtime_ns)`` of each path (missing files count too) and ``extra`` as JSON."""
    h = hashlib.sha1(json.dumps([CACHE_VERSION, extra], sort_keys=True, default=str).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"{p}\0missing\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def cache_files(root: Path, key: str) -> list[Path]:
    """Where the cache of ``key`` may live: beside the data first, then the user cache folder."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80]
    tag = hashlib.sha1(f"{root.resolve()}|{key}".encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return [root / ".cache" / f"labels-{safe}-{tag}.npz", user_cache_dir() / "labels" / f"{safe}-{tag}.npz"]


def load_labels_cache(files: list[Path], digest: str) -> LabelSet | None:
    """The cached ``LabelSet`` if one of ``files`` holds ``digest``, else None (any read error = no cache)."""
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("digest") != digest or meta.get("version") != CACHE_VERSION:
                    continue
                return _unpack(z, meta)
        except (OSError, ValueError, KeyError):
            continue
    return None


def save_labels_cache(files: list[Path], digest: str, labels: LabelSet) -> Path | None:
    """Write the cache to the first writable place in ``files``; returns it, or None if none was writable."""
    arrays = _pack(labels, digest)
    for f in files:
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=f.parent, prefix=f.stem, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    np.savez(out, **arrays)
                os.replace(tmp, f)  # atomic: readers never see half a file
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return f
        except OSError:
            continue
    return None


def _pack(ls: LabelSet, digest: str) -> dict[str, np.ndarray]:
    ims = ls.images
    ids = [im.image_id for im in ims]
    meta = {
        "digest": digest,
        "version": CACHE_VERSION,
        "names": ls.names,
        "category_ids": ls.category_ids,
        "root": ls.root,
        "format": ls.format,
        "problems": ls.problems,
        "int_ids": all(isinstance(i, int) for i in ids),
    }
    return {
        "meta": np.array(json.dumps(meta)),
        "files": np.array([im.file for im in ims], dtype=str),
        "label_files": np.array([im.label_file or "" for im in ims], dtype=str),
        "image_ids": np.array([str(i) for i in ids], dtype=str),
        "shapes": np.array([im.shape for im in ims], dtype=np.int64).reshape(-1, 2),
        "counts": np.array([len(im.cls) for im in ims], dtype=np.int64),
        "cls": np.concatenate([im.cls for im in ims]) if ims else np.zeros(0, np.int64),
        "boxes": np.concatenate([im.boxes for im in ims]) if ims else np.zeros((0, 4), np.float32),
        "ignore_counts": np.array([len(im.ignore_cls) for im in ims], dtype=np.int64),
        "ignore_cls": np.concatenate([im.ignore_cls for im in ims]) if ims else np.zeros(0, np.int64),
        "ignore_boxes": np.concatenate([im.ignore_boxes for im in ims]) if ims else np.zeros((0, 4), np.float32),
        "ignore_crowd": np.concatenate([im.ignore_crowd for im in ims]) if ims else np.zeros(0, bool),
    }


def _unpack(z: np.lib.npyio.NpzFile, meta: dict) -> LabelSet:
    ends = np.cumsum(z["counts"])
    starts = ends - z["counts"]
    cls, boxes = z["cls"], z["boxes"]
    ig_ends = np.cumsum(z["ignore_counts"])
    ig_starts = ig_ends - z["ignore_counts"]
    ig_cls, ig_boxes, ig_crowd = z["ignore_cls"], z["ignore_boxes"], z["ignore_crowd"]
    images = []
    for i, (file, label_file, image_id, shape) in enumerate(
        zip(z["files"], z["label_files"], z["image_ids"], z["shapes"])
    ):
        s, e = starts[i], ends[i]
        gs, ge = ig_starts[i], ig_ends[i]
        images.append(
            ImageLabels(
                file=str(file),
                shape=(int(shape[0]), int(shape[1])),
                cls=cls[s:e],
                boxes=boxes[s:e],
                image_id=int(image_id) if meta["int_ids"] else str(image_id),
                label_file=str(label_file) or None,
                ignore_boxes=ig_boxes[gs:ge],
                ignore_cls=ig_cls[gs:ge],
                ignore_crowd=ig_crowd[gs:ge],
            )
        )
    return LabelSet(
        names=meta["names"],
        images=images,
        problems=meta["problems"],
        category_ids=meta["category_ids"],
        root=meta["root"],
        format=meta["format"],
    )
