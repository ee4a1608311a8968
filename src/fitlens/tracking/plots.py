"""The pictures and tables a run leaves behind: curves, confusion matrices, mistakes, per-class
scores.

Matplotlib's object API (``Figure``) is used instead of ``pyplot``: no global figure state and no
GUI backend, so plotting works the same in a sweep, a test and on a headless server.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fitlens.data.images import load_rgb
from fitlens.data.splits import Sample

#: Thumbnail edge for the misclassified grid; the photos themselves are phone-sized.
THUMBNAIL = 160


#: The panels of curves.png: (title, metrics), each a line over epochs where it was measured.
CURVE_PANELS = (("loss", ("train/loss", "val/loss")),
                ("known classes", ("train/acc", "val/acc", "train/f1_macro", "val/f1_macro")),
                ("learning rate (head)", ("lr",)))


def curves_png(rows: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Per-epoch curves of loss, accuracy/macro-F1 and learning rate (rows of results.csv)."""
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    for k, (title, names) in enumerate(CURVE_PANELS):
        ax = fig.add_subplot(1, len(CURVE_PANELS), k + 1)
        for name in names:
            points = [(r["epoch"], r[name]) for r in rows
                      if r.get(name) is not None and math.isfinite(r[name])]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
        if title.startswith("learning rate") and ax.lines:
            ax.set_yscale("log")
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(ax.lines) > 1:
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    return path


def confusion_png(matrix: torch.Tensor, classes: Sequence[str], title: str, path: Path) -> Path:
    """Counts, rows = true class, columns = predicted class."""
    counts = matrix.to(torch.int64).numpy()
    n = len(classes)
    fig = Figure(figsize=(0.9 * n + 2.5, 0.9 * n + 1.5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    threshold = counts.max() / 2 if counts.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if counts[i, j] > threshold else "black")
    fig.savefig(path, dpi=100)
    return path


def misclassified_png(samples: Sequence[Sample], probs: torch.Tensor, classes: Sequence[str],
                      path: Path, max_images: int = 24, columns: int = 6) -> Path:
    """The wrong predictions, most confident first (those are the instructive ones)."""
    predicted = probs.argmax(dim=1)
    wrong = [i for i, s in enumerate(samples) if int(predicted[i]) != s.label]
    wrong.sort(key=lambda i: -float(probs[i, predicted[i]]))
    shown = wrong[:max_images]
    rows = max(1, -(-len(shown) // columns))
    fig = Figure(figsize=(2.2 * columns, 2.6 * rows), layout="constrained")
    if not shown:
        fig.text(0.5, 0.5, f"no misclassified images among {len(samples)}", ha="center",
                 va="center")
    for k, i in enumerate(shown):
        ax = fig.add_subplot(rows, columns, k + 1)
        img = load_rgb(samples[i].path)
        img.thumbnail((THUMBNAIL, THUMBNAIL))
        ax.imshow(img)
        ax.set_axis_off()
        p = int(predicted[i])
        ax.set_title(f"true: {samples[i].class_name}\npred: {classes[p]} "
                     f"({float(probs[i, p]):.2f})", fontsize=8, color="firebrick")
    fig.suptitle(f"misclassified: {len(wrong)} of {len(samples)}"
                 + (f" (most confident {len(shown)} shown)" if len(wrong) > len(shown) else ""))
    fig.savefig(path, dpi=100)
    return path


def per_class_rows(matrix: torch.Tensor, classes: Sequence[str]) -> list[dict[str, object]]:
    """Precision, recall, F1 and support per class, then the macro average and accuracy."""
    m = matrix.to(torch.float64)
    tp = m.diag()
    support = m.sum(dim=1)
    predicted = m.sum(dim=0)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12),
                     torch.zeros_like(tp))
    rows: list[dict[str, object]] = [
        {"class": name, "precision": round(float(precision[i]), 4),
         "recall": round(float(recall[i]), 4), "f1": round(float(f1[i]), 4),
         "support": int(support[i])}
        for i, name in enumerate(classes)]
    total = int(support.sum())
    rows.append({"class": "macro avg", "precision": round(float(precision.mean()), 4),
                 "recall": round(float(recall.mean()), 4), "f1": round(float(f1.mean()), 4),
                 "support": total})
    accuracy = float(tp.sum() / total) if total else 0.0
    rows.append({"class": "accuracy", "precision": "", "recall": "", "f1": round(accuracy, 4),
                 "support": total})
    return rows


def per_class_csv(matrix: torch.Tensor, classes: Sequence[str], path: Path) -> Path:
    rows = per_class_rows(matrix, classes)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
