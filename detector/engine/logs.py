"""What a run prints and keeps: the ``detector`` logger (stdout + a log file in the run dir), the data problems
report, and durations in words."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from detector.engine.distributed import DistInfo

LOGGER = logging.getLogger("detector")


def setup_logging(info: DistInfo, run_dir: Path, log_name: str = "train.log") -> None:
    """INFO to stdout on rank 0 (warnings only elsewhere), and a copy in ``run_dir/log_name``."""
    LOGGER.setLevel(logging.INFO if info.is_main else logging.WARNING)
    LOGGER.propagate = False
    for h in list(LOGGER.handlers):
        LOGGER.removeHandler(h)
        h.close()
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(stream)
    if info.is_main:
        file = logging.FileHandler(run_dir / log_name, encoding="utf-8")
        file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        LOGGER.addHandler(file)


def close_log_files() -> None:
    """Detach the run's log file (the run dir may then be removed or reused)."""
    for h in list(LOGGER.handlers):
        if isinstance(h, logging.FileHandler):
            LOGGER.removeHandler(h)
            h.close()


def report_problems(dataset, split: str, run_dir: Path) -> None:
    """Say which files were skipped and why (the run goes on with the rest); kept in ``data_problems.txt``."""
    problems = list(getattr(dataset, "problems", None) or [])
    if not problems:
        return
    lines = [f"{p['file']}: {p['problem']}" if isinstance(p, dict) else str(p) for p in problems]
    LOGGER.warning(
        f"{split}: {len(lines)} data problem(s); unusable files are skipped and bad boxes dropped, using the rest:"
    )
    for line in lines[:20]:
        LOGGER.warning(f"  {line}")
    if len(lines) > 20:
        LOGGER.warning(f"  ... and {len(lines) - 20} more, see {run_dir / 'data_problems.txt'}")
    with open(run_dir / "data_problems.txt", "a", encoding="utf-8") as f:
        f.write("".join(f"{split}: {line}\n" for line in lines))


def duration(seconds: float) -> str:
    """``42.0`` -> ``"42.0 s"``, ``5400`` -> ``"1.50 h"``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"
