"""The final COCO numbers computed a second way: faster-coco-eval on the saved ``predictions.json`` and a
``ground_truth.json`` written from the very boxes our evaluator saw, printed beside ours.

The two must agree to ``TOLERANCE``. The COCO format has no per-box "ignore" besides ``iscrowd``, so VOC
``difficult`` objects (ignored, matched at most once by our evaluator) are written as crowd regions; on such
data a difference is expected and reported as such rather than as a disagreement.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from detector.metrics import STAT_NAMES, ImageGroundTruth

LOGGER = logging.getLogger("detector")
TOLERANCE = 1e-3


@dataclass
class EvaluatedImage:
    """One validation image as the evaluator saw it: the id its predictions carry, file, ``(h, w)``, truth."""

    image_id: int | str
    file: str
    shape: tuple[int, int]
    truth: ImageGroundTruth


def ground_truth_document(images: list[EvaluatedImage], category_ids: list[int], names: list[str]) -> dict:
    """A COCO instances document of ``images`` (ids 1..N; ``source_id`` keeps the predictions' image id);
    crowd regions and difficult objects are ``iscrowd: 1``."""
    doc_images, anns = [], []
    for k, im in enumerate(images, 1):
        doc_images.append({"id": k, "source_id": im.image_id, "file_name": Path(im.file).name,
                           "height": int(im.shape[0]), "width": int(im.shape[1])})  # fmt: skip
        t = im.truth
        xywh = t.boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        for box, c, crowd, area in zip(xywh.tolist(), t.classes.tolist(), (t.iscrowd | t.ignore).tolist(), t.area):
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": category_ids[c], "bbox": box,
                         "area": float(area), "iscrowd": int(crowd)})  # fmt: skip
    categories = [{"id": cid, "name": n} for cid, n in zip(category_ids, names)]
    return {"images": doc_images, "annotations": anns, "categories": categories}


def faster_coco_eval_stats(ground_truth: Path, predictions: Path) -> dict[str, float]:
    """The 12 COCO stats by faster-coco-eval from the two JSON files (predictions' image ids are mapped to the
    ground truth's through its ``source_id``)."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt_doc = json.loads(Path(ground_truth).read_text())
    to_id = {str(im["source_id"]): im["id"] for im in gt_doc["images"]}
    dets = [{**d, "image_id": to_id[str(d["image_id"])]} for d in json.loads(Path(predictions).read_text())]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_doc
        gt.createIndex()
        ev = COCOeval_faster(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, (float(s) for s in ev.stats[:12])))


def compare(ours: dict[str, float], theirs: dict[str, float], has_difficult: bool) -> tuple[str, float]:
    """The side-by-side table and the largest absolute difference (stats without ground truth, -1, skipped)."""
    lines = [f"{'COCO stat':<12}{'ours':>10}{'faster-coco-eval':>18}"]
    worst = 0.0
    for k in STAT_NAMES:
        a, b = ours[k], theirs[k]
        lines.append(f"{k:<12}{a:>10.4f}{b:>18.4f}")
        if a >= 0 and b >= 0:
            worst = max(worst, abs(a - b))
    verdict = f"largest difference {worst:.2e}"
    if worst > TOLERANCE:
        verdict += (
            " (expected: difficult objects are ignored by our evaluator but are crowd regions in COCO's format)"
            if has_difficult
            else f" > {TOLERANCE:g}: the two evaluators DISAGREE; please report this"
        )
    return "\n".join([*lines, verdict]), worst


def cross_check(
    run_dir: Path, images: list[EvaluatedImage], category_ids: list[int], names: list[str], ours: dict[str, float]
) -> dict:
    """Write ``ground_truth.json`` beside ``predictions.json``, evaluate with faster-coco-eval, log both.

    Returns ``{"stats": theirs, "max_abs_diff": d, "agrees": bool}`` for ``metrics.json``.
    """  # fmt: skip
    gt_path = run_dir / "ground_truth.json"
    gt_path.write_text(json.dumps(ground_truth_document(images, category_ids, names)))
    theirs = faster_coco_eval_stats(gt_path, run_dir / "predictions.json")
    has_difficult = any(bool((im.truth.ignore & ~im.truth.iscrowd).any()) for im in images)
    table, worst = compare(ours, theirs, has_difficult)
    LOGGER.info(table)
    if worst > TOLERANCE and not has_difficult:
        LOGGER.warning(f"COCO cross-check: ours and faster-coco-eval differ by {worst:.4f} (> {TOLERANCE:g})")
    return {"stats": theirs, "max_abs_diff": worst, "agrees": bool(worst <= TOLERANCE)}
