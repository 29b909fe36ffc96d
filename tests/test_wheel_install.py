"""The installed package works from any folder: build a wheel, install it into a fresh virtual environment and,
from an empty temporary folder, run what a new user runs (zoo names of every family, data check, a one-epoch
training run of a model YAML that names a zoo component, export, predict, the README examples).

The fresh environment reuses the already installed torch & co. through a ``.pth`` file naming this
interpreter's site-packages (``--system-site-packages`` would not see a virtual environment's packages); such a
path entry does not run the ``.pth`` files inside it, so an editable install of this repository there stays
inactive and only the wheel's ``detector`` is importable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from _engine_kit import bccd_subset
from test_readme import example
from tiny_models import tiny_detector

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = (
    "pyproject.toml",
    "setup.py",
    "README.md",
    "LICENSE",
    "detector",
    "deploy",
    "cuda_ops",
    "models",
    "configs",
)
ONE_PER_FAMILY = ("gelan-t", "damoyolo-t", "leyolo-n", "gelan-s-fpan", "vovnet19-slim-dw-cls", "lsnet-t-cls")
"""models/gelan, damo, leyolo, mixes and classify (VoVNet and LSNet): the smallest of each, to stay fast."""
# the tests' tiny detector with its neck tagging P3-P5 and `head: ddetect`, a component file that must be found
# inside the installed package (models/components/ddetect.yaml)
TINY_WITH_COMPONENT = {
    **tiny_detector(),
    "neck": [{"Identity": {"from": f"B{i}", "tag": f"P{i}"}} for i in (3, 4, 5)],
    "head": "ddetect",
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a loaded CI machine: builds, installs, trains


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the built wheel installed; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    env = _clean_env()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)], tmp, env)
    (wheel,) = (tmp / "dist").glob("detector-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], tmp, env)
    py = tmp / "venv" / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).strip())
    parent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_parent_env.pth").write_text("".join(f"{p}\n" for p in sorted(parent)))
    _run([str(py), "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps", str(wheel)], tmp, env)
    return tmp / "venv" / "bin"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """An empty folder away from the repository, holding only ``datasets`` (the data is not part of a package)."""
    folder = tmp_path_factory.mktemp("elsewhere")
    (folder / "datasets").symlink_to(ROOT / "datasets")
    return folder


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DETECTOR_VERBOSE": "0"}


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env or _clean_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _the_package_data_comes_from_the_installed_wheel(venv: Path, work: Path) -> None:
    code = (
        "import detector, detector.zoo as z\n"
        "print(detector.__file__, z.MODELS_DIR, z.CONFIGS_DIR)\n"
        "print(z.find_yaml('bccd-gelan-t', z.CONFIGS_DIR, 'recipe'), z.find_yaml('ddetect'), z.find_yaml('yolov9-c'))\n"
        "print(len(z.model_names()))"
    )
    package, models, configs, recipe, component, model, count = _run([str(venv / "python"), "-c", code], work).split()
    site = Path(package).parent.parent
    assert "site-packages" in package and Path(models) == site / "detector" / "models"
    assert Path(configs) == site / "detector" / "configs" and str(ROOT) not in package
    assert Path(recipe) == Path(configs) / "bccd-gelan-t.yaml" and Path(component).parent == Path(models) / "components"
    assert Path(model) == Path(models) / "gelan" / "yolov9-c.yaml"
    from detector.zoo import model_names

    assert int(count) == len(model_names())  # every zoo model made it into the wheel
    assert "usage: detector predict" in _run([str(venv / "detector"), "predict", "--help"], work)


def _info_names_one_model_of_every_family(venv: Path, work: Path) -> None:
    from detector.info import count_params, shape_only_copy
    from detector.model import build_model

    first, *rest = ONE_PER_FAMILY
    lines = [_run([str(venv / "detector"), "info", first, "imgsz=64", "--json"], work)]
    # the others in one process of the installed package (one torch import instead of one per model)
    loop = f"from detector.cli import main\nfor name in {rest!r}:\n    main(['info', name, 'imgsz=64', '--json'])"
    lines += _run([str(venv / "python"), "-c", loop], work).splitlines()
    for name, line in zip(ONE_PER_FAMILY, lines, strict=True):
        got, model = json.loads(line), build_model(name)  # the repository's YAML, counted here
        assert got["params"] == count_params(model) and got["imgsz"] == 64 and got["gflops"] > 0
        assert got["deploy_params"] == count_params(shape_only_copy(model).to_deploy())


def _data_check_by_path_and_by_packaged_name(venv: Path, work: Path) -> None:
    by_path = json.loads(
        _run([str(venv / "detector"), "data", "check", "datasets/bccd", "--split", "val", "--json"], work)
    )
    assert by_path["usable"] and by_path["splits"]["val"]["images"] == 87
    # configs/data/bccd.yaml from the wheel; its dataset folder is found as ./datasets/bccd
    by_name = json.loads(_run([str(venv / "detector"), "data", "check", "bccd", "--split=val", "--json"], work))
    assert by_name["per_class"] == by_path["per_class"] and by_name["names"] == ["Platelets", "RBC", "WBC"]


def _train_export_predict_from_another_folder(venv: Path, work: Path) -> None:
    data = bccd_subset(work / "cells", 4)
    model = work / "tiny-ddetect.yaml"
    model.write_text(yaml.safe_dump(TINY_WITH_COMPONENT, sort_keys=False))
    det = str(venv / "detector")
    _run([det, "train", f"model={model.name}", f"data={data}", "epochs=1", "imgsz=64", "batch=2", "workers=0",
          "device=cpu", "plots=False", "val.plots=False"], work)  # fmt: skip
    best = work / "runs" / "train" / "exp" / "weights" / "best.pt"
    assert best.is_file()
    _run([det, "export", f"model={best}", "imgsz=64"], work)
    onnx = best.with_suffix(".onnx")
    assert onnx.is_file()
    image = "datasets/bccd/JPEGImages/BloodImage_00000.jpg"
    _run([det, "predict", f"model={onnx}", f"source={image}", "imgsz=64", "save_json=True", "conf=0.0"], work)
    (record,) = json.loads((work / "runs" / "predict" / "exp" / "predictions.json").read_text())
    assert record["orig_shape"] == [480, 640] and len(record["detections"]) > 0


def _readme_examples_run_from_another_folder(venv: Path, work: Path) -> None:
    code = example("python")
    out = subprocess.run(
        [str(venv / "python"), "-c", code], cwd=work, env=_clean_env(), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (cmd,) = [line for line in example("cli").splitlines() if line.strip()]
    argv = cmd.split()
    assert argv[0] == "detector"
    _run([str(venv / "detector"), *argv[1:], f"project={work / 'readme'}", "name=cli"], work)
    assert (work / "readme" / "cli" / "predictions.json").is_file()


def test_installed_wheel_from_another_folder(venv, work):
    """One test, so that pytest-xdist never builds the wheel and the environment twice."""
    _the_package_data_comes_from_the_installed_wheel(venv, work)
    _info_names_one_model_of_every_family(venv, work)
    _data_check_by_path_and_by_packaged_name(venv, work)
    _train_export_predict_from_another_folder(venv, work)
    _readme_examples_run_from_another_folder(venv, work)
