"""One command-line grammar: every mode answers --help from its schema; detector help lists the modes."""

from __future__ import annotations

import dataclasses

import pytest

from detector.cli import MODES, main
from detector.cli_args import field_types, split_argv
from detector.engine.settings import TrainConfig
from detector.export import ExportArgs


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_prints_usage_example_and_every_key(mode, capsys):
    spec = MODES[mode]
    assert main([*mode.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {spec.usage}") and f"example: {spec.example}" in out
    schema = spec.schema_class()
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ")}
    for key in field_types(schema):
        assert key in rows, f"{mode} --help misses {key}"
    assert main(["help", *mode.split()]) == 0 and capsys.readouterr().out == out  # detector help MODE: the same
    assert main([*mode.split(), "-h"]) == 0 and capsys.readouterr().out == out


def test_help_shows_types_defaults_and_meaning(capsys):
    assert main(["export", "--help"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("nms "))
    assert line.split()[:3] == ["nms", "none|onnx|trt", "'none'"] and "NMS inside the graph" in line


def test_detector_help_lists_every_mode(capsys):
    assert main(["help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in MODES)
    assert main([]) == 0 and capsys.readouterr().out == out
    assert main(["data"]) == 0 and "detector data check DATA" in capsys.readouterr().out
    assert main(["prdict"]) == 2 and "did you mean 'predict'" in capsys.readouterr().err
    assert main(["data", "chek", "x"]) == 2 and "unknown command data 'chek'" in capsys.readouterr().err


def test_grammar_forms_agree():
    forms = [
        ["epochs=5", "optim.lr0=0.01", "plots=False", "loggers=tensorboard,mlflow"],
        ["--epochs", "5", "--optim.lr0=0.01", "--no-plots", "--loggers", "tensorboard", "--loggers", "mlflow"],
    ]
    parsed = [split_argv(f, TrainConfig) for f in forms]
    assert (
        parsed[0]
        == parsed[1]
        == ([], {"epochs": 5, "optim": {"lr0": 0.01}, "plots": False, "loggers": "tensorboard,mlflow"})
    )
    words, over = split_argv(["bccd-gelan-t", "--amp"], TrainConfig)
    assert words == ["bccd-gelan-t"] and over == {"amp": True}


def test_positional_keys_and_errors(capsys):
    from detector.cli_args import mode_args
    from detector.config import ConfigError

    args = mode_args("info", ["gelan-t", "--json", "imgsz=320"])
    assert (args.model, args.json, args.imgsz) == ("gelan-t", True, 320)
    with pytest.raises(ConfigError, match=r"unexpected argument\(s\) \['extra'\]"):
        mode_args("info", ["gelan-t", "extra"])
    with pytest.raises(ConfigError, match=r"unknown key 'fromat' \(in --fromat\); did you mean 'format'"):
        mode_args("export", ["--fromat", "onnx"])
    with pytest.raises(ConfigError, match="--imgsz needs a value"):
        mode_args("export", ["--imgsz"])
    assert main(["export", "model=gelan-t", "format=tflite"]) == 2
    assert "expected one of ['onnx', 'engine']" in capsys.readouterr().err
    batch = mode_args("benchmark", ["model=x", "batch=1,8", "backends=torch,onnx"])
    assert batch.batch == [1, 8] and batch.backends == ["torch", "onnx"]
    assert dataclasses.is_dataclass(ExportArgs)
