"""``detector data check DATA [--json]`` and ``detector data convert DATA --to yolo|coco OUT``.

``check`` reads every split (train/val/test where defined), prints images, instances per class, ignore regions
(COCO crowd boxes, VOC difficult objects), the image size range, every problem with its file, and doubts about
class names inferred from the labels; exit status 0 when the data is usable (every split has images
and there is at least one box), 1 when not.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from detector.data.convert import TARGETS, convert, default_splits
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
    lines = [f"dataset {report['data']} ({report['format']}, {len(names)} classes)", ""]
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


def cli_data(argv: list[str]) -> int:
    """Entry point of ``detector data``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="detector data", description="dataset tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="validate a dataset and report its contents and problems")
    p_check.add_argument("data", help="dataset YAML, Pascal VOC folder, or config name")
    p_check.add_argument("--json", action="store_true", help="print one JSON object")
    p_check.add_argument("--split", action="append", help="only this split (repeatable)")
    p_check.add_argument("--no-cache", action="store_true", help="re-read everything, ignoring the label cache")
    p_conv = sub.add_parser("convert", help="write the dataset as YOLO txt or COCO JSON")
    p_conv.add_argument("data", help="dataset YAML, Pascal VOC folder, or config name")
    p_conv.add_argument("out", help="output folder")
    p_conv.add_argument("--to", required=True, choices=TARGETS)
    p_conv.add_argument("--split", action="append", help="only this split (repeatable)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if args.command == "check":
        report = check(args.data, args.split, cache=not args.no_cache)
        print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_report(report))
        return 0 if report["usable"] else 1
    yaml_path, written = convert(args.data, args.to, args.out, splits=args.split)
    for split, ls in written.items():
        print(f"{split}: {len(ls.images)} images, {int(ls.instances_per_class().sum())} boxes")
    print(f"wrote {yaml_path}")
    return 0
