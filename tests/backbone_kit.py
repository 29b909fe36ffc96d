"""Shared helpers for the backbone zoo tests: BN statistics that make fusion non-trivial, a tiny detection model
around any backbone component, and a relative-difference measure."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detector.model import DetectionModel, build_model


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics (so folding them changes weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model


def rel_diff(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def tiny_detector(backbone: str, nc: int = 3) -> DetectionModel:
    """``backbone`` component + a small FPN/PAN neck of Conv/Upsample/Concat + DDetect."""
    cfg = {
        "name": f"{backbone}-tiny-det",
        "nc": nc,
        "backbone": backbone,
        "neck": [
            {"Conv": {"from": "B5", "out": 64, "k": 1, "tag": "N5"}},
            {"Upsample": {}},
            {"Concat": {"from": [-1, "B4"]}},
            {"Conv": {"out": 64, "k": 3, "tag": "N4"}},
            {"Upsample": {}},
            {"Concat": {"from": [-1, "B3"]}},
            {"Conv": {"out": 32, "k": 3, "tag": "P3"}},
            {"Conv": {"out": 32, "k": 3, "s": 2}},
            {"Concat": {"from": [-1, "N4"]}},
            {"Conv": {"out": 64, "k": 3, "tag": "P4"}},
            {"Conv": {"out": 64, "k": 3, "s": 2}},
            {"Concat": {"from": [-1, "N5"]}},
            {"Conv": {"out": 64, "k": 3, "tag": "P5"}},
        ],
        "head": [{"DDetect": {"from": ["P3", "P4", "P5"]}}],
    }
    return build_model(cfg)


def check_detection_smoke(backbone: str, imgsz: int = 128, nc: int = 3, batch: int = 1) -> None:
    """Build ``tiny_detector(backbone)``, run a train forward (raw maps) and an eval forward (decoded boxes)."""
    torch.manual_seed(0)
    model = tiny_detector(backbone, nc)
    assert model.strides == [8.0, 16.0, 32.0]
    x = torch.rand(batch, 3, imgsz, imgsz)
    no = 4 * 16 + nc
    sizes = [imgsz // 8, imgsz // 16, imgsz // 32]
    model.train()
    with torch.no_grad():  # the graph is what matters here; a backward would only double the CPU time
        maps = model(x)["main"]
    assert [tuple(m.shape) for m in maps] == [(batch, no, s, s) for s in sizes]
    model.eval()
    with torch.no_grad():
        out = model(x)["main"]
    assert out.shape == (batch, 4 + nc, sum(s * s for s in sizes))
    assert torch.isfinite(out).all()
    assert float(out[:, 4:].min()) >= 0.0 and float(out[:, 4:].max()) <= 1.0
