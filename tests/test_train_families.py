"""Every head family of the zoo trains a few steps and validates (families appear as their models land)."""

from __future__ import annotations

import math

import pytest
import torch
from _engine_kit import bccd_subset, tiny_config

from detector.engine.trainer import Trainer
from detector.model import build_model
from detector.nn.classify import Classify
from detector.zoo import model_names


def smallest_model_per_family() -> dict[str, str]:
    """``{"DDetect", "DDetect+PGI", ...: smallest zoo model}``, sizes counted on the meta device (no memory)."""
    best: dict[str, tuple[int, str]] = {}
    for name in model_names():
        with torch.device("meta"):
            model = build_model(name, nc=3)
        if isinstance(model.main_head, Classify):
            continue  # ImageNet classifier forms exist to check backbone sizes; they are not detectors
        family = type(model.main_head).__name__ + ("+PGI" if len(model.heads()) > 1 else "")
        size = sum(p.numel() for p in model.parameters())
        if family not in best or size < best[family][0]:
            best[family] = (size, name)
    return {family: name for family, (_, name) in sorted(best.items())}


FAMILIES = smallest_model_per_family()


@pytest.fixture(scope="module")
def data4(tmp_path_factory):
    return bccd_subset(tmp_path_factory.mktemp("bccd4"), 4)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_and_validates(family, data4, tmp_path):
    torch.set_num_threads(1)
    name = FAMILIES[family]
    trainer = Trainer(tiny_config(tmp_path, data4, model=name, epochs=1, imgsz=64))
    result = trainer.train()
    head_losses = trainer.epoch_losses()
    assert head_losses and all(math.isfinite(v) and v > 0 for v in head_losses.values()), head_losses
    if family.endswith("+PGI"):
        assert any(k.startswith("aux_") for k in head_losses)  # auxiliary losses are logged separately
    assert set(result.losses) == set(trainer.loss_names)  # val loss: main head only, real numbers
    assert all(math.isfinite(v) and v > 0 for v in result.losses.values()), result.losses
    assert len(result.stats) == 12 and 0.0 <= result.stats["mAP50"] <= 1.0
    assert (tmp_path / "runs" / "exp" / "weights" / "best.pt").is_file()
