"""Snapshots of the hidden layers during training: the raw material for watching a network learn.

`SnapshotSpec` is the parsed `--snapshots` option (`every=N,layers=NAME+NAME|all,n=N`, or `default`).
`Snapshots` is a callback that, at epoch 0 (before the first step) and after every N-th epoch, computes the
chosen layers' activations for a fixed sample of inputs plus per-layer statistics, and hands them as plain
arrays to `sink(epoch, arrays)`. It does no file I/O: the run layer's sink stores them; without a sink they
stay in memory (`.series`), for notebooks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from mlplab.errors import MlplabError
from mlplab.train.callbacks import Callback

# Per-layer statistics, one float64 vector per layer in this order. dead_fraction is NaN for layers that are
# not ReLU; update_ratio (|W_e - W_e-1| / |W_e-1|, the last epoch's step relative to the weights) is NaN at
# epoch 0, when no step has been taken.
STAT_NAMES = ("act_mean", "act_std", "dead_fraction", "weight_norm", "bias_norm", "update_ratio")
SPEC_KEYS = ("every", "layers", "n")
DEFAULT_EVERY, DEFAULT_N = 1, 2000
SPEC_HELP = "every=N,layers=NAME+NAME|all,n=N (or 'default' for every=1,layers=all,n=2000)"


@dataclass(frozen=True)
class SnapshotSpec:
    every: int = DEFAULT_EVERY
    layers: tuple[str, ...] | str = "all"
    n: int = DEFAULT_N

    @classmethod
    def parse(cls, text: str) -> "SnapshotSpec":
        text = str(text).strip()
        if text in ("default", ""):
            return cls()
        values: dict = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in SPEC_KEYS:
                raise MlplabError(f"--snapshots: unknown part {part.strip()!r}; expected {SPEC_HELP}")
            if key in values:
                raise MlplabError(f"--snapshots: {key} is given twice in {text!r}")
            if key == "layers":
                names = tuple(s.strip() for s in value.split("+") if s.strip())
                if not names:
                    raise MlplabError(f"--snapshots: layers needs names joined by '+' or 'all' (got {value!r})")
                values[key] = "all" if names == ("all",) else names
            else:
                if not value.isdigit() or int(value) < 1:
                    raise MlplabError(f"--snapshots: {key} must be an integer >= 1 (got {value!r})")
                values[key] = int(value)
        spec = cls(**values)
        if spec.n < 4:
            raise MlplabError(f"--snapshots: n must be at least 4 samples to map (got {spec.n})")
        return spec

    def text(self) -> str:
        layers = self.layers if isinstance(self.layers, str) else "+".join(self.layers)
        return f"every={self.every},layers={layers},n={self.n}"

    def resolve_layers(self, model) -> list[str]:
        """The layer names, checked against the model (all = every dense layer, in model order)."""
        valid = list(model.layer_names)
        if self.layers == "all":
            return [n for n, _ in model.dense_layers()]
        unknown = [n for n in self.layers if n not in valid]
        if unknown:
            raise MlplabError(f"--snapshots: unknown layer {unknown[0]!r}; choose from: all, {', '.join(valid)}")
        return [n for n in valid if n in self.layers]


def check_spec(value) -> bool:
    """For the options table: None (off) or a spec that parses."""
    if value is None:
        return True
    SnapshotSpec.parse(value)  # raises with the precise problem
    return True


class Snapshots(Callback):
    """Capture `layers` for the inputs `x` (N, D) at epoch 0 and after every `every`-th epoch (1-based).

    sink(epoch, arrays) receives {"act.<layer>": float16 (N, units), "stats.<layer>": float64 (len(STAT_NAMES),),
    "pred": int16 (N,), "epoch": int64 ()}. Epoch 0 is taken in on_train_begin of a fresh run only, so a resumed
    fit continues the series where its checkpoint left it.
    """

    def __init__(self, x, layers, *, every: int = DEFAULT_EVERY, sink=None, batch_size: int = 4096):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise MlplabError(f"Snapshots every must be a whole number of epochs >= 1 (got {every!r})")
        from mlplab.train.trainer import as_inputs

        x = as_inputs(x)  # images or features, scaled as fit() scales them
        if len(x) == 0:
            raise MlplabError("Snapshots needs at least one sample to follow")
        self.x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))  # (N, D)
        self.layers = list(layers)
        self.every = int(every)
        self.sink = sink
        self.batch_size = batch_size
        self.series: list[dict] = []  # filled when there is no sink
        self.seconds: list[float] = []  # each snapshot's time: weights copy, capture, sink (benchmarks/dynamics.py)
        self._copy_seconds = 0.0
        self._before: dict[str, torch.Tensor] = {}

    def wanted(self, epoch: int) -> bool:
        """Whether the state after `epoch` (1-based; 0 = before training) is captured."""
        return epoch == 0 or epoch % self.every == 0

    def on_train_begin(self, trainer) -> None:
        if trainer.history.epochs_done == 0:
            self._emit(trainer, 0, update=None)

    def on_epoch_begin(self, trainer, epoch: int, n_batches: int) -> None:
        # the weights before this epoch's steps, only for epochs that will be captured (a copy is cheap,
        # but there is no reason to make one per epoch when every > 1)
        self._before = {}
        if self.wanted(epoch + 1):
            start = time.perf_counter()
            self._before = {name: layer.weight.detach().clone() for name, layer in trainer.model.dense_layers()}
            self._copy_seconds = time.perf_counter() - start

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.wanted(epoch + 1):
            self._emit(trainer, epoch + 1, update=self._before)
        self._before = {}

    def capture(self, model, epoch: int, update: dict | None = None) -> dict:
        """The arrays for the model's current state (also usable without a Trainer)."""
        device = next(model.parameters()).device
        dense = dict(model.dense_layers())
        last = model.layer_names[-1]
        want = list(dict.fromkeys(self.layers + [last]))
        parts: dict[str, list] = {name: [] for name in want}
        for s in range(0, len(self.x), self.batch_size):
            outs = model.layer_outputs(self.x[s:s + self.batch_size].to(device), want)
            for name in want:
                parts[name].append(outs[name].float())
        acts = {name: p[0] if len(p) == 1 else torch.cat(p) for name, p in parts.items()}  # (N, units) each
        arrays = {"epoch": np.asarray(epoch, dtype=np.int64),
                  "pred": acts[last].argmax(1).to("cpu", torch.int16).numpy()}
        relu = {name for name, spec in zip(model.layer_names, model.layer_specs)
                if spec.kind == "dense" and spec.activation == "relu"}
        for name in self.layers:
            a = acts[name]
            arrays[f"act.{name}"] = a.to("cpu", torch.float16).numpy()
            # two passes: torch.std_mean's single pass took 5 ms here where mean() and std() together took 0.7 ms
            stats = [float(a.mean()), float(a.std(unbiased=False)),
                     float((a.amax(0) <= 0).float().mean()) if name in relu else math.nan]
            layer = dense.get(name)
            if layer is None:  # a dropout layer asked for by name: no weights of its own
                stats += [math.nan] * 3
            else:
                w = layer.weight.detach()
                stats += [float(w.norm()), float(layer.bias.detach().norm()) if layer.bias is not None else math.nan]
                before = (update or {}).get(name)
                stats.append(float((w - before).norm() / before.norm().clamp_min(1e-30)) if before is not None
                             else math.nan)
            arrays[f"stats.{name}"] = np.asarray(stats, dtype=np.float64)
        return arrays

    def _emit(self, trainer, epoch: int, update) -> None:
        start = time.perf_counter()
        arrays = self.capture(trainer.model, epoch, update)
        if self.sink is None:
            self.series.append(arrays)
        else:
            self.sink(epoch, arrays)
        self.seconds.append(time.perf_counter() - start + self._copy_seconds)
        self._copy_seconds = 0.0
