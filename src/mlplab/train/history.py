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

    def __len__(self) -> int:
        return len(self.rows)

    # A History reads like its list of rows (`for row in h`, `h[-1]["loss"]`, `if h:`), which is what
    # Run.history() returned before it returned a History.
    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    def __repr__(self) -> str:
        return f"History({len(self.rows)} epochs)"


def _isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
