"""Deploy conversion of the GELAN / YOLOv9-PGI zoo, with non-trivial BatchNorm statistics.

yolov9-X minus its auxiliary section *is* gelan-X: its state dict loads strictly (no key remapping) and the
outputs are bit-identical. Fusing (BN folding, RepConvN -> one 3x3) keeps outputs within 1e-4 relative.
"""

from __future__ import annotations

import copy

import pytest
import torch
from backbone_kit import randomize_norms, rel_diff
from torch import nn

from detector.info import count_params
from detector.model import DetectionModel, build_model

SIZE = 128
DEPLOY_PARAMS = {"t": 2.41e6, "s": 7.11e6, "m": 19.98e6, "c": 25.29e6, "e": 57.35e6}  # MODELS.md, fused


class Pair:
    """yolov9-X (BN randomised, auxiliary dropped) and gelan-X loaded from its state dict, both in eval mode.

    Raw head maps are compared (decoding is a fixed function of them); ``raw_*`` are lists of
    ``(1, 4 * 16 + 80, H_i, W_i)`` per level.
    """

    def __init__(self, size: str) -> None:
        torch.manual_seed(0)
        self.size = size
        self.x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
        self.pgi = build_model(f"yolov9-{size}")
        randomize_norms(self.pgi)
        self.pgi.eval()
        self.n_layers_pgi = len(self.pgi.layers)
        with torch.no_grad():
            self.raw_with_aux = self.pgi(self.x, decode=False)["main"]
            self.pgi.drop_auxiliary()
            self.raw_pgi = self.pgi(self.x, decode=False)["main"]
            self.gelan: DetectionModel = build_model(f"gelan-{size}")
            self.load_result = self.gelan.load_state_dict(self.pgi.state_dict(), strict=True)
            self.gelan.eval()
            self.raw_gelan = self.gelan(self.x, decode=False)["main"]


@pytest.fixture(scope="module", params=["t", "s", "m", "c", "e"])
def pair(request) -> Pair:
    return Pair(request.param)


def test_pgi_minus_auxiliary_is_gelan_bit_for_bit(pair: Pair):
    assert len(pair.gelan.layers) == len(pair.pgi.layers) < pair.n_layers_pgi
    assert set(pair.pgi.heads()) == {"main"}
    assert not pair.load_result.missing_keys and not pair.load_result.unexpected_keys
    assert [tuple(t.shape) for t in pair.raw_gelan] == [(1, 144, 16, 16), (1, 144, 8, 8), (1, 144, 4, 4)]
    # the aux branch never touches the main output, and dropping it changes nothing
    assert all(torch.equal(a, b) for a, b in zip(pair.raw_pgi, pair.raw_with_aux))
    assert all(torch.equal(a, b) for a, b in zip(pair.raw_gelan, pair.raw_pgi))


@torch.no_grad()
def test_fused_matches_unfused(pair: Pair):
    fused = copy.deepcopy(pair.gelan).fuse()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    raw = fused(pair.x, decode=False)["main"]
    for a, ref in zip(raw, pair.raw_gelan):
        # box distributions and class logits separately: the logits' large init bias would hide box errors
        box, cls, box_ref, cls_ref = a[:, :64], a[:, 64:], ref[:, :64], ref[:, 64:]
        assert float(box_ref.std()) > 0.01 and float(cls_ref.std()) > 0.01  # outputs vary over the image
        assert rel_diff(box, box_ref) < 1e-4 and rel_diff(cls, cls_ref) < 1e-4
    head = fused.main_head
    assert rel_diff(head.decode(raw), pair.gelan.main_head.decode(pair.raw_gelan)) < 1e-4


def test_to_deploy_params_match_published(pair: Pair):
    deploy = build_model(f"yolov9-{pair.size}").to_deploy()
    n = count_params(deploy)
    assert abs(n - DEPLOY_PARAMS[pair.size]) / DEPLOY_PARAMS[pair.size] < 0.01
    assert n == count_params(copy.deepcopy(pair.gelan).to_deploy()) < count_params(pair.gelan)
    assert not deploy.training and set(deploy.heads()) == {"main"}
