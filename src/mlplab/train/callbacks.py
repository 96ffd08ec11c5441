"""Callbacks: hooks the training loop calls, with Keras's names and, for EarlyStopping, Keras's semantics."""

from __future__ import annotations

import math

from mlplab.errors import MlplabError


class Callback:
    """Base class. `trainer` gives access to the model, the optimizer and trainer.stop_training."""

    # Whether on_batch_end may write the model's weights. While no callback's may, the bf16 step reuses the
    # weights it rounded to bf16 at the end of the previous batch; callbacks whose on_batch_end only reads say False.
    writes_weights_between_batches = True

    def on_train_begin(self, trainer) -> None: ...

    def on_epoch_begin(self, trainer, epoch: int, n_batches: int) -> None: ...

    def on_batch_end(self, trainer, batch: int, logs: dict) -> None: ...

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None: ...

    def on_train_end(self, trainer) -> None: ...

    def on_interrupt(self, trainer) -> None:
        """Called instead of on_train_end when a stop was requested (Ctrl-C) before training finished."""

    def on_nan_loss(self, trainer, epoch: int, batch: int) -> bool:
        """The loss became NaN or infinite in this batch. Return True to end training quietly (the epoch is
        not recorded; on_train_end runs); by default training raises TrainingDiverged."""
        return False

    # Callbacks with state that a resumed run needs (EarlyStopping's wait counter, best value) override these.
    def state_dict(self) -> dict:
        return {}

    def state_tensors(self) -> dict | None:
        """Tensors to checkpoint alongside state_dict (e.g. best weights); None when there are none."""
        return None

    def load_state_dict(self, state: dict, tensors: dict | None = None) -> None: ...


def batch_hooks_may_write_weights(callbacks) -> bool:
    """Whether any callback runs an on_batch_end of its own (a function given to LambdaCallback included) that
    may write the weights."""
    for cb in callbacks:
        func = getattr(getattr(cb, "on_batch_end", None), "__func__", None)
        if func is Callback.on_batch_end:
            continue  # the base class's: does nothing
        if "writes_weights_between_batches" in vars(cb):  # said per instance (KerasAdapter)
            if cb.writes_weights_between_batches:
                return True
            continue
        # The class that defines the hook must say it only reads: a subclass of Progress with a hook of its own
        # does not inherit Progress's word. A plain function (LambdaCallback) counts as a writer.
        owner = next((k for k in type(cb).__mro__ if func is not None and vars(k).get("on_batch_end") is func), None)
        if owner is None or vars(owner).get("writes_weights_between_batches", True):
            return True
    return False


def resolve_mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise MlplabError(f"mode must be one of: auto, min, max (got {mode!r})")
    if mode != "auto":
        return mode
    # Keras: "auto" maximises accuracy-like metrics and minimises everything else
    return "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"


MONITORS = ("loss", "accuracy", "val_loss", "val_accuracy")


class EarlyStopping(Callback):
    """Stop when `monitor` has stopped improving, exactly as keras.callbacks.EarlyStopping (Keras 3) decides.

    Epochs are 0-based inside callbacks, as in Keras. Every epoch counts toward `wait` (reset on an
    improvement that also beats `baseline`); training stops once wait >= patience, never after the first
    epoch. With restore_best_weights the best epoch's weights are put back when training ends.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, mode: str = "auto",
                 baseline: float | None = None, restore_best_weights: bool = False, start_from_epoch: int = 0):
        if monitor not in MONITORS:
            raise MlplabError(f"early stopping monitor must be one of: {', '.join(MONITORS)} (got {monitor!r})")
        if not isinstance(patience, int) or patience < 0:
            raise MlplabError(f"early stopping patience must be an integer >= 0 (got {patience!r})")
        if not math.isfinite(min_delta):
            raise MlplabError(f"early stopping min_delta must be a finite number (got {min_delta!r})")
        if start_from_epoch < 0:
            raise MlplabError(f"start_from_epoch must be >= 0 (got {start_from_epoch!r})")
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.reset()

    def reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights = None  # dict of tensors (state_dict copy) when restore_best_weights

    def _is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def on_train_begin(self, trainer) -> None:
        # Keras resets at every fit(); a resumed run restores the saved state after this call instead.
        self.reset()

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        value = logs.get(self.monitor)
        if value is None:
            raise MlplabError(f"early stopping monitors {self.monitor!r} but there is no validation data; "
                              "use a validation split (e.g. --val-split 0.1) or monitor 'loss'")
        # a NaN value is compared like Keras compares it: never an improvement (except as the very first)
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = trainer.copy_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(value, self.best):
            self.best = value
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = trainer.copy_weights()
            if self.baseline is None or self._is_improvement(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            trainer.stop_training = True

    def on_train_end(self, trainer) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            trainer.load_weights_from(self.best_weights)
            trainer.history.restored_epoch = self.best_epoch + 1
        if self.stopped_epoch > 0:
            trainer.history.stopped_early_at = self.stopped_epoch + 1

    def state_dict(self) -> dict:
        return {"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best": self.best, "best_epoch": self.best_epoch}

    def state_tensors(self) -> dict | None:
        return self.best_weights

    def load_state_dict(self, state: dict, tensors: dict | None = None) -> None:
        if tensors is not None:
            self.best_weights = tensors
        self.wait = int(state["wait"])
        self.stopped_epoch = int(state["stopped_epoch"])
        self.best = state["best"]
        self.best_epoch = int(state["best_epoch"])

    @classmethod
    def from_string(cls, text: str, **kwargs) -> "EarlyStopping":
        """Parse the CLI form METRIC:PATIENCE (e.g. val_loss:4)."""
        metric, sep, patience = str(text).partition(":")
        if not sep or not patience.strip().isdigit():
            raise MlplabError(f"--early-stop must be METRIC:PATIENCE with METRIC one of {', '.join(MONITORS)} "
                              f"and PATIENCE an integer >= 0, e.g. val_loss:4 (got {text!r})")
        return cls(monitor=metric.strip(), patience=int(patience), **kwargs)


class LambdaCallback(Callback):
    """Quick hooks from plain functions: LambdaCallback(on_epoch_end=lambda trainer, epoch, logs: ...)."""

    def __init__(self, **hooks):
        for name, fn in hooks.items():
            if not hasattr(Callback, name):
                raise MlplabError(f"unknown callback hook {name!r}")
            setattr(self, name, fn)


class TerminateOnNaN(Callback):
    """Keras's TerminateOnNaN: a NaN or infinite loss ends training without an error.

    Without it, mlplab raises TrainingDiverged (and a run folder keeps its last good epoch). With it, fit()
    returns normally: the broken epoch is not in the History, `history.terminated_on_nan` says (epoch, batch),
    and the weights are those after the step that went NaN, as in Keras.
    """

    def on_nan_loss(self, trainer, epoch: int, batch: int) -> bool:
        return True


class ReduceLROnPlateau(Callback):
    """Keras's ReduceLROnPlateau: multiply the learning rate by `factor` once `monitor` has not improved for
    `patience` epochs, then wait `cooldown` epochs; never below `min_lr`. Works on top of any schedule (it scales
    the schedule's values); its state is checkpointed, so a resumed run goes on with the reduced rate."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, mode: str = "auto",
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        if monitor not in MONITORS:
            raise MlplabError(f"ReduceLROnPlateau monitor must be one of: {', '.join(MONITORS)} (got {monitor!r})")
        if not (isinstance(factor, (int, float)) and 0 < factor < 1):
            raise MlplabError(f"ReduceLROnPlateau factor must be in (0, 1) (got {factor!r})")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MlplabError(f"ReduceLROnPlateau {name} must be an integer >= 0 (got {value!r})")
        if not (isinstance(min_lr, (int, float)) and math.isfinite(min_lr) and min_lr >= 0):
            raise MlplabError(f"ReduceLROnPlateau min_lr must be a number >= 0 (got {min_lr!r})")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta)):
            raise MlplabError(f"ReduceLROnPlateau min_delta must be a finite number (got {min_delta!r})")
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.factor = float(factor)
        self.patience = patience
        self.min_delta = abs(float(min_delta))
        self.cooldown = cooldown
        self.min_lr = float(min_lr)
        self.best: float | None = None
        self.wait = 0
        self.cooldown_counter = 0
        self.scale = 1.0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_begin(self, trainer, epoch: int, n_batches: int) -> None:
        if trainer.lr_scale != self.scale:  # a resumed run: put its reduced rate back
            trainer.set_lr_scale(self.scale)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        value = logs.get(self.monitor)
        if value is None:
            raise MlplabError(f"ReduceLROnPlateau monitors {self.monitor!r} but there is no validation data; "
                              "use a validation split or monitor 'loss'")
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best = value
            self.wait = 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = trainer.current_lr
            if old > self.min_lr:  # as Keras: at the floor, nothing changes and the counters run on
                new = max(old * self.factor, self.min_lr)
                self.scale *= new / old
                trainer.set_lr_scale(self.scale)
                self.cooldown_counter = self.cooldown
                self.wait = 0

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter, "scale": self.scale}

    def load_state_dict(self, state: dict, tensors: dict | None = None) -> None:
        self.best = state["best"]
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.scale = float(state["scale"])
