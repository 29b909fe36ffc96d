"""The registered "tal" and "aota" losses end to end on raw maps: contract, empty batches, perfect predictions,
optimisation toward the target, configs and bad labels."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import detector.losses  # noqa: F401  (registers the losses)
from detector.config import ConfigError
from detector.errors import DetectorError
from detector.nn.heads import make_anchors
from detector.registry import LOSSES

NC = 3
# stand-in heads: DDetect ("tal": 16 bins, anchors at cell centres) and ZeroHead ("aota": reg_max 17 bins, offset 0)
HEADS = {
    "tal": dict(nc=NC, bins=16, anchor_offset=0.5),
    "aota": dict(nc=NC, bins=17, anchor_offset=0.0),
}
# boxes whose edges sit a whole number of strides from every anchor of a single stride-8 level, so a one-hot
# distance distribution is exact: (class, xyxy) per image
BOXES = {
    "tal": [[(1, [12.0, 20.0, 44.0, 52.0])], [(0, [4.0, 4.0, 36.0, 28.0]), (2, [28.0, 28.0, 60.0, 60.0])]],
    "aota": [[(1, [8.0, 8.0, 48.0, 56.0])], [(2, [16.0, 8.0, 56.0, 48.0])]],
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_head(name: str, strides=(8.0, 16.0, 32.0)) -> SimpleNamespace:
    return SimpleNamespace(strides=list(strides), loss=name, **HEADS[name])


def make_batch(images: list[list[tuple[int, list[float]]]]) -> dict:
    rows = [(i, c, box) for i, image in enumerate(images) for c, box in image]
    return {
        "cls": torch.tensor([float(c) for _, c, _ in rows]),
        "bboxes": torch.tensor([box for _, _, box in rows]).reshape(-1, 4),
        "batch_idx": torch.tensor([i for i, _, _ in rows], dtype=torch.long),
    }


def random_maps(head, batch_size: int = 2, size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    c = 4 * head.bins + head.nc
    return [torch.randn(batch_size, c, size // int(s), size // int(s), generator=gen) for s in head.strides]


def perfect_maps(head, images, size: int = 64) -> list[torch.Tensor]:
    """Single-level raw maps predicting every box exactly from each anchor inside it, and its class confidently."""
    (stride,) = head.strides
    n = size // int(stride)
    points, _ = make_anchors([(n, n)], [stride], head.anchor_offset)
    px = points * stride  # (A, 2)
    a = px.shape[0]
    dist = torch.zeros(len(images), a, 4, head.bins)
    dist[..., 0] = 30.0  # background anchors: a valid (zero-length) distribution
    cls = torch.full((len(images), a, head.nc), -8.0)
    for i, image in enumerate(images):
        for c, (x1, y1, x2, y2) in image:
            inside = (px[:, 0] > x1) & (px[:, 0] < x2) & (px[:, 1] > y1) & (px[:, 1] < y2)
            ltrb = torch.stack((px[:, 0] - x1, px[:, 1] - y1, x2 - px[:, 0], y2 - px[:, 1]), -1) / stride
            one_hot = torch.nn.functional.one_hot(ltrb.round().long().clamp(0, head.bins - 1), head.bins) * 30.0
            dist[i, inside] = one_hot[inside].float()
            cls[i, inside, c] = 8.0
    raw = torch.cat((dist.reshape(len(images), a, -1), cls), -1)  # (B, A, 4 * bins + nc)
    return [raw.transpose(1, 2).reshape(len(images), -1, n, n)]


@pytest.mark.parametrize("name", ["tal", "aota"])
def test_contract_and_parts(name):
    head = make_head(name)
    loss_fn = LOSSES.get(name)(head)
    assert loss_fn.names == ("box", "cls", "dfl")
    maps = [m.requires_grad_() for m in random_maps(head)]
    loss, items = loss_fn(maps, make_batch(BOXES[name]))
    assert loss.dim() == 0 and items.shape == (3,) and not items.requires_grad
    assert torch.isclose(loss, items.sum() * 2)  # already multiplied by the batch size
    assert (items > 0).all()
    loss.backward()
    assert all(torch.isfinite(m.grad).all() and m.grad.abs().sum() > 0 for m in maps)
    half_loss, _ = loss_fn([m.detach().half() for m in maps], make_batch(BOXES[name]))  # AMP maps
    assert half_loss.dtype == torch.float32 and torch.isclose(half_loss, loss.detach(), rtol=1e-2)


@pytest.mark.parametrize("name", ["tal", "aota"])
def test_batch_without_any_box(name):
    head = make_head(name)
    maps = [m.requires_grad_() for m in random_maps(head)]
    empty = {"cls": torch.zeros(0), "bboxes": torch.zeros(0, 4), "batch_idx": torch.zeros(0, dtype=torch.long)}
    loss, items = LOSSES.get(name)(head)(maps, empty)
    assert torch.isfinite(loss) and items[0] == 0 and items[2] == 0 and items[1] > 0
    loss.backward()
    assert all(torch.isfinite(m.grad).all() for m in maps)


@pytest.mark.parametrize("name", ["tal", "aota"])
def test_perfect_prediction_has_no_box_or_dfl_loss(name):
    head = make_head(name, strides=(8.0,))
    images = BOXES[name]
    loss_fn = LOSSES.get(name)(head)
    _, items = loss_fn(perfect_maps(head, images), make_batch(images))
    box, cls, dfl = items.tolist()
    assert box < 1e-4 and dfl < 1e-4, items
    # the same maps with the distance logits scrambled: the box parts must notice
    noisy = [m.clone() for m in perfect_maps(head, images)]
    noisy[0][:, : 4 * head.bins] = torch.randn_like(noisy[0][:, : 4 * head.bins])
    _, bad = loss_fn(noisy, make_batch(images))
    assert bad[0] > 0.1 and bad[2] > 0.1


@pytest.mark.parametrize("name", ["tal", "aota"])
def test_loss_decreases_toward_the_target(name):
    head = make_head(name)
    images = BOXES[name]
    batch = make_batch(images)
    loss_fn = LOSSES.get(name)(head)
    maps = [m.requires_grad_() for m in random_maps(head, seed=1)]
    opt = torch.optim.Adam(maps, lr=0.1)
    history = []
    for _ in range(25):
        opt.zero_grad()
        loss, items = loss_fn(maps, batch)
        loss.backward()
        opt.step()
        history.append(items)
    first, last = history[0], history[-1]
    assert last.sum() < 0.3 * first.sum(), (first, last)
    assert last[0] < first[0] and last[2] < first[2]


@pytest.mark.parametrize("name", ["tal", "aota"])
def test_moving_predictions_toward_the_target_lowers_box_parts(name):
    head = make_head(name, strides=(8.0,))
    images = BOXES[name]
    batch = make_batch(images)
    loss_fn = LOSSES.get(name)(head)
    good = perfect_maps(head, images)[0]
    noise = torch.randn(good.shape, generator=torch.Generator().manual_seed(3)) * 8
    parts = []
    for t in (0.0, 0.5, 0.8, 1.0):
        dist = slice(0, 4 * head.bins)
        m = good.clone()
        m[:, dist] = good[:, dist] * t + noise[:, dist] * (1 - t)
        parts.append(loss_fn([m], batch)[1])
    box = [p[0].item() for p in parts]
    dfl = [p[2].item() for p in parts]
    assert box == sorted(box, reverse=True) and dfl == sorted(dfl, reverse=True), (box, dfl)


def test_configs_and_gains():
    head = make_head("tal")
    maps, batch = random_maps(head), make_batch(BOXES["tal"])
    _, base = LOSSES.get("tal")(head)(maps, batch)
    _, doubled = LOSSES.get("tal")(head, {"box": 15.0, "cls": 1.0, "dfl": 3.0})(maps, batch)
    assert torch.allclose(doubled, base * 2, rtol=1e-5)
    with pytest.raises(ConfigError, match="did you mean 'topk'"):
        LOSSES.get("tal")(head, {"top_k": 5})
    cfg = LOSSES.get("aota").config_class(box=0.0)
    _, no_box = LOSSES.get("aota")(make_head("aota"), cfg)(random_maps(make_head("aota")), make_batch(BOXES["aota"]))
    assert no_box[0] == 0 and no_box[1] > 0


@pytest.mark.parametrize("name", ["tal", "aota"])
def test_bad_inputs_raise_clearly(name):
    head = make_head(name)
    maps = random_maps(head)
    with pytest.raises(DetectorError, match="outside \\[0, 3\\)"):
        LOSSES.get(name)(head)(maps, make_batch([[(3, [0.0, 0.0, 10.0, 10.0])], []]))
    with pytest.raises(ValueError, match="does not match"):
        LOSSES.get(name)(head)([m[:, 1:] for m in maps], make_batch(BOXES[name]))


@pytest.mark.parametrize("with_boxes", [True, False])
def test_real_ddetect_every_parameter_gets_a_gradient(with_boxes):
    from tiny_models import tiny_detector

    from detector.model import build_model

    model = build_model(tiny_detector(), nc=NC).train()
    head = model.main_head
    loss_fn = LOSSES.get(head.loss)(head)
    images = BOXES["tal"] if with_boxes else [[], []]
    loss, items = loss_fn(model(torch.rand(2, 3, 64, 64))["main"], make_batch(images))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing  # DDP without find_unused_parameters needs every head branch in the graph
    assert torch.isfinite(items).all() and (items[0] > 0) == with_boxes
