"""Per-layer sensitivity: quantize one convolution at a time and measure how far the model's output moves.

Each candidate conv is quantized alone (its input activation and weights, with the ranges of the one shared
calibration pass, read back from ONNX Runtime's calibration cache so no layer recalibrates), the model runs on
a few calibration images, and the output error against the float model is recorded. The worst layers, up to
the budget, stay in float in the final model.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

LOG = logging.getLogger("detector.quantize")


def output_error(ref: np.ndarray, got: np.ndarray, nc: int) -> float:
    """How much a ``(B, 4 + nc, A)`` output moved, weighted by how confident the reference is per anchor.

    Per anchor: the largest class-score change plus the mean box-side change relative to the box's size
    (so a 1 px shift on a 10 px cell weighs as much as 10 px on a 100 px cell), averaged with the reference's
    best score as weight: background anchors that no threshold keeps hardly count.
    """
    rb, rs = ref[:, :4], ref[:, 4 : 4 + nc]  # (B, 4, A), (B, nc, A)
    gb, gs = got[:, :4], got[:, 4 : 4 + nc]
    size = np.maximum(((rb[:, 2] - rb[:, 0]) + (rb[:, 3] - rb[:, 1])) / 2, 1.0)  # (B, A)
    per_anchor = np.abs(gs - rs).max(1) + np.abs(gb - rb).mean(1) / size
    weight = rs.max(1)
    return float((weight * per_anchor).sum() / max(weight.sum(), 1e-9))


def run_model(path: str | Path, feeds: Sequence[dict[str, np.ndarray]], threads: int = 1) -> np.ndarray:
    """``output0`` of the model at ``path`` for every feed, concatenated on the batch axis."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["output0"], f)[0] for f in feeds])


def rank_layers(
    fp32_path: Path,
    candidates: Sequence[str],
    feeds: Sequence[dict[str, np.ndarray]],
    quantize_only: Callable[[Path, Path, list[str]], None],
    nc: int,
) -> list[tuple[str, float]]:
    """``(node name, output error)`` for each candidate, worst first.

    ``quantize_only(src, dst, nodes)`` writes ``src`` quantized at exactly ``nodes`` to ``dst`` (with the
    shared calibration ranges).
    """
    ref = run_model(fp32_path, feeds)
    scores = []
    with tempfile.TemporaryDirectory(prefix="detector-sens-") as tmp:
        one = Path(tmp) / "one.onnx"
        for i, name in enumerate(candidates):
            quantize_only(fp32_path, one, [name])
            scores.append((name, output_error(ref, run_model(one, feeds), nc)))
            if (i + 1) % 25 == 0:
                LOG.info("sensitivity: %d/%d layers measured", i + 1, len(candidates))
    return sorted(scores, key=lambda s: -s[1])
