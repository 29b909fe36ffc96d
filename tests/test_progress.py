"""Progress bars on validation, label scanning, image caching and export; silent with verbose=False."""

from __future__ import annotations

import pytest
from _engine_kit import TINY_MODEL, bccd_subset
from tiny_models import tiny_checkpoint

from detector import progress
from detector.data.load import load_split
from detector.engine.settings import ValRunConfig
from detector.engine.validator import validate_checkpoint
from detector.export import export


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return bccd_subset(tmp_path_factory.mktemp("bccd"), 4)


@pytest.mark.parametrize("verbose", [True, False])
def test_label_scanning_and_image_caching_bars(data, tmp_path, capsys, verbose):
    from detector.data import build_dataloader

    with progress.quiet(not verbose):
        load_split(data, "train", cache=False)
        build_dataloader(data, "train", imgsz=64, batch=2, augment=None, workers=0, cache="ram")
    err = capsys.readouterr().err
    assert ("scanning train labels" in err and "/4 [" in err and "caching images (ram)" in err) is verbose
    assert err == "" or verbose
    assert progress.enabled()  # restored after the block


@pytest.mark.parametrize("verbose", [True, False])
def test_validation_bar(data, tmp_path, capsys, verbose):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = ValRunConfig(model=str(ckpt), data=str(data), imgsz=64, batch=2, workers=0, plots=False,
                       project=str(tmp_path / "val"), verbose=verbose)  # fmt: skip
    result = validate_checkpoint(cfg)
    assert result.images == 4
    err = capsys.readouterr().err
    assert ("validating val" in err and "/2 [" in err) is verbose
    assert progress.enabled()


@pytest.mark.parametrize("verbose", [True, False])
def test_export_bar(tmp_path, capsys, verbose):
    path = export(TINY_MODEL, imgsz=64, out=tmp_path / "t.onnx", verbose=verbose)
    assert path.is_file()
    err = capsys.readouterr().err
    assert all(s in err for s in ("export", "trace", "simplify", "check and save")) is verbose
