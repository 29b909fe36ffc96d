"""Counting the operations that make the host wait for the device (and so block CUDA-graph capture).

On CUDA these synchronise: reading a value back (``.item()``, ``int(t)``, ``bool(t)``, ``.tolist()``), boolean-mask
reads and writes (their output size depends on the data), ``nonzero``, ``masked_select``, ``bincount``,
``unique`` and ``repeat_interleave`` without an output size; and a tensor made from Python data
(``torch.tensor([...])``, ``x.new_tensor([...])``), whose copy to the device is a blocking host-to-device
transfer that CUDA-graph capture refuses (0-dim Python scalars travel as kernel arguments and do not count). The counter sees every op dispatched while it is
active, on any device, so a CPU run already tells how many synchronisations the same code would force on a GPU.
One blind spot: ``.tolist()`` of a CPU tensor reads memory without dispatching an op (on CUDA it dispatches a
copy to the host first), so code under test should not call it on tensors that would live on the device.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ALWAYS_SYNC = {
    "aten._local_scalar_dense",  # .item(), int(), float(), bool(), .tolist()
    "aten.nonzero",
    "aten.masked_select",
    "aten.bincount",
    "aten._unique2",
    "aten.unique_dim",
    "aten.unique_consecutive",
    "aten.is_nonzero",
    "aten.equal",
}
_MASK_INDEXED = {"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"}


def _has_mask_index(args: tuple) -> bool:
    """Whether an ``index``/``index_put`` call carries a boolean (or uint8) index tensor."""
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (indices or ()) if i is not None
    )


def sync_kind(func, args: tuple, kwargs: dict) -> str | None:
    """The name of the synchronising op ``func`` is, or None when it runs without waiting for the device."""
    name = func.overloadpacket._qualified_op_name.replace("::", ".")
    if name in _ALWAYS_SYNC:
        return name
    if name in _MASK_INDEXED and _has_mask_index(args):
        return f"{name} (boolean mask)"
    if name == "aten.repeat_interleave" and kwargs.get("output_size") is None and len(args) < 3:
        return name
    if name == "aten.lift_fresh" and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
        return "aten.lift_fresh (host data)"
    return None


class HostSyncCounter(TorchDispatchMode):
    """``with HostSyncCounter() as c: ...`` -> ``c.total`` synchronising ops, ``c.by_op`` per op name.

    Autograd's backward runs its ops through the same dispatcher, so ``loss.backward()`` inside the block is
    counted too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = sync_kind(func, args, kwargs)
        if kind is not None:
            self.by_op[kind] += 1
        return func(*args, **kwargs)
