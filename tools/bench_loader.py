"""Training data-loader throughput: images/s of ``build_dataloader`` with mosaic at 640 (default on BCCD).

    python tools/bench_loader.py                       # BCCD train, 640, batch 16, 2 workers, mosaic on
    python tools/bench_loader.py --workers 0 --cache ram
    python tools/bench_loader.py --compare-albumentations   # augmentation alone, ours vs albumentations 2.x
    python tools/bench_loader.py --compare-ultralytics      # ours vs Ultralytics' loader, same data, one run
    python tools/bench_loader.py --cpu-per-sample           # CPU ms one process spends per sample (+ collate)
    python tools/bench_loader.py --profile                  # CPU ms per sample by stage (with Ultralytics if found)

``--compare-ultralytics`` needs ``ultralytics`` importable next to this project (it is not a dependency); it
writes a YOLO-format copy of the split (image symlinks, txt labels) to a temporary folder, then alternates
rounds of the two loaders (same size, batch, workers, mosaic and augmentation defaults) and reports each one's
median images/s, plus the CPU time one process spends per sample (decode + augment + collate, no workers).
The copy is removed when the script exits.

``--profile`` runs in one process (OpenCV and torch on one thread, as in a loader worker) and wraps each stage's function with a CPU-time
counter (time inside a nested wrapped call counts for the inner stage only): decode, resize, mosaic, warp,
HSV, flips, extras (albumentations), layout (HWC -> CHW), collate, and transfer (moving a collated batch into
shared memory, what a worker pays to hand it over; ours collates straight into shared memory in workers). It
also counts JPEG decodes per sample and measures the main process's CPU per sample while a real worker pool
feeds it (receiving batches). Ultralytics is profiled the same way when it is importable.

The first batches (worker start-up, first decode) are excluded; the rate is over the following batches,
cycling epochs as needed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.data.augment import AugmentConfig  # noqa: E402
from detector.data.loader import build_dataloader  # noqa: E402


def bench_loader(args: argparse.Namespace) -> dict:
    aug = AugmentConfig(mosaic=0.0 if args.no_mosaic else 1.0, mixup=args.mixup)
    loader, ds = build_dataloader(
        args.data, args.split, imgsz=args.imgsz, batch=args.batch, augment=aug, workers=args.workers, cache=args.cache
    )
    it, epoch = iter(loader), 0

    def next_batch():
        nonlocal it, epoch
        try:
            return next(it)
        except StopIteration:
            epoch += 1
            ds.set_epoch(epoch)
            it = iter(loader)
            return next(it)

    for _ in range(args.warmup):
        next_batch()
    images, t0 = 0, time.perf_counter()
    for _ in range(args.batches):
        images += len(next_batch()["im_files"])
    dt = time.perf_counter() - t0
    return {
        "images_per_s": round(images / dt, 1),
        "images": images,
        "seconds": round(dt, 2),
        "imgsz": args.imgsz,
        "batch": args.batch,
        "workers": args.workers,
        "mosaic": not args.no_mosaic,
        "cache": args.cache,
        "cpus": os.cpu_count(),
    }


def compare_albumentations(args: argparse.Namespace, n: int = 60, rounds: int = 3) -> dict:
    """One process, decoded images in memory: our mosaic + warp vs albumentations Mosaic + Affine + CenterCrop."""
    import albumentations as A
    import cv2
    import numpy as np

    from detector.data.augment import TrainAugment
    from detector.data.image_io import read_image, resize_long_side
    from detector.data.load import load_split
    from detector.data.targets import Targets

    cv2.setNumThreads(1)
    s = args.imgsz
    ls = load_split(args.data, args.split)
    items = []
    for im in ls.images[:32]:
        img, r = resize_long_side(read_image(im.file), s)
        items.append((img, im.boxes * r, im.cls))
    ours = TrainAugment(AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, blur=0, median_blur=0, to_gray=0, clahe=0), s)
    theirs = A.Compose(
        [
            A.Mosaic(target_size=(2 * s, 2 * s), cell_shape=(s, s), fit_mode="contain", fill=114, p=1.0),
            A.Affine(scale=(0.5, 1.5), translate_percent=(-0.1, 0.1), fill=114, p=1.0),
            A.CenterCrop(s, s),
            A.HorizontalFlip(p=0.5),
        ],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["cls"], min_area=4, clip=True),
        seed=0,
    )
    rng = np.random.default_rng(0)

    def run_ours(i):
        return ours(lambda j: (items[j][0], Targets.of(items[j][2], items[j][1])), i, len(items), rng)

    def run_theirs(i):
        meta = [
            {"image": items[j][0], "bboxes": items[j][1], "cls": items[j][2]} for j in rng.integers(len(items), size=3)
        ]
        img, b, c = items[i]
        return theirs(image=img, bboxes=b, cls=c, mosaic_metadata=meta)

    best = {}
    for _ in range(rounds):  # best of a few rounds: the machine is shared
        for name, fn in (("ours_cv2", run_ours), ("albumentations", run_theirs)):
            t0 = time.perf_counter()
            for i in range(n):
                fn(i % len(items))
            best[name] = max(best.get(name, 0.0), round(n / (time.perf_counter() - t0), 1))
    return {"augment_images_per_s_one_process": best, "imgsz": s}


def yolo_copy(data: str, split: str, root: Path) -> tuple[Path, list[str]]:
    """The split as a YOLO dataset under ``root`` (``images/*.jpg`` symlinks, ``labels/*.txt``) and its names."""
    from detector.data.load import load_split

    ls = load_split(data, split)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for im in ls.images:
        src = Path(im.file)
        (root / "images" / src.name).symlink_to(src.resolve())
        h, w = im.shape
        b = im.boxes
        xc, yc, bw, bh = (
            (b[:, 0] + b[:, 2]) / 2 / w,
            (b[:, 1] + b[:, 3]) / 2 / h,
            (b[:, 2] - b[:, 0]) / w,
            (b[:, 3] - b[:, 1]) / h,
        )
        rows = [f"{int(c)} {x:.6f} {y:.6f} {ww:.6f} {hh:.6f}" for c, x, y, ww, hh in zip(im.cls, xc, yc, bw, bh)]
        (root / "labels" / f"{src.stem}.txt").write_text("\n".join(rows) + "\n")
    return root / "images", list(ls.names)


def ultralytics_loader(args: argparse.Namespace):
    """Ultralytics' training dataset and loader on a YOLO copy of the split: ``(dataset, loader)``."""
    import tempfile

    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader as ul_dataloader
    from ultralytics.data.build import build_yolo_dataset

    root = Path(tempfile.mkdtemp(prefix="bench_loader_yolo_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    images, names = yolo_copy(args.data, args.split, root)
    cfg = get_cfg(overrides={"imgsz": args.imgsz, "mosaic": 1.0, "mixup": 0.0, "cache": False, "workers": args.workers})
    ul_set = build_yolo_dataset(cfg, str(images), args.batch, {"names": names, "nc": len(names), "channels": 3})
    return ul_set, ul_dataloader(ul_set, args.batch, args.workers, shuffle=True, pin_memory=False)


def our_train_loader(args: argparse.Namespace, workers: int | None = None):
    """Our training loader with the same settings: ``(dataset, loader)``, mosaic on for many epochs (``--augment``
    overrides applied)."""
    import yaml

    from detector.config import build

    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.augment)}
    aug = build(AugmentConfig, {"mosaic": 1.0, "mixup": 0.0, **overrides}, "augment")
    loader, ds = build_dataloader(
        args.data, args.split, imgsz=args.imgsz, batch=args.batch, augment=aug,
        workers=args.workers if workers is None else workers,
    )  # fmt: skip
    ds.set_epoch(0, 1000)
    return ds, loader


def compare_ultralytics(args: argparse.Namespace) -> dict:
    """Ours vs Ultralytics' training loader on the same images: images/s (median of alternating rounds) and
    the CPU seconds one process spends per sample."""
    import statistics

    load_start = os.getloadavg()
    ul_set, ul_loader = ultralytics_loader(args)
    our_set, our_loader = our_train_loader(args)
    streams = {"ours": _cycle(our_loader, our_set), "ultralytics": _cycle(ul_loader, None)}
    rates: dict[str, list[float]] = {k: [] for k in streams}
    # each round first drains what the other loader's workers queued meanwhile (prefetch: 2-4 batches per
    # worker), so the timed batches are produced while this loader alone has the CPUs
    drain = max(args.warmup, 4 * max(args.workers, 1) + 2)
    for _ in range(args.rounds):
        for k, it in streams.items():
            for _ in range(drain):
                next(it)
            t0 = time.perf_counter()
            n = sum(len(next(it)["im_file" if k == "ultralytics" else "im_files"]) for _ in range(args.batches))
            rates[k].append(n / (time.perf_counter() - t0))
    passes = {"ours": _cpu_passes(our_train_loader(args, workers=0)[1]), "ultralytics": _cpu_passes(ul_loader)}
    cpu: dict[str, list[float]] = {k: [] for k in passes}
    for _ in range(args.rounds):  # alternating too
        for k, one_pass in passes.items():
            cpu[k].append(one_pass() * 1000)
    return {
        "images_per_s_median": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "images_per_s_rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "cpu_ms_per_sample_one_process": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
        "cpu_ms_per_sample_rounds": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
        "imgsz": args.imgsz, "batch": args.batch, "workers": args.workers, "cpus": os.cpu_count(),
        "ours_augment": args.augment, "load_average_start_end": [load_start, os.getloadavg()],
    }  # fmt: skip


class StageTimer:
    """CPU seconds per named stage, by wrapping functions; a nested wrapped call counts for its own stage only
    (exclusive time), so the stages add up to at most the total."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._open: list[float] = []  # per open wrapped call: CPU time its wrapped children took
        self._undo: list = []

    def timed(self, fn, stage: str):
        def run(*args, **kwargs):
            self._open.append(0.0)
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.process_time() - t0
                self.cpu[stage] = self.cpu.get(stage, 0.0) + dt - self._open.pop()
                self.calls[stage] = self.calls.get(stage, 0) + 1
                if self._open:
                    self._open[-1] += dt

        return run

    def wrap(self, owner, name: str, stage: str) -> None:
        """Replace ``owner.name`` (a module function or a class's method) by its timed version until ``restore``."""
        own = name in vars(owner)
        self._undo.append((owner, name, vars(owner).get(name), own))
        setattr(owner, name, self.timed(getattr(owner, name), stage))

    def restore(self) -> None:
        for owner, name, fn, own in reversed(self._undo):
            setattr(owner, name, fn) if own else delattr(owner, name)
        self._undo.clear()


def _profile_samples(loader, timer: StageTimer, n: int, warmup: int) -> dict:
    """Run ``n`` samples (after ``warmup``) of ``loader``'s batches in this process: ``dataset[i]`` + collate +
    the hand-over into shared memory; CPU ms per sample by stage (``other``: what no stage covers: labels,
    bookkeeping, Python)."""
    import torch

    collate_fn = timer.timed(loader.collate_fn, "collate")
    to_shared = timer.timed(
        lambda b: [v.share_memory_() for v in b.values() if isinstance(v, torch.Tensor) and not v.is_shared()],
        "transfer",
    )
    batches, done = _index_batches(loader), 0
    with one_thread():
        while done < warmup:
            done += len(idx := next(batches))
            collate_fn([loader.dataset[i] for i in idx])
        timer.cpu.clear(), timer.calls.clear()
        t0, done = time.process_time(), 0
        while done < n:
            done += len(idx := next(batches))
            to_shared(collate_fn([loader.dataset[i] for i in idx]))
        total = time.process_time() - t0
    stages = {k: v * 1000 / done for k, v in timer.cpu.items()}
    stages["other"] = (total - sum(timer.cpu.values())) * 1000 / done
    return {"total": total * 1000 / done, **stages, "decodes": timer.calls.get("decode", 0) / done}


@contextlib.contextmanager
def one_thread():
    """OpenCV and torch on one thread, as in a loader worker (torch's DataLoader sets 1 thread in its workers; a
    multi-threaded ``torch.stack`` in this process would spin and bill CPU time a worker never spends)."""
    import cv2
    import torch

    cv, th = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(cv)
        torch.set_num_threads(th)


def _index_batches(loader):
    """The index lists ``loader`` would hand its workers, epoch after epoch (each epoch's sampler hooks run)."""
    while True:
        yield from loader.batch_sampler


def _main_process_ms(loader, dataset, batches: int, warmup: int) -> float:
    """CPU ms per image the main process spends receiving batches from a worker pool (unpickling, shared memory)."""
    it = _cycle(loader, dataset)
    for _ in range(warmup):
        next(it)
    t0, images = time.process_time(), 0
    for _ in range(batches):
        b = next(it)
        images += len(b.get("im_files", b.get("im_file", ())))
    return round((time.process_time() - t0) * 1000 / images, 3)


def _our_stages(timer: StageTimer) -> None:
    import detector.data.augment as aug
    import detector.data.dataset as ds

    for owner, name, stage in (
        (ds, "read_image", "decode"), (ds, "resize_long_side", "resize"), (aug, "mosaic_into", "mosaic"),
        (aug, "letterbox_sample", "letterbox"), (aug, "warp_matrix", "warp"), (aug, "source_window", "warp"),
        (aug, "warp", "warp"), (aug, "resize_crop", "warp"), (aug, "hsv_jitter", "hsv"), (aug, "flip_lr", "flip"),
        (aug, "flip_ud", "flip"), (aug.TrainAugment, "_in_rgb", "extras"), (ds, "chw_rgb", "layout"),
    ):  # fmt: skip
        timer.wrap(owner, name, stage)


def _ultralytics_stages(timer: StageTimer) -> None:
    import ultralytics.data.augment as aug
    import ultralytics.data.base as base

    for owner, name, stage in (
        (base, "imread", "decode"), (base.BaseDataset, "load_image", "resize"),
        (aug.Mosaic, "apply_image", "mosaic"), (aug.Mosaic, "apply_instances", "mosaic"),
        (aug.RandomPerspective, "__call__", "warp"), (aug.RandomHSV, "__call__", "hsv"),
        (aug.RandomFlip, "__call__", "flip"), (aug.Albumentations, "__call__", "extras"),
        (aug.Format, "__call__", "layout"),
    ):  # fmt: skip
        timer.wrap(owner, name, stage)


def profile(args: argparse.Namespace, n: int = 192, warmup: int = 160) -> dict:
    """Per-stage CPU ms per sample, ours and (when importable) Ultralytics', in this process, in alternating
    rounds (median per stage); see the module docstring."""
    import statistics

    import detector.data.collate as ours_collate

    _, our_loader = our_train_loader(args, workers=0)
    sides = {"ours": (our_loader, _our_stages)}
    try:
        sides["ultralytics"] = (ultralytics_loader(args)[1], _ultralytics_stages)
    except ImportError:
        pass
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    real_info = vars(ours_collate)["get_worker_info"]
    for _ in range(args.rounds):
        for name, (loader, stages) in sides.items():
            timer = StageTimer()
            stages(timer)
            ours_collate.get_worker_info = lambda: True  # collate as in a worker: straight into shared memory
            try:
                runs[name].append(_profile_samples(loader, timer, n, warmup))
            finally:
                timer.restore()
                ours_collate.get_worker_info = real_info
    result: dict = {
        name: {k: round(statistics.median(r[k] for r in rs), 2) for k in sorted(rs[0], key=lambda k: -rs[0][k])}
        for name, rs in runs.items()
    }
    result["total_rounds"] = {name: [round(r["total"], 2) for r in rs] for name, rs in runs.items()}
    if args.workers > 0:
        our_set, our_workers = our_train_loader(args)
        result["main_process_ms_per_sample"] = {"ours": _main_process_ms(our_workers, our_set, args.batches, 4)}
        del our_workers
        if "ultralytics" in sides:
            ul_loader = sides["ultralytics"][0]  # built with workers; only its index batches were used so far
            result["main_process_ms_per_sample"]["ultralytics"] = _main_process_ms(ul_loader, None, args.batches, 4)
    unit = "CPU ms per sample by stage (median of rounds); decodes: JPEG decodes per sample"
    return {"unit": unit, **result, "imgsz": args.imgsz, "batch": args.batch, "samples": n, "workers": args.workers,
            "load_average": os.getloadavg()}  # fmt: skip


def cpu_per_sample(args: argparse.Namespace) -> dict:
    """CPU milliseconds per training sample (decode, augment, collate) in this process, no workers."""
    aug = AugmentConfig(mosaic=0.0 if args.no_mosaic else 1.0, mixup=args.mixup)
    loader, ds = build_dataloader(args.data, args.split, imgsz=args.imgsz, batch=args.batch, augment=aug, workers=0)
    ds.set_epoch(0, 1000)
    return {"cpu_ms_per_sample_one_process": round(_cpu_per_sample(loader) * 1000, 2), "imgsz": args.imgsz}


def _cycle(loader, dataset):
    epoch = 0
    while True:
        yield from loader
        epoch += 1
        if dataset is not None:
            dataset.set_epoch(epoch)


def _cpu_per_sample(loader) -> float:
    """CPU seconds per sample of ``dataset[i]`` + collate in this process: the median of 3 ``_cpu_passes``."""
    import statistics

    one_pass = _cpu_passes(loader)
    return statistics.median(one_pass() for _ in range(3))


def _cpu_passes(loader, warmup: int = 160):
    """A function timing one pass of 64 samples (``dataset[i]`` + collate over ``loader``'s index batches, in
    this process, ``one_thread``) in CPU seconds per sample, after ``warmup`` samples, so stores of recent
    decodes are in their steady state (Ultralytics' buffer holds the last 8 batches, 128 images at batch 16)."""
    batches = _index_batches(loader)

    def run(count: int) -> float:
        with one_thread():
            t0, done = time.process_time(), 0
            while done < count:
                done += len(idx := next(batches))
                loader.collate_fn([loader.dataset[i] for i in idx])
            return (time.process_time() - t0) / done

    run(warmup)
    return lambda: run(64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "datasets" / "bccd"))
    p.add_argument("--split", default="train")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=30, help="timed batches")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (--compare-ultralytics, --profile)")
    p.add_argument(
        "--augment",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="augment setting for our loader in --compare-ultralytics / --profile, e.g. resize_warp=false",
    )
    p.add_argument("--cache", choices=["ram", "disk"], default=None)
    p.add_argument("--no-mosaic", action="store_true")
    p.add_argument("--mixup", type=float, default=0.0)
    p.add_argument("--compare-albumentations", action="store_true")
    p.add_argument("--compare-ultralytics", action="store_true")
    p.add_argument("--cpu-per-sample", action="store_true", help="less sensitive to a busy machine than images/s")
    p.add_argument("--profile", action="store_true", help="CPU ms per sample by stage, ours and Ultralytics'")
    args = p.parse_args()
    if args.profile:
        result = profile(args)
    elif args.cpu_per_sample:
        result = cpu_per_sample(args)
    elif args.compare_ultralytics:
        result = compare_ultralytics(args)
    else:
        result = compare_albumentations(args) if args.compare_albumentations else bench_loader(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
