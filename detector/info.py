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


THOP_NORM_FLOPS = 8.0
"""FLOPs per BatchNorm output element in the thop convention papers use for unfused models."""


def shape_only_copy(model: nn.Module) -> nn.Module:
    """A deep copy on the ``meta`` device: runs a forward (or ``fuse()``) for shapes and op counts only.

    Parameters and buffers are swapped for meta tensors while copying, so no weight data is duplicated.
    """
    memo: dict[int, torch.Tensor] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


@torch.no_grad()
def count_flops(
    model: nn.Module,
    imgsz: int | tuple[int, int] = 640,
    train_form: bool = False,
    device: str | None = "meta",
    norm_flops: float = 0.0,
) -> float:
    """FLOPs (2 x multiply-adds) of one forward at ``imgsz``, counted by PyTorch's own FLOP counter.

    Counted on a copy (the caller's model and BatchNorm statistics are untouched). ``device="meta"`` (default)
    runs that copy on the meta device, where ops only propagate shapes, so yolov9-e at 640 counts in well under
    a second and gives the same count as a real run; ``device=None`` runs a real copy on the model's device.
    ``train_form=True`` counts the training graph (auxiliary branches included) in train mode, on a batch of 2
    halved, because a batch of 1 cannot pass a training-mode BatchNorm over pooled (B, C) features.

    PyTorch's counter sees convolutions and matmuls only. ``norm_flops`` adds that many FLOPs per BatchNorm output
    element: 8 reproduces thop as used by Ultralytics-style code (an affine BN = 4 multiply-adds per element,
    doubled into FLOPs), which is how papers count their unfused training-form models.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    if device == "meta":
        m = shape_only_copy(model)
    else:
        m = copy.deepcopy(model).to(device or next(model.parameters()).device)
    m.train(train_form)
    batch = 2 if train_form else 1
    elements = 0

    def count_norm(_m, _inp, out) -> None:
        nonlocal elements
        elements += out.numel()

    if norm_flops:
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.register_forward_hook(count_norm)
    x = torch.zeros(batch, 3, h, w, device=next(m.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter:
        m(x)
    return (float(counter.get_total_flops()) + norm_flops * elements) / batch


def count_flops_with_norm(
    model: nn.Module, imgsz: int | tuple[int, int] = 640, per_element: float = THOP_NORM_FLOPS
) -> float:
    """Eval-graph FLOPs with BatchNorm counted the thop way (see ``count_flops``), as LeYOLO's paper counts."""
    return count_flops(model, imgsz, norm_flops=per_element)


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
    """Per-layer rows with output shapes from one eval forward at ``imgsz`` on a meta-device copy.

    Auxiliary layers are run too. A head's row shows its raw per-level maps and, after ``->``, the decoded
    ``(4 + nc, A)`` output; heads run through ``forward_raw`` rather than ``__call__``, so their shapes are read
    from the model's outputs instead of a forward hook.
    """
    m: DetectionModel = shape_only_copy(model).eval()  # type: ignore[assignment]
    shapes: dict[int, str] = {}

    def hook(i: int):
        def fn(_m, _inp, out):
            shapes[i] = _shape_str(out)

        return fn

    for i, layer in enumerate(m.layers):
        layer.register_forward_hook(hook(i))
    m._active_eval = m._active_train  # show aux shapes too (the copy is thrown away)
    x = torch.zeros(1, 3, imgsz, imgsz, device="meta")
    outputs = m(x, decode=False)
    for i, tag in m.head_tags.items():
        maps = outputs[tag]
        shapes[i] = f"{_shape_str(maps)} -> {_shape_str(m.layers[i].decode(maps))}"
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
    """Params and GFLOPs of the train form and the deploy form (built on a meta-device copy).

    Train-form GFLOPs count BatchNorm the thop way (as the papers do for unfused models); the deploy form has no
    BatchNorm left, so both conventions agree there.
    """
    deploy = shape_only_copy(model).to_deploy()
    return {
        "name": model.yaml.get("name", ""),
        "imgsz": imgsz,
        "params": count_params(model),
        "gflops": round(count_flops(model, imgsz, train_form=True, norm_flops=THOP_NORM_FLOPS) / 1e9, 3),
        "deploy_params": count_params(deploy),
        "deploy_gflops": round(count_flops(deploy, imgsz) / 1e9, 3),
        "nc": model.nc,
        "strides": model.strides,
    }


def format_info(model: DetectionModel, imgsz: int = 640, summary: dict | None = None) -> str:
    """The layer table and the one-line summary ``detector info`` prints."""
    summary = summary or model_summary(model, imgsz)
    rows = layer_table(model, imgsz)
    wf = max([4] + [len(r.sources) for r in rows])
    wb = max([5] + [len(r.block) for r in rows])
    lines = [f"{'#':>3} {'section':<9} {'block':<{wb}} {'from':<{wf}} {'tag':<6} {'params':>11}  output"]
    for r in rows:
        lines.append(
            f"{r.index:>3} {r.section:<9} {r.block:<{wb}} {r.sources:<{wf}} {r.tag:<6} {r.params:>11,}  {r.shape}"
        )
    lines.append(
        f"\n{summary['name']} @ {imgsz}: train form {summary['params'] / 1e6:.3f}M params, "
        f"{summary['gflops']:.1f} GFLOPs | deploy form {summary['deploy_params'] / 1e6:.3f}M params, "
        f"{summary['deploy_gflops']:.1f} GFLOPs"
    )
    return "\n".join(lines)


@dataclass
class InfoArgs:
    """``detector info`` keys."""

    model: str = ""  # zoo name or model YAML (a bare word works too: detector info gelan-c)
    imgsz: int = 640  # input size for shapes and GFLOPs
    nc: int | None = None  # number of classes (default: the model file's)
    json: bool = False  # print one JSON object (the summary) instead of the table


def cli_info(argv: list[str]) -> int:
    """``detector info MODEL [imgsz=640] [nc=80] [--json]``."""
    import json

    from detector.cli_args import mode_args
    from detector.config import ConfigError
    from detector.model import build_model

    args = mode_args("info", argv)
    if args is None:
        return 0
    if not args.model:
        raise ConfigError("detector info: name a model, e.g. `detector info gelan-c`")
    imgsz = args.imgsz
    model = build_model(args.model, nc=args.nc)
    summary = model_summary(model, imgsz)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(format_info(model, imgsz, summary))
    return 0
