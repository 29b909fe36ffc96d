"""Run plots: loss/metric curves from results.csv, PR curves, confusion matrix, labelled image grids."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_results(csv_path: Path) -> Path:
    """One panel per column of ``results.csv`` (losses, P, R, mAP, lr) against epoch -> ``results.png``."""
    plt = _pyplot()
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in (rows[0] if rows else {}) if c != "epoch"]
    epochs = [int(r["epoch"]) for r in rows]
    ncol = 5
    nrow = max(1, math.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax, col in zip(axes.flat, cols):
        pts = [(e, float(r[col])) for e, r in zip(epochs, rows) if r.get(col) not in (None, "")]
        if pts:
            ax.plot(*zip(*pts), marker=".", linewidth=1.5)
        ax.set_title(col, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cols) :]:
        ax.axis("off")
    fig.tight_layout()
    out = csv_path.with_name("results.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_pr_curves(recall: np.ndarray, precision: np.ndarray, names: list[str], ap50: list[float], path: Path) -> Path:
    """Per-class precision-recall curves at IoU 0.5: ``recall (R,)``, ``precision (K, R)``, ``ap50`` per class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.5))
    show_legend = len(names) <= 20
    for k, name in enumerate(names):
        ax.plot(recall, precision[k], linewidth=1, label=f"{name} {ap50[k]:.3f}" if show_legend else None)
    valid = precision[[i for i in range(len(names)) if np.isfinite(ap50[i])]]
    if len(valid):
        ax.plot(recall, valid.mean(0), linewidth=3, color="blue", label=f"all classes {np.nanmean(ap50):.3f} mAP@0.5")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-Recall (IoU 0.5)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path: Path) -> Path:
    """Column-normalised confusion matrix (rows predicted, columns true; last = background)."""
    plt = _pyplot()
    m = matrix.astype(np.float64)
    m = m / np.maximum(m.sum(0, keepdims=True), 1)
    labels = list(names) + ["background"]
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(5.5, 0.45 * n + 2), max(4.5, 0.45 * n + 1.5)))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        for i in range(n):
            for j in range(n):
                if m[i, j] >= 0.005:
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] > 0.5 else "black")  # fmt: skip
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion matrix (columns sum to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _colour(k: int) -> tuple[int, int, int]:
    hue = (k * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def plot_batch(
    images: Tensor,
    batch_idx: Tensor,
    cls: Tensor,
    boxes: Tensor,
    names: list[str],
    path: Path,
    scores: Tensor | None = None,
    max_images: int = 16,
    conf: float = 0.25,
) -> Path:
    """A grid of up to 16 images with their boxes -> JPEG.

    ``images (Tensor[B, 3, H, W])`` uint8 RGB (or float 0..1); ``boxes (Tensor[N, 4])`` xyxy pixels of
    ``images`` belonging to image ``batch_idx (Tensor[N])`` with class ``cls (Tensor[N])``; with ``scores``
    (predictions) boxes below ``conf`` are left out and the score is printed.
    """
    imgs = images[:max_images].detach().cpu()
    if imgs.dtype != torch.uint8:
        imgs = (imgs.float() * 255).clamp(0, 255).to(torch.uint8)
    b, _, h, w = imgs.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    scale = min(1920 / (cols * w), max(1.0, 384 / max(h, w)))  # small images are enlarged to stay legible
    th, tw = max(1, int(h * scale)), max(1, int(w * scale))
    grid = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    bi, cl, bx = batch_idx.cpu(), cls.cpu().long(), boxes.detach().cpu().float() * scale
    sc = scores.detach().cpu().float() if scores is not None else None
    for i in range(b):
        tile = cv2.cvtColor(imgs[i].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR)
        tile = np.ascontiguousarray(cv2.resize(tile, (tw, th)) if scale != 1 else tile)
        sel = bi == i
        if sc is not None:
            sel &= sc >= conf
        for j in torch.nonzero(sel).flatten().tolist():
            k = int(cl[j])
            x1, y1, x2, y2 = (int(round(v)) for v in bx[j].tolist())
            colour = _colour(k)
            cv2.rectangle(tile, (x1, y1), (x2, y2), colour, 1, cv2.LINE_AA)
            label = names[k] if k < len(names) else str(k)
            if sc is not None:
                label += f" {float(sc[j]):.2f}"
            cv2.putText(tile, label, (x1 + 1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
        r, c = divmod(i, cols)
        grid[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
        cv2.rectangle(grid, (c * tw, r * th), ((c + 1) * tw - 1, (r + 1) * th - 1), (255, 255, 255), 1)
    cv2.imwrite(str(path), grid)
    return Path(path)
