"""cuda_ops.ska: the reference against an unfold oracle, gradcheck, and the Triton kernels (forward, backward,
autograd through the custom op) against the reference; opcheck of both custom ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cuda_ops_kit import DEVICE, needs_kernel, rel_err

import cuda_ops
from cuda_ops.ska import ska_backward_kernel, ska_backward_reference, ska_kernel, ska_reference

# (B, C, G, k, H, W): odd sizes, batch 1 and > 1, one group, several channels per group, a 5x5 kernel
SHAPES = [(1, 6, 3, 3, 5, 7), (2, 16, 8, 3, 9, 6), (2, 4, 1, 5, 6, 5)]


def inputs(b, c, g, k, h, w, dtype=torch.float32, device=DEVICE):
    x = torch.randn(b, c, h, w, dtype=torch.float64).to(device, dtype)
    wt = torch.randn(b, g, k * k, h, w, dtype=torch.float64).to(device, dtype)
    return x, wt


def unfold_ska(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Independent oracle: F.unfold the k x k neighbourhoods, weight them per group, sum the taps."""
    b, c, h, wd = x.shape
    g, taps = w.shape[1:3]
    k = int(taps**0.5)
    cols = F.unfold(x, k, padding=k // 2).view(b, c // g, g, taps, h, wd)
    return (cols * w[:, None]).sum(3).reshape(b, c, h, wd)


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_equals_unfold(shape) -> None:
    x, w = inputs(*shape, dtype=torch.float64, device="cpu")
    torch.testing.assert_close(ska_reference(x, w), unfold_ska(x, w), rtol=1e-12, atol=1e-12)


def test_reference_gradcheck() -> None:
    x, w = inputs(2, 4, 2, 3, 4, 5, dtype=torch.float64, device="cpu")
    assert torch.autograd.gradcheck(ska_reference, (x.requires_grad_(), w.requires_grad_()))


def test_shape_errors_name_the_problem() -> None:
    x, w = inputs(1, 6, 4, 3, 5, 5, device="cpu")
    with pytest.raises(ValueError, match="C % G == 0"):
        cuda_ops.ska(x, w)
    with pytest.raises(ValueError, match="want \\(B, G, k\\*k, H, W\\)"):
        cuda_ops.ska(x, w[:, :, :, :4])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_forward_backward(shape, dtype) -> None:
    x, w = inputs(*shape, dtype=dtype)
    grad = torch.randn_like(x)
    y = torch.full_like(x, float("nan"))  # poisoned: every element must be written
    y.copy_(ska_kernel(x, w))
    ref = ska_reference(x.double(), w.double())
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    assert rel_err(y, ref) < tol
    dx, dw = ska_backward_kernel(grad, x, w)
    rx, rw = ska_backward_reference(grad.double(), x.double(), w.double())
    assert dx.dtype == dtype and dw.dtype == dtype
    assert rel_err(dx, rx) < tol and rel_err(dw, rw) < tol


@needs_kernel
def test_autograd_through_the_custom_op() -> None:
    x, w = inputs(2, 8, 4, 3, 5, 6)
    xk, wk = x.clone().requires_grad_(), w.clone().requires_grad_()
    xr, wr = x.clone().double().requires_grad_(), w.clone().double().requires_grad_()
    (cuda_ops.ska(xk, wk, impl="kernel") ** 2).sum().backward()
    (ska_reference(xr, wr) ** 2).sum().backward()
    assert rel_err(xk.grad, xr.grad) < 1e-6 and rel_err(wk.grad, wr.grad) < 1e-6


def test_empty_batch() -> None:
    x, w = inputs(0, 4, 2, 3, 5, 5)
    assert cuda_ops.ska(x, w).shape == (0, 4, 5, 5)
    if cuda_ops.kernel_runs_on(DEVICE):
        assert cuda_ops.ska(x, w, impl="kernel").shape == (0, 4, 5, 5)


def test_opcheck() -> None:
    x, w = inputs(1, 4, 2, 3, 4, 5)
    torch.library.opcheck(torch.ops.cuda_ops.ska.default, (x.requires_grad_(), w.requires_grad_()))
    torch.library.opcheck(torch.ops.cuda_ops.ska_backward.default, (torch.randn_like(x), x.detach(), w.detach()))


def test_detector_ska_keeps_the_reference_on_cpu() -> None:
    """detector.nn.ska on CPU tensors is the reference, bit for bit and differentiable by plain autograd, also
    while the interpreter is on (it would be far slower)."""
    from detector.nn.ska import ska as detector_ska

    x, w = inputs(2, 8, 4, 3, 5, 6, device="cpu")
    y = detector_ska(x.requires_grad_(), w)
    assert torch.equal(y, ska_reference(x, w)) and not any("cuda_ops" in n for n in graph_nodes(y.grad_fn))


def graph_nodes(fn, depth: int = 8) -> list[str]:
    """Names of the autograd nodes up to ``depth`` steps behind ``fn``."""
    if fn is None or depth == 0:
        return []
    return [type(fn).__name__] + [n for nxt, _ in fn.next_functions for n in graph_nodes(nxt, depth - 1)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_lsconv_on_cuda_uses_the_kernel() -> None:
    from detector.nn.lsnet import LSConv

    torch.manual_seed(0)
    block = LSConv(32).cuda()
    x = torch.randn(2, 32, 20, 20, device="cuda", requires_grad=True)
    y = block(x)
    assert any("cuda_ops_ska" in name for name in graph_nodes(y.grad_fn)), "the SKA kernel was not used"
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    y_ref = block.bn(ska_reference(x, block.lkp(x))) + x  # LSConv.forward with the reference SKA
    (gx_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(gx, gx_ref) < 1e-4


@needs_kernel
def test_mixed_dtypes_promote_like_the_reference() -> None:
    x, w = inputs(1, 4, 2, 3, 5, 6, dtype=torch.float16)
    y = cuda_ops.ska(x, w.float(), impl="kernel")
    ref = ska_reference(x, w.float())
    assert y.dtype == ref.dtype == torch.float32 and rel_err(y, ref) < 1e-6
