"""Confusion-matrix heatmap: cell colour is the share of the true class (row-normalised), text is the count.

Row normalisation makes a rare class's errors as visible as a frequent one's; the counts keep the absolute
numbers readable. Rows are true classes, columns predicted ones (the metrics.json convention).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mlplab.viz.figures import new_figure, styled

CMAP = "Blues"
ANNOTATE_MAX_CLASSES = 20  # beyond this the counts no longer fit in their cells


def confusion_counts(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows true, columns predicted."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def row_normalize(matrix) -> np.ndarray:
    """Each row divided by its sum; rows without samples stay 0 instead of NaN."""
    matrix = np.asarray(matrix, dtype=np.float64)
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)


def confusion_figure(matrix, class_names: Sequence[str] | None = None, *, title: str | None = None):
    """Heatmap of a confusion matrix (counts in the cells, colour = share of the true class)."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = counts.shape[0]
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]
    share = row_normalize(counts)
    longest = max((len(s) for s in names), default=1)
    side = min(3.0 + 0.45 * n, 14.0)
    with styled():
        fig = new_figure(side + 0.12 * longest, side + 0.1 * longest)
        ax = fig.subplots()
        ax.grid(False)
        image = ax.imshow(share, cmap=CMAP, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
        ax.set_xticks(range(n), labels=names, rotation=40 if longest > 2 else 0, ha="right" if longest > 2 else "center",
                      rotation_mode="anchor")
        ax.set_yticks(range(n), labels=names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if n <= ANNOTATE_MAX_CLASSES:
            size = 9 if n <= 12 else 7
            for i in range(n):
                for j in range(n):
                    value = counts[i, j]
                    if value == 0:
                        color = "#bbbbbb"  # zeros stay legible but recede
                    else:
                        color = "white" if share[i, j] > 0.55 else "#222222"
                    ax.text(j, i, f"{value:d}", ha="center", va="center", fontsize=size, color=color,
                            fontweight="bold" if i == j else "normal", gid=f"cell-{i}-{j}")
        bar = fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
        bar.set_label("share of the true class (row-normalised)")
        bar.outline.set_visible(False)
        total = int(counts.sum())
        correct = int(np.trace(counts))
        accuracy = correct / total if total else 0.0
        ax.set_title(title or f"Confusion matrix: {total:,} samples, {accuracy:.1%} correct")
    return fig
