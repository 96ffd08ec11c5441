"""History: one row per epoch, the same columns as history.csv."""

from __future__ import annotations

import math

# The columns of a History row, in order: history.csv (the run layer) writes exactly these.
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


class History:
    """Per-epoch metrics of a model's training, across every fit() call on it (Keras's History, appended to).

    `rows` is the source of truth; `history` and `epoch` give the Keras views (dict of lists, 0-based epochs).
    """

    def __init__(self, rows: list[dict] | None = None):
        self.rows: list[dict] = [dict(r) for r in rows or []]
        self.interrupted = False
        self.stopped_early_at: int | None = None
        self.restored_epoch: int | None = None
        self.terminated_on_nan: tuple[int, int] | None = None  # (epoch, batch) where TerminateOnNaN ended it

    def append(self, row: dict) -> None:
        self.rows.append({col: row.get(col, math.nan) for col in HISTORY_COLUMNS})

    @property
    def epochs_done(self) -> int:
        return int(self.rows[-1]["epoch"]) if self.rows else 0

    @property
    def epoch(self) -> list[int]:
        return [int(r["epoch"]) - 1 for r in self.rows]

    @property
    def history(self) -> dict[str, list[float]]:
        cols = [c for c in HISTORY_COLUMNS if c != "epoch"]
        return {c: [r[c] for r in self.rows] for c in cols if any(not _isnan(r[c]) for r in self.rows)}

    def best(self, monitor: str = "val_loss", mode: str = "min") -> dict | None:
        rows = [r for r in self.rows if not _isnan(r.get(monitor, math.nan))]
        if not rows:
            return None
        pick = min if mode == "min" else max
        return pick(rows, key=lambda r: r[monitor])  # ties: the first such epoch, as Keras keeps it

    def as_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=HISTORY_COLUMNS).set_index("epoch")

    def __eq__(self, other) -> bool:
        """Equal to another History, or to a list of rows (what run.history() returned before it was a History)."""
        if isinstance(other, History):
            return self.rows == other.rows
        if isinstance(other, list):
            return self.rows == other
        return NotImplemented

    __hash__ = None  # mutable, compared by value

    def __len__(self) -> int:
        return len(self.rows)

    # A History reads like its list of rows (`for row in h`, `h[-1]["loss"]`, `if h:`), which is what
    # Run.history() returned before it returned a History.
    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    def __repr__(self) -> str:
        """`History(12 epochs)` and, below it, the last epoch's numbers (the notebook shows the curves)."""
        head = f"History({len(self.rows)} epochs)"
        if not self.rows:
            return head
        last = self.rows[-1]
        parts = [f"{k}: {last[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                 if not _isnan(last.get(k))]
        notes = [f"stopped early at epoch {self.stopped_early_at}"] if self.stopped_early_at else []
        return "\n".join([head, f"  last epoch {int(last['epoch'])}: " + " - ".join(parts), *notes])

    def plot(self, **options):
        """The learning curves as a matplotlib Figure (mlplab.plot_history(self)).

        Drawing lives a layer up (viz/), which train/ may not import; the facade resolves the name lazily.
        """
        import mlplab

        return mlplab.plot_history(self, **options)


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
