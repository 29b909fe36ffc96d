"""Checkpoints: atomic writes, weights-only loads, and rebuilding a model from the checkpoint alone.

A checkpoint is a plain dict of tensors and Python primitives (loadable with ``weights_only=True``):

``model`` (state dict of the EMA weights, train form), ``model_yaml`` (the resolved model dict, with ``nc``),
``names`` (list of class names), ``config`` (resolved run config as a dict), ``epoch``,
``optimizer``, ``scheduler`` (``{last_opt_step, warmup_iters}``), ``scaler``, ``ema`` (``{"updates": int}``),
``train_model`` (the raw, non-EMA weights, for exact resume), ``rng`` (one RNG state per rank),
``callbacks`` (each trainer callback's own ``state_dict`` by name: ``Evaluator`` keeps ``best_fitness``,
``best_epoch`` and the epoch's ``metrics``, ``ResultsLogger`` its row count), ``finished`` (why the run ended;
optimiser state is then dropped), ``version`` and ``deploy`` (True when ``model`` holds the fused deploy form).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from detector.errors import DetectorError

REQUIRED_KEYS = ("model", "model_yaml", "names")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceError(DetectorError):
    """A checkpoint did not fit on its disk; the file it would have replaced is untouched."""


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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _no_space(e):
            kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written"
            raise NoSpaceError(f"no space left on {path.parent}; {kept}") from None
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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _no_space(e):
            kept = f"the previous {dst.name} is intact" if dst.is_file() else f"no {dst.name} was written"
            raise NoSpaceError(f"no space left on {dst.parent}; {kept}") from None
        raise


def _no_space(e: BaseException) -> bool:
    """An OSError for a full disk or quota, also when torch wraps it in a RuntimeError of its own."""
    if isinstance(e, OSError) and e.errno in NO_SPACE:
        return True
    cause = e.__cause__ or e.__context__
    return isinstance(e, RuntimeError) and (cause is not None and _no_space(cause) or "No space left" in str(e))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete ``*.tmp`` files of ``save_checkpoint`` writes that were cut off (killed process, full disk).

    Call only while holding the run's lock, when no other process can be writing there. Returns what was removed.
    """
    folder = Path(folder)
    removed = sorted(folder.glob("*.pt.*.tmp")) if folder.is_dir() else []
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


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
