"""Augmentation: boxes follow every geometric transform (drawn-box tests); degenerate boxes are dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _data_synth import PALETTE, draw, make_yolo

from detector.config import ConfigError, build
from detector.data.augment import AugmentConfig, TrainAugment, flip_lr, flip_ud, hsv_jitter
from detector.data.dataset import DetectionDataset
from detector.data.geometry import source_window, warp, warp_matrix
from detector.data.load import load_split
from detector.data.mosaic import mixup, mosaic4, mosaic_centre, mosaic_into
from detector.data.targets import Targets
from detector.ops import PreprocessSpec
from detector.ops.letterbox import letterbox


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return None if len(xs) == 0 else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def colour_mask(img: np.ndarray, c: int, tol: int = 40) -> np.ndarray:
    return (np.abs(img.astype(int) - PALETTE[c]) <= tol).all(-1)


def covers(box: np.ndarray, mask: np.ndarray, slack: float = 1.5) -> bool:
    m = mask_box(mask)
    return m is None or bool((m[:2] >= box[:2] - slack).all() and (m[2:] <= box[2:] + slack).all())


def test_letterbox_shapes_ratio_and_padding():
    img = draw(50, 100, [(0, 10, 5, 30, 25)])
    out, plan = letterbox(img, PreprocessSpec(64, auto=False))
    r, (pw, ph) = plan.ratio_pad
    assert out.shape == (64, 64, 3) and r == pytest.approx(0.64) and (pw, ph) == (0, 16)
    assert (out[:16] == 114).all() and (out[48:] == 114).all()
    got = mask_box(colour_mask(out, 0))
    np.testing.assert_allclose(got, np.array([10, 5, 30, 25]) * r + [pw, ph, pw, ph], atol=1)
    out, plan = letterbox(img, PreprocessSpec(128))  # minimal padding to a multiple of 32: none needed here
    r, pad = plan.ratio_pad
    assert out.shape == (64, 128, 3) and r == pytest.approx(1.28) and pad == (0, 0)
    out, plan = letterbox(draw(50, 90, []), PreprocessSpec(128))
    pad = plan.pad  # 128 x 71 -> 128 x 96
    assert out.shape == (96, 128, 3) and pad == (0, 12)
    out, plan = letterbox(img, PreprocessSpec(320, auto=False, scaleup=False))  # never enlarge
    r, pad = plan.ratio_pad
    assert r == 1 and pad == (110, 135) and out.shape == (320, 320, 3)
    original = (np.array([10, 5, 30, 25]) * r + [*pad, *pad] - [*pad, *pad]) / r
    np.testing.assert_allclose(original, [10, 5, 30, 25])


@pytest.mark.parametrize("seed", range(6))
def test_affine_without_rotation_is_tight(seed):
    rng = np.random.default_rng(seed)
    img = draw(120, 160, [(0, 40, 30, 110, 90)])
    t = Targets.of([0], [[40, 30, 110, 90]])
    m = warp_matrix((80, 60), (128, 128), rng, translate=0.2, scale=0.5)
    out, t2 = warp(img, t, m, (128, 128))
    assert out.shape == (128, 128, 3)
    np.testing.assert_allclose(t2.boxes[0], mask_box(colour_mask(out, 0)), atol=2)


@pytest.mark.parametrize("seed", range(6))
def test_rotation_shear_perspective_boxes_cover_the_object(seed):
    rng = np.random.default_rng(seed)
    img = draw(120, 160, [(1, 40, 30, 110, 90)])
    t = Targets.of([1], [[40, 30, 110, 90]])
    m = warp_matrix((80, 60), (128, 128), rng, degrees=30, translate=0.1, scale=0.3, shear=10, perspective=5e-4)
    out, t2 = warp(img, t, m, (128, 128))
    mask = colour_mask(out, 1)
    assert mask.sum() > 100 and covers(t2.boxes[0], mask)


def test_mosaic_and_warp_keep_each_box_on_its_object():
    rng = np.random.default_rng(3)
    parts = []
    for c, (h, w) in enumerate([(64, 48), (40, 64), (64, 64), (30, 50)]):
        box = (w * 0.2, h * 0.25, w * 0.7, h * 0.8)
        parts.append((draw(h, w, [(c, *box)]), Targets.of([c], [box])))
    canvas, t = mosaic4(parts, 64, rng)
    assert canvas.shape == (128, 128, 3) and len(t) == 4
    for c in range(4):
        np.testing.assert_allclose(t.boxes[t.cls == c][0], mask_box(colour_mask(canvas, c)), atol=1)
    m = warp_matrix((64, 64), (64, 64), rng, translate=0.1, scale=0.3)
    out, t2 = warp(canvas, t, m, (64, 64))
    t2 = t2.usable(2, 0.1)
    assert len(t2) >= 1
    for box, c in zip(t2.boxes, t2.cls):
        np.testing.assert_allclose(box, mask_box(colour_mask(out, c)), atol=2)


def noisy_parts(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, Targets]]:
    parts = []
    for h, w in [(size, size * 3 // 4), (size // 2, size), (size, size), (size * 2 // 3, size // 2)]:
        boxes = np.array([[w * 0.1, h * 0.2, w * 0.6, h * 0.9], [w * 0.5, h * 0.1, w * 0.9, h * 0.4]], np.float32)
        parts.append((rng.integers(0, 256, (h, w, 3), dtype=np.uint8), Targets.of([0, 1], boxes)))
    return parts


@pytest.mark.parametrize(
    "extra", [{}, {"degrees": 20, "shear": 5}, {"scale": 0.9, "translate": 0.3}, {"perspective": 0.001}]
)
def test_the_mosaic_window_is_all_the_warp_reads(extra):
    """Filling in only ``source_window`` of the canvas gives the warp exactly the pixels of the whole canvas."""
    size, rng, smaller = 96, np.random.default_rng(0), 0
    parts = noisy_parts(rng, size)
    for _ in range(12):
        centre = mosaic_centre(size, rng)
        m = warp_matrix((size, size), (size, size), rng, **{"translate": 0.1, "scale": 0.5, **extra})
        full = np.empty((2 * size, 2 * size, 3), np.uint8)
        t_full = mosaic_into(full, (0, 0), parts, size, centre)
        x1, y1, x2, y2 = source_window(m, (size, size), full.shape[:2])
        part = np.empty_like(full)
        t_part = mosaic_into(part[y1:y2, x1:x2], (x1, y1), parts, size, centre)
        np.testing.assert_array_equal(part[y1:y2, x1:x2], full[y1:y2, x1:x2])
        outside = np.ones(full.shape[:2], bool)
        outside[y1:y2, x1:x2] = False
        part[outside] = rng.integers(0, 256, (int(outside.sum()), 3), dtype=np.uint8)  # never read
        a, ta = warp(full, t_full, m, (size, size))
        b, tb = warp(part, t_part, m, (size, size))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta.boxes, tb.boxes)
        smaller += (x2 - x1) * (y2 - y1) < full.shape[0] * full.shape[1]
    assert smaller >= (0 if "perspective" in extra else 6)  # zoom-ins read only part of the canvas


@pytest.mark.parametrize("degrees", [10, 0])
def test_train_augment_equals_the_whole_canvas_path(monkeypatch, degrees):
    """The pipeline with the partial canvas gives the samples of the whole-canvas pipeline (mixup and warps)."""
    import detector.data.augment as augment

    rng = np.random.default_rng(1)
    images = [(p[0], p[1]) for _ in range(2) for p in noisy_parts(rng, 64)]
    cfg = AugmentConfig(mixup=0.5, degrees=degrees, blur=0, median_blur=0, to_gray=0, clahe=0, resize_warp=False)

    def load(i):
        return images[i]

    def run():
        aug = TrainAugment(cfg, 64)
        return [aug(load, i % 8, 8, np.random.default_rng(i)) for i in range(16)]

    fast = run()
    monkeypatch.setattr(augment, "source_window", lambda m, out, shape: (0, 0, shape[1], shape[0]))
    for (a, ta), (b, tb) in zip(fast, run()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ta.boxes, tb.boxes)
        np.testing.assert_array_equal(ta.cls, tb.cls)


def test_zoom_and_shift_as_crop_and_resize_keeps_boxes_on_objects():
    """``resize_warp``: the crop + resize path moves each box exactly with its object (mosaic and letterbox)."""
    parts = []
    for c, (h, w) in enumerate([(64, 48), (40, 64), (64, 64), (30, 50)]):
        box = (w * 0.2, h * 0.25, w * 0.7, h * 0.8)
        parts.append((draw(h, w, [(c, *box)]), Targets.of([c], [box])))
    cfg = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, blur=0, median_blur=0, to_gray=0, clahe=0, scale=0.3)
    aug = TrainAugment(cfg, 64)
    seen = 0
    for seed in range(12):
        for mosaic in (True, False):
            pool = np.arange(4)  # partners: the three other images, so each class shows once
            out, t = aug(lambda i: parts[i], seed % 4, 4, np.random.default_rng(seed), mosaic=mosaic, pool=pool)
            assert out.shape == (64, 64, 3)
            for box, c in zip(t.boxes, t.cls):
                np.testing.assert_allclose(box, mask_box(colour_mask(out, c)), atol=2)  # (edges are blended)
                seen += 1
    assert seen > 30


def test_crop_and_resize_match_the_warp_they_replace():
    """Same draws, ``resize_warp`` on and off, real BCCD mosaics: nearly the same pixels and boxes (the crop's
    corners are whole source pixels, the warp's are not)."""
    labels = load_split(str(Path(__file__).resolve().parents[1] / "datasets" / "bccd"), "train")
    off = dict(hsv_h=0, hsv_s=0, hsv_v=0, blur=0, median_blur=0, to_gray=0, clahe=0, fliplr=0)
    off.update(min_box_size=0, min_box_area=0)  # keep every box: a sub-pixel shift may tip one over a threshold
    diffs = []
    for seed in range(4):
        a, b = (
            DetectionDataset(labels, imgsz=160, augment=AugmentConfig(**off, resize_warp=r), seed=seed)[seed]
            for r in (True, False)
        )
        diffs.append(np.abs(a["img"].astype(int) - b["img"]).mean())
        assert a["bboxes"].shape == b["bboxes"].shape
        np.testing.assert_allclose(a["bboxes"], b["bboxes"], atol=2.5)
    assert max(diffs) < 6, diffs  # mean level difference of a sub-pixel shift of textured cell images


def test_crop_box_paste_and_resize_crop():
    from detector.data.crop_resize import crop_box, is_zoom_shift, paste, resize_crop

    m = np.array([[2.0, 0, -10], [0, 2.0, 6], [0, 0, 1]])  # x -> 2x - 10, y -> 2y + 6
    assert is_zoom_shift(m) and not is_zoom_shift(np.array([[1.0, 0.1, 0], [0, 1, 0], [0, 0, 1]]))
    assert crop_box(m, (40, 60)) == (5, -3, 35, 17)  # 30 x 20 source pixels, 3 rows above the source
    out = np.zeros((4, 5), np.uint8)
    paste(out, (10, 20), np.full((3, 3), 7, np.uint8), (13, 18))  # only its bottom-left 2 x 1 overlaps
    assert out.sum() == 7 * 2 and out[0, 3:].tolist() == [7, 7]
    paste(out, (10, 20), np.full((3, 3), 9, np.uint8), (100, 100))  # no overlap: nothing
    img, t = resize_crop(np.zeros((20, 30, 3), np.uint8), Targets.of([0], [[5, -3, 20, 7]]), (5, -3, 35, 17), (40, 60))
    assert img.shape == (40, 60, 3)
    np.testing.assert_allclose(t.boxes, [[0, 0, 30, 20]])


def test_flips_are_exact():
    img = draw(40, 60, [(2, 5, 10, 25, 30)])
    t = Targets.of([2], [[5, 10, 25, 30]])
    out, t2 = flip_lr(img, t)
    np.testing.assert_array_equal(t2.boxes[0], [35, 10, 55, 30])
    np.testing.assert_array_equal(mask_box(colour_mask(out, 2)), t2.boxes[0])
    out, t3 = flip_ud(img, t)
    np.testing.assert_array_equal(t3.boxes[0], [5, 10, 25, 30])
    np.testing.assert_array_equal(mask_box(colour_mask(out, 2)), t3.boxes[0])


def test_degenerate_boxes_are_dropped():
    t = Targets.of([0, 1, 2, 3], [[0, 0, 10, 10], [0, 0, 1.5, 10], [0, 0, 10, 10], [0, 0, 20, 20]])
    t = Targets(t.cls, t.boxes, t.ref_area * np.array([1, 1, 20, 1]))  # box 2 shows 1/20 of its object
    assert t.usable(2, 0.1).cls.tolist() == [0, 3]
    cut = Targets.of([0], [[0, 0, 100, 100]]).clipped(0, 0, 100, 5)  # 5 % of the object left in view
    assert len(cut.usable(2, 0.1)) == 0


def test_mixup_keeps_both_box_sets():
    a = (draw(32, 32, [(0, 1, 1, 10, 10)]), Targets.of([0], [[1, 1, 10, 10]]))
    b = (draw(32, 32, [(1, 20, 20, 30, 30)]), Targets.of([1], [[20, 20, 30, 30]]))
    img, t = mixup(a, b, np.random.default_rng(0))
    assert t.cls.tolist() == [0, 1] and 100 < img[5, 5, 0] < 155 and 100 < img[25, 25, 1] < 155


def test_hsv_off_is_identity_and_on_changes_colours():
    img = draw(16, 16, [(0, 0, 0, 8, 8)]) + 60
    same = img.copy()
    hsv_jitter(same, 0, 0, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(same, img)
    hsv_jitter(same, 0.015, 0.7, 0.4, np.random.default_rng(1))
    assert np.abs(same.astype(int) - img).max() > 3


def test_config_defaults_and_validation():
    cfg = AugmentConfig()
    assert (cfg.hsv_h, cfg.hsv_s, cfg.hsv_v, cfg.translate, cfg.scale, cfg.fliplr, cfg.mosaic) == (
        0.015,
        0.7,
        0.4,
        0.1,
        0.5,
        0.5,
        1.0,
    )
    assert (cfg.mixup, cfg.close_mosaic, cfg.degrees, cfg.flipud) == (0.0, 15, 0.0, 0.0)
    with pytest.raises(ConfigError, match=r"augment: key 'fliplr' = 1.5 must be in \[0, 1\]"):
        TrainAugment(AugmentConfig(fliplr=1.5), 64)
    assert build(AugmentConfig, {"scale": 0.9, "mixup": 0.15}).scale == 0.9


def test_training_samples_boxes_cover_their_objects(tmp_path):
    ls = load_split(make_yolo(tmp_path, n=6, h=96, w=128), "train")
    # keep every box, however little of it is left, so every visible object must be covered by a box
    cfg = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, blur=0, median_blur=0, to_gray=0, clahe=0, degrees=5, flipud=0.5)
    cfg.min_box_size = cfg.min_box_area = 0
    ds = DetectionDataset(ls, imgsz=128, augment=cfg)
    seen = 0
    for i in range(len(ds)):
        s = ds[i]
        img = s["img"].transpose(1, 2, 0)
        assert img.shape == (128, 128, 3) and s["bboxes"].shape == (len(s["cls"]), 4)
        for c in range(4):
            boxes = s["bboxes"][s["cls"] == c]
            mask = colour_mask(img, c)
            covered = np.zeros_like(mask)
            for x1, y1, x2, y2 in boxes:
                covered[max(0, int(y1) - 2) : int(np.ceil(y2)) + 2, max(0, int(x1) - 2) : int(np.ceil(x2)) + 2] = True
            assert not (mask & ~covered).any()
            for x1, y1, x2, y2 in boxes:
                if min(x2 - x1, y2 - y1) >= 4:
                    assert mask[int(y1) : int(y2), int(x1) : int(x2)].mean() > 0.6  # the box is mostly its object
                    seen += 1
    assert seen > 20


def test_samples_depend_only_on_seed_epoch_index(tmp_path):
    ls = load_split(make_yolo(tmp_path, n=4, h=64, w=64), "train")
    a = DetectionDataset(ls, imgsz=64, augment=AugmentConfig(mixup=0.5), seed=1)
    b = DetectionDataset(ls, imgsz=64, augment=AugmentConfig(mixup=0.5), seed=1)
    for i in (2, 0, 3):
        np.testing.assert_array_equal(a[i]["img"], b[i]["img"])
        np.testing.assert_array_equal(a[i]["bboxes"], b[i]["bboxes"])
    first = a[1]["img"]
    a.set_epoch(1)
    assert not np.array_equal(first, a[1]["img"])


def test_train_augment_rect_shape_without_mosaic():
    aug = TrainAugment(AugmentConfig(), 64)
    img = draw(32, 64, [(0, 4, 4, 30, 20)])

    def load(i):
        return img, Targets.of([0], [[4, 4, 30, 20]])

    out, t = aug(load, 0, 1, np.random.default_rng(0), mosaic=True, shape=(32, 64))
    assert out.shape == (32, 64, 3) and len(t) == 1
