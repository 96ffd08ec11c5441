"""Static embedding pictures: class-coloured scatter plots, one panel per layer, quality in each title.

Built on matplotlib's object API (no pyplot) in the house style of viz.figures, with the grid and tick
labels removed: embedding axes have no units, so ticks would only suggest a meaning they do not have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.lines import Line2D

from mlplab.inspect.embed import method_title as title_of
from mlplab.viz.figures import new_figure, styled
from mlplab.viz.palette import MISTAKE_COLOR, class_colors


def point_size(n: int) -> float:
    """Marker area (pt^2) that keeps 100 points readable and 70,000 from turning into a solid blob."""
    return float(np.clip(4000.0 / max(n, 1), 0.6, 24.0))


def quality_line(quality: Mapping | None, seconds: float | None = None) -> str:
    parts = []
    if quality:
        if quality.get("knn_accuracy") is not None:
            parts.append(f"10-NN acc {quality['knn_accuracy']:.3f}")
        if quality.get("trustworthiness") is not None:
            parts.append(f"trust {quality['trustworthiness']:.3f}")
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    return " · ".join(parts)


def embedding_figure(panels: Mapping[str, np.ndarray], labels, class_names: Sequence[str], *,
                     predictions=None, qualities: Mapping[str, Mapping] | None = None,
                     seconds: Mapping[str, float] | None = None, method: str = "", title: str | None = None,
                     panel_size: float = 3.6):
    """A Figure with one square panel per entry of `panels` ({name: coords (N, 2)}), in the given order.

    Points are coloured by true class; when `predictions` are given, misclassified points get a black ring.
    """
    labels = np.asarray(labels, dtype=np.int64)
    names = [str(c) for c in class_names]
    colors = class_colors(max(len(names), int(labels.max(initial=-1)) + 1))
    wrong = None if predictions is None else np.asarray(predictions) != labels
    n_panels = len(panels)
    cols = n_panels if n_panels <= 4 else 3
    rows = math.ceil(n_panels / cols)
    n = len(labels)
    size = point_size(n)
    # Draw in a fixed shuffled order so no class is always painted on top of the others.
    order = np.random.default_rng(0).permutation(n)
    method_title = title_of(method) if method else ""

    with styled():
        legend_width = 1.9
        fig = new_figure(cols * panel_size + legend_width, rows * panel_size + (0.45 if title else 0.15))
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax, (name, coords) in zip(axes.flat, panels.items()):
            xy = np.asarray(coords)[order]
            ax.scatter(xy[:, 0], xy[:, 1], s=size, c=[colors[i] for i in labels[order]], linewidths=0,
                       alpha=0.85, rasterized=True)
            if wrong is not None and wrong.any():
                bad = np.asarray(coords)[wrong]
                ax.scatter(bad[:, 0], bad[:, 1], s=size * 2.2, facecolors="none", edgecolors=MISTAKE_COLOR,
                           linewidths=0.45, alpha=0.8, rasterized=True)
            head = f"{name} · {method_title}" if method_title else str(name)
            sub = quality_line((qualities or {}).get(name), (seconds or {}).get(name))
            ax.set_title(head, loc="left", fontsize=10, fontweight="bold", pad=16 if sub else 6)
            if sub:  # a quieter second line under the bold title
                ax.text(0.0, 1.0, sub, transform=ax.transAxes, ha="left", va="bottom", fontsize=8.5,
                        color="#555555")
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for side in ax.spines.values():
                side.set_visible(False)
        for ax in list(axes.flat)[n_panels:]:
            ax.set_visible(False)
        handles = [Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor=c, markeredgewidth=0,
                          label=name) for c, name in zip(colors, names)]
        if wrong is not None:
            handles.append(Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor="none",
                                  markeredgecolor=MISTAKE_COLOR, markeredgewidth=0.9,
                                  label=f"misclassified ({int(wrong.sum())})"))
        fig.legend(handles=handles, loc="outside right center", frameon=False, handletextpad=0.3,
                   borderaxespad=0.2)
        if title:
            fig.suptitle(title, x=0.01, ha="left", fontsize=12, fontweight="bold")
    return fig
