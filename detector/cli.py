"""``detector MODE key=value ...``: the command-line entry point.

Each mode lives beside the feature it drives and is imported only when used, so ``detector info`` does not
pay for the training stack. A mode function takes the remaining arguments and returns an exit status; every
mode parses them with ``detector.cli_args`` (one grammar, ``--help`` from the mode's schema).
"""

from __future__ import annotations

import importlib
import sys

from detector.cli_args import HELP_WORDS, ModeSpec, mode_help
from detector.errors import DetectorError

_SPECS = [
    ModeSpec("train", "detector.engine.trainer:cli_train", "train a model (also under torchrun)",
             "detector train [RECIPE.yaml | recipe-name] key=value ...",
             "detector train bccd-gelan-t epochs=5 imgsz=320 device=cpu", "detector.engine.settings:TrainConfig"),
    ModeSpec("val", "detector.engine.validator:cli_val", "evaluate a checkpoint (COCO mAP, per-class table)",
             "detector val model=CKPT [data=DATA] key=value ...",
             "detector val model=runs/train/exp/weights/best.pt data=bccd save_json=True",
             "detector.engine.settings:ValRunConfig"),
    ModeSpec("predict", "detector.predict.cli:cli_predict", "run a model on images, videos, URLs, streams, webcams",
             "detector predict model=MODEL source=SOURCE key=value ...",
             "detector predict model=best.pt source=images/ save_txt=True conf=0.4",
             "detector.predict.cli:PredictConfig"),
    ModeSpec("export", "detector.export:cli_export", "export the deploy form to ONNX or a TensorRT engine",
             "detector export model=MODEL [format=onnx|engine] key=value ...",
             "detector export model=best.pt format=onnx dynamic=True nms=onnx", "detector.export:ExportArgs"),
    ModeSpec("benchmark", "detector.benchmark:cli_benchmark", "latency and throughput per backend and batch size",
             "detector benchmark model=MODEL [backends=torch,onnx] [batch=1,8] key=value ...",
             "detector benchmark model=gelan-t backends=torch,torch-fused,onnx batch=1,8 imgsz=320",
             "detector.benchmark:BenchmarkArgs"),
    ModeSpec("info", "detector.info:cli_info", "layer table, params and GFLOPs of the train and deploy forms",
             "detector info MODEL [imgsz=640] [nc=N] [--json]", "detector info yolov9-t imgsz=640 --json",
             "detector.info:InfoArgs", ("model",)),
    ModeSpec("convert", "detector.convert.convert:cli_convert", "other frameworks' checkpoints -> ours",
             "detector convert SRC [model=NAME] [out=PATH]", "detector convert yolov9-c.pt model=yolov9-c",
             "detector.convert.convert:ConvertConfig", ("src",)),
    ModeSpec("data check", "detector.data.check:cli_data_check", "validate a dataset: counts, sizes, problems",
             "detector data check DATA [--json] [--split S] [--no-cache]", "detector data check bccd --split val",
             "detector.data.check:DataCheckArgs", ("data",)),
    ModeSpec("data convert", "detector.data.check:cli_data_convert", "write a dataset as YOLO txt or COCO JSON",
             "detector data convert DATA OUT --to yolo|coco [--split S]",
             "detector data convert datasets/bccd out/ --to coco", "detector.data.check:DataConvertArgs",
             ("data", "out")),
]  # fmt: skip
MODES: dict[str, ModeSpec] = {s.name: s for s in _SPECS}


def usage() -> str:
    lines = ["usage: detector MODE [args] [key=value ...]     (detector MODE --help: its keys and an example)", ""]
    lines += ["modes:"] + [f"  {name:<13} {s.summary}" for name, s in MODES.items()]
    lines += ["  help MODE     the keys of MODE (same as detector MODE --help)"]
    return "\n".join(lines)


def group_usage(group: str) -> str:
    subs = [s for n, s in MODES.items() if n.startswith(group + " ")]
    return "\n".join([f"usage: detector {group} COMMAND ...", "", "commands:"] + [f"  {s.usage}" for s in subs])


def find_mode(argv: list[str]) -> tuple[str | None, list[str]]:
    """``["data", "check", "x"]`` -> ``("data check", ["x"])``; an unknown mode -> ``(None, argv)``."""
    if len(argv) > 1 and f"{argv[0]} {argv[1]}" in MODES:
        return f"{argv[0]} {argv[1]}", argv[2:]
    if argv and argv[0] in MODES:
        return argv[0], argv[1:]
    return None, argv


def _unknown(argv: list[str]) -> int:
    import difflib

    groups = {n.split()[0] for n in MODES}
    if argv[0] in groups:  # a group without (or with a wrong) sub-command
        if len(argv) == 1 or argv[1] in HELP_WORDS:
            print(group_usage(argv[0]))
            return 0
        print(f"error: unknown command {argv[0]} {argv[1]!r}\n\n{group_usage(argv[0])}", file=sys.stderr)
        return 2
    close = difflib.get_close_matches(argv[0], sorted(groups), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    print(f"error: unknown mode {argv[0]!r}{hint}\n\n{usage()}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in HELP_WORDS:
        name, _ = find_mode(argv[1:])
        if argv[1:] and name is None:
            return _unknown(argv[1:])
        print(mode_help(MODES[name]) if name else usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from detector import __version__

        print(__version__)
        return 0
    name, rest = find_mode(argv)
    if name is None:
        return _unknown(argv)
    module_name, func_name = MODES[name].target.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(rest) or 0)
    except DetectorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
