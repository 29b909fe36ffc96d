"""Checkpoints: atomic writes, weights-only loads, and rebuilding a model from the checkpoint alone.

A checkpoint is a plain dict of tensors and Python primitives (loadable with ``weights_only=True``):

``model`` (state dict of the EMA weights, train form), ``model_yaml`` (the resolved model dict, with ``nc``),
``names`` (list of class names), ``config`` (resolved run config as a dict), ``epoch``, ``best_fitness``,
``optimizer``, ``scheduler`` (``{last_opt_step, warmup_iters}``), ``scaler``, ``ema`` (``{"updates": int}``),
``train_model`` (the raw, non-EMA weights, for exact resume), ``rng`` (one RNG state per rank), ``metrics``,
``best_epoch``, ``finished`` (why the run ended; optimiser state is then dropped), ``version`` and ``deploy``
(True when ``model`` holds the fused deploy form).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from detector.errors import DetectorError

REQUIRED_KEYS = ("model", "model_yaml", "names")


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """Write ``ckpt`` atomically: temp file in the same folder, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Atomically copy an already written checkpoint (``best.pt`` from ``last.pt``) instead of serialising the
    same dict twice: a byte copy costs no pickling and no second pass over GPU tensors."""
    import shutil

    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f, length=16 << 20)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` with ``weights_only=True`` (no code can run).

    Raises ``DetectorError`` naming the file when it is missing, unreadable or not one of ours.
    """
    path = Path(path)
    if not path.is_file():
        raise DetectorError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint we can read"
        raise DetectorError(f"{path}: not a readable detector checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        have = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DetectorError(
            f"{path}: not a detector checkpoint (needs keys {list(REQUIRED_KEYS)}, found {have}); "
            "checkpoints from other frameworks must be converted first"
        )
    return ckpt


def model_from_checkpoint(path: str | Path, deploy: bool = True, map_location: str = "cpu"):
    """Rebuild the model stored in a checkpoint; ``deploy=True`` returns the fused deploy form in eval mode."""
    from detector.model import DetectionModel

    ckpt = load_checkpoint(path, map_location)
    model = DetectionModel(ckpt["model_yaml"])
    if ckpt.get("deploy"):
        model.to_deploy()
    model.load_state_dict(ckpt["model"])
    model.names = dict(enumerate(ckpt["names"]))
    if deploy and not ckpt.get("deploy"):
        model.to_deploy()
    return model.eval() if deploy else model
