"""Restoring a checkpoint's AMP scaler and RNG streams on a machine that may differ from the one that wrote it.

A run may resume elsewhere: a CPU checkpoint (no GradScaler state) on a GPU with fp16, a GPU checkpoint on the
CPU, a 4-GPU run on 2 GPUs. Each function restores what applies here and returns what it had to skip, so the
caller can say so instead of crashing (an enabled ``GradScaler`` raises on an empty state; the RNG streams
themselves are restored by ``detector.engine.rng.set_rng_state``, which skips GPUs this machine lacks).
"""

from __future__ import annotations

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


def pick_rank_state(states: list[dict], rank: int, world_size: int) -> tuple[dict, list[str]]:
    """This rank's saved RNG state; with another number of processes than the run had, rank 0's for all."""
    if len(states) == world_size:
        return states[rank], []
    return states[0], [
        f"per-rank RNG streams ({len(states)} saved, {world_size} processes now: all start from rank 0's)"
    ]
