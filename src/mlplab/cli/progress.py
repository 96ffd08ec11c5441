"""Training progress on the terminal: a live bar per epoch that leaves one Keras-like line behind.

On a terminal the bar shows batches, samples/s and the running loss and accuracy; when stdout is not a
terminal (CI logs, pipes) only the per-epoch lines are printed.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlplab.cli.console import make_console
from mlplab.train.callbacks import Callback
# the texts are shared with fit(verbose=...) in the library
from mlplab.train.progress import REFRESH_SECONDS, epoch_line, running_stats


class ConsoleProgress(Callback):
    writes_weights_between_batches = False  # on_batch_end draws the bar

    def __init__(self, epochs: int, console: Console | None = None, show_lr: bool = False):
        self.epochs = epochs
        self.console = console or make_console()
        self.live = self.console.is_terminal
        self.show_lr = show_lr
        self.progress: Progress | None = None

    def on_epoch_begin(self, trainer, epoch: int, n_batches: int) -> None:
        if not self.live:
            return
        self.progress = Progress(
            TextColumn(f"Epoch {epoch + 1}/{self.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
            console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=n_batches, rate="", stats="")
        self.t0 = self.last = time.perf_counter()

    def on_batch_end(self, trainer, batch: int, logs: dict) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if now - self.last < REFRESH_SECONDS:
            return
        self.last = now
        seen = logs["seen"]
        loss, acc = running_stats(logs)
        self.progress.update(self.task, completed=batch + 1, rate=f"{seen / (now - self.t0):,.0f} samples/s",
                             stats=f"loss {loss:.4f} acc {acc:.4f}")

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        self._stop_bar()
        self.console.print(epoch_line(logs, self.epochs, self.show_lr), highlight=False, soft_wrap=True)

    def on_train_end(self, trainer) -> None:
        self._stop_bar()

    def _stop_bar(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
