"""Image galleries: sample images per class, and the model's most confident mistakes.

Images arrive as the Dataset stores them: (N, H, W) uint8 or floats in [0, 1], or (N, D) flat rows (reshaped
to a square when D is a perfect square, else shown as a one-pixel-high strip, e.g. tabular CSV features).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from mlplab.viz.figures import new_figure, styled

THUMB_CMAP = "gray_r"  # dark ink on white: reads like the digits on paper and prints well


def as_image(sample, shape: Sequence[int] | None = None) -> np.ndarray:
    """One sample as a 2-D float array for imshow."""
    a = np.asarray(sample, dtype=np.float64)
    if shape is not None and int(np.prod(shape)) == a.size and len(shape) == 2:
        return a.reshape(tuple(int(s) for s in shape))
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        return a.mean(axis=-1)  # channels to grey: the models here see flattened intensities anyway
    side = math.isqrt(a.size)
    if side * side == a.size:
        return a.reshape(side, side)
    return a.reshape(1, -1)


def _vmax(images) -> float:
    # uint8 data spans 0..255, scaled data 0..1; fixing the range keeps thumbnails comparable to each other.
    return 255.0 if np.asarray(images).dtype == np.uint8 or float(np.max(images, initial=0)) > 1.0 else 1.0


def sample_indices(labels, per_class: int, seed: int = 0) -> list[np.ndarray]:
    """For each class 0..max(label), up to `per_class` sample positions, drawn with a fixed seed."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1 if labels.size else 0
    picks = []
    for c in range(n_classes):
        where = np.flatnonzero(labels == c)
        take = min(per_class, where.size)
        picks.append(np.sort(rng.choice(where, size=take, replace=False)) if take else where[:0])
    return picks


def mosaic(tiles: Sequence[Sequence[np.ndarray]], pad: int = 1, fill: float = 0.0) -> np.ndarray:
    """Rows of equally sized 2-D tiles pasted into one array with `pad` pixels of `fill` between them.

    One image on one axes draws far faster than a hundred small axes, and looks the same for thumbnails.
    """
    h, w = next(t for row in tiles for t in row).shape
    cols = max(len(row) for row in tiles)
    out = np.full((len(tiles) * (h + pad) - pad, cols * (w + pad) - pad), fill, dtype=np.float64)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = tile
    return out


def samples_figure(images, labels, class_names: Sequence[str], *, per_class: int = 10, seed: int = 0,
                   shape: Sequence[int] | None = None, title: str | None = None):
    """One image: a row per class (labelled with the class name) of `per_class` random samples."""
    picks = sample_indices(labels, per_class, seed)
    tiles = [[as_image(images[i], shape) for i in idx] for idx in picks]
    if not any(tiles):
        tiles = [[np.zeros((1, 1))]]
    h = next(t for row in tiles for t in row).shape[0]
    pad = max(1, h // 8)
    grid = mosaic(tiles, pad=pad)
    rows = len(tiles)
    cols = max(len(row) for row in tiles)
    with styled():
        fig = new_figure(1.4 + 0.62 * cols, 0.6 + 0.62 * rows)
        ax = fig.subplots()
        ax.imshow(grid, cmap=THUMB_CMAP, vmin=0, vmax=_vmax(images), interpolation="nearest", gid="samples")
        _blank(ax)
        names = [str(class_names[r]) if r < len(class_names) else str(r) for r in range(rows)]
        ax.set_yticks([r * (h + pad) + (h - 1) / 2 for r in range(rows)], labels=names)
        ax.tick_params(length=0)
        ax.set_title(title or f"Random samples per class ({per_class} each)")
    return fig


def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def confident_mistakes(proba, y_true, k: int) -> np.ndarray:
    """Positions of the k misclassified samples with the highest predicted-class probability, most confident first.

    Ties keep the original order (stable sort), so the result is deterministic.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    confidence = proba[wrong, pred[wrong]]
    order = np.argsort(-confidence, kind="stable")
    return wrong[order[: max(0, int(k))]]


def mistakes_figure(images, proba, y_true, class_names: Sequence[str], indices, *, cols: int = 8,
                    shape: Sequence[int] | None = None, title: str | None = None):
    """Thumbnails of the given mistakes, each titled with the true class, the prediction and its confidence."""
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    cols = max(1, min(cols, indices.size or 1))
    rows = max(1, math.ceil(indices.size / cols))
    vmax = _vmax(images)
    with styled():
        width, height = 1.35 * cols, 0.5 + 1.7 * rows
        fig = new_figure(width, height, layout=None)
        # fixed margins in inches (title band on top, room for three title lines above each thumbnail)
        axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=dict(
            left=0.1 / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - 0.95 / height,
            wspace=0.25, hspace=0.75))
        for ax in axes.flat:
            _blank(ax)
        for ax, i in zip(axes.flat, indices):
            pred = int(proba[i].argmax())
            ax.imshow(as_image(images[i], shape), cmap=THUMB_CMAP, vmin=0, vmax=vmax, interpolation="nearest",
                      gid=f"mistake-{int(i)}")
            ax.set_title(f"true: {_name(class_names, y_true[i])}\npred: {_name(class_names, pred)}\n"
                         f"{proba[i, pred]:.0%} sure", fontsize=8, fontweight="normal", loc="center",
                         color="#222222")
        if not indices.size:
            axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center", transform=axes[0, 0].transAxes)
        fig.suptitle(title or f"The {indices.size} most confident mistakes", x=0.1 / width, y=1 - 0.12 / height,
                     ha="left", va="top", fontsize=12, fontweight="bold")
    return fig


def _name(class_names: Sequence[str], c: int) -> str:
    c = int(c)
    return str(class_names[c]) if 0 <= c < len(class_names) else str(c)
