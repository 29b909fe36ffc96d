"""The README's Python and command-line examples run as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def example(kind: str) -> str:
    """The fenced code block that follows ``<!-- readme-example: KIND -->`` in README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- readme-example: {kind} -->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"README has no {kind} example"
    return match.group(1)


def test_python_example_runs(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    code = example("python")
    assert len(code.strip().splitlines()) <= 6
    exec(compile(code, "README.md", "exec"), {})
    assert "speed" not in capsys.readouterr().err


def test_cli_example_runs(tmp_path):
    (cmd,) = [line for line in example("cli").splitlines() if line.strip()]
    argv = shlex.split(cmd)
    assert argv[:2] == ["detector", "predict"]
    run = [sys.executable, "-m", "detector", *argv[1:], f"project={tmp_path}", "name=readme"]
    out = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    records = json.loads((tmp_path / "readme" / "predictions.json").read_text())
    assert len(records) == 1 and records[0]["orig_shape"] == [480, 640]
    assert (tmp_path / "readme" / "BloodImage_00000.jpg").is_file()
