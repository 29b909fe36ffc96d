"""Checks of the fused BatchNorm + SiLU kernels, run by ``test_batchnorm_silu.py`` in a subprocess: under
``TRITON_INTERPRET=1`` (Triton's CPU interpreter, set before Triton is imported) against the PyTorch reference,
and, without it, compiled for a Hopper GPU (sm_90). Not collected by the suite itself (no ``test_`` prefix)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import cuda_ops.batchnorm_silu as bn_silu
from cuda_ops.batchnorm_silu import batchnorm_silu

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 before Triton is imported")
MOMENTUM, EPS = 0.03, 1e-3


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def run(impl: str, x, w, b, rm, rv, dy):
    """Output, running stats and gradients of one training forward/backward with ``impl``."""
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    rm, rv = rm.clone(), rv.clone()
    if impl == "kernel":
        y = batchnorm_silu(x, w, b, rm, rv, MOMENTUM, EPS, impl="kernel")
    else:  # the stock composition, in the activation dtype
        y = F.silu(F.batch_norm(x, rm, rv, w, b, True, MOMENTUM, EPS))
    y.backward(dy)
    return {"y": y, "running_mean": rm, "running_var": rv, "dx": x.grad, "dweight": w.grad, "dbias": b.grad}


def inputs(shape, dtype, channels_last: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = (torch.randn(shape, generator=gen) * 2 + 0.5).to(dtype)
    dy = torch.randn(shape, generator=gen).to(dtype)
    if channels_last:
        x, dy = x.contiguous(memory_format=torch.channels_last), dy.contiguous(memory_format=torch.channels_last)
    w = torch.rand(c, generator=gen) + 0.5
    b = torch.randn(c, generator=gen)
    rm, rv = torch.randn(c, generator=gen), torch.rand(c, generator=gen) + 0.5
    return x, w, b, rm, rv, dy


SHAPES = [
    (2, 16, 8, 8),  # a regular layer
    (2, 5, 7, 3),  # odd channel count, odd spatial sizes
    (3, 70, 5, 5),  # channels span two channel blocks of 64, the second partly masked
    (1, 3, 6, 4),  # batch 1
    (6, 7, 1, 1),  # 1x1 spatial
]


@interpreted
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_fp32_matches_batch_norm_silu(shape, channels_last):
    x, w, b, rm, rv, dy = inputs(shape, torch.float32, channels_last)
    got, ref = run("kernel", x, w, b, rm, rv, dy), run("reference", x, w, b, rm, rv, dy)
    for name in ref:
        assert rel(got[name], ref[name]) < 2e-6, (name, rel(got[name], ref[name]))
    assert got["y"].dtype == torch.float32 and got["y"].stride() == x.stride()  # the input's layout kept


@interpreted
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_activations_fp32_statistics(dtype):
    x, w, b, rm, rv, dy = inputs((2, 24, 6, 6), dtype, True, seed=1)
    got = run("kernel", x, w, b, rm, rv, dy)
    exact = run("reference", x.float(), w, b, rm, rv, dy.float())  # the same inputs, computed in fp32
    stock = run("reference", x, w, b, rm, rv, dy)  # PyTorch's own half-precision path
    assert got["y"].dtype == dtype and got["dx"].dtype == dtype
    assert got["running_mean"].dtype == torch.float32 and got["dweight"].dtype == torch.float32
    loose = 1e-2 if dtype == torch.float16 else 2e-2
    for name in exact:
        assert rel(got[name], exact[name]) < loose, (name, rel(got[name], exact[name]))
        # at least as close to the fp32 result as PyTorch's half path is (statistics kept in fp32)
        assert rel(got[name], exact[name]) <= rel(stock[name], exact[name]) * 1.5 + 1e-6, name


@interpreted
def test_many_row_blocks_per_program(monkeypatch):
    """More row blocks than partials: each reduction program folds several blocks (Chan's combination)."""
    monkeypatch.setattr(bn_silu, "_MAX_PARTIALS", 3)
    x, w, b, rm, rv, dy = inputs((2, 6, 20, 20), torch.float32, True, seed=2)
    x = x + 100.0  # a large mean: a naive sum-of-squares variance would lose digits here
    got = run("kernel", x, w, b, rm, rv, dy)
    exact = run("reference", x.double(), w.double(), b.double(), rm.double(), rv.double(), dy.double())
    stock = run("reference", x, w, b, rm, rv, dy)
    assert bn_silu._grid_plan(800, 6)[1] > 1
    for name in exact:  # as close to the float64 result as PyTorch's own float32 path
        assert rel(got[name], exact[name]) < max(2 * rel(stock[name], exact[name]), 1e-6), name


@interpreted
def test_conv_block_fused_path_equals_stock(monkeypatch):
    from detector.nn import conv as conv_module
    from detector.nn.conv import Conv

    torch.manual_seed(0)
    stock = Conv(3, 10, k=3).train()
    fused = Conv(3, 10, k=3).train()
    fused.load_state_dict(stock.state_dict())
    stock.fused_bn = False
    monkeypatch.setattr(conv_module, "fused_bn_runs", lambda x: True)  # CPU tensors, interpreted kernel
    x = torch.randn(2, 3, 9, 9)
    ys = [m(x) for m in (stock, fused)]
    assert rel(ys[1], ys[0]) < 2e-6
    ys[0].square().sum().backward()
    ys[1].square().sum().backward()
    assert rel(fused.conv.weight.grad, stock.conv.weight.grad) < 1e-5
    for k, v in stock.state_dict().items():  # running statistics and num_batches_tracked alike
        assert rel(fused.state_dict()[k].float(), v.float()) < 2e-6, k


@interpreted
def test_compiles_under_torch_compile_fullgraph():
    x, w, b, rm, rv, _ = inputs((2, 8, 4, 4), torch.float32, True)
    expected = batchnorm_silu(x, w, b, rm.clone(), rv.clone(), MOMENTUM, EPS, impl="kernel")
    f = torch.compile(lambda *a: batchnorm_silu(*a, MOMENTUM, EPS, impl="kernel"), fullgraph=True, backend="eager")
    assert rel(f(x, w, b, rm.clone(), rv.clone()), expected) < 1e-6


SIGNATURES = {  # kernel -> (pointer dtypes in order, int args, float args, constexprs) for the sm_90 build
    "partial_stats": (["*fp16", "*fp32", "*fp32"], 6, 0, {"ITERS": 2, "BLOCK_R": 64, "BLOCK_C": 64}),
    "finalize": (["*fp32"] * 6, 3, 2, {"ROWS_PER_PARTIAL": 128, "BLOCK_P": 32, "BLOCK_C": 64}),
    "apply": (["*fp16", "*fp16"] + ["*fp32"] * 4, 6, 0, {"BLOCK_R": 64, "BLOCK_C": 64}),
    "grad_partials": (["*fp16", "*fp16"] + ["*fp32"] * 6, 6, 0, {"ITERS": 2, "BLOCK_R": 64, "BLOCK_C": 64}),
    "grad_input": (["*fp16"] * 3 + ["*fp32"] * 6, 6, 0, {"BLOCK_R": 64, "BLOCK_C": 64}),
}


@pytest.mark.skipif(INTERPRET, reason="compiling for a GPU needs the real Triton JIT (TRITON_INTERPRET unset)")
@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_sm90_compile(name):
    """Every kernel compiles for a Hopper GPU (CUDA compute capability 9.0) to PTX and a cubin, without a GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = bn_silu._kernels()[name]
    pointers, ints, floats, constexprs = SIGNATURES[name]
    args = [a for a in kernel.arg_names if a not in constexprs]
    types = pointers + ["i32"] * ints + ["fp32"] * floats
    assert len(types) == len(args), (args, types)
    signature = dict(zip(args, types)) | {k: "constexpr" for k in constexprs}
    compiled = triton.compile(ASTSource(kernel, signature, constexprs=constexprs), target=GPUTarget("cuda", 90, 32))
    assert ".target sm_90" in compiled.asm["ptx"]
    assert len(compiled.asm["cubin"]) > 1000
