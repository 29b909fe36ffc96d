"""Validation's CUDA-facing paths, checked on the CPU: NMS candidate cap, one host copy per batch, stage timer,
cuDNN autotuning off while validating."""

from __future__ import annotations

import torch
from _engine_kit import NAMES, bccd_subset

import detector.ops.nms as post
from deploy.contract import NMSConfig
from detector.data import build_dataloader
from detector.engine.settings import ValConfig
from detector.engine.stage_timer import StageTimer
from detector.engine.validator import Validator, to_host
from detector.model import build_model

TORCHVISION_CUDA_LOOP_BOXES = 100_000 // 4  # batched_nms loops per class on CUDA above this many boxes


def test_nms_sees_fewer_candidates_than_torchvisions_per_class_loop_threshold(monkeypatch):
    seen = []
    real = post.batched_nms
    monkeypatch.setattr(post, "batched_nms", lambda b, s, c, iou: seen.append(len(b)) or real(b, s, c, iou))
    pred = torch.rand(1, 4 + 80, 8400)  # an untrained model at conf 0.001: 8400 anchors x 80 classes pass
    pred[:, 2:4] += pred[:, :2] + 1
    post.non_max_suppression(pred, NMSConfig.val())
    assert seen == [post.MAX_CANDIDATES] and post.MAX_CANDIDATES < TORCHVISION_CUDA_LOOP_BOXES


def test_to_host_one_copy_keeps_each_image(monkeypatch):
    dets = [torch.rand(3, 6), torch.rand(0, 6), torch.rand(2, 6).half()]
    copies = []
    real_cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(1) or real_cpu(self, *a, **k))
    out = to_host(dets)
    assert len(copies) == 1 and [len(d) for d in out] == [3, 0, 2]
    assert all(d.dtype == torch.float32 for d in out) and torch.equal(out[0], dets[0])


def test_stage_timer_sums_each_stage():
    timer = StageTimer(torch.device("cpu"))
    for _ in range(3):
        timer.mark()
        sum(range(20000))
        timer.mark("a")
        timer.mark("b")
    totals = timer.totals_ms()
    assert set(totals) == {"a", "b"} and totals["a"] > totals["b"] >= 0


def test_validation_turns_cudnn_autotuning_off_and_restores_it(tmp_path, monkeypatch):
    data = bccd_subset(tmp_path / "data", 2)
    loader, _ = build_dataloader(data, "val", imgsz=64, batch=2, augment=None, workers=0, rect=True)
    model = build_model("gelan-t", nc=3)
    during = []
    model.register_forward_pre_hook(lambda m, a: during.append(torch.backends.cudnn.benchmark))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    result = Validator(loader, NAMES, ValConfig(plots=False), torch.device("cpu"), run_dir=tmp_path)(model)
    assert during == [False] and torch.backends.cudnn.benchmark is True
    assert set(result.speed_ms) == {"inference", "loss", "postprocess"} and result.speed_ms["inference"] > 0
