"""``detector MODE key=value ...``: the command-line entry point.

Each mode lives beside the feature it drives and is imported only when used, so ``detector info`` does not
pay for the training stack. A mode function takes the remaining arguments and returns an exit status.
"""

from __future__ import annotations

import importlib
import sys

from detector.errors import DetectorError

MODES: dict[str, tuple[str, str]] = {
    "train": ("detector.engine.trainer:cli_train", "train a model: detector train CONFIG key=value ..."),
    "val": ("detector.engine.validator:cli_val", "evaluate a checkpoint: detector val model=CKPT data=DATA"),
    "predict": ("detector.predict.cli:cli_predict", "run a model on images/videos: model=... source=..."),
    "export": ("detector.export:cli_export", "export to ONNX / TensorRT: model=... format=onnx|engine"),
    "benchmark": ("detector.benchmark:cli_benchmark", "latency and throughput per backend and batch size"),
    "info": ("detector.info:cli_info", "layer table, params and GFLOPs: detector info MODEL [imgsz=640] [--json]"),
    "convert": (
        "detector.convert.convert:cli_convert",
        "other frameworks' checkpoints -> ours: detector convert SRC model=NAME",
    ),
    "data": ("detector.data.check:cli_data", "dataset tools: detector data check|convert ..."),
}


def usage() -> str:
    lines = ["usage: detector MODE [args] [key=value ...]", "", "modes:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in MODES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from detector import __version__

        print(__version__)
        return 0
    mode, rest = argv[0], argv[1:]
    if mode not in MODES:
        import difflib

        close = difflib.get_close_matches(mode, MODES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"error: unknown mode {mode!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    target, _ = MODES[mode]
    module_name, func_name = target.split(":")
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
