"""``detector data check DATA [--json]`` and ``detector data convert DATA --to yolo|coco OUT``.

``check`` reads every split (train/val/test where defined), prints images, instances per class, ignore regions
(COCO crowd boxes, VOC difficult objects), the image size range, every problem with its file, and doubts about
class names inferred from the labels; exit status 0 when the data is usable (every split has images
and there is at least one box), 1 when not.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detector.cli_args import mode_args
from detector.config import ConfigError
from detector.data.convert import convert, default_splits
from detector.data.formats import get_format
from detector.data.labels import LabelSet, Problem, problem
from detector.data.load import load_split
from detector.data.spec import DatasetSpec, resolve_dataset
from detector.errors import DetectorError


def split_summary(ls: LabelSet) -> dict:
    """Counts of one split: images, backgrounds, instances (total and per class), image size range (w, h)."""
    per_class = ls.instances_per_class()
    sizes = [(im.shape[1], im.shape[0]) for im in ls.images]
    return {
        "images": len(ls.images),
        "backgrounds": sum(len(im.cls) == 0 for im in ls.images),
        "instances": int(per_class.sum()),
        "ignored": ls.ignored(),
        "per_class": {n: int(c) for n, c in zip(ls.names, per_class)},
        "image_size": {
            "min": [min(s[0] for s in sizes), min(s[1] for s in sizes)],
            "max": [max(s[0] for s in sizes), max(s[1] for s in sizes)],
        },
    }


def check(data: str | Path | dict | DatasetSpec, splits: list[str] | None = None, cache: bool = True) -> dict:
    """The report ``detector data check`` prints (see ``--json``): totals, per split, problems, ``usable``."""
    spec = resolve_dataset(data)
    report: dict = {"data": str(spec.source), "root": str(spec.root), "format": spec.format, "splits": {}}
    report["notes"] = list(spec.notes)
    problems: list[Problem] = []
    names: list[str] = []
    usable = True
    for split in splits or default_splits(spec):
        try:
            ls = load_split(spec, split, cache=cache)
        except DetectorError as e:
            problems.append(problem(spec.source, str(e)))
            report["splits"][split] = {"images": 0, "instances": 0, "error": str(e)}
            usable = False
            continue
        names = ls.names
        report["splits"][split] = split_summary(ls)
        problems += ls.problems
    done = [s for s in report["splits"].values() if "per_class" in s]
    report["names"] = names
    report["images"] = sum(s["images"] for s in report["splits"].values())
    report["instances"] = sum(s["instances"] for s in report["splits"].values())
    report["backgrounds"] = sum(s["backgrounds"] for s in done)
    report["per_class"] = {n: sum(s["per_class"].get(n, 0) for s in done) for n in names}
    if done:
        report["image_size"] = {
            "min": [min(s["image_size"]["min"][k] for s in done) for k in (0, 1)],
            "max": [max(s["image_size"]["max"][k] for s in done) for k in (0, 1)],
        }
    report["ignored"] = {k: sum(s["ignored"][k] for s in done) for k in ("crowd", "difficult")}
    if names:
        problems += [problem(spec.root, w) for w in get_format(spec.format).name_warnings(spec, names)[1:]]
    report["problems"] = problems
    report["usable"] = usable and report["images"] > 0 and report["instances"] > 0
    return report


def format_report(report: dict) -> str:
    """The human-readable form of a ``check`` report."""
    root = report["root"]
    names = report["names"]
    lines = [f"dataset {report['data']} ({report['format']}, {len(names)} classes)"]
    lines += [f"note: {n}" for n in report.get("notes", [])] + [""]
    splits = report["splits"]
    lines.append(
        f"{'split':<10}{'images':>8}{'backgr.':>9}{'instances':>11}{'crowd':>7}{'diffic.':>9}  image size (w x h)"
    )
    for split, s in splits.items():
        if "error" in s:
            lines.append(f"{split:<10}{'-':>8}{'-':>9}{'-':>11}{'-':>7}{'-':>9}  unusable: {s['error']}")
            continue
        lo, hi = s["image_size"]["min"], s["image_size"]["max"]
        ig = s["ignored"]
        lines.append(
            f"{split:<10}{s['images']:>8}{s['backgrounds']:>9}{s['instances']:>11}{ig['crowd']:>7}{ig['difficult']:>9}"
            f"  {lo[0]}x{lo[1]} .. {hi[0]}x{hi[1]}"
        )
    lines.append("(crowd regions and difficult objects are ignore regions: not trained on, not counted in mAP)")
    lines += ["", f"{'class':<20}" + "".join(f"{k:>10}" for k in splits) + f"{'total':>10}"]
    for n in names:
        row = [splits[k].get("per_class", {}).get(n, 0) for k in splits]
        lines.append(f"{n:<20}" + "".join(f"{v:>10}" for v in row) + f"{report['per_class'].get(n, 0):>10}")
    lines += ["", f"problems: {len(report['problems'])}"]
    for p in report["problems"]:
        f = p["file"]
        shown = os.path.relpath(f, root) if os.path.isabs(f) and f.startswith(root + os.sep) else f
        lines.append(f"  {shown}: {p['problem']}")
    lines += ["", "usable" if report["usable"] else "NOT usable: no images or no labels at all"]
    return "\n".join(lines)


@dataclass
class DataCheckArgs:
    """``detector data check`` keys."""

    data: str = ""  # dataset YAML, dataset folder (VOC, Roboflow COCO, with a data.yaml) or a name in configs/data
    json: bool = False  # print one JSON object
    split: list[str] | None = None  # only these splits (default: every split defined)
    cache: bool = True  # use the label cache (--no-cache re-reads everything)


@dataclass
class DataConvertArgs:
    """``detector data convert`` keys."""

    data: str = ""  # dataset YAML, dataset folder or a name in configs/data
    out: str = ""  # output folder (gets data.yaml, images and labels)
    to: Literal["yolo", "coco"] = "yolo"  # target format
    split: list[str] | None = None  # only these splits


def cli_data_check(argv: list[str]) -> int:
    """``detector data check DATA [--json] [--split S] [--no-cache]``; exit status 0 when usable."""
    args = mode_args("data check", argv)
    if args is None:
        return 0
    if not args.data:
        raise ConfigError("detector data check: name the data, e.g. `detector data check path/to/data.yaml`")
    report = check(args.data, args.split, cache=args.cache)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_report(report))
    return 0 if report["usable"] else 1


def cli_data_convert(argv: list[str]) -> int:
    """``detector data convert DATA OUT --to yolo|coco [--split S]``."""
    args = mode_args("data convert", argv)
    if args is None:
        return 0
    if not args.data or not args.out:
        raise ConfigError("detector data convert: give DATA and OUT, e.g. `detector data convert bccd out/ --to coco`")
    yaml_path, written = convert(args.data, args.to, args.out, splits=args.split)
    for split, ls in written.items():
        print(f"{split}: {len(ls.images)} images, {int(ls.instances_per_class().sum())} boxes")
    print(f"wrote {yaml_path}")
    return 0


def cli_data(argv: list[str]) -> int:
    """``detector data check|convert ...`` from Python (the CLI dispatches sub-commands itself)."""
    from detector.cli import main

    return main(["data", *argv])
