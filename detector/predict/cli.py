"""``detector predict model=... source=... [save=True] [save_txt=True] [save_json=True] ...``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

import cv2
from tqdm import tqdm

from detector.config import ConfigError, Range
from detector.predict.detector import Detector
from detector.predict.results import Results
from detector.predict.sources import VIDEO_SUFFIXES, expand_paths, output_name, source_root, video_frame_count

WRITABLE_IMAGES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
"""Annotated images keep their source's name when OpenCV can write that format, else get ``.jpg`` appended."""


@dataclass
class PredictConfig:
    """Command-line settings of ``detector predict`` (every key is ``key=value``)."""

    model: str = ""  # .pt checkpoint, .onnx / .engine export, zoo name or model YAML
    source: str = ""  # file, directory (recursive), glob, video, image URL, rtsp/http stream, webcam index (0)
    # NMS and size: None = the model's defaults (NMSConfig.predict: conf 0.25, iou 0.7, max_det 300, one label
    # per box; an exported model's own config and size)
    conf: float | None = None
    iou: float | None = None
    imgsz: int | None = None
    max_det: int | None = None
    classes: list[int] | None = None
    agnostic: bool | None = None
    multi_label: bool | None = None
    batch: int = 1  # images per forward
    device: str | None = None  # cpu, 0, cuda:1 (default: GPU when there is one)
    half: bool = False  # fp16 on CUDA
    save: bool = True  # annotated images / videos
    save_txt: bool = False  # YOLO txt labels (with confidence) per image
    save_json: bool = False  # predictions.json with every image's detections
    project: str = "runs/predict"
    name: str = "exp"
    exist_ok: bool = False
    verbose: bool = True
    engine: str = "local"  # local: this process; ray: a pool of model actors on Ray Data (detector[ray])
    workers: int = 0  # engine=ray: actors (0: one per GPU, else one per CPU)
    out: str = ""  # engine=ray: output folder of Parquet / JSON-lines rows (default: the run directory)
    out_format: str = "parquet"  # engine=ray: parquet | jsonl
    address: str = ""  # engine=ray: a running Ray cluster to join (default: start a local one)

    limits: ClassVar[dict[str, Range]] = {
        "conf": Range(0, 1), "iou": Range(0, 1), "max_det": Range(1), "imgsz": Range(32), "batch": Range(1),
    }  # fmt: skip


def _expected_frames(source: str) -> int | None:
    """How many frames a path source holds (for the progress bar); None when unknown."""
    try:
        paths = expand_paths(source)
    except Exception:  # noqa: BLE001 - the Detector reports a bad source with a proper message
        return None
    return sum(video_frame_count(p) if p.suffix.lower() in VIDEO_SUFFIXES else 1 for p in paths)


def _remote_name(path: str) -> Path:
    """The output name of a URL (the last part of its path) or a webcam (``webcam0``)."""
    name = Path(urlparse(path).path).name if "://" in path else path
    return Path("".join(ch for ch in name if ch.isalnum() or ch in "-_.") or "stream")


class _Writer:
    """Writes what ``predict`` was asked to save into one run directory."""

    def __init__(self, cfg: PredictConfig, out_dir: Path) -> None:
        self.cfg, self.dir = cfg, out_dir
        self.root = source_root(cfg.source)
        self.videos: dict[str, cv2.VideoWriter] = {}
        self.records: list[dict] = []
        self.count = 0

    def add(self, r: Results) -> None:
        # the source's sub-path, so a/x.jpg and b/x.jpg do not overwrite each other; URLs and webcams by name
        if not r.path:
            rel = Path(f"image{self.count}.jpg")
        elif "://" in r.path or r.path.startswith("webcam "):
            rel = _remote_name(r.path)
        else:
            rel = output_name(r.path, self.root)
        self.count += 1
        if self.cfg.save:
            if r.frame is None:
                r.save(self.dir / (rel if rel.suffix.lower() in WRITABLE_IMAGES else rel.with_name(rel.name + ".jpg")))
            else:
                self._video(r, rel).write(r.plot())
        if self.cfg.save_txt:
            stem = rel.with_suffix("") if r.frame is None else rel.with_name(f"{rel.stem}_{r.frame}")
            r.save_txt(self.dir / "labels" / stem.with_name(stem.name + ".txt"), save_conf=True)
        if self.cfg.save_json:
            self.records.append(r.to_dict())

    def _video(self, r: Results, rel: Path) -> cv2.VideoWriter:
        if r.path not in self.videos:
            fps = 25.0  # streams and webcams: not re-opened just to ask
            if Path(r.path).is_file():
                cap = cv2.VideoCapture(r.path)
                fps = cap.get(cv2.CAP_PROP_FPS) or fps
                cap.release()
            h, w = r.orig_shape
            target = self.dir / rel.with_suffix(".avi")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.videos[r.path] = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
        return self.videos[r.path]

    def close(self) -> None:
        for v in self.videos.values():
            v.release()
        if self.cfg.save_json:
            (self.dir / "predictions.json").write_text(json.dumps(self.records))


def cli_predict(argv: list[str]) -> int:
    """Run ``detector predict``; returns the exit status."""
    from detector.cli_args import mode_args
    from detector.engine.runs import increment_run_dir

    cfg = mode_args("predict", argv)
    if cfg is None:
        return 0
    if not cfg.model or not cfg.source:
        raise ConfigError("detector predict: give model=CKPT_OR_NAME and source=PATH (file, directory, glob or video)")
    if cfg.engine == "ray":
        from detector.scale.cli import cli_predict_ray

        return cli_predict_ray(cfg)
    if cfg.engine != "local":
        raise ConfigError(f"detector predict: engine={cfg.engine!r} is not one of local, ray")
    det = Detector(cfg.model, device=cfg.device, half=cfg.half)
    out_dir = increment_run_dir(cfg.project, cfg.name, cfg.exist_ok)
    writer = _Writer(cfg, out_dir)
    total = _expected_frames(cfg.source)
    stream = det.predict(
        cfg.source, conf=cfg.conf, iou=cfg.iou, imgsz=cfg.imgsz, max_det=cfg.max_det, classes=cfg.classes,
        batch=cfg.batch, stream=True, agnostic=cfg.agnostic, multi_label=cfg.multi_label,
    )  # fmt: skip
    n = dets = 0
    try:
        for r in tqdm(stream, total=total, unit="img", disable=not cfg.verbose or (total or 0) <= 1):
            writer.add(r)
            n += 1
            dets += len(r)
    finally:
        writer.close()
    print(f"{n} image(s)/frame(s), {dets} detection(s); skipped {len(det.skipped)}; results in {out_dir}")
    for path, reason in det.skipped:
        print(f"  skipped {path}: {reason}")
    return 0
