"""Keras's file-writing callbacks, for fit() from Python: CSVLogger and ModelCheckpoint.

They live in the run layer because they write files (train/ does no file I/O); a run folder written by
`mlplab train` already has both (history.csv, checkpoints/), these are for models trained with `mlplab.fit`.
Every write is atomic, so a killed process leaves the previous file, never half of one.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from mlplab.atomic import atomic_write_text
from mlplab.errors import MlplabError
from mlplab.train.callbacks import MONITORS, Callback, resolve_mode


class CSVLogger(Callback):
    """Keras's CSVLogger: one row per epoch (0-based `epoch`, then the logs' keys in sorted order).

    append=True keeps the rows of an existing file (training continued in another fit() call); the file is
    rewritten whole, atomically, after every epoch.
    """

    def __init__(self, filename, separator: str = ",", append: bool = False):
        if not isinstance(separator, str) or len(separator) != 1:
            raise MlplabError(f"CSVLogger separator must be one character (got {separator!r})")
        self.filename = Path(filename)
        self.separator = separator
        self.append = append
        self.keys: list[str] | None = None
        self.rows: list[list[str]] = []

    def on_train_begin(self, trainer) -> None:
        self.keys, self.rows = None, []
        if self.append and self.filename.is_file():
            try:
                text = self.filename.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise MlplabError(f"CSVLogger cannot read {self.filename} to append to it: {exc}") from exc
            lines = list(csv.reader(io.StringIO(text), delimiter=self.separator))
            if lines:
                self.keys, self.rows = lines[0][1:], lines[1:]

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.keys is None:  # mlplab's logs also carry the 1-based "epoch": the first column says it already
            self.keys = sorted(k for k in logs if k != "epoch")
        self.rows.append([str(epoch)] + [_cell(logs.get(k)) for k in self.keys])
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self.separator, lineterminator="\n")
        writer.writerow(["epoch", *self.keys])
        writer.writerows(self.rows)
        atomic_write_text(self.filename, out.getvalue())


def _cell(value) -> str:
    if value is None:
        return "NA"  # what Keras writes for a key missing in an epoch's logs
    return repr(float(value)) if isinstance(value, float) else str(value)


class ModelCheckpoint(Callback):
    """Keras's ModelCheckpoint: save the weights (safetensors) after every epoch, or only when `monitor` improves
    (save_best_only). `filepath` may hold `{epoch}` (1-based, as Keras formats it) and any logs key, e.g.
    "ckpt/weights-{epoch:02d}-{val_loss:.3f}.safetensors"; mlplab.runs.checkpoint.load_weights reads them back."""

    def __init__(self, filepath, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto",
                 save_freq: str = "epoch", initial_value_threshold: float | None = None):
        if monitor not in MONITORS:
            raise MlplabError(f"ModelCheckpoint monitor must be one of: {', '.join(MONITORS)} (got {monitor!r})")
        if save_freq != "epoch":
            raise MlplabError(f"ModelCheckpoint save_freq must be 'epoch' (got {save_freq!r})")
        self.filepath = str(filepath)
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.save_best_only = save_best_only
        self.best = initial_value_threshold
        self.saved: list[Path] = []

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        from mlplab.runs.checkpoint import save_weights

        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise MlplabError(f"ModelCheckpoint monitors {self.monitor!r} but there is no validation data; "
                                  "use a validation split or monitor 'loss'")
            if math.isnan(value) or (self.best is not None and
                                     (value >= self.best if self.mode == "min" else value <= self.best)):
                return
            self.best = value
        try:
            path = Path(self.filepath.format(**{**logs, "epoch": epoch + 1}))
        except (KeyError, IndexError, ValueError) as exc:
            raise MlplabError(f"ModelCheckpoint filepath {self.filepath!r} cannot be formatted with epoch and "
                              f"{', '.join(sorted(logs))} ({exc})") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(trainer.model, path)
        self.saved.append(path)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict, tensors: dict | None = None) -> None:
        self.best = state["best"]
