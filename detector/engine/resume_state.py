"""Restoring a checkpoint's AMP scaler and RNG state on a machine that may differ from the one that wrote it.

A run may resume elsewhere: a CPU checkpoint (no GradScaler state) on a GPU with fp16, a GPU checkpoint on the
CPU, a 4-GPU run on 2 GPUs. Each function restores what applies here and returns what it had to skip, so the
caller can say so instead of crashing (``torch.cuda.set_rng_state_all`` raises with fewer visible GPUs; an
enabled ``GradScaler`` raises on an empty state).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def restore_scaler(scaler: torch.amp.GradScaler, state: dict | None) -> list[str]:
    """Load ``state`` into ``scaler`` when both sides have one; returns what was skipped and why."""
    state = state or {}
    if not scaler.is_enabled():
        return ["GradScaler state (fp16 loss scaling is off here)"] if state else []
    if not state:
        return ["GradScaler state (the checkpoint has none: it ran without fp16; the scale starts afresh)"]
    scaler.load_state_dict(state)
    return []


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def restore_rng(state: dict) -> list[str]:
    """Python, numpy and torch CPU generators, and the CUDA generator of every GPU that is visible both in the
    checkpoint and here; returns what was skipped."""
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


def pick_rank_state(states: list[dict], rank: int, world_size: int) -> tuple[dict, list[str]]:
    """This rank's saved RNG state; with another number of processes than the run had, rank 0's for all."""
    if len(states) == world_size:
        return states[rank], []
    return states[0], [
        f"per-rank RNG streams ({len(states)} saved, {world_size} processes now: all start from rank 0's)"
    ]
