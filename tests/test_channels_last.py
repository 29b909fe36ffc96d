"""channels_last: the memory format CUDA runs use gives the same numbers as NCHW (checked on the CPU), and the
helpers convert exactly when the device is CUDA."""

from __future__ import annotations

import pytest
import torch
from backbone_kit import randomize_norms

from detector.engine.memory_format import model_to_channels_last, to_channels_last
from detector.model import build_model

CL = torch.channels_last


@pytest.mark.parametrize("name", ["yolov9-t", "lsnet-t-gelan", "damoyolo-t"])
def test_channels_last_model_gives_the_same_outputs(name):
    """Decoded eval outputs and raw training maps agree; a ``.view`` on a channels_last activation would raise."""
    torch.manual_seed(0)
    model = build_model(name, nc=3)
    randomize_norms(model)
    model.eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        want = model(x)["main"]
        nhwc = model_to_channels_last(model, torch.device("cuda"))  # what a CUDA run does (CPU tensors here)
        assert next(p for p in nhwc.parameters() if p.dim() == 4).is_contiguous(memory_format=CL)
        got = nhwc(to_channels_last(x, torch.device("cuda")))["main"]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    nhwc.train()
    raw = nhwc(to_channels_last(x, torch.device("cuda")))
    assert all(torch.isfinite(m).all() for maps in raw.values() for m in maps)


def test_helpers_leave_cpu_runs_alone():
    x = torch.rand(1, 3, 8, 8)
    assert to_channels_last(x, torch.device("cpu")) is x
    assert to_channels_last(x, torch.device("cuda")).is_contiguous(memory_format=CL)
    net = torch.nn.Conv2d(3, 4, 3)
    assert model_to_channels_last(net, torch.device("cpu")).weight.is_contiguous()
