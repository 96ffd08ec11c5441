"""Learning curves: loss and accuracy per epoch, train vs validation, for one run or several overlaid.

Inputs are the plain history rows of a run (dicts with epoch, loss, accuracy, val_loss, val_accuracy, lr,
seconds; missing values are NaN), so the figures can be tested with scripted histories and no training.
Artists carry gids ("train", "validation", "best-epoch", "early-stop", "lr") so tests and callers can find them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter, PercentFormatter

from mlplab.viz.figures import LR_COLOR, MARK_COLOR, TRAIN_COLOR, VAL_COLOR, new_figure, styled

# Tol "bright": distinct, colour-blind safe colours for up to 7 overlaid runs (cycled beyond that).
RUN_COLORS = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB"]

PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"))


def column(history: Sequence[dict], key: str) -> np.ndarray:
    """One history column as float64, NaN where a row lacks the value."""
    out = []
    for row in history:
        value = row.get(key)
        out.append(float("nan") if value is None else float(value))
    return np.asarray(out, dtype=np.float64)


def epochs(history: Sequence[dict]) -> np.ndarray:
    return np.asarray([int(row["epoch"]) for row in history], dtype=np.int64)


def has_values(values: np.ndarray) -> bool:
    return bool(values.size) and bool(np.isfinite(values).any())


def best_epoch(history: Sequence[dict], monitor: str = "val_loss", mode: str | None = None) -> int | None:
    """Epoch (1-based, as in history.csv) with the best `monitor` value; None without any finite value.

    mode defaults to "max" for accuracy-like metrics and "min" otherwise, as in Keras' EarlyStopping("auto").
    Ties go to the earliest epoch, which is the one EarlyStopping would have kept.
    """
    values = column(history, monitor)
    if not has_values(values):
        return None
    if mode is None:
        mode = "max" if "acc" in monitor else "min"
    filled = np.where(np.isfinite(values), values, np.inf if mode == "min" else -np.inf)
    i = int(np.argmin(filled) if mode == "min" else np.argmax(filled))
    return int(history[i]["epoch"])


def history_summary(history: Sequence[dict], monitor: str = "val_loss") -> dict:
    """Best validation numbers of a run (for comparison tables): epoch, val loss and val accuracy at that epoch.

    Without validation the summary falls back to the training loss, and says so in "monitor".
    """
    if not has_values(column(history, monitor)):
        monitor = "loss"
    best = best_epoch(history, monitor)
    row = next((r for r in history if best is not None and int(r["epoch"]) == best), {})
    return {
        "epochs": len(history),
        "monitor": monitor,
        "best_epoch": best,
        "best_val_loss": _num(row.get("val_loss")),
        "best_val_accuracy": _num(row.get("val_accuracy")),
        "final_loss": _num(history[-1].get("loss")) if history else None,
        "final_accuracy": _num(history[-1].get("accuracy")) if history else None,
        "seconds": float(np.nansum(column(history, "seconds"))) if history else 0.0,
    }


def _num(value):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def lr_varies(history: Sequence[dict]) -> bool:
    lr = column(history, "lr")
    lr = lr[np.isfinite(lr)]
    return lr.size > 1 and not np.allclose(lr, lr[0], rtol=1e-9, atol=0.0)


def _style_epoch_axis(ax, xs: np.ndarray) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.set_xlabel("epoch")
    if xs.size == 1:
        ax.set_xlim(xs[0] - 1, xs[0] + 1)  # a single epoch would otherwise give a zero-width axis


def learning_curves(
    history: Sequence[dict],
    *,
    title: str | None = None,
    monitor: str = "val_loss",
    stopped_epoch: int | None = None,
    restored_epoch: int | None = None,
):
    """Figure with a loss panel and an accuracy panel, train vs validation.

    The best epoch (by `monitor`) is marked on both panels; `stopped_epoch` (EarlyStopping's last epoch) gets a
    dashed line; `restored_epoch` (restore_best_weights) is named in the best-epoch label. When the learning
    rate changes during training it is drawn as a step line on a secondary axis of the loss panel.
    """
    xs = epochs(history)
    if not has_values(column(history, monitor)):
        monitor = "loss"  # no validation: the best epoch is the one with the lowest training loss
    best = best_epoch(history, monitor)
    many = xs.size > 40  # dots on every epoch only while they stay readable
    with styled():
        fig = new_figure(10, 3.9)
        axes = fig.subplots(1, 2)
        for ax, (key, label) in zip(axes, PANELS):
            train = column(history, key)
            val = column(history, f"val_{key}")
            marker = None if many else "o"
            ax.plot(xs, train, color=TRAIN_COLOR, lw=2, marker=marker, ms=3.5, label="train", gid="train")
            if has_values(val):
                ax.plot(xs, val, color=VAL_COLOR, lw=2, marker=marker, ms=3.5, label="validation", gid="validation")
            if best is not None:
                best_y = val if has_values(val) else train
                y = best_y[list(xs).index(best)]
                ax.axvline(best, color=MARK_COLOR, lw=1, ls=":", zorder=1)
                tag = f"best epoch {best}" + (" (weights restored)" if restored_epoch == best else "")
                ax.plot([best], [y], ls="none", marker="o", ms=9, mfc="none", mec=MARK_COLOR, mew=1.5,
                        label=tag, gid="best-epoch", zorder=5)
            if stopped_epoch is not None:
                ax.axvline(stopped_epoch, color=MARK_COLOR, lw=1.2, ls="--", label=f"early stop (epoch {stopped_epoch})",
                           gid="early-stop", zorder=1)
            ax.set_title(f"{label} per epoch")
            ax.set_ylabel(label.lower())
            if key == "accuracy":
                ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0 if _span(train, val) > 0.05 else 1))
            _style_epoch_axis(ax, xs)
        handles, labels = axes[0].get_legend_handles_labels()
        if lr_varies(history):
            handles.append(_add_lr_axis(axes[0], xs, column(history, "lr")))
            labels.append("learning rate")
        # Twin axes draw above the main one, so the loss legend goes onto the twin when there is one.
        legend_ax = axes[0].figure.axes[-1] if lr_varies(history) else axes[0]
        legend_ax.legend(handles, labels, loc="upper right")
        axes[1].legend(loc="lower right")
        if title:
            fig.suptitle(title, x=0.01, ha="left", fontsize=12, fontweight="bold")
    return fig


def _span(*arrays) -> float:
    values = np.concatenate([a[np.isfinite(a)] for a in arrays])
    return float(values.max() - values.min()) if values.size else 0.0


def _add_lr_axis(ax, xs: np.ndarray, lr: np.ndarray) -> Line2D:
    twin = ax.twinx()
    twin.grid(False)
    twin.spines["right"].set_visible(True)
    (line,) = twin.step(xs, lr, where="mid", color=LR_COLOR, lw=1.2, ls="-.", label="learning rate", gid="lr")
    # A linear axis from 0: every built-in schedule reads as its shape (cosine, one-cycle hump, step stairs).
    # A log axis was tried: a cosine's last step (~1e-9 x lr) then squashed the whole curve into its top edge.
    twin.set_ylim(bottom=0)
    twin.set_ylabel("learning rate", color=LR_COLOR)
    twin.tick_params(axis="y", colors=LR_COLOR)
    return line


def compare_curves(runs: Sequence[tuple[str, Sequence[dict]]], *, title: str | None = None):
    """Several runs' curves overlaid: one colour per run, validation solid, train dashed, best epoch dotted.

    `runs` is a sequence of (name, history rows), e.g. [("no dropout", h1), ("dropout 0.2", h2)].
    """
    with styled():
        fig = new_figure(10, 4.2)
        axes = fig.subplots(1, 2)
        run_handles = []
        any_val = False
        for i, (name, history) in enumerate(runs):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            xs = epochs(history)
            best = best_epoch(history, "val_loss")
            for ax, (key, _) in zip(axes, PANELS):
                train = column(history, key)
                val = column(history, f"val_{key}")
                ax.plot(xs, train, color=color, lw=1.4, ls="--", alpha=0.75, gid=f"train:{name}")
                if has_values(val):
                    any_val = True
                    ax.plot(xs, val, color=color, lw=2.2, gid=f"validation:{name}")
                    if best is not None:
                        ax.plot([best], [val[list(xs).index(best)]], ls="none", marker="o", ms=7, color=color,
                                mec="white", mew=1.2, gid=f"best-epoch:{name}", zorder=5)
            run_handles.append(Line2D([], [], color=color, lw=2.2, label=name))
        losses = np.concatenate([column(h, k) for _, h in runs for k in ("loss", "val_loss")] or [np.zeros(0)])
        losses = losses[np.isfinite(losses) & (losses > 0)]
        # Runs differ most in the tail, where a linear axis squeezes every curve into one line.
        log_loss = losses.size > 0 and losses.max() / losses.min() > 10
        for ax, (key, label) in zip(axes, PANELS):
            ax.set_title(f"{label} per epoch")
            ax.set_ylabel(label.lower() + (" (log scale)" if key == "loss" and log_loss else ""))
            if key == "loss" and log_loss:
                ax.set_yscale("log")
                # plain numbers at 1-2-5 steps read better than powers of ten on a loss axis
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
            ax.set_xlabel("epoch")
            if key == "accuracy":
                ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        style_handles = [Line2D([], [], color=MARK_COLOR, lw=1.4, ls="--", label="train")]
        if any_val:
            style_handles = [
                Line2D([], [], color=MARK_COLOR, lw=2.2, label="validation"),
                *style_handles,
                Line2D([], [], color=MARK_COLOR, ls="none", marker="o", ms=7, label="best val loss"),
            ]
        axes[0].legend(handles=run_handles, loc="upper right", title="run")
        axes[1].legend(handles=style_handles, loc="lower right")
        if title:
            fig.suptitle(title, x=0.01, ha="left", fontsize=12, fontweight="bold")
    return fig
