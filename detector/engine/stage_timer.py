"""Per-stage time of a loop that runs on a GPU, without synchronising inside the loop.

CUDA kernels run asynchronously: a host clock read after ``model(images)`` measures the launch, and the
forward's real cost lands in whatever stage first waits for the GPU. On CUDA each mark records an event on
the current stream and the totals are read once, at the end (one synchronisation); on the CPU the marks are
host clock reads.
"""

from __future__ import annotations

import time

import torch


class StageTimer:
    """``timer.mark()`` at the start of an iteration, ``timer.mark("stage")`` after each stage;
    ``timer.totals_ms()`` sums each stage over all iterations (milliseconds)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self._marks: list[tuple[str | None, object]] = []

    def mark(self, stage: str | None = None) -> None:
        """Close ``stage`` (the time since the previous mark), or with None start a new iteration."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            self._marks.append((stage, event))
        else:
            self._marks.append((stage, time.perf_counter()))

    def totals_ms(self) -> dict[str, float]:
        if self.cuda and self._marks:
            self._marks[-1][1].synchronize()  # type: ignore[union-attr]
        totals: dict[str, float] = {}
        for (_, start), (stage, end) in zip(self._marks, self._marks[1:]):
            if stage is None:
                continue
            ms = start.elapsed_time(end) if self.cuda else (end - start) * 1e3  # type: ignore[union-attr]
            totals[stage] = totals.get(stage, 0.0) + ms
        return totals
