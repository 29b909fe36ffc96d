"""Run directories: ``runs/<mode>/<name>``, auto-incremented (exp, exp2, exp3, ...), and finding the latest run."""

from __future__ import annotations

from pathlib import Path

from detector.errors import DetectorError


def increment_run_dir(project: str | Path, name: str, exist_ok: bool = False, mkdir: bool = True) -> Path:
    """``project/name`` if it is free (or ``exist_ok``), else the first free ``project/name2``, ``name3``, ...

    The directory is created atomically (``mkdir`` without ``exist_ok``) so two runs started at the same time
    never share a folder.
    """
    base = Path(project) / name
    if exist_ok:
        if mkdir:
            base.mkdir(parents=True, exist_ok=True)
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = base if n == 1 else base.with_name(f"{name}{n}")
        if not path.exists():
            if not mkdir:
                return path
            try:
                path.mkdir()
                return path
            except FileExistsError:  # another process took it between the check and the mkdir
                pass
        n += 1


def latest_checkpoint(project: str | Path = "runs/train") -> Path:
    """The most recently written ``*/weights/last.pt`` under ``project``; raises when there is none."""
    found = sorted(Path(project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise DetectorError(f"resume=True: no run with weights/last.pt under {project}; pass resume=PATH/TO/last.pt")
    return found[-1]


def run_dir_of_checkpoint(path: str | Path) -> Path:
    """``runs/train/exp/weights/last.pt`` -> ``runs/train/exp`` (the folder the checkpoint's run writes to)."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == "weights" else path.parent
