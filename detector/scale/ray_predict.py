"""``predict_dataset``: detections for every image of a large set, from a pool of model actors on Ray Data.

The driver lists the images (``list_images``), Ray Data streams the paths through ``PredictActor``s (one model
each, one GPU each when there are GPUs), and the actors' rows are written as Parquet or JSON lines by the
workers themselves. Each input image yields exactly one row; an image that cannot be read yields a row with
its ``error``; an actor that dies is restarted by Ray and its batch retried. The run ends by counting the rows
written against the images listed, so nothing can go missing silently.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.scale.image_list import list_images

OUTPUT_FORMATS = ("parquet", "jsonl")
ROW_FIELDS = ("path", "width", "height", "boxes", "scores", "classes", "class_names", "error")
"""One output row per image: ``boxes`` is a list of [x1, y1, x2, y2] in original pixels; ``error`` is null
for an image that was read, else why it could not be (then ``width``/``height`` are 0 and the lists empty)."""


@dataclass
class ScaleRun:
    """What a ``predict_dataset`` run did: ``rows`` written to ``out`` for ``images`` listed."""

    out: Path
    images: int
    rows: int
    errors: int
    detections: int
    seconds: float
    workers: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.images} image(s) -> {self.rows} row(s) in {self.out} ({self.errors} unreadable, "
            f"{self.detections} detection(s)); {self.workers} worker(s), {self.seconds:.1f} s, "
            f"{self.images_per_s:.1f} images/s"
        )


def require_ray():
    """Import Ray (and its Data library), or stop with one sentence saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DetectorError("engine=ray needs Ray Data, which is not installed: pip install 'detector[ray]'") from None
    return ray


class PredictActor:
    """One model held for the actor's lifetime; Ray Data calls it on batches of ``{"path": ndarray[str]}``.

    ``fail_once`` is a test hook: the path of a marker file; the first actor to find it missing creates it and
    kills its own process, as a crashed worker would, so tests can check that Ray restarts it and retries.
    """

    def __init__(
        self, model: str, device: str | None, half: bool, predict_kwargs: dict, threads: int, fail_once: str | None
    ) -> None:
        import torch

        from detector.predict.detector import Detector

        torch.set_num_threads(max(1, threads))
        self.detector = Detector(model, device=device, half=half)
        self.names = self.detector.names
        self.kwargs = predict_kwargs
        self.fail_once = fail_once

    def __call__(self, batch: dict[str, np.ndarray]):
        from detector.predict.sources import read_image

        if self.fail_once and not os.path.exists(self.fail_once):
            Path(self.fail_once).touch()
            os._exit(1)  # a hard death, not an exception: what a segfault or an OOM kill looks like to Ray
        paths = [str(p) for p in batch["path"]]
        images: list[np.ndarray | None] = []
        errors: list[str | None] = []
        for p in paths:
            try:
                images.append(read_image(p))
                errors.append(None)
            except Exception as e:  # noqa: BLE001 - any decode failure becomes this image's error, not the batch's
                images.append(None)
                errors.append(str(e))
        good = [im for im in images if im is not None]
        results = iter(self.detector.predict(good, **self.kwargs) if good else [])
        rows = []
        for p, im, err in zip(paths, images, errors):
            rows.append(_row(p, next(results), self.names) if im is not None else _error_row(p, err))
        return _to_table(rows)


def _row(path: str, r, names: dict[int, str]) -> dict[str, Any]:
    h, w = r.orig_shape
    cls = [int(c) for c in r.cls]
    return {
        "path": path,
        "width": int(w),
        "height": int(h),
        "boxes": [[float(v) for v in b] for b in r.xyxy],
        "scores": [float(s) for s in r.scores],
        "classes": cls,
        "class_names": [names.get(c, str(c)) for c in cls],
        "error": None,
    }


def _error_row(path: str, error: str | None) -> dict[str, Any]:
    return {"path": path, "width": 0, "height": 0, "boxes": [], "scores": [], "classes": [], "class_names": [],
            "error": error or "unreadable"}  # fmt: skip


def row_schema():
    """The Arrow schema of the output rows (fixed, so empty batches and error rows keep the same types)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("boxes", pa.list_(pa.list_(pa.float32()))),
            ("scores", pa.list_(pa.float32())),
            ("classes", pa.list_(pa.int32())),
            ("class_names", pa.list_(pa.string())),
            ("error", pa.string()),
        ]
    )


def _to_table(rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=row_schema())


def _resources(ray, device: str | None, workers: int, threads: int) -> tuple[int, dict]:
    """How many actors, and what each asks of Ray: one GPU each when the run is on GPUs, else CPU threads."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    on_gpu = gpus > 0 and (device is None or str(device) not in ("cpu", ""))
    if on_gpu:
        return (workers or gpus), {"num_gpus": 1}
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return (workers or max(1, cpus // threads)), {"num_cpus": threads}


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DetectorError(f"{out}: output folder exists and is not empty; give a new out= folder")
    out.mkdir(parents=True, exist_ok=True)


def read_detections(out: str | Path):
    """The rows a ``predict_dataset`` run wrote to ``out`` (Parquet or JSON lines), as one ``pyarrow.Table``."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    out = Path(out)
    if any(out.rglob("*.parquet")):
        return pads.dataset(out, format="parquet").to_table()
    import pyarrow.json as pj

    options = pj.ParseOptions(explicit_schema=row_schema())
    tables = [pj.read_json(f, parse_options=options) for f in sorted(out.rglob("*.json*")) if f.stat().st_size]
    return pa.concat_tables(tables) if tables else row_schema().empty_table()


def _count_written(out: Path) -> tuple[int, int, int]:
    """(rows, rows with an error, detections) of what the workers wrote to ``out``."""
    table = read_detections(out).select(["error", "scores"])
    errors = table.num_rows - table.column("error").null_count
    detections = sum(len(s) for s in table.column("scores").to_pylist() if s)
    return table.num_rows, errors, detections


def predict_dataset(
    model: str | Path,
    source: str | Path | list,
    out: str | Path,
    *,
    workers: int = 0,
    batch: int = 8,
    conf: float | None = None,
    iou: float | None = None,
    imgsz: int | None = None,
    max_det: int | None = None,
    classes: list[int] | None = None,
    agnostic: bool | None = None,
    multi_label: bool | None = None,
    device: str | None = None,
    half: bool = False,
    out_format: str = "parquet",
    address: str | None = None,
    threads: int = 1,
    verbose: bool = True,
    fail_once: str | None = None,
) -> ScaleRun:
    """Run ``model`` (checkpoint, ONNX, TensorRT engine or zoo name) over every image of ``source`` on Ray.

    Writes one row per image (``ROW_FIELDS``) to the folder ``out`` as Parquet or JSON lines and returns what
    was done. ``workers`` actors (0: one per GPU when the cluster has GPUs, else one per ``threads`` CPUs),
    ``batch`` images per model call. NMS options and ``imgsz`` left None are the model's defaults, as in
    ``Detector.predict`` (docs/interfaces.md). ``address`` joins a running Ray cluster (then ``out`` and the images must
    be on storage every node sees); without it a local Ray instance is started on this machine only (loopback).
    ``verbose`` shows Ray Data's progress. Raises ``DetectorError`` when
    Ray is missing, the source has no images, ``out`` is not empty, or the rows written differ from the images
    listed.
    """
    if out_format not in OUTPUT_FORMATS:
        raise DetectorError(f"out_format={out_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    ray = require_ray()
    paths = list_images(source)
    out = Path(out)
    _prepare_out(out)
    if not ray.is_initialized():
        local = {} if address else {"_node_ip_address": "127.0.0.1"}
        ray.init(address=address or None, include_dashboard=False, logging_level="WARNING", **local)
    ray.data.DataContext.get_current().enable_progress_bars = bool(verbose)
    n_actors, resources = _resources(ray, device, int(workers), int(threads))
    predict_kwargs = {"conf": conf, "iou": iou, "imgsz": imgsz, "max_det": max_det, "classes": classes,
                      "agnostic": agnostic, "multi_label": multi_label, "batch": batch}  # fmt: skip
    t0 = time.perf_counter()
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, min(len(paths), 4 * n_actors)))
    ds = ds.map_batches(
        PredictActor,
        fn_constructor_kwargs={
            "model": str(model),
            "device": device,
            "half": half,
            "predict_kwargs": predict_kwargs,
            "threads": int(threads),
            "fail_once": fail_once,
        },  # fmt: skip
        batch_size=max(1, int(batch)),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n_actors),  # Ray Data restarts dead actors, retries their batches
        **resources,
    )
    if out_format == "parquet":
        ds.write_parquet(str(out))
    else:
        ds.write_json(str(out))
    seconds = time.perf_counter() - t0
    rows, errors, detections = _count_written(out)
    run = ScaleRun(out, len(paths), rows, errors, detections, seconds, n_actors)
    if rows != len(paths):
        raise DetectorError(f"{out}: {rows} row(s) written for {len(paths)} image(s); the output is incomplete")
    return run
