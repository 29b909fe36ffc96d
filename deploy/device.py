"""The one reading of a ``device`` string, shared by every surface (train, val, predict, export, benchmark,
``Detector``, ``load_runner``). Torch-free, so ``deploy`` can use it; ``detector.engine.distributed`` adds
torch's view of the machine.

Accepted spellings: ``""`` / ``"auto"`` (a GPU when there is one, else the CPU), ``"cpu"``, ``"mps"``,
``"cuda"`` (this process's GPU: the local rank's under torchrun, else GPU 0), ``"cuda:N"`` or ``"N"`` (GPU N),
``"N,M"`` (several GPUs: one per torchrun process).
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy.errors import DeployError

FORMS = "'', 'cpu', 'cuda', 'cuda:N', 'N' or 'N,M' (one GPU per torchrun process)"


class DeviceError(DeployError):
    """A device string that does not parse, or names hardware this machine does not have."""


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device string: ``kind`` "auto", "cpu", "mps" or "cuda", and the GPU ``indices`` it names
    (empty for "cuda" without an index: the process's own GPU)."""

    kind: str
    indices: tuple[int, ...] = ()
    text: str = ""

    @property
    def wants_cuda(self) -> bool:
        return self.kind == "cuda"


def parse_device(device: object) -> DeviceSpec:
    """``device`` (str, int, None or anything whose ``str`` is one of the forms above) -> ``DeviceSpec``."""
    text = "" if device is None else str(device).strip()
    d = text.lower().replace(" ", "")
    if d in ("", "auto"):
        return DeviceSpec("auto", (), text)
    if d in ("cpu", "mps"):
        return DeviceSpec(d, (), text)
    if d == "cuda":
        return DeviceSpec("cuda", (), text)
    ids = d.removeprefix("cuda:").split(",")
    if not all(s.isdigit() for s in ids):
        raise DeviceError(f"device={text!r}: expected {FORMS}")
    return DeviceSpec("cuda", tuple(int(s) for s in ids), text)


def pick_gpu(spec: DeviceSpec, visible: int, local_rank: int = 0, world_size: int = 1) -> int | None:
    """The GPU index this process should use, or None for the CPU (``spec.kind`` "cpu"/"mps", or "auto"
    without a GPU). ``visible``: GPUs this process can see. Raises ``DeviceError`` with the one message for
    what is unavailable."""
    if spec.kind in ("cpu", "mps"):
        return None
    if spec.kind == "auto":
        return (local_rank if local_rank < visible else 0) if visible else None
    if visible == 0:
        raise DeviceError(f"device={spec.text!r}: no CUDA GPU is visible on this machine; use device=cpu")
    if len(spec.indices) > 1 and world_size != len(spec.indices):
        raise DeviceError(
            f"device={spec.text!r} names {len(spec.indices)} GPUs: run under torchrun, e.g. "
            f"`torchrun --nproc_per_node {len(spec.indices)} -m detector train ...`"
        )
    if not spec.indices:
        index = local_rank
    elif len(spec.indices) > 1:
        index = spec.indices[local_rank]
    else:
        index = spec.indices[0]
    if index >= visible:
        raise DeviceError(f"device={spec.text!r}: GPU {index} asked for, but only {visible} CUDA GPU(s) are visible")
    return index
