"""Resuming on another machine: AMP scaler and RNG state restore what applies here and say what was skipped."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from detector.engine.resume_state import pick_rank_state, restore_scaler
from detector.engine.rng import rng_state
from detector.engine.rng import set_rng_state as restore_rng


def test_enabled_scaler_takes_an_empty_state_from_a_cpu_run():
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    with pytest.raises(RuntimeError):  # what the trainer hit before: torch refuses an empty state
        torch.amp.GradScaler("cpu", enabled=True).load_state_dict({})
    (skipped,) = restore_scaler(scaler, {})
    assert "has none" in skipped and scaler.get_scale() == 1024.0
    saved = torch.amp.GradScaler("cpu", enabled=True, init_scale=32.0)
    saved.scale(torch.ones(1))  # materialises the scale tensor that state_dict() reports
    assert restore_scaler(scaler, saved.state_dict()) == [] and scaler.get_scale() == 32.0
    off = torch.amp.GradScaler("cpu", enabled=False)
    assert "off here" in restore_scaler(off, saved.state_dict())[0]
    assert restore_scaler(off, {}) == []


def test_rng_with_fewer_gpus_restores_what_exists(monkeypatch):
    state = rng_state()
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(4)]  # a 4-GPU machine wrote it
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.__setitem__(i, int(s[0])))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: pytest.fail("raises with fewer GPUs"))
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    (skipped,) = restore_rng(state)
    assert restored == {0: 0, 1: 1} and "2 GPU(s) the checkpoint had but this machine lacks" in skipped
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a  # host streams continue exactly


def test_rng_from_a_cpu_run_on_a_gpu_machine(monkeypatch):
    state = rng_state()
    state.pop("cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: pytest.fail("nothing to restore"))
    assert "seeded fresh" in restore_rng(state)[0]


def test_rank_states_with_another_world_size():
    states = [{"rank": 0}, {"rank": 1}]
    assert pick_rank_state(states, 1, 2) == ({"rank": 1}, [])
    state, (skipped,) = pick_rank_state(states, 3, 4)
    assert state == {"rank": 0} and "2 saved, 4 processes" in skipped
