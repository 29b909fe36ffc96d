"""Training engine end to end on real BCCD images (CPU, tiny model, tiny sizes): learning, exact resume,
checkpoints, run dirs, skipped files, the val CLI and every head family of the zoo."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _engine_kit import bccd_subset, single_thread, tiny_config

from detector.checkpoint import load_checkpoint, model_from_checkpoint
from detector.config import ConfigError, load
from detector.engine.callbacks import Callback, Evaluator
from detector.engine.settings import OptimConfig, TrainConfig, ValConfig
from detector.engine.trainer import Trainer, cli_train, parse_train_args
from detector.engine.validator import cli_val
from detector.errors import DetectorError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    before = torch.get_num_threads()
    single_thread()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data4(tmp_path_factory) -> Path:
    return bccd_subset(tmp_path_factory.mktemp("bccd4"), 4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data4) -> Path:
    """A finished 2-epoch run of the tiny model; returns its run dir."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(tmp, data4, plots=True, val=ValConfig(plots=True))
    single_thread()
    Trainer(cfg).train()
    return tmp / "runs" / "exp"


class StopWhenLearned(Callback):
    """Ends the run at the first validation that reaches ``target`` mAP50."""

    def __init__(self, target: float) -> None:
        self.target = target
        self.reached_at: int | None = None

    def after_epoch(self, trainer) -> None:
        metrics = trainer.callback(Evaluator).metrics  # the evaluator owns them; this epoch's, or {} if skipped
        if metrics and metrics["mAP50"] >= self.target:
            self.reached_at = trainer.epoch + 1
            trainer.request_stop(f"reached mAP50 {metrics['mAP50']:.3f}")


def test_overfits_a_handful_of_bccd_images(tmp_path, data4):
    """4 real images, imgsz 160, no augmentation: mAP50 >= 0.9 on them within 300 optimiser steps."""
    stop = StopWhenLearned(0.9)
    cfg = tiny_config(
        tmp_path, data4, epochs=300, imgsz=160, batch=4,
        optim=OptimConfig(nbs=4, lr0=0.01, warmup_epochs=10, warmup_min_iters=0), val=ValConfig(period=20, plots=False),
    )  # fmt: skip
    result = Trainer(cfg, callbacks=[stop]).train()
    assert stop.reached_at is not None and stop.reached_at <= 300
    assert result.stats["mAP50"] >= 0.9  # best.pt, validated again after training
    assert {r["class"] for r in result.per_class} == {"Platelets", "RBC", "WBC"}
    rows = (tmp_path / "runs" / "exp" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + stop.reached_at
    first, last = rows[1].split(","), rows[-1].split(",")
    assert float(last[1]) < float(first[1])  # train box loss fell


class Interrupt(Exception):
    pass


class InterruptAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_epoch(self, trainer) -> None:
        if trainer.epoch == self.epoch:
            raise Interrupt  # after the checkpoint of this epoch was written, like a killed job


def test_resume_continues_exactly(tmp_path, data4):
    """3 epochs straight == 2 epochs, interrupted, then resumed: identical weights, EMA and results rows."""
    kw = dict(epochs=3, optim=OptimConfig(nbs=4, warmup_min_iters=2))  # accumulation of 2 batches too
    Trainer(tiny_config(tmp_path, data4, name="straight", **kw)).train()
    with pytest.raises(Interrupt):
        Trainer(tiny_config(tmp_path, data4, name="cut", **kw), callbacks=[InterruptAfter(1)]).train()
    cut = tmp_path / "runs" / "cut"
    assert load_checkpoint(cut / "weights" / "last.pt")["epoch"] == 1
    Trainer(parse_train_args(["resume=True", f"project={tmp_path / 'runs'}"])).train()  # the latest run: cut

    a = load_checkpoint(tmp_path / "runs" / "straight" / "weights" / "last.pt")
    b = load_checkpoint(cut / "weights" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["ema"] == b["ema"] and a["epoch"] == b["epoch"] == 2
    straight_rows = (tmp_path / "runs" / "straight" / "results.csv").read_text()
    assert straight_rows == (cut / "results.csv").read_text()

    with pytest.raises(DetectorError, match=r"already finished \(completed 3 epochs\); there is nothing to resume"):
        Trainer(parse_train_args([f"resume={cut / 'weights' / 'last.pt'}"])).train()


def test_checkpoint_loads_weights_only_and_rebuilds(trained):
    ckpt = torch.load(trained / "weights" / "last.pt", map_location="cpu", weights_only=True)
    for key in ("model", "model_yaml", "names", "config", "epoch", "ema", "rng", "version", "callbacks"):
        assert key in ckpt, key
    evaluator = ckpt["callbacks"]["Evaluator"]
    assert evaluator["best_epoch"] in (0, 1) and 0.0 <= evaluator["best_fitness"] <= 1.0
    assert ckpt["callbacks"]["ResultsLogger"] == {"rows": 2}
    assert ckpt["names"] == ["Platelets", "RBC", "WBC"] and ckpt["model_yaml"]["nc"] == 3
    assert ckpt["finished"] == "completed 2 epochs" and "optimizer" not in ckpt  # stripped once finished
    rng = ckpt["rng"][0]
    assert isinstance(rng["torch"], torch.Tensor) and isinstance(rng["numpy"][1], torch.Tensor)
    assert ckpt["config"]["imgsz"] == 96 and ckpt["config"]["optim"]["nbs"] == 2
    model = model_from_checkpoint(trained / "weights" / "best.pt")
    out = model(torch.rand(1, 3, 96, 96))["main"]
    assert out.shape == (1, 4 + 3, 24 * 24 + 12 * 12 + 6 * 6)  # strides 4, 8, 16


def test_run_outputs(trained):
    for name in ("args.yaml", "results.csv", "results.png", "train_batch0.jpg", "confusion_matrix.png",
                 "PR_curve.png", "val_batch0_labels.jpg", "val_batch0_pred.jpg", "train.log"):  # fmt: skip
        assert (trained / name).is_file(), name
    header, *rows = (trained / "results.csv").read_text().splitlines()
    assert header == (
        "epoch,train/box,train/cls,train/dfl,val/box,val/cls,val/dfl,P,R,mAP50,mAP50-95,lr/norm,lr/weight,lr/bias"
    )
    assert [r.split(",")[0] for r in rows] == ["1", "2"]
    val_losses = [float(v) for v in rows[-1].split(",")[4:7]]
    assert all(math.isfinite(v) and v > 0 for v in val_losses)
    args = load(TrainConfig, [trained / "args.yaml"])  # the saved config loads back into the schema
    assert args.imgsz == 96 and args.epochs == 2


def test_run_dirs_increment_and_skipped_files_are_reported(tmp_path, data4, caplog):
    broken = tmp_path / "broken"
    bccd_subset(broken, 4)
    img = broken / "JPEGImages" / "BloodImage_00003.jpg"
    img.unlink()
    img.write_bytes(b"not a jpeg")
    xml = broken / "Annotations" / "BloodImage_00001.xml"  # a label with a broken field (xmin is not a number)
    text = xml.read_text()
    xml.unlink()
    xml.write_text(text.replace("<xmin>", "<xmin>oops", 1))
    data = broken / "data.yaml"
    Trainer(tiny_config(tmp_path, data4, epochs=1)).train()
    Trainer(tiny_config(tmp_path, data, epochs=1)).train()
    runs = tmp_path / "runs"
    assert (runs / "exp").is_dir() and (runs / "exp2").is_dir()
    problems = (runs / "exp2" / "data_problems.txt").read_text()
    assert "BloodImage_00003.jpg" in problems and "BloodImage_00001.xml" in problems
    log = (runs / "exp2" / "train.log").read_text()
    assert "skipped" in log and "BloodImage_00003.jpg" in log and "BloodImage_00001.xml" in log
    assert (runs / "exp2" / "weights" / "last.pt").is_file()  # trained on the rest
    assert not (runs / "exp" / "data_problems.txt").exists()
    cfg = tiny_config(tmp_path, data4, epochs=1, exist_ok=True)
    Trainer(cfg).train()
    assert not (runs / "exp3").exists()


def test_val_cli_writes_coco_json(trained, tmp_path):
    ckpt = trained / "weights" / "best.pt"
    assert cli_val([f"model={ckpt}", f"project={tmp_path}", "name=v", "save_json=True", "batch=3", "plots=False"]) == 0
    out = tmp_path / "v"
    preds = json.loads((out / "predictions.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["stats"]) == 12 and set(metrics["stats"]) >= {"mAP50-95", "mAP50", "mAP75", "AR100"}
    assert [r["class"] for r in metrics["per_class"]] == ["Platelets", "RBC", "WBC"]
    assert metrics["images"] == 4 and metrics["instances"] == 71
    cross = metrics["faster_coco_eval"]  # the same numbers by faster-coco-eval, from the saved JSON files
    assert cross["agrees"] and cross["max_abs_diff"] <= 1e-3 and set(cross["stats"]) == set(metrics["stats"])
    gt = json.loads((out / "ground_truth.json").read_text())
    assert len(gt["images"]) == 4 and len(gt["annotations"]) == 71
    assert preds and {p["image_id"] for p in preds} <= {"BloodImage_00001", "BloodImage_00003", "BloodImage_00004",
                                                        "BloodImage_00005"}  # fmt: skip
    p = preds[0]
    assert set(p) == {"image_id", "category_id", "bbox", "score"} and len(p["bbox"]) == 4
    assert 0 <= p["bbox"][0] <= 640 and 0 <= p["bbox"][1] <= 480  # original image pixels
    with pytest.raises(DetectorError, match="checkpoint not found"):
        cli_val([f"model={tmp_path / 'nope.pt'}"])


def test_command_line_parsing(tmp_path, capsys):
    assert cli_train(["--help"]) == 0
    out = capsys.readouterr().out
    keys = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ")}
    assert keys["optim.lr0"][:4] == ["float", "|", "None", "None"] and keys["augment.close_mosaic"][:2] == ["int", "15"]
    assert keys["resume"][:4] == ["bool", "|", "str", "False"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: gelan-t\nepochs: 5\noptim: {optimizer: SGD}\naugment: {mosaic: 0.5}\n")
    cfg = parse_train_args([str(recipe), "epochs=7", "optim.lr0=0.02", "loss.box=5.0"])
    assert (cfg.model, cfg.epochs, cfg.optim.optimizer, cfg.optim.lr0) == ("gelan-t", 7, "SGD", 0.02)
    assert cfg.augment.mosaic == 0.5 and cfg.loss == {"box": 5.0}
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        parse_train_args(["epoch=3"])
    with pytest.raises(
        ConfigError, match=r"resume continues a run with its saved config; cannot also set \['epochs'\]"
    ):
        parse_train_args(["resume=True", "epochs=3"])


@pytest.mark.parametrize("recipe", ["bccd-gelan-t", "coco-yolov9"])
def test_recipes_load(recipe):
    cfg = parse_train_args([recipe])
    assert cfg.imgsz == 640
    if recipe == "bccd-gelan-t":
        assert (cfg.model, cfg.batch, cfg.epochs) == ("gelan-t", 16, 60)
        from detector.data.spec import resolve_dataset

        assert resolve_dataset(cfg.data).names == ["Platelets", "RBC", "WBC"]
    else:
        assert (cfg.epochs, cfg.optim.optimizer, cfg.optim.lr0, cfg.augment.close_mosaic) == (500, "SGD", 0.01, 15)
