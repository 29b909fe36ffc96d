"""CBNet routing used by yolov9-c/m (PGI) and gelan-e: CBLinear splits, CBFuse sums, ``from: input`` layers."""

from __future__ import annotations

import pytest
import torch

from detector.config import ConfigError
from detector.model import build_model
from detector.nn.gelan import CBFuse, CBLinear


def test_cblinear_splits_one_biased_conv():
    torch.manual_seed(0)
    lin = CBLinear(8, outs=[3, 5])
    x = torch.rand(2, 8, 4, 4)
    a, b = lin(x)
    full = torch.nn.functional.conv2d(x, lin.conv.weight, lin.conv.bias)
    assert lin.c2 == (3, 5) and lin.conv.bias is not None
    assert torch.equal(a, full[:, :3]) and torch.equal(b, full[:, 3:])


def test_cbfuse_upsamples_each_chosen_split_to_the_target_and_sums():
    torch.manual_seed(0)
    fuse = CBFuse([(4, 6), (4, 6, 2), 6], idx=[1, 1])
    target = torch.rand(1, 6, 8, 8)
    coarse = torch.rand(1, 6, 4, 4)  # stride x2 of the target
    coarser = torch.rand(1, 6, 2, 2)  # stride x4
    out = fuse([(torch.rand(1, 4, 4, 4), coarse), (torch.rand(1, 4, 2, 2), coarser, torch.rand(1, 2, 2, 2)), target])
    # nearest upsampling by an integer factor = repeating every pixel
    up2 = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)
    up4 = coarser.repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert torch.allclose(out, target + up2 + up4, atol=1e-6)
    assert fuse.c2 == 6 and fuse.out_stride([16.0, 32.0, 8.0]) == 8.0


def _cbnet(fuse_from: list, idx: list[int], outs: list[int] | None = None) -> dict:
    """A tiny two-backbone model: backbone 1 -> CBLinear -> fused into backbone 2 (which starts from the image)."""
    return {
        "name": "cbnet",
        "nc": 2,
        "backbone": [
            {"Conv": {"out": 8, "k": 3, "s": 2}},
            {"Conv": {"out": 16, "k": 3, "s": 2, "tag": "S2"}},
            {"CBLinear": {"from": "S2", "outs": outs or [8, 16], "tag": "L2"}},
            {"Conv": {"from": "input", "out": 8, "k": 3, "s": 2, "tag": "I1"}},
            {"CBFuse": {"from": fuse_from, "idx": idx}},
            {"Conv": {"out": 16, "k": 3, "s": 2, "tag": "B3"}},
            {"Conv": {"out": 16, "k": 3, "s": 2, "tag": "B4"}},
            {"Conv": {"out": 16, "k": 3, "s": 2, "tag": "B5"}},
        ],
        "head": [{"DDetect": {"from": ["B3", "B4", "B5"]}}],
    }


def test_input_reference_starts_a_second_backbone_from_the_image():
    m = build_model(_cbnet(["L2", -1], [0])).eval()
    spec = m.specs[3]
    assert spec.sources == [None] and spec.stride == 2.0 and m.layers[3].conv.in_channels == 3
    assert m.specs[4].stride == 2.0 and m.specs[4].width == 8  # CBFuse takes its target's stride and width
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        saved = {}
        hooks = [m.layers[i].register_forward_hook(lambda _m, _i, o, i=i: saved.__setitem__(i, o)) for i in (0, 3)]
        m(x)
        for h in hooks:
            h.remove()
    # layer 3 saw the image itself, not layer 2's output: it equals a fresh run of that Conv on x
    assert torch.equal(saved[3], m.layers[3](x))
    assert not torch.equal(saved[3], saved[0])


@pytest.mark.parametrize(
    ("fuse_from", "idx", "message"),
    [
        (["L2", -1], [2], r"has 2 splits, split index 2 is out of range"),
        (["L2", -1], [1], r"split 1 has 16 channels, expected 8"),
        (["L2", -1], [0, 0], r"got 2 inputs but 2 split indices"),
        (["S2", -1], [0], r"input 0 is not a CBLinear output"),
        ([-1, "L2"], [0], r"the last input must be a feature map"),
    ],
)
def test_cbfuse_wiring_errors_name_the_layer(fuse_from, idx, message):
    with pytest.raises(ConfigError, match=r"cbnet: backbone layer 4 \(CBFuse\): .*" + message):
        build_model(_cbnet(fuse_from, idx))
