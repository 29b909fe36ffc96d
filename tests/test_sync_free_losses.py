"""The fixed-shape, sync-free "tal" and "aota" losses equal the straightforward indexed formulation they replace
(boolean-mask gathers of the foreground, ``nonzero`` for the assigner's candidates, torchvision's CIoU/GIoU), in
value and gradient, on random and real BCCD batches; and they force no host synchronisation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import complete_box_iou_loss, generalized_box_iou_loss

import detector.losses  # noqa: F401  (registers the losses)
from detector.engine.host_syncs import HostSyncCounter
from detector.losses.box_iou import aligned_ciou, aligned_giou
from detector.losses.dfl import dfl_targets, distribution_focal_loss
from detector.losses.quality_focal_loss import quality_focal_loss
from detector.losses.targets import pad_targets
from detector.losses.task_aligned_assigner import TaskAlignedAssigner
from detector.registry import LOSSES

NC = 3
HEADS = {"tal": dict(nc=NC, bins=16, anchor_offset=0.5), "aota": dict(nc=NC, bins=17, anchor_offset=0.0)}


class IndexedTaskAlignedAssigner(TaskAlignedAssigner):
    """The assigner as it was: CIoU gathered for the candidate pairs only, through ``nonzero``."""

    @staticmethod
    def _candidate_ciou(candidates, pred_boxes, gt):
        overlaps = torch.zeros(candidates.shape, dtype=pred_boxes.dtype)
        bi, mi, ai = candidates.nonzero(as_tuple=True)
        ciou = 1.0 - complete_box_iou_loss(_min_size(gt.boxes[bi, mi]), _min_size(pred_boxes[bi, ai]))
        overlaps[bi, mi, ai] = ciou.clamp(min=0)
        return overlaps


def _min_size(boxes):
    return torch.cat((boxes[..., :2], torch.maximum(boxes[..., 2:], boxes[..., :2] + 1e-6)), -1)


def indexed_tal(loss_fn, maps, batch):
    """The "tal" loss with the foreground gathered by boolean masks and torchvision's CIoU."""
    out = loss_fn.read(maps)
    b = out.batch_size
    gt = pad_targets(batch, b, NC, torch.device("cpu"))
    pred_grid = out.boxes_grid()
    assigner = IndexedTaskAlignedAssigner(NC, loss_fn.cfg.topk, loss_fn.cfg.alpha, loss_fn.cfg.beta)
    a = assigner(out.cls_logits.detach().sigmoid(), (pred_grid * out.strides).detach(), out.points_px, gt)
    score_sum = a.target_scores.sum().clamp(min=1.0)
    cls = F.binary_cross_entropy_with_logits(out.cls_logits, a.target_scores, reduction="sum") / score_sum
    fg = a.fg_mask
    weight = a.target_scores.sum(-1)[fg]
    target = a.target_boxes[fg] / out.strides.expand(b, -1, -1)[fg]
    ciou = 1.0 - complete_box_iou_loss(_min_size(pred_grid[fg]), _min_size(target))
    box = ((1.0 - ciou) * weight).sum() / score_sum
    points = out.points.expand(b, -1, -1)[fg]
    dfl = (distribution_focal_loss(out.dist_logits[fg], dfl_targets(points, target, loss_fn.bins)) * weight).sum()
    c = loss_fn.cfg
    parts = torch.stack((box * c.box, cls * c.cls, dfl / score_sum * c.dfl))
    return parts.sum() * b, parts.detach()


def indexed_aota(loss_fn, maps, batch):
    """The "aota" loss with the foreground gathered by boolean masks and torchvision's GIoU."""
    out = loss_fn.read(maps)
    b = out.batch_size
    gt = pad_targets(batch, b, NC, torch.device("cpu"))
    pred_grid = out.boxes_grid()
    a, _ = loss_fn.assigner(out.cls_logits.detach(), (pred_grid * out.strides).detach(), out.points_px, out.strides, gt)
    fg = a.fg_mask
    num_pos = fg.sum().clamp(min=1).float()
    cls = quality_focal_loss(out.cls_logits, a.target_scores, loss_fn.cfg.qfl_beta).sum() / num_pos
    weight = out.cls_logits.detach().sigmoid().amax(-1)[fg]
    weight_sum = weight.sum().clamp(min=1.0)
    target = a.target_boxes[fg] / out.strides.expand(b, -1, -1)[fg]
    box = (generalized_box_iou_loss(pred_grid[fg], target) * weight).sum() / weight_sum
    points = out.points.expand(b, -1, -1)[fg]
    dfl = (distribution_focal_loss(out.dist_logits[fg], dfl_targets(points, target, loss_fn.bins)) * weight).sum()
    c = loss_fn.cfg
    parts = torch.stack((box * c.box, cls * c.cls, dfl / weight_sum * c.dfl))
    return parts.sum() * b, parts.detach()


INDEXED = {"tal": indexed_tal, "aota": indexed_aota}


def random_case(name: str, seed: int, batch_size: int = 3, size: int = 128):
    """Random raw maps on strides 8/16/32 and random boxes (one image without any), as a collated batch."""
    gen = torch.Generator().manual_seed(seed)
    head = SimpleNamespace(strides=[8.0, 16.0, 32.0], loss=name, **HEADS[name])
    c = 4 * head.bins + NC
    maps = [torch.randn(batch_size, c, size // s, size // s, generator=gen) * 2 for s in (8, 16, 32)]
    counts = [int(torch.randint(1, 7, (), generator=gen)) for _ in range(batch_size - 1)] + [0]
    xy = torch.rand(sum(counts), 2, generator=gen) * size * 0.7
    wh = torch.rand(sum(counts), 2, generator=gen) * size * 0.4 + 2
    batch = {
        "cls": torch.randint(0, NC, (sum(counts),), generator=gen).float(),
        "bboxes": torch.cat((xy, (xy + wh).clamp(max=size)), 1),
        "batch_idx": torch.repeat_interleave(torch.arange(batch_size), torch.tensor(counts)),
    }
    return head, maps, batch


def assert_same_loss_and_gradient(name: str, head, maps, batch, max_boxes: int | None = None) -> None:
    loss_fn = LOSSES.get(name)(head)
    ours_in = [m.clone().requires_grad_() for m in maps]
    ref_in = [m.clone().requires_grad_() for m in maps]
    padded = {**batch, "targets": pad_targets(batch, len(maps[0]), NC, torch.device("cpu"), max_boxes)}
    loss, items = loss_fn(ours_in, padded)
    ref_loss, ref_items = INDEXED[name](loss_fn, ref_in, batch)
    assert ref_items[0] > 0  # the batch has foreground: the comparison covers the box terms
    torch.testing.assert_close(items, ref_items, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    loss.backward()
    ref_loss.backward()
    for ours, ref in zip(ours_in, ref_in):
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["tal", "aota"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_the_indexed_formulation_on_random_batches(name, seed):
    head, maps, batch = random_case(name, seed)
    assert_same_loss_and_gradient(name, head, maps, batch)


@pytest.mark.parametrize("name", ["tal", "aota"])
def test_fixed_target_capacity_does_not_change_the_loss(name):
    head, maps, batch = random_case(name, 5)
    assert_same_loss_and_gradient(name, head, maps, batch, max_boxes=64)


@pytest.fixture(scope="module")
def bccd_batch(tmp_path_factory):
    """A real mosaic batch of 4 BCCD images at 160 px and the tiny GELAN model's raw maps for it."""
    from _engine_kit import TINY_MODEL, bccd_subset

    from detector.data import build_dataloader
    from detector.data.augment import AugmentConfig
    from detector.model import build_model

    data = bccd_subset(tmp_path_factory.mktemp("bccd"), n=4)
    loader, _ = build_dataloader(data, "train", imgsz=160, batch=4, augment=AugmentConfig(), workers=0, seed=1)
    batch = next(iter(loader))
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, nc=NC).train()
    with torch.no_grad():
        maps = model(batch["img"].float() / 255)["main"]
    return model.main_head, maps, batch


def test_equal_on_a_real_bccd_batch_tal(bccd_batch):
    head, maps, batch = bccd_batch
    assert len(batch["cls"]) > 20  # a mosaic of blood cells: many boxes per image
    assert_same_loss_and_gradient("tal", head, maps, batch)


def test_equal_on_a_real_bccd_batch_aota(bccd_batch):
    head, maps, batch = bccd_batch
    aota_head = SimpleNamespace(strides=head.strides, loss="aota", nc=NC, bins=17, anchor_offset=0.0)
    gen = torch.Generator().manual_seed(3)
    # the tiny model's head has 4 bins; give the ZeroHead layout (17 bins) random logits on the same grids
    maps = [torch.randn(m.shape[0], 4 * 17 + NC, *m.shape[2:], generator=gen) for m in maps]
    assert_same_loss_and_gradient("aota", aota_head, maps, batch)


def test_box_iou_helpers_equal_torchvision():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=gen) * 50
    a = torch.cat((xy, xy + torch.rand(200, 2, generator=gen) * 30 + 0.1), 1)
    xy = torch.rand(200, 2, generator=gen) * 50
    b = torch.cat((xy, xy + torch.rand(200, 2, generator=gen) * 30 + 0.1), 1)
    torch.testing.assert_close(aligned_ciou(a, b), 1 - complete_box_iou_loss(a, b), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(aligned_giou(a, b), 1 - generalized_box_iou_loss(a, b), rtol=1e-6, atol=1e-6)
    assert aligned_ciou(a[:, None], b[None]).shape == (200, 200)  # broadcast pairs


@pytest.mark.parametrize("name", ["tal", "aota"])
def test_loss_and_backward_force_no_host_sync(name):
    head, maps, batch = random_case(name, 0)
    loss_fn = LOSSES.get(name)(head)
    padded = {"targets": pad_targets(batch, len(maps[0]), NC, torch.device("cpu"), 32)}
    maps = [m.requires_grad_() for m in maps]
    with HostSyncCounter() as counter:
        loss, _ = loss_fn(maps, padded)
        loss.backward()
    assert counter.total == 0, counter.by_op
    with HostSyncCounter() as counter:  # the counter sees what the old formulation did
        loss, _ = INDEXED[name](loss_fn, [m.detach().requires_grad_() for m in maps], batch)
        loss.backward()
    assert counter.by_op["aten.index (boolean mask)"] > 0 and counter.total > 10, counter.by_op
