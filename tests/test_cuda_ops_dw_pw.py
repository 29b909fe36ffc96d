"""cuda_ops.dw_pw: the fused depthwise 3x3 + act + pointwise 1x1 + act kernel against the unfused torch ops
(fp32/fp16, stride 1/2, odd sizes, batch 1 and > 1, more output channels than one tile), BN folding against the
real Conv+BN+act modules, opcheck."""

from __future__ import annotations

import pytest
import torch
from cuda_ops_kit import DEVICE, needs_kernel, rel_err
from torch import nn

import cuda_ops
from cuda_ops.dw_pw import dw_pw_kernel, dw_pw_reference


def block(c: int, n: int, dtype=torch.float32, device=DEVICE):
    g = torch.Generator().manual_seed(c * 1000 + n)

    def t(*s, scale=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(device, dtype)

    return t(c, 1, 3, 3, scale=0.4), t(c, scale=0.1), t(n, c, 1, 1, scale=c**-0.5), t(n, scale=0.1)


# (B, C, N, H, W, stride, act)
CASES = [
    (1, 16, 24, 7, 9, 1, "silu"),
    (2, 40, 150, 9, 6, 1, ("relu", None)),
    (2, 24, 48, 9, 11, 2, "relu"),
    (1, 8, 16, 5, 5, 2, (None, "silu")),
]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_unfused_ops(case, dtype) -> None:
    b, c, n, h, w, stride, act = case
    x = torch.randn(b, c, h, w, dtype=torch.float64).to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)
    weights = block(c, n, dtype)
    y = cuda_ops.dw_pw(x, *weights, act=act, stride=stride, impl="kernel")
    ref = cuda_ops.dw_pw(x.double(), *(t.double() for t in weights), act=act, stride=stride, impl="reference")
    assert y.shape == ref.shape == (b, n, (h - 1) // stride + 1, (w - 1) // stride + 1)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(y, ref) < (1e-5 if dtype == torch.float32 else 3e-3)


@needs_kernel
def test_kernel_reads_contiguous_nchw_too() -> None:
    x = torch.randn(2, 16, 6, 7, device=DEVICE)
    weights = block(16, 32)
    y = dw_pw_kernel(x, *weights, 1, 2, 2)
    assert rel_err(y, dw_pw_reference(x.double(), *(t.double() for t in weights), 1, 2, 2)) < 1e-5


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv (no bias) + eval BN -> one conv's weight and bias."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return conv.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale


@pytest.mark.parametrize("impl", ["reference", pytest.param("kernel", marks=needs_kernel)])
def test_folded_weights_equal_conv_bn_act_modules(impl) -> None:
    torch.manual_seed(0)
    c, n = 12, 20
    dw, pw = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.Conv2d(c, n, 1, bias=False)
    bn1, bn2 = nn.BatchNorm2d(c), nn.BatchNorm2d(n)
    for bn in (bn1, bn2):
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    model = nn.Sequential(dw, bn1, nn.SiLU(), pw, bn2, nn.SiLU()).eval()
    x = torch.randn(2, c, 7, 5)
    with torch.no_grad():
        want = model(x)
        got = cuda_ops.dw_pw(x.to(DEVICE), *fold(dw, bn1), *fold(pw, bn2), act="silu", impl=impl)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)


def test_bad_arguments_name_the_problem() -> None:
    x = torch.randn(1, 8, 5, 5)
    weights = block(8, 16, device="cpu")
    with pytest.raises(ValueError, match="activation 'gelu'"):
        cuda_ops.dw_pw(x, *weights, act="gelu")
    with pytest.raises(ValueError, match="depthwise weight"):
        cuda_ops.dw_pw(x[:, :4], *weights)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        cuda_ops.dw_pw(x, *weights, stride=3)


def test_opcheck() -> None:
    x = torch.randn(1, 16, 5, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.cuda_ops.dw_pw.default, (x, *block(16, 16), 1, 2, 1))


@pytest.mark.parametrize("impl", ["reference", pytest.param("kernel", marks=needs_kernel)])
def test_empty_batch(impl) -> None:
    x = torch.randn(0, 16, 5, 6, device=DEVICE)
    assert cuda_ops.dw_pw(x, *block(16, 24), impl=impl).shape == (0, 24, 5, 6)
