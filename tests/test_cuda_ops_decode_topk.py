"""cuda_ops.decode_topk: the reference equals the head's decode + the score threshold + top-K of postprocess,
the kernels equal the reference (fp32/fp16 maps, batch 1 and > 1, odd level sizes, nothing above threshold),
batched_nms equals non_max_suppression; opcheck of both custom ops."""

from __future__ import annotations

import pytest
import torch
from cuda_ops_kit import DEVICE, needs_kernel

import cuda_ops
from cuda_ops.decode_topk import class_max_reference, gather_decode_reference
from deploy.contract import NMSConfig
from detector.nn.heads import DDetect
from detector.ops.nms import _candidates, non_max_suppression

STRIDES = [8, 16, 32]
LEVELS = [(7, 9), (4, 5), (2, 3)]  # odd sizes of a 56x72 input


def raw_maps(b: int, nc: int, reg_max: int, dtype=torch.float32, device="cpu", scale: float = 3.0) -> list:
    """Random raw head maps with distinct scores (no ties to make top-K ambiguous)."""
    return [(torch.randn(b, 4 * reg_max + nc, h, w, dtype=torch.float64) * scale).to(device, dtype) for h, w in LEVELS]


def as_rows(boxes, scores, labels, valid) -> torch.Tensor:
    """Valid candidates as (image, x1, y1, x2, y2, score, class) rows in a canonical order."""
    image = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)[valid]
    rows = torch.cat((image[:, None].float(), boxes[valid], scores[valid, None], labels[valid, None].float()), 1)
    return rows[torch.argsort(rows[:, 0] * 1e7 + rows[:, 6] * 1e5 + rows[:, 5])].double().cpu()


def head_rows(maps, nc, reg_max, conf, multi_label, classes, max_candidates) -> torch.Tensor:
    """What the project selects today: DFLHead.decode, then postprocess._candidates."""
    head = DDetect([8, 16, 32], nc, STRIDES, reg_max).eval()
    pred = head.decode([m.float().cpu() for m in maps])
    image, anchor, cls, score = _candidates(pred[:, 4:].transpose(1, 2), conf, multi_label, classes, max_candidates)
    rows = torch.cat(
        (image[:, None].float(), pred[:, :4].transpose(1, 2)[image, anchor], score[:, None], cls[:, None].float()), 1
    )
    return rows[torch.argsort(rows[:, 0] * 1e7 + rows[:, 6] * 1e5 + rows[:, 5])].double()


@pytest.mark.parametrize(("multi_label", "classes"), [(False, None), (True, None), (False, [1, 3]), (True, [0, 4])])
def test_reference_equals_head_decode_and_candidates(multi_label, classes) -> None:
    torch.manual_seed(0)
    nc, reg_max = 5, 16
    maps = raw_maps(2, nc, reg_max)
    for k in (10000, 17):  # everything above conf, and a cap below the count
        got = as_rows(*cuda_ops.decode_topk(maps, STRIDES, reg_max, 0.6, k, multi_label, classes, impl="reference"))
        want = head_rows(maps, nc, reg_max, 0.6, multi_label, classes, k)
        assert len(got) == len(want) and len(got) > 0
        torch.testing.assert_close(got, want, rtol=0, atol=2e-4)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    ("b", "multi_label", "reg_max", "nc"), [(1, False, 16, 3), (2, True, 16, 5), (2, False, 8, 37)]
)
def test_kernel_equals_reference(dtype, b, multi_label, reg_max, nc) -> None:
    torch.manual_seed(1)
    maps = raw_maps(b, nc, reg_max, dtype, DEVICE)
    score, cls = torch.ops.cuda_ops.class_max(maps, reg_max, torch.ones(nc, dtype=torch.bool, device=DEVICE))
    score_ref, cls_ref = class_max_reference(maps, reg_max, torch.ones(nc, dtype=torch.bool, device=DEVICE))
    torch.testing.assert_close(score, score_ref, rtol=1e-6, atol=1e-7)
    assert torch.equal(cls, cls_ref)
    for k in (10000, 11):
        out = cuda_ops.decode_topk(maps, STRIDES, reg_max, 0.55, k, multi_label, impl="kernel")
        ref = cuda_ops.decode_topk(maps, STRIDES, reg_max, 0.55, k, multi_label, impl="reference")
        assert [t.shape for t in out] == [t.shape for t in ref] and out[3].any()
        torch.testing.assert_close(as_rows(*out), as_rows(*ref), rtol=0, atol=2e-4)


@needs_kernel
def test_kernel_reads_channels_last_maps_in_place() -> None:
    """A channels-last model (the graph backend's) hands over NHWC maps: same result, no copy needed."""
    torch.manual_seed(4)
    maps = raw_maps(2, 7, 16, torch.float16, DEVICE)
    nhwc = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    for ml in (False, True):
        out = cuda_ops.decode_topk(nhwc, STRIDES, 16, 0.5, 10000, ml, impl="kernel")
        ref = cuda_ops.decode_topk(maps, STRIDES, 16, 0.5, 10000, ml, impl="reference")
        torch.testing.assert_close(as_rows(*out), as_rows(*ref), rtol=0, atol=2e-4)


@needs_kernel
def test_gather_decode_kernel_every_slot_written() -> None:
    torch.manual_seed(2)
    maps = raw_maps(2, 6, 16, device=DEVICE)
    index = torch.randint(0, sum(h * w for h, w in LEVELS), (2, 40), device=DEVICE)
    boxes, scores = torch.ops.cuda_ops.gather_decode(maps, index, [8.0, 16.0, 32.0], 16, 0.5, True)
    rb, rs = gather_decode_reference(maps, index, [8.0, 16.0, 32.0], 16, 0.5, True)
    torch.testing.assert_close(boxes, rb, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(scores, rs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["reference", pytest.param("kernel", marks=needs_kernel)])
def test_nothing_above_threshold(impl) -> None:
    maps = raw_maps(2, 4, 16, device=DEVICE, scale=0.1)  # every score ~0.5
    boxes, scores, labels, valid = cuda_ops.decode_topk(maps, STRIDES, 16, conf=0.9, impl=impl)
    assert not valid.any() and boxes.shape == (2, sum(h * w for h, w in LEVELS), 4)
    dets = cuda_ops.batched_nms(boxes, scores, labels, valid)
    assert [d.shape for d in dets] == [(0, 6), (0, 6)]


@pytest.mark.parametrize("multi_label", [False, True])
def test_batched_nms_equals_non_max_suppression(multi_label) -> None:
    torch.manual_seed(3)
    nc, reg_max = 4, 16
    maps = raw_maps(2, nc, reg_max, scale=2.0)
    pred = DDetect([8, 16, 32], nc, STRIDES, reg_max).eval().decode(maps)
    want = non_max_suppression(pred, NMSConfig(conf=0.5, iou=0.6, max_det=50, multi_label=multi_label))
    got = cuda_ops.batched_nms(*cuda_ops.decode_topk(maps, STRIDES, reg_max, 0.5, multi_label=multi_label), 0.6, 50)
    for g, w in zip(got, want):
        assert len(g) == len(w) > 0
        torch.testing.assert_close(g, w, rtol=0, atol=2e-4)


def test_bad_maps_name_the_problem() -> None:
    maps = raw_maps(1, 3, 16)
    with pytest.raises(ValueError, match="one stride per map"):
        cuda_ops.decode_topk(maps, STRIDES[:2])
    with pytest.raises(ValueError, match="map 1 is"):
        cuda_ops.decode_topk([maps[0], maps[1][:, :10]], STRIDES[:2])
    with pytest.raises(ValueError, match="no class channels"):
        cuda_ops.decode_topk([m[:, :64] for m in maps], STRIDES)


def test_opcheck() -> None:
    maps = raw_maps(2, 3, 8, device=DEVICE)
    keep = torch.tensor([True, False, True], device=DEVICE)
    torch.library.opcheck(torch.ops.cuda_ops.class_max.default, (maps, 8, keep))
    index = torch.tensor([[0, 5, 70, 80], [3, 64, 1, 2]], device=DEVICE)
    torch.library.opcheck(torch.ops.cuda_ops.gather_decode.default, (maps, index, [8.0, 16.0, 32.0], 8, 0.5, True))
