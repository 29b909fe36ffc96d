"""Shared pieces for engine tests: small real BCCD subsets and tiny, fast training configs."""

from __future__ import annotations

from pathlib import Path

import torch

from detector.data.augment import AugmentConfig
from detector.engine.settings import OptimConfig, TrainConfig, ValConfig

REPO = Path(__file__).resolve().parent.parent
BCCD = REPO / "datasets" / "bccd"
TINY_MODEL = str(REPO / "tests" / "assets" / "tiny-gelan.yaml")
NAMES = ["Platelets", "RBC", "WBC"]


def bccd_subset(root: Path, n: int = 4, split_from: str = "train") -> Path:
    """A Pascal VOC dataset of the first ``n`` images of a BCCD split (symlinks, nothing copied); its
    ``train`` and ``val`` splits are the same images. Returns the dataset YAML."""
    ids = (BCCD / "ImageSets" / "Main" / f"{split_from}.txt").read_text().split()[:n]
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in ids:
        for sub, ext in (("Annotations", "xml"), ("JPEGImages", "jpg")):
            link = root / sub / f"{i}.{ext}"
            if not link.exists():
                link.symlink_to(BCCD / sub / f"{i}.{ext}")
    (root / "ImageSets" / "Main" / "subset.txt").write_text("\n".join(ids) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\nformat: voc\ntrain: subset\nval: subset\nnames: {NAMES}\n")
    return data


def tiny_config(tmp_path: Path, data: Path, **over) -> TrainConfig:
    """A CPU run of the tiny model without augmentation, one optimiser step per batch, quiet outputs."""
    cfg = TrainConfig(
        model=TINY_MODEL,
        data=str(data),
        epochs=2,
        imgsz=96,
        batch=2,
        device="cpu",
        workers=0,
        project=str(tmp_path / "runs"),
        patience=0,
        plots=False,
        optim=OptimConfig(nbs=2, warmup_min_iters=2),
        augment=AugmentConfig.off(),
        val=ValConfig(plots=False),
    )
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def single_thread() -> None:
    """Engine tests run one torch thread each: on a shared 2-core machine this is many times faster."""
    torch.set_num_threads(1)
