"""``detector predict ... engine=ray``: the predict command's keys, run through ``predict_dataset``."""

from __future__ import annotations

from pathlib import Path

from detector.scale.ray_predict import predict_dataset


def cli_predict_ray(cfg) -> int:
    """Run a ``PredictConfig`` with ``engine=ray``; prints the row check and images/s; returns the exit status."""
    from detector.engine.runs import increment_run_dir

    out = Path(cfg.out) if cfg.out else increment_run_dir(cfg.project, cfg.name, cfg.exist_ok) / "detections"
    run = predict_dataset(
        cfg.model, cfg.source, out, workers=cfg.workers, batch=cfg.batch, conf=cfg.conf, iou=cfg.iou,
        imgsz=cfg.imgsz, max_det=cfg.max_det, classes=cfg.classes, agnostic=cfg.agnostic,
        multi_label=cfg.multi_label, device=cfg.device,
        half=cfg.half, out_format=cfg.out_format, address=cfg.address or None, verbose=cfg.verbose,
    )  # fmt: skip
    print(run.summary())
    return 0
