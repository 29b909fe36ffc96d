"""Model statistics: parameter counts, FLOPs (via ``torch.utils.flop_counter``) and a per-layer table."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from detector.model import DetectionModel


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, imgsz: int | tuple[int, int] = 640, train_form: bool = False) -> float:
    """FLOPs (2 x multiply-adds) of one forward at ``imgsz``, counted by PyTorch's own FLOP counter.

    ``train_form=True`` counts the training graph (auxiliary branches included) on a copy in train mode, so
    the caller's BatchNorm statistics are untouched.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    m = copy.deepcopy(model).train() if train_form else model
    was_training = m.training
    if not train_form:
        m.eval()
    x = torch.zeros(1, 3, h, w, device=next(m.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter:
        m(x)
    if not train_form and was_training:
        m.train()
    return float(counter.get_total_flops())


@torch.no_grad()
def count_flops_with_norm(model: nn.Module, imgsz: int | tuple[int, int] = 640, per_element: float = 8.0) -> float:
    """``count_flops`` plus ``per_element`` FLOPs for every BatchNorm output element of one eval forward.

    ``count_flops`` counts convolutions and matmuls only, which is the cost of the BN-folded deploy form. Some
    papers (LeYOLO) report the unfused model as counted by thop through Ultralytics: thop charges an affine
    BatchNorm 4 multiply-adds per output element and Ultralytics doubles multiply-adds into FLOPs, so 8 FLOPs per
    element. This reproduces that convention so such published figures can be compared.
    """
    elements = 0

    def hook(_m, _inp, out) -> None:
        nonlocal elements
        elements += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        flops = count_flops(model, imgsz)
    finally:
        for h in handles:
            h.remove()
    return flops + per_element * elements


@dataclass
class LayerRow:
    """One row of the layer table."""

    index: int
    section: str
    block: str
    sources: str
    tag: str
    params: int
    shape: str


@torch.no_grad()
def layer_table(model: DetectionModel, imgsz: int = 640) -> list[LayerRow]:
    """Per-layer rows with output shapes from one eval forward at ``imgsz`` (aux layers run in train form)."""
    shapes: dict[int, str] = {}

    def hook(i: int):
        def fn(_m, _inp, out):
            shapes[i] = _shape_str(out)

        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(model.layers)]
    m_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, imgsz, imgsz, device=next(model.parameters()).device)
        model._active_eval, saved = model._active_train, model._active_eval  # show aux shapes too
        model(x)
    finally:
        model._active_eval = saved
        for h in handles:
            h.remove()
        model.train(m_training)
    rows = []
    for spec, layer in zip(model.specs, model.layers):
        src = ",".join("input" if s is None else str(s) for s in spec.sources)
        rows.append(
            LayerRow(
                spec.index,
                spec.section,
                spec.block,
                src,
                spec.tag or "",
                count_params(layer),
                shapes.get(spec.index, ""),
            )
        )
    return rows


def _shape_str(out) -> str:
    if isinstance(out, torch.Tensor):
        return "x".join(str(d) for d in out.shape[1:])
    if isinstance(out, (list, tuple)):
        return " | ".join(_shape_str(o) for o in out)
    return ""


def model_summary(model: DetectionModel, imgsz: int = 640) -> dict:
    """Params and GFLOPs of the train form and the deploy form (the deploy form is built on a copy)."""
    deploy = copy.deepcopy(model).to_deploy()
    return {
        "name": model.yaml.get("name", ""),
        "imgsz": imgsz,
        "params": count_params(model),
        "gflops": round(count_flops(model, imgsz, train_form=True) / 1e9, 3),
        "deploy_params": count_params(deploy),
        "deploy_gflops": round(count_flops(deploy, imgsz) / 1e9, 3),
        "nc": model.nc,
        "strides": model.strides,
    }


def split_args(argv: list[str]) -> tuple[list[str], dict[str, str], set[str]]:
    """argv -> (positional words, key=value pairs, --flags)."""
    pos, kv, flags = [], {}, set()
    for a in argv:
        if a.startswith("--"):
            flags.add(a[2:])
        elif "=" in a:
            k, v = a.split("=", 1)
            kv[k] = v
        else:
            pos.append(a)
    return pos, kv, flags


def cli_info(argv: list[str]) -> int:
    """``detector info MODEL [imgsz=640] [nc=80] [--json]``."""
    import json

    from detector.config import ConfigError
    from detector.model import build_model

    pos, kv, flags = split_args(argv)
    model_name = pos[0] if pos else kv.pop("model", None)
    if not model_name:
        raise ConfigError("detector info: name a model, e.g. `detector info gelan-c`")
    unknown = set(kv) - {"imgsz", "nc", "model"}
    if unknown:
        raise ConfigError(f"detector info: unknown key(s) {sorted(unknown)}; valid: imgsz, nc")
    imgsz = int(kv.get("imgsz", 640))
    model = build_model(model_name, nc=int(kv["nc"]) if "nc" in kv else None)
    summary = model_summary(model, imgsz)
    if "json" in flags:
        print(json.dumps(summary))
        return 0
    rows = layer_table(model, imgsz)
    print(f"{'#':>3} {'section':<9} {'block':<16} {'from':<10} {'tag':<6} {'params':>11}  output")
    for r in rows:
        print(f"{r.index:>3} {r.section:<9} {r.block:<16} {r.sources:<10} {r.tag:<6} {r.params:>11,}  {r.shape}")
    print(
        f"\n{summary['name']} @ {imgsz}: train form {summary['params'] / 1e6:.3f}M params, "
        f"{summary['gflops']:.1f} GFLOPs | deploy form {summary['deploy_params'] / 1e6:.3f}M params, "
        f"{summary['deploy_gflops']:.1f} GFLOPs"
    )
    return 0
