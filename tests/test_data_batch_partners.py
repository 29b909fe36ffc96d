"""Mosaic partners from the sample's own batch: the batch table, partner draws, and what the loader promises
(same batches whatever the workers, partners that vary by epoch, resume, DDP shares, rect/val untouched)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _data_synth import make_yolo

from detector.data.augment import AugmentConfig
from detector.data.batch_groups import BatchGroups, draw_partners
from detector.data.dataset import DetectionDataset
from detector.data.load import load_split
from detector.data.loader import build_dataloader

MOSAIC = AugmentConfig(blur=0, median_blur=0, to_gray=0, clahe=0, mosaic=1.0)


def record_loads(ds: DetectionDataset) -> list[int]:
    """Every image index ``ds`` loads from now on (in this process), in order."""
    seen: list[int] = []
    load = ds._load_usable

    def recorded(i):
        seen.append(i)
        return load(i)

    ds._load_usable = recorded
    return seen


def index_batches(loader, ds, epochs):
    """``[(batch indices, indices loaded while building it)]`` over ``epochs`` epochs of a ``workers=0`` loader."""
    where = {im.file: i for i, im in enumerate(ds.labels)}
    seen, out = record_loads(ds), []
    for _ in range(epochs):
        for b in loader:
            out.append(([where[f] for f in b["im_files"]], list(seen)))
            seen.clear()
    return out


def test_batch_groups_cut_the_order_like_the_loader():
    g = BatchGroups(10, 4)
    assert g.members(3) is None  # no epoch order yet
    g.assign([9, 2, 5, 0, 7, 1, 4, 8, 3, 6])
    assert g.members(5).tolist() == [9, 2, 5, 0] and g.members(7).tolist() == [7, 1, 4, 8]
    assert g.members(6).tolist() == [3, 6]  # the last, shorter batch
    g.assign([4, 1, 0])  # a rank's share: the others are not this rank's this epoch
    assert g.members(0).tolist() == [4, 1, 0] and g.members(9) is None
    g.assign([1, 2, 1])  # a distributed sampler's padding repeats indices: the last occurrence counts
    assert g.members(1).tolist() == [1, 2, 1]
    with pytest.raises(ValueError, match="indices of 0..9"):
        g.assign([3, 10])


def test_partners_are_distinct_batch_mates_or_dataset_draws():
    pool = np.array([7, 3, 11, 5, 8])
    for seed in range(20):
        got = draw_partners(3, 100, 3, np.random.default_rng(seed), pool)
        assert len(set(got)) == 3 and set(got) <= {7, 11, 5, 8}
    # a batch with fewer than 3 others, or no batch: the whole dataset, drawn exactly as without batches
    for pool in (np.array([3, 4]), None):
        assert (
            draw_partners(3, 100, 3, np.random.default_rng(1), pool)
            == np.random.default_rng(1).integers(100, size=3).tolist()
        )


def test_mosaic_partners_come_from_the_own_batch_and_vary_by_epoch(tmp_path):
    y = make_yolo(tmp_path, n=12, h=32, w=32)
    loader, ds = build_dataloader(y, "train", imgsz=32, batch=4, augment=MOSAIC, workers=0)
    partners: dict[int, list[set[int]]] = {i: [] for i in range(12)}
    for batch, loaded in index_batches(loader, ds, epochs=6):
        assert set(loaded) == set(batch) and len(loaded) == 4 * len(batch)  # 4 images per mosaic, all batch mates
        for k, i in enumerate(batch):
            mine = loaded[4 * k : 4 * k + 4]
            assert mine[0] == i and i not in mine[1:] and len(set(mine[1:])) == 3
            partners[i].append(set(mine[1:]))
    for per_epoch in partners.values():
        assert len(per_epoch) == 6 and len({frozenset(p) for p in per_epoch}) >= 4  # new partners most epochs
        assert len(set().union(*per_epoch)) >= 8  # over 6 epochs most of the other 11 images


def test_dataset_partners_unchanged_and_batch_partners_cut_decodes(tmp_path, monkeypatch):
    """``mosaic_partners: dataset`` draws as before (anywhere); outside a loader's epoch order the batch mode falls
    back to the same draws, so its samples equal the dataset mode's; inside it, decodes drop to ~1 per sample."""
    import detector.data.dataset as dataset_module

    y = make_yolo(tmp_path, n=16, h=48, w=64, ext=".jpg")
    ls = load_split(y, "train")
    anywhere = AugmentConfig(mosaic=1.0, mixup=0.5, mosaic_partners="dataset")
    plain = DetectionDataset(ls, imgsz=64, augment=anywhere, batch=4, seed=2)
    assert plain.batch_groups is None
    batched = DetectionDataset(ls, imgsz=64, augment=AugmentConfig(mosaic=1.0, mixup=0.5), batch=4, seed=2)
    for i in (0, 5, 11):
        a, b = plain[i], batched[i]
        np.testing.assert_array_equal(a["img"], b["img"])
        np.testing.assert_array_equal(a["bboxes"], b["bboxes"])
    decodes: list[str] = []
    read = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda f, **kw: decodes.append(f) or read(f, **kw))
    cfg = AugmentConfig(mosaic=1.0, blur=0, median_blur=0, to_gray=0, clahe=0)
    rates = {}
    for mode in ("dataset", "batch"):
        cfg.mosaic_partners = mode
        loader, ds = build_dataloader(y, "train", imgsz=64, batch=4, augment=cfg, workers=0, seed=1)
        ds.recent.capacity = 4  # one batch: what a large dataset leaves the store to reuse
        decodes.clear()
        for _ in range(2):  # two epochs of 16 samples
            for _ in loader:
                pass
        rates[mode] = len(decodes) / 32
    assert rates["batch"] <= 1.0 and rates["dataset"] > 2.0, rates  # (a store hit across the epoch boundary)


def test_same_batches_whatever_the_workers_and_after_a_resume(tmp_path):
    y = make_yolo(tmp_path, n=10, h=32, w=48)
    kw = dict(imgsz=32, batch=4, augment=AugmentConfig(mosaic=1.0, mixup=0.3), seed=4)
    loader0, ds0 = build_dataloader(y, "train", workers=0, **kw)
    loader2, ds2 = build_dataloader(y, "train", workers=2, **kw)
    for epoch in range(3):
        ds0.set_epoch(epoch, 20), ds2.set_epoch(epoch, 20)
        for a, b in zip(loader0, loader2, strict=True):
            for key in ("img", "cls", "bboxes", "batch_idx"):
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
            last = a
    resumed, ds = build_dataloader(y, "train", workers=2, **kw)  # a resumed run starts at its next epoch
    ds.set_epoch(2, 20)
    final = list(resumed)[-1]
    torch.testing.assert_close(final["img"], last["img"], rtol=0, atol=0)
    assert final["im_files"] == last["im_files"]


def test_distributed_ranks_take_partners_from_their_own_batches(tmp_path):
    y = make_yolo(tmp_path, n=16, h=32, w=32)
    shares = []
    for rank in (0, 1):
        loader, ds = build_dataloader(y, "train", imgsz=32, batch=4, augment=MOSAIC, workers=0, rank=rank, world_size=2)
        got = index_batches(loader, ds, epochs=1)
        for batch, loaded in got:
            assert set(loaded) == set(batch)
        shares.append({i for batch, _ in got for i in batch})
    assert len(shares[0]) == len(shares[1]) == 8 and not shares[0] & shares[1]


def test_rect_training_and_validation_have_no_batch_table(tmp_path):
    y = make_yolo(tmp_path, n=4, h=32, w=64)
    assert build_dataloader(y, "train", imgsz=64, batch=2, augment=MOSAIC, workers=0, rect=True)[1].batch_groups is None
    assert build_dataloader(y, "train", imgsz=64, batch=2, workers=0)[1].batch_groups is None
    off = AugmentConfig.off()
    assert off.mosaic_partners == "batch"
    assert build_dataloader(y, "train", imgsz=64, batch=2, augment=off, workers=0)[1].batch_groups is None
