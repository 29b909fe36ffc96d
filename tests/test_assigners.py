"""Label assigners on hand-made cases: strict insideness, top-k and soft targets, overlapping GTs, empty images,
tiny boxes, AlignedOTA's dynamic k and its centre-region fallback."""

from __future__ import annotations

import math

import torch

from detector.losses.aligned_ota_assigner import AlignedOTAAssigner
from detector.losses.targets import PaddedTargets, pad_targets
from detector.losses.task_aligned_assigner import TaskAlignedAssigner
from detector.nn.heads import make_anchors


def grid(size: int = 64, stride: int = 8, offset: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points in pixels (A, 2) and strides (A, 1) of a single square level."""
    points, strides = make_anchors([(size // stride, size // stride)], [stride], offset)
    return points * strides, strides


def targets(*images: list[tuple[int, list[float]]]) -> PaddedTargets:
    """Padded targets from per-image lists of (class, xyxy)."""
    cls, boxes, idx = [], [], []
    for i, image in enumerate(images):
        for c, box in image:
            cls.append(float(c))
            boxes.append(box)
            idx.append(i)
    batch = {"cls": torch.tensor(cls), "bboxes": torch.tensor(boxes).reshape(-1, 4), "batch_idx": torch.tensor(idx)}
    return pad_targets(batch, len(images), nc=3, device=torch.device("cpu"))


def anchor_set(points: torch.Tensor, mask: torch.Tensor) -> set[tuple[float, float]]:
    return {tuple(p) for p in points[mask].tolist()}


def scaled_box(box: list[float], scale: float) -> list[float]:
    """``box`` shrunk about its centre by ``scale`` per side (IoU with the original = scale ** 2)."""
    cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    return [cx - w * scale / 2, cy - h * scale / 2, cx + w * scale / 2, cy + h * scale / 2]


# ---------------------------------------------------------------- task-aligned assigner


def test_pad_targets_layout():
    gt = targets([(1, [0, 0, 4, 4])], [], [(2, [1, 1, 5, 5]), (0, [2, 2, 6, 6])])
    assert gt.labels.tolist() == [[1, 0], [0, 0], [2, 0]]
    assert gt.mask.tolist() == [[True, False], [False, False], [True, True]]
    assert gt.boxes[2, 1].tolist() == [2, 2, 6, 6]


def test_tal_anchor_on_box_edge_is_not_a_candidate():
    points, _ = grid()  # anchors at 4, 12, 20, ...
    box = [12.0, 12.0, 36.0, 36.0]  # edges pass exactly through anchor centres
    gt = targets([(1, box)])
    a = points.shape[0]
    scores = torch.full((1, a, 3), 0.5)
    pred = torch.tensor(box).expand(1, a, 4)
    out = TaskAlignedAssigner(3)(scores, pred, points, gt)
    assert anchor_set(points, out.fg_mask[0]) == {(x, y) for x in (20.0, 28.0) for y in (20.0, 28.0)}
    # perfect boxes and equal scores: every positive is asked for class 1 with the GT's IoU (1.0)
    assert torch.allclose(out.target_scores[0][out.fg_mask[0]], torch.tensor([0.0, 1.0, 0.0]).expand(4, 3))
    assert torch.allclose(out.target_boxes[0][out.fg_mask[0]], torch.tensor(box).expand(4, 4))


def test_tal_topk_by_alignment_and_soft_targets():
    points, _ = grid()
    box = [0.0, 0.0, 64.0, 64.0]  # all 64 anchors are candidates
    gt = targets([(0, box)])
    a = points.shape[0]
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(1, a, 3, generator=gen) * 0.9 + 0.05
    pred = torch.tensor(scaled_box(box, 0.8)).expand(1, a, 4)  # CIoU = IoU = 0.64 everywhere
    out = TaskAlignedAssigner(3, topk=10)(scores, pred, points, gt)
    top10 = scores[0, :, 0].topk(10).indices
    assert set(out.fg_mask[0].nonzero().flatten().tolist()) == set(top10.tolist())
    # target = align * maxIoU / maxAlign = sqrt(s / s_max) * 0.64
    s = scores[0, top10, 0]
    expected = (s / s.max()).sqrt() * 0.64
    assert torch.allclose(out.target_scores[0, top10, 0], expected, atol=1e-5)
    assert float(out.target_scores[0, :, 1:].abs().max()) == 0.0


def test_tal_overlapping_gts_go_to_the_higher_iou():
    points, _ = grid()
    box_a, box_b = [0.0, 0.0, 40.0, 40.0], [24.0, 24.0, 64.0, 64.0]
    gt = targets([(0, box_a), (2, box_b)])
    a = points.shape[0]
    in_a = (points > 0).all(1) & (points < 40).all(1)
    in_b = (points > 24).all(1) & (points < 64).all(1)
    pred = torch.where(in_b[:, None], torch.tensor(box_b), torch.tensor(box_a))[None]  # overlap anchors predict B
    scores = torch.full((1, a, 3), 0.5)
    out = TaskAlignedAssigner(3, topk=64)(scores, pred, points, gt)
    fg, idx = out.fg_mask[0], out.gt_index[0]
    assert torch.equal(fg, in_a | in_b)
    assert torch.equal(idx[in_b], torch.ones(int(in_b.sum()), dtype=torch.long))  # overlap anchors -> B
    assert torch.equal(idx[in_a & ~in_b], torch.zeros(int((in_a & ~in_b).sum()), dtype=torch.long))
    assert torch.equal(out.target_scores[0].argmax(-1)[in_b], torch.full((int(in_b.sum()),), 2))
    assert torch.allclose(out.target_scores[0].sum(-1), fg.float() * out.target_scores[0].amax(-1))


def test_tal_empty_image_in_batch_and_empty_batch():
    points, _ = grid()
    a = points.shape[0]
    gt = targets([(1, [8.0, 8.0, 40.0, 40.0])], [])
    scores = torch.full((2, a, 3), 0.5)
    pred = torch.tensor([8.0, 8.0, 40.0, 40.0]).expand(2, a, 4)
    out = TaskAlignedAssigner(3)(scores, pred, points, gt)
    assert int(out.fg_mask[0].sum()) == 10 and int(out.fg_mask[1].sum()) == 0
    assert float(out.target_scores[1].abs().sum()) == 0.0
    empty = TaskAlignedAssigner(3)(scores, pred, points, targets([], []))
    assert not empty.fg_mask.any() and empty.target_scores.shape == (2, a, 3)


def test_tal_tiny_boxes():
    points, _ = grid()
    a = points.shape[0]
    scores = torch.full((1, a, 3), 0.5)
    between = [5.0, 5.0, 11.0, 11.0]  # between anchor centres 4 and 12: no candidate at all
    pred = torch.tensor(between).expand(1, a, 4)
    assert not TaskAlignedAssigner(3)(scores, pred, points, targets([(0, between)])).fg_mask.any()
    around = [19.0, 27.0, 21.5, 29.0]  # contains exactly the anchor (20, 28)
    pred = torch.tensor(around).expand(1, a, 4)
    out = TaskAlignedAssigner(3)(scores, pred, points, targets([(0, around)]))
    assert anchor_set(points, out.fg_mask[0]) == {(20.0, 28.0)}
    assert math.isclose(float(out.target_scores[0].max()), 1.0, rel_tol=1e-5)


# ---------------------------------------------------------------- AlignedOTA


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_aota_dynamic_k_takes_the_cheapest_anchors():
    points, strides = grid(offset=0.0)  # anchors at 0, 8, 16, ...
    box = [0.0, 0.0, 64.0, 64.0]
    gt = targets([(1, box)])
    a = points.shape[0]
    pred = torch.tensor(scaled_box(box, math.sqrt(0.35))).expand(1, a, 4)  # IoU 0.35 everywhere
    logits = torch.full((1, a, 3), logit(0.01))
    chosen = [(24.0, 24.0), (32.0, 32.0), (40.0, 24.0)]
    for x, y in chosen:  # predicting p = IoU for the GT class makes their class cost ~0
        i = int(((points[:, 0] == x) & (points[:, 1] == y)).nonzero())
        logits[0, i, 1] = logit(0.35)
    out, iou = AlignedOTAAssigner(3)(logits, pred, points, strides, gt)
    assert anchor_set(points, out.fg_mask[0]) == set(chosen)  # k = int(10 * 0.35) = 3
    assert torch.allclose(out.target_scores[0][out.fg_mask[0]], torch.tensor([0.0, 0.35, 0.0]).expand(3, 3), atol=1e-5)
    assert torch.allclose(iou[0][out.fg_mask[0]], torch.full((3,), 0.35), atol=1e-5)


def test_aota_anchor_on_edge_only_as_fallback():
    points, strides = grid(offset=0.0)
    box = [16.0, 16.0, 48.0, 48.0]  # strictly inside: 24, 32, 40 per axis (9 anchors); edges at 16 and 48
    gt = targets([(0, box)])
    a = points.shape[0]
    pred = torch.tensor(box).expand(1, a, 4)  # IoU 1 for every valid anchor -> k = 10
    logits = torch.full((1, a, 3), logit(0.5))
    out, _ = AlignedOTAAssigner(3)(logits, pred, points, strides, gt)
    fg = anchor_set(points, out.fg_mask[0])
    inner = {(x, y) for x in (24.0, 32.0, 40.0) for y in (24.0, 32.0, 40.0)}
    assert len(fg) == 10 and inner <= fg  # 9 in box and centre region, then one 1e8-cost edge anchor
    (extra,) = fg - inner
    assert 16.0 in extra or 48.0 in extra


def test_aota_overlapping_gts_keep_the_cheaper_claim():
    points, strides = grid(offset=0.0)
    box_a, box_b = [0.0, 0.0, 64.0, 64.0], [32.0, 0.0, 96.0, 64.0]
    gt = targets([(0, box_a), (1, box_b)])
    a = points.shape[0]
    pred = torch.tensor(box_a).expand(1, a, 4)  # IoU 1 with A, 1/3 with B
    logits = torch.full((1, a, 3), logit(0.5))
    contested = points[:, 0] == 48.0  # in both boxes and both centre regions
    # p = IoU target for B's class and ~0 for class 2 there: the cheapest anchors of both A and B
    logits[0, contested, 1] = logit(1 / 3)
    logits[0, contested, 2] = logit(0.01)
    out, _ = AlignedOTAAssigner(3)(logits, pred, points, strides, gt)
    fg, idx = out.fg_mask[0], out.gt_index[0]
    both = contested & (points[:, 1] > 12) & (points[:, 1] < 52)
    assert fg[both].all() and (idx[both] == 0).all()
    assert int(fg.sum()) == 10  # A keeps k = 10; B's three claims all lost to A
    assert (out.target_scores[0][fg].argmax(-1) == 0).all()


def test_aota_empty_image_and_tiny_box():
    points, strides = grid(offset=0.0)
    a = points.shape[0]
    tiny = [25.0, 25.0, 30.0, 30.0]  # no anchor inside; its centre region holds several
    gt = targets([(2, tiny)], [])
    pred = torch.tensor([20.0, 20.0, 36.0, 36.0]).expand(2, a, 4)
    logits = torch.full((2, a, 3), logit(0.3))
    out, _ = AlignedOTAAssigner(3)(logits, pred, points, strides, gt)
    assert int(out.fg_mask[0].sum()) == 1 and int(out.fg_mask[1].sum()) == 0  # k = max(1, int(small)) = 1
    assert out.target_scores[0][out.fg_mask[0]].argmax().item() == 2
    empty, iou = AlignedOTAAssigner(3)(logits, pred, points, strides, targets([], []))
    assert not empty.fg_mask.any() and float(iou.abs().sum()) == 0.0


def test_pad_targets_rejects_bad_batch():
    import pytest

    from detector.errors import DetectorError

    batch = {"cls": torch.tensor([0.0, 1.0]), "bboxes": torch.zeros(2, 4), "batch_idx": torch.tensor([0, 2])}
    with pytest.raises(DetectorError, match="batch_idx"):
        pad_targets(batch, 2, nc=3, device=torch.device("cpu"))
    with pytest.raises(DetectorError, match="must match"):
        pad_targets({**batch, "bboxes": torch.zeros(3, 4)}, 3, nc=3, device=torch.device("cpu"))
