"""Loaders: batch format, reproducibility across worker counts, rectangular validation, DDP shares, caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _data_synth import add_yolo_image, make_yolo, write_yaml

from detector.data.augment import AugmentConfig
from detector.data.loader import build_dataloader

TRAIN = AugmentConfig(blur=0, median_blur=0, to_gray=0, clahe=0)


def batches(loader, n=None):
    out = []
    for i, b in enumerate(loader):
        out.append(b)
        if n is not None and i + 1 == n:
            break
    return out


def assert_same(a, b):
    for key in ("img", "cls", "bboxes", "batch_idx"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert a["im_files"] == b["im_files"]


def test_train_batch_format(tmp_path):
    y = make_yolo(tmp_path, n=5, h=48, w=64)
    loader, ds = build_dataloader(y, "train", imgsz=64, batch=4, augment=TRAIN, workers=0)
    assert ds.names == ["a", "b", "c", "d"] and len(ds.labels) == 5 and ds.problems == []
    b = next(iter(loader))
    assert b["img"].dtype == torch.uint8 and b["img"].shape == (4, 3, 64, 64)
    n = len(b["cls"])
    assert b["cls"].dtype == torch.float32 and b["bboxes"].shape == (n, 4) and b["bboxes"].dtype == torch.float32
    assert b["batch_idx"].dtype == torch.long and b["batch_idx"].shape == (n,) and int(b["batch_idx"].max()) < 4
    assert (b["bboxes"][:, 2:] > b["bboxes"][:, :2]).all() and b["bboxes"].min() >= 0 and b["bboxes"].max() <= 64
    assert len(b["im_files"]) == len(b["ori_shapes"]) == len(b["ratio_pad"]) == len(b["image_ids"]) == 4
    assert b["ori_shapes"][0] == (48, 64) and "problems" not in b
    assert sum(len(x["im_files"]) for x in batches(loader)) == 5


def test_same_seed_same_batches_whatever_the_workers(tmp_path):
    y = make_yolo(tmp_path, n=6, h=48, w=64)
    kw = dict(imgsz=64, batch=3, augment=AugmentConfig(mixup=0.5))
    ref = batches(build_dataloader(y, "train", workers=0, seed=5, **kw)[0])
    two = batches(build_dataloader(y, "train", workers=2, seed=5, **kw)[0])
    for a, b in zip(ref, two):
        assert_same(a, b)
    other = batches(build_dataloader(y, "train", workers=0, seed=6, **kw)[0])
    assert not torch.equal(ref[0]["img"], other[0]["img"])


def test_epochs_change_order_and_draws_even_without_set_epoch(tmp_path):
    y = make_yolo(tmp_path, n=8, h=48, w=64)
    loader, ds = build_dataloader(y, "train", imgsz=64, batch=8, augment=TRAIN, workers=0)
    e0 = batches(loader)[0]
    e1 = batches(loader)[0]
    assert ds.epoch == 1 and e0["im_files"] != e1["im_files"]
    ds.set_epoch(0)
    assert_same(batches(loader)[0], e0)  # an explicit epoch replays it exactly


def test_close_mosaic_reaches_persistent_workers(tmp_path):
    y = make_yolo(tmp_path, n=4, h=64, w=64)
    cfg = AugmentConfig.off()
    cfg.mosaic, cfg.close_mosaic = 1.0, 1
    loader, ds = build_dataloader(y, "train", imgsz=64, batch=4, augment=cfg, workers=2)
    ds.set_epoch(0, total_epochs=2)
    assert ds.mosaic_enabled
    counts0 = np.bincount(batches(loader)[0]["batch_idx"].numpy(), minlength=4)
    ds.set_epoch(1, total_epochs=2)
    assert not ds.mosaic_enabled
    counts1 = np.bincount(batches(loader)[0]["batch_idx"].numpy(), minlength=4)
    assert counts0.max() > 4  # mosaic: boxes from several images
    assert (counts1 == 4).all()  # one image (4 boxes) per sample
    ds.set_epoch(0, total_epochs=10)
    assert ds.mosaic_enabled
    ds.close_mosaic()
    ds.set_epoch(1, total_epochs=10)
    assert not ds.mosaic_enabled  # closed for good


def test_rect_validation_batches_and_ratio_pad(tmp_path):
    shapes = [(96, 128), (128, 64), (100, 128), (64, 128), (128, 96)]
    for k, (h, w) in enumerate(shapes):
        add_yolo_image(tmp_path, "val", f"v{k}.png", h, w, [(k % 4, w * 0.1, h * 0.2, w * 0.6, h * 0.9)])
    y = write_yaml(tmp_path, {"val": "images/val", "names": list("abcd")})
    loader, ds = build_dataloader(y, "val", imgsz=64, batch=2, workers=0)
    labels = {im.file: im for im in ds.labels}
    seen = []
    for b in batches(loader):
        h, w = b["img"].shape[2:]
        assert h % 32 == 0 and w % 32 == 0 and max(h, w) == 64
        for i, f in enumerate(b["im_files"]):
            ratio, (pw, ph) = b["ratio_pad"][i]
            boxes = b["bboxes"][b["batch_idx"] == i].numpy()
            original = (boxes - [pw, ph, pw, ph]) / ratio
            np.testing.assert_allclose(original, labels[f].boxes, atol=1e-3)
            assert b["ori_shapes"][i] == labels[f].shape
            seen.append(f)
    assert sorted(seen) == sorted(labels)
    # portrait and landscape images do not share a batch: it would cost padding
    square, _ = build_dataloader(y, "val", imgsz=64, batch=2, workers=0, rect=False)
    assert all(b["img"].shape[2:] == (64, 64) for b in batches(square))


@pytest.mark.parametrize("augment", [TRAIN, None], ids=["train", "val-rect"])
def test_distributed_ranks_split_the_data(tmp_path, augment):
    y = make_yolo(tmp_path, n=8, h=48, w=64, split="train")
    files = []
    for rank in (0, 1):
        loader, _ = build_dataloader(y, "train", imgsz=64, batch=2, augment=augment, workers=0, rank=rank, world_size=2)
        files.append([f for b in batches(loader) for f in b["im_files"]])
    assert len(files[0]) == len(files[1]) == 4
    assert not set(files[0]) & set(files[1]) and len(set(files[0]) | set(files[1])) == 8


@pytest.mark.parametrize("cache", ["ram", "disk"])
def test_image_cache_gives_identical_batches(tmp_path, cache):
    y = make_yolo(tmp_path, n=4, h=48, w=64, ext=".jpg")
    plain = batches(build_dataloader(y, "train", imgsz=64, batch=2, workers=0)[0])
    loader, ds = build_dataloader(y, "train", imgsz=64, batch=2, workers=0, cache=cache)
    assert ds.image_cache.enabled and all(ds.image_cache.get(i) is not None for i in range(4))
    for a, b in zip(plain, batches(loader)):
        assert_same(a, b)
    if cache == "disk":
        assert len(list((tmp_path / ".cache" / "images-64-bgr").glob("*.npy"))) == 4


@pytest.mark.parametrize("workers", [0, 2])
def test_image_broken_after_validation_is_replaced_and_reported(tmp_path, workers):
    y = make_yolo(tmp_path, n=4, h=48, w=64)
    loader, ds = build_dataloader(y, "train", imgsz=64, batch=2, augment=TRAIN, workers=workers)
    broken = tmp_path / "images/train/img2.png"
    broken.write_bytes(b"garbage")  # breaks after validation, before the epoch
    got = batches(loader)
    assert sum(len(b["im_files"]) for b in got) == 4
    assert str(broken) not in [f for b in got for f in b["im_files"]]
    reports = [p for p in ds.problems if p["file"] == str(broken)]
    assert reports and "replaced by another image at load time" in reports[0]["problem"]
    assert Path(reports[0]["file"]).name == "img2.png"


def test_worker_defaults_follow_the_device(monkeypatch):
    from detector.data.loader import auto_workers

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert auto_workers(-1, "cuda", "train", cores=16) == 14  # a 16-core GPU machine: all but two cores
    assert auto_workers(-1, "cuda", "val", cores=16) == 7  # validation: fewer
    assert auto_workers(-1, "cpu", "train", cores=16) == 4 and auto_workers(-1, "cpu", "val", cores=16) == 2
    assert auto_workers(-1, "cuda", "train", cores=2) == 1
    assert auto_workers(6, "cuda", "train", cores=16) == 6 and auto_workers(6, "cpu", "train", cores=4) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # four torchrun processes share the node's cores
    assert auto_workers(-1, "cuda", "train", cores=34) == 8


def test_recent_images_store_reuses_decodes_and_keeps_samples_identical(tmp_path):
    """The per-process store of recent decodes changes no pixel, hands out read-only arrays, stays bounded."""
    from detector.data.augment import AugmentConfig
    from detector.data.dataset import DetectionDataset
    from detector.data.load import load_split
    from detector.data.recent_images import RecentImages

    labels = load_split(str(Path(__file__).resolve().parents[1] / "datasets" / "bccd"), "train")
    aug = AugmentConfig(mosaic=1.0)
    with_store = DetectionDataset(labels, imgsz=128, augment=aug, batch=2, seed=3)
    without = DetectionDataset(labels, imgsz=128, augment=aug, batch=2, seed=3)
    without.recent = RecentImages(0)
    assert with_store.recent.capacity == 16  # eight batches of 2
    for i in range(12):
        a, b = with_store[i], without[i]
        np.testing.assert_array_equal(a["img"], b["img"])
        np.testing.assert_array_equal(a["bboxes"], b["bboxes"])
    assert len(with_store.recent) == 16 and len(without.recent) == 0
    img, _ = with_store.load_image(next(iter(with_store.recent._items)))
    assert not img.flags.writeable


def test_samples_are_rgb(tmp_path):
    """The pipeline works in BGR internally; samples come out RGB, as ``read_image`` decodes (same letterbox)."""
    from detector.data.dataset import DetectionDataset
    from detector.data.image_io import read_image
    from detector.data.load import load_split

    labels = load_split(str(Path(__file__).resolve().parents[1] / "datasets" / "bccd"), "train")
    ds = DetectionDataset(labels, imgsz=640, augment=None, batch=1)
    rgb = read_image(labels.images[0].file)
    img = ds[0]["img"].transpose(1, 2, 0)
    assert img.shape[:2] == (640, 640) and rgb.shape[:2] == (480, 640)  # BCCD: 640x480, padded top and bottom
    top = (640 - 480) // 2
    np.testing.assert_array_equal(img[top : top + 480], rgb)


@pytest.mark.parametrize("in_worker", [False, True])
def test_stacked_batches_equal_numpy_stack(monkeypatch, in_worker):
    """Samples' RGB CHW views of BGR images are de-interleaved by OpenCV, other arrays copied: same bytes as
    ``np.stack``; in a worker the batch is allocated in shared memory."""
    import detector.data.collate as collate_module
    from detector.data.dataset import chw_rgb

    monkeypatch.setattr(collate_module, "get_worker_info", lambda: object() if in_worker else None)
    rng = np.random.default_rng(0)
    bgr = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8) for _ in range(3)]
    images = [chw_rgb(bgr[0]), chw_rgb(bgr[1][:, ::-1].copy()), np.ascontiguousarray(chw_rgb(bgr[2]))]
    images.append(chw_rgb(bgr[0][:, ::-1]))  # a strided BGR view: numpy copies it
    out = collate_module.stack_images(images)
    assert out.dtype == torch.uint8 and out.shape == (4, 3, 37, 53) and out.is_shared() == in_worker
    np.testing.assert_array_equal(out.numpy(), np.stack(images))
    np.testing.assert_array_equal(out[0].numpy(), bgr[0][..., ::-1].transpose(2, 0, 1))
    with pytest.raises(ValueError, match="image 1 is uint8 \\(3, 37, 52\\)"):
        collate_module.stack_images([images[0], images[0][:, :, :52]])
