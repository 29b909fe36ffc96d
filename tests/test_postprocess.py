"""NMS and letterbox inversion on hand-made boxes."""

from __future__ import annotations

import torch

from detector.ops import NMSConfig
from detector.ops.boxes import scale_boxes
from detector.ops.nms import non_max_suppression

VAL = NMSConfig.val()  # conf 0.001, multi-label


def make_pred(rows: list[tuple[list[float], list[float]]], nc: int = 3) -> torch.Tensor:
    """One image's ``(1, 4 + nc, A)`` prediction from (xyxy, class scores) rows."""
    return torch.tensor([box + scores for box, scores in rows]).T[None]


ROWS = [
    ([0, 0, 10, 10], [0.9, 0.0, 0.6]),
    ([1, 0, 11, 10], [0.8, 0.0, 0.0]),  # IoU 0.82 with the first: suppressed (class 0)
    ([0, 1, 10, 11], [0.0, 0.7, 0.0]),  # same place, other class: kept
    ([20, 20, 30, 30], [0.5, 0.0, 0.0]),  # far away: kept
    ([40, 40, 50, 50], [0.0005, 0.0, 0.0]),  # below conf
]


def test_class_aware_nms_and_multi_label():
    (dets,) = non_max_suppression(make_pred(ROWS), VAL)
    expected = [
        [0, 0, 10, 10, 0.9, 0],
        [0, 1, 10, 11, 0.7, 1],
        [0, 0, 10, 10, 0.6, 2],  # multi-label: the first box again as class 2
        [20, 20, 30, 30, 0.5, 0],
    ]
    assert torch.allclose(dets, torch.tensor(expected, dtype=torch.float32))


def test_predict_defaults_are_single_label_at_conf_025():
    (dets,) = non_max_suppression(make_pred(ROWS))  # NMSConfig.predict(): what Detector.predict uses
    assert dets[:, 4].tolist() == [0.8999999761581421, 0.699999988079071, 0.5]
    assert NMSConfig.predict() == NMSConfig(0.25, 0.7, 300, multi_label=False)
    assert (VAL.conf, VAL.multi_label) == (0.001, True)


def test_single_label_agnostic_and_class_filter():
    (single,) = non_max_suppression(make_pred(ROWS), VAL.updated(multi_label=False))
    assert single[:, 4].tolist() == [0.8999999761581421, 0.699999988079071, 0.5]
    (agnostic,) = non_max_suppression(make_pred(ROWS), VAL.updated(multi_label=False, agnostic=True))
    assert agnostic[:, 5].tolist() == [0, 0] and agnostic[:, 4].tolist()[1] == 0.5
    (only_2,) = non_max_suppression(make_pred(ROWS), VAL.updated(classes=[2]))
    assert only_2.tolist() == [[0, 0, 10, 10, 0.6000000238418579, 2]]
    (high,) = non_max_suppression(make_pred(ROWS), VAL.updated(conf=0.65))
    assert high[:, 4].tolist() == [0.8999999761581421, 0.699999988079071]


def test_max_det_candidates_and_batch():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=gen) * 1000
    boxes = torch.cat((xy, xy + 5), 1)  # small scattered boxes: few overlaps
    scores = torch.rand(500, 3, generator=gen)
    pred = torch.cat((boxes, scores), 1).T[None]
    empty = torch.cat((boxes, torch.zeros(500, 3)), 1).T[None]
    out = non_max_suppression(torch.cat((pred, empty, pred)), VAL.updated(max_det=50))
    assert [len(d) for d in out] == [50, 0, 50]
    assert torch.equal(out[0], out[2])
    assert (out[0][:-1, 4] >= out[0][1:, 4]).all()
    (full,) = non_max_suppression(pred, VAL.updated(max_det=10_000))
    assert torch.equal(full[:50], out[0])  # max_det keeps the best-scored
    (capped,) = non_max_suppression(pred, VAL.updated(max_det=10_000), max_candidates=100)
    assert len(capped) <= 100 and capped[:, 4].min() >= scores.flatten().topk(100).values.min()
    assert all(d.shape == (0, 6) for d in non_max_suppression(torch.zeros(2, 7, 10), VAL))


def test_scale_boxes_inverts_letterbox_and_clips():
    ori_shape = (480, 640)
    ratio, pad = 0.5, (0.0, 40.0)  # 640x480 -> 320x240, padded to 320x320
    original = torch.tensor([[100.0, 50.0, 300.0, 400.0], [600.0, 400.0, 640.0, 480.0]])
    letterboxed = original * ratio + torch.tensor([pad[0], pad[1], pad[0], pad[1]])
    assert torch.allclose(scale_boxes(letterboxed, (ratio, pad), ori_shape), original)
    outside = torch.tensor([[-10.0, 30.0, 330.0, 300.0]])
    assert scale_boxes(outside, (ratio, pad), ori_shape).tolist() == [[0.0, 0.0, 640.0, 480.0]]
    # separate gains per axis
    assert scale_boxes(torch.tensor([[10.0, 10.0, 20.0, 20.0]]), ((2.0, 4.0), (0, 0)), (100, 100)).tolist() == [
        [5.0, 2.5, 10.0, 5.0]
    ]
