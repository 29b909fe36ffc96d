"""Seeding and the per-process RNG states that a checkpoint stores, so a resumed run continues every stream."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from detector.engine.distributed import DistInfo


def init_seeds(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic  # fixed training shapes: let cuDNN pick the fastest kernels


def rng_state() -> dict:
    """This process's RNG states as tensors and primitives (weights-only loadable)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> list[str]:
    """Python, numpy and torch CPU generators, and the CUDA generator of every GPU visible both in the saved
    state and here (``set_rng_state_all`` raises with fewer GPUs); returns what was skipped."""
    random.setstate(_as_tuples(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    saved = list(state.get("cuda") or [])
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(min(len(saved), here)):
        torch.cuda.set_rng_state(saved[i], i)
    skipped = []
    if len(saved) > here:
        skipped.append(f"CUDA RNG state of {len(saved) - here} GPU(s) the checkpoint had but this machine lacks")
    if here > len(saved):
        skipped.append(f"CUDA RNG state of {here - len(saved)} GPU(s) the checkpoint has none for (seeded fresh)")
    return skipped


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def gather_rng_states(info: DistInfo) -> list[dict]:
    """Every rank's ``rng_state()``, in rank order."""
    state = rng_state()
    if not info.enabled:
        return [state]
    import torch.distributed as dist

    out: list = [None] * info.world_size
    dist.all_gather_object(out, state)
    return out
