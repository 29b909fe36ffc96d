"""Print a markdown table of every zoo model: published params / GFLOPs next to ours, in both forms.

    python tools/zoo_table.py [--out FILE] [--models NAME,NAME...]

Each model is built from ``models/`` (``detector.zoo.model_names()``) and measured at its published input size
(else its ``imgsz``, else 640), in its train form (as built: BatchNorm, re-parameterisable branches, auxiliary
heads) and its deploy form (``to_deploy()``). GFLOPs = 2 x multiply-adds of one image; where the published figure
also charges BatchNorm (thop, LeYOLO) our train-form figure does too and carries a dagger. ``delta`` compares the
published figures with ours in the form they describe.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.errors import DetectorError  # noqa: E402
from detector.published import Measured, Published, measure_zoo_model  # noqa: E402
from detector.zoo import find_yaml, model_names  # noqa: E402

HEADER = (
    "| model | family | imgsz | published params / GFLOPs (form) | ours train form | ours deploy form | delta |\n"
    "|---|---|---|---|---|---|---|"
)
FOOTNOTE = (
    "GFLOPs = 2 x multiply-adds of one image at imgsz, nc as in the file (80 for detectors, 1000 for classifiers). "
    "Train form = as built (BatchNorm, re-parameterisable branches, auxiliary heads); deploy form = `to_deploy()`. "
    "\u2020 BatchNorm counted at 8 FLOPs per output element, as the published figure (thop through Ultralytics). "
    "delta = ours / published - 1 in the published form."
)


def _size(params: float, gflops: float | None, mark: str = "") -> str:
    flops = "-" if gflops is None else f"{gflops:.2f}{mark}"
    return f"{params / 1e6:.2f}M / {flops}"


def _delta(pub: Published, ours: Measured) -> str:
    params, gflops = (
        (ours.train_params, ours.train_gflops) if pub.form == "train" else (ours.deploy_params, ours.deploy_gflops)
    )
    parts = [f"{params / pub.params - 1:+.1%}"]
    parts.append("-" if pub.gflops is None else f"{gflops / pub.gflops - 1:+.1%}")
    return " / ".join(parts)


def table_row(name: str, pub: Published | None, ours: Measured) -> str:
    """One markdown row for model ``name``."""
    family = find_yaml(name).parent.name
    mark = "\u2020" if ours.convention == "conv+bn" else ""
    published = f"{_size(pub.params, pub.gflops)} ({pub.form})" if pub else "-"
    return (
        f"| {name} | {family} | {ours.imgsz} | {published} | {_size(ours.train_params, ours.train_gflops, mark)} | "
        f"{_size(ours.deploy_params, ours.deploy_gflops)} | {_delta(pub, ours) if pub else '-'} |"
    )


def zoo_table(names: list[str], log=None) -> str:
    """The markdown table (header, one row per model, footnote)."""
    rows = [HEADER]
    for name in names:
        start = time.perf_counter()
        _, pub, ours = measure_zoo_model(name)
        rows.append(table_row(name, pub, ours))
        if log:
            log(f"{name}: {time.perf_counter() - start:.1f} s")
    return "\n".join(rows) + "\n\n" + FOOTNOTE + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--models", help="comma-separated zoo names (default: every model)")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else model_names()
    torch.manual_seed(0)
    try:
        text = zoo_table(names, log=lambda msg: print(msg, file=sys.stderr))
    except DetectorError as e:
        print(f"zoo_table: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
