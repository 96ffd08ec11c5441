"""fit(verbose=...) progress with Keras's meanings: 0 silent, 1 a live bar per epoch, 2 one line per epoch.

The line and bar texts are made here once; the CLI's rich display (cli/progress.py) uses the same functions.
In Jupyter the bar is ONE output per epoch updated in place (IPython display handles), never appended text;
in a terminal it is one line redrawn with a carriage return. Updates are throttled by time, so an epoch of
400 batches sends a handful of messages, not 400, and the browser never falls behind.
"""

from __future__ import annotations

import html
import math
import sys
import time

from mlplab.errors import MlplabError
from mlplab.train.callbacks import Callback

# Reading the running loss forces a device sync and every Jupyter update is a message to the browser:
# a few times a second is smooth to the eye and costs nothing measurable.
REFRESH_SECONDS = 0.25
BAR_WIDTH = 30
VERBOSE = ("auto", 0, 1, 2)


def epoch_line(row: dict, epochs: int, show_lr: bool = False) -> str:
    """The line an epoch leaves behind: `Epoch 3/10 - 1.2s - loss: ... - val_accuracy: ...`."""
    parts = [f"Epoch {int(row['epoch'])}/{epochs}", f"{row['seconds']:.1f}s",
             f"loss: {row['loss']:.4f}", f"accuracy: {row['accuracy']:.4f}"]
    if not math.isnan(row.get("val_loss", math.nan)):
        parts += [f"val_loss: {row['val_loss']:.4f}", f"val_accuracy: {row['val_accuracy']:.4f}"]
    if show_lr:
        parts.append(f"lr: {row['lr']:.3g}")
    return " - ".join(parts)


def running_stats(logs: dict) -> tuple[float, float]:
    """(mean loss, accuracy) so far in the epoch from on_batch_end's running sums."""
    seen = max(int(logs["seen"]), 1)
    return float(logs["loss_sum"]) / seen, float(logs["correct"]) / seen


def batch_text(epoch: int, epochs: int, done: int, total: int, loss: float, accuracy: float,
               rate: float | None = None) -> str:
    """`Epoch 2/5 [=========>....................] 120/400 - loss: 0.5123 - accuracy: 0.8120`"""
    filled = int(BAR_WIDTH * done / max(total, 1))
    bar = "=" * filled + (">" if filled < BAR_WIDTH else "") + "." * max(BAR_WIDTH - filled - 1, 0)
    text = f"Epoch {epoch}/{epochs} [{bar}] {done}/{total} - loss: {loss:.4f} - accuracy: {accuracy:.4f}"
    return text + (f" - {rate:,.0f} samples/s" if rate else "")


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (where outputs can be updated in place)."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    shell = ipython.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def resolve_verbose(verbose) -> int:
    if verbose == "auto":
        # Keras shows a bar by default; a library must not print into scripts and tests, so "auto" shows it
        # only where the output is the point: a Jupyter notebook.
        return 1 if in_jupyter() else 0
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise MlplabError(f"verbose must be one of: 'auto', 0, 1, 2 (got {verbose!r})")
    return int(verbose)


class Progress(Callback):
    """The display fit(verbose=1|2) attaches. `stream` is where terminal text goes (sys.stdout by default);
    in Jupyter, outputs go through IPython's display handles instead."""

    writes_weights_between_batches = False  # on_batch_end draws the bar

    def __init__(self, epochs: int, verbose: int = 1, *, stream=None, jupyter: bool | None = None,
                 show_lr: bool = False):
        self.epochs = epochs
        self.verbose = verbose
        self.stream = stream if stream is not None else sys.stdout
        self.jupyter = in_jupyter() if jupyter is None else jupyter
        self.live = verbose == 1 and (self.jupyter or _is_tty(self.stream))
        self.show_lr = show_lr
        self.handle = None
        self.updates = 0  # how many times the live bar was redrawn (tests check the throttle)

    def on_epoch_begin(self, trainer, epoch: int, n_batches: int) -> None:
        self.epoch, self.n_batches = epoch + 1, n_batches
        self.t0 = time.perf_counter()
        self.last = -math.inf
        if self.live and self.jupyter:
            from IPython.display import display

            self.handle = display(self._bundle(batch_text(self.epoch, self.epochs, 0, n_batches, math.nan,
                                                          math.nan), 0.0), raw=True, display_id=True)

    def on_batch_end(self, trainer, batch: int, logs: dict) -> None:
        if not self.live:
            return
        now = time.perf_counter()
        if now - self.last < REFRESH_SECONDS:
            return
        self.last = now
        loss, acc = running_stats(logs)
        rate = logs["seen"] / (now - self.t0) if now > self.t0 else None
        text = batch_text(self.epoch, self.epochs, batch + 1, self.n_batches, loss, acc, rate)
        self.updates += 1
        if self.handle is not None:
            self.handle.update(self._bundle(text, (batch + 1) / self.n_batches), raw=True)
        else:
            self.stream.write("\r" + text)
            self.stream.flush()

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        line = epoch_line(logs, self.epochs, self.show_lr)
        if self.handle is not None:
            self.handle.update(self._bundle(line, 1.0), raw=True)  # the bar becomes the epoch's line
            self.handle = None
        elif self.jupyter:
            from IPython.display import display

            display(self._bundle(line, None), raw=True)
        else:
            self.stream.write(("\r" if self.live else "") + line + ("\x1b[K" if self.live else "") + "\n")
            self.stream.flush()

    @staticmethod
    def _bundle(text: str, fraction: float | None) -> dict:
        bar = ("" if fraction is None else
               f'<progress value="{fraction:.3f}" max="1" style="width:14em;vertical-align:middle"></progress> ')
        return {"text/plain": text,
                "text/html": f'<div style="font:12px/1.4 monospace;white-space:pre">{bar}{html.escape(text)}</div>'}


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_callback(verbose, epochs: int, *, show_lr: bool = False) -> Progress | None:
    """The display for fit(verbose=...), or None for 0."""
    level = resolve_verbose(verbose)
    return None if level == 0 else Progress(epochs, level, show_lr=show_lr)
