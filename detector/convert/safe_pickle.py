"""Reading other frameworks' checkpoints without running their code.

Their ``.pt`` files are Python pickles of their own classes (a whole ``nn.Module``, argparse namespaces, ...).
``torch.load(weights_only=True)`` refuses them; a plain ``torch.load`` would import those projects and let the
file call anything. ``safe_load`` sits between: tensors, numpy arrays and plain containers are rebuilt; every
other global becomes an inert ``Placeholder`` class that records its dotted name, so a pickled module comes back
as placeholders holding ``_parameters`` / ``_buffers`` / ``_modules`` (``module_state_dict`` walks them); and a
pickle that would *call* an unknown global (``os.system``, ``eval``, a class's constructor) is refused with
``UnsafePickle`` before anything runs. The one exception is the namespace classes in ``NAMESPACE_CLASSES``:
``SimpleNamespace`` pickles as a call of its class with no arguments followed by its ``__dict__``, which a
placeholder can take without running anything (Ultralytics' mid-training ``last.pt`` holds such namespaces).
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.errors import DetectorError

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray


class UnsafePickle(DetectorError):
    """The pickle asks to call something that is not a tensor/container rebuilder."""


class Placeholder:
    """Stands for an object of a class we do not import; ``__global__`` is that class's dotted name.

    Creating one through pickle's object-creation opcodes (NEWOBJ, ``copyreg._reconstructor``) is inert; calling
    the class (pickle's REDUCE), which for a real global would run arbitrary code, raises ``UnsafePickle``.
    """

    __global__ = "?"

    def __init__(self, *args, **kwargs) -> None:
        raise UnsafePickle(f"the pickle would call {self.__global__}")

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict state, slot state)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<placeholder {self.__global__}>"


class NamespacePlaceholder(Placeholder):
    """Stands for a ``SimpleNamespace``-like class: pickle calls it with no arguments, then sets its
    ``__dict__``. Any argument means it is not a namespace and is refused like any other call."""

    def __init__(self, *args, **kwargs) -> None:
        if args or kwargs:
            raise UnsafePickle(f"the pickle would call {self.__global__} with arguments")


# namespace classes whose pickles construct them as ``cls()`` + ``__dict__``: stdlib, and Ultralytics' config
# namespace under its 8.1+ and 8.0 module paths
NAMESPACE_CLASSES = frozenset(
    {
        "types.SimpleNamespace",
        "ultralytics.utils.IterableSimpleNamespace",
        "ultralytics.yolo.utils.IterableSimpleNamespace",
    }
)


def _placeholder_class(module: str, name: str) -> type[Placeholder]:
    base = NamespacePlaceholder if f"{module}.{name}" in NAMESPACE_CLASSES else Placeholder
    return types.new_class(name, (base,), exec_body=lambda ns: ns.update(__global__=f"{module}.{name}"))


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` limited to what default pickling of a plain class does (base ``object``)."""
    if base is not object:
        raise UnsafePickle(f"the pickle would construct {getattr(cls, '__global__', cls)} from {base}")
    obj = object.__new__(cls)
    if state is not None:
        raise UnsafePickle(f"the pickle would initialise {getattr(cls, '__global__', cls)} with {type(state)}")
    return obj


def _safe_globals() -> dict[str, Any]:
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = dict(_get_allowed_globals())
    allowed.update(
        {
            "collections.OrderedDict": OrderedDict,
            "copyreg._reconstructor": _reconstructor,
            "builtins.set": set,
            "builtins.frozenset": frozenset,
            "builtins.slice": slice,
            "builtins.object": object,
            "torch.device": torch.device,
        }
    )
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1 and 2 pickle under either name
        allowed[f"{mod}._reconstruct"] = _multiarray._reconstruct
        allowed[f"{mod}.scalar"] = _multiarray.scalar
    allowed["numpy.ndarray"] = np.ndarray
    allowed["numpy.dtype"] = np.dtype
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals are the safe rebuilders or placeholders (see the module docstring)."""

    _allowed: dict[str, Any] | None = None
    _dtypes = {f"numpy.dtypes.{n}": getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")}

    def find_class(self, module: str, name: str) -> Any:
        if SafeUnpickler._allowed is None:
            SafeUnpickler._allowed = _safe_globals()
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names that protocol <= 2 pickles may use
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in SafeUnpickler._allowed:
            return SafeUnpickler._allowed[key]
        if key in self._dtypes:
            return self._dtypes[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _placeholder_class(module, name)


class _PickleModule(types.ModuleType):
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` and ``load``."""

    Unpickler = SafeUnpickler

    @staticmethod
    def load(f, **kwargs):
        return SafeUnpickler(f, **kwargs).load()


SAFE_PICKLE = _PickleModule("detector_safe_pickle")


def safe_load(path: str | Path) -> Any:
    """Load a checkpoint of another framework (torch zip/legacy pickle, or ``.safetensors``) without running
    its code; returns the unpickled object with unknown classes as ``Placeholder``s.

    Raises ``UnsafePickle`` (naming the file and the global) for a pickle that would call something, and
    ``DetectorError`` for a file that is missing or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DetectorError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise DetectorError(
                f"{path}: reading .safetensors needs the safetensors package: pip install safetensors"
            ) from None

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=SAFE_PICKLE)
    except UnsafePickle as e:
        raise UnsafePickle(f"{path}: refused, {e}; a checkpoint needs only tensors and containers") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise DetectorError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def global_name(obj: Any) -> str:
    """The dotted class name a placeholder stands for (``type(obj).__qualname__`` for real objects)."""
    return obj.__global__ if isinstance(obj, Placeholder) else f"{type(obj).__module__}.{type(obj).__qualname__}"


def module_state_dict(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a pickled ``nn.Module`` (real or placeholder): parameters and persistent buffers
    of it and its children, keyed as ``nn.Module.state_dict`` would key them, as float32/int tensors."""
    d = obj.__dict__
    if "_parameters" not in d or "_modules" not in d:
        raise DetectorError(f"{global_name(obj)} is not a pickled torch module (no _parameters/_modules)")
    out: dict[str, torch.Tensor] = {}
    skip = set(d.get("_non_persistent_buffers_set", ()) or ())
    for group in ("_parameters", "_buffers"):
        for k, v in (d.get(group) or {}).items():
            if v is not None and k not in skip:
                t = v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(v)
                out[prefix + k] = t.float() if t.is_floating_point() else t
    for name, child in (d.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out
