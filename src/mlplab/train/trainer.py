"""The training loop: epochs of shuffled in-memory batches through the closed-form engine.

The whole dataset lives on the device as one tensor; each epoch permutes it once (one gather) and then
walks contiguous slices, so there is no DataLoader, no per-batch host copy and, on CUDA, no host sync per
batch. One seed fixes initialisation (the caller's build(seed=...)), the validation split, the shuffling
and the dropout masks, so the same seed gives the identical history on the CPU.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
import torch

from mlplab.errors import MlplabError
from mlplab.model.fused_sgd import FusedSGD
from mlplab.model.precision import engine_precision, products_for
from mlplab.train.callbacks import Callback, EarlyStopping, batch_hooks_may_write_weights
from mlplab.train.history import History
from mlplab.train.options import TrainOptions
from mlplab.train.optim import make_optimizer, make_schedule


class TrainingDiverged(MlplabError):
    """The loss became NaN or infinite (Keras's TerminateOnNaN is built in)."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    name = str(device or "cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MlplabError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise MlplabError(f"unknown device {name!r}; choose one of: cpu, cuda, cuda:N, auto")
    return torch.device(name)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as in a container limited with --cpuset-cpus)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_problem(threads) -> str | None:
    """Why `threads` is not a usable CPU thread count, or None. The bound is the CPUs this process may use:
    more threads than CPUs only time-slice (10,000 made training 8x slower) and huge counts crash torch."""
    top = usable_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= top:
        return (f"threads must be a whole number from 1 to {top} (the CPUs this process may use; got {threads!r}); "
                "leave it out to use them all")
    return None


def as_inputs(x) -> np.ndarray:
    """Images or features -> float32 (N, D): the data package's to_features is the one place that scales."""
    from mlplab.data import to_features

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return to_features(np.asarray(x))


def as_targets(y) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise MlplabError(f"labels must be integers (class indices) or one-hot rows, got values of type {y.dtype}")
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise MlplabError("labels must be integers (class indices) or one-hot rows")
        return y.astype(np.int64)
    if y.ndim == 2:
        if not np.all(np.isfinite(y)):
            raise MlplabError("targets contain NaN or infinite values")
        return y.astype(np.float32)
    raise MlplabError(f"labels must be a vector of class indices or a (N, classes) matrix; got shape {y.shape}")


def class_indices(y: np.ndarray) -> np.ndarray:
    return y if y.ndim == 1 else y.argmax(axis=1)


def validation_split_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) that fit(validation_split=fraction) uses for targets `y` and the run's seed.

    The one rule for the validation split: a run folder rebuilds its validation images with this function
    instead of storing them.
    """
    from mlplab.data import train_val_split

    return train_val_split(class_indices(np.asarray(y)), fraction, seed)


class Trainer:
    """Holds everything that persists between fit() calls: optimizer state, RNGs, history, epoch count."""

    def __init__(self, model: torch.nn.Module, *, loss: str = "categorical_crossentropy", optimizer: str = "sgd",
                 lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 schedule: str = "constant", schedule_options: dict | None = None, batch_size: int = 128,
                 seed: int = 0, device="cpu", threads: int | None = None, precision: str = "fp32"):
        from mlplab.model.precision import check as check_precision
        from mlplab.train.options import check_settings

        check_settings("training settings", loss=loss, schedule=schedule, seed=seed)
        for name, value in (("batch_size", batch_size), ("threads", threads)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise MlplabError(f"training settings: {name} must be an integer (got {value!r})")
        check_settings("training settings", batch_size=batch_size, threads=threads)
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)  # bf16 where the hardware cannot: refused here
        self.model = model.to(self.device)
        self.loss = loss
        self.lr = float(lr)
        self.schedule_name = schedule
        self.schedule_options = dict(schedule_options or {})
        make_schedule(schedule, self.lr, steps_per_epoch=1, epochs=1, **self.schedule_options)  # validate early
        self.optimizer = make_optimizer(optimizer, self.model.parameters(), lr=lr, momentum=momentum,
                                        nesterov=nesterov, weight_decay=weight_decay)
        self.batch_size = batch_size
        self.seed = int(seed)
        # Separate streams: the shuffle order does not depend on how many dropout masks were drawn.
        self.shuffle_gen = torch.Generator().manual_seed(self.seed + 1)
        self.dropout_gen = torch.Generator(device=self.device).manual_seed(self.seed + 2)
        self.history = History()
        self.callbacks: list[Callback] = []
        self.stop_training = False
        self._stop_requested = False
        self.stop_signal: int | None = None
        # Ctrl-C finishes the batch and stops cleanly (the CLI turns this on); otherwise, as in any Python
        # code, it raises KeyboardInterrupt where it lands.
        self.finish_batch_on_ctrl_c = False
        self._resumed_callback_state: dict | None = None
        self.current_lr = self.lr
        # Multiplies every learning rate the schedule gives: ReduceLROnPlateau lowers it. 1.0 leaves the
        # schedule's values exactly as they are.
        self.lr_scale = 1.0
        # (fraction, seed, n samples) of the first validation split drawn by fit(): a later fit() must draw the
        # same one, or samples it trained on would be scored as validation.
        self.validation_draw: tuple[float, int, int] | None = None

    def first_split_seed(self) -> int | None:
        """The seed of the validation split already drawn (None before the first one)."""
        return None if self.validation_draw is None else self.validation_draw[1]

    # --- weights helpers used by callbacks ---------------------------------------------------------
    def copy_weights(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_weights_from(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(state[k])

    def set_lr_scale(self, scale: float) -> None:
        """Multiply every learning rate the schedule gives by `scale` from now on (ReduceLROnPlateau). A constant
        schedule's rate is set at once; other schedules apply it at their next step."""
        self.lr_scale = float(scale)
        if self.schedule_name == "constant":
            self.current_lr = self.lr * self.lr_scale
            for group in self.optimizer.param_groups:
                group["lr"] = self.current_lr

    def request_stop(self) -> None:
        """Finish the current batch, then stop (what Ctrl-C does)."""
        self._stop_requested = True

    # --- state for checkpoints -----------------------------------------------------------------------
    def rng_state(self) -> dict:
        return {"shuffle": self.shuffle_gen.get_state(), "dropout": self.dropout_gen.get_state()}

    def callback_state(self) -> dict:
        return {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(self.callbacks)}

    def callback_tensors(self) -> dict:
        """Tensor state of callbacks, keyed "cb<index>" (checkpoint groups)."""
        out = {}
        for i, cb in enumerate(self.callbacks):
            tensors = cb.state_tensors()
            if tensors is not None:
                out[f"cb{i}"] = tensors
        return out

    def restore(self, *, rng: dict, history_rows: list[dict], callback_state: dict,
                callback_tensors: dict | None = None) -> None:
        """Put back a checkpoint's RNGs and history; callback state is applied when fit() starts."""
        self.shuffle_gen.set_state(rng["shuffle"])
        if rng["dropout"].numel() != self.dropout_gen.get_state().numel():
            raise MlplabError(f"this run was trained on another kind of device; resume it with the --device it "
                              f"used (dropout random state does not transfer to {self.device.type})")
        self.dropout_gen.set_state(rng["dropout"])
        self.history = History(history_rows)
        self._resumed_callback_state = (callback_state, callback_tensors or {})

    # --- the loop -------------------------------------------------------------------------------------
    def fit(self, x, y, *, epochs: int, validation_split: float = 0.0, validation_data=None,
            callbacks=(), initial_epoch: int | None = None, split_seed: int | None = None) -> History:
        """Train until `epochs` epochs are done in total (Keras's initial_epoch meaning for continued runs)."""
        from mlplab.model import engine

        if not isinstance(epochs, int) or epochs < 1:
            raise MlplabError(f"epochs must be an integer >= 1 (got {epochs!r})")
        x_np, y_np = as_inputs(x), as_targets(y)
        if len(x_np) != len(y_np):
            raise MlplabError(f"x has {len(x_np)} samples but y has {len(y_np)}")
        if x_np.shape[1] != self.model.input_dim:
            raise MlplabError(f"the model takes {self.model.input_dim} inputs but the data has {x_np.shape[1]} features")
        self._check_targets(y_np)
        if validation_data is not None:
            xv_np, yv_np = as_inputs(validation_data[0]), as_targets(validation_data[1])
            self._check_targets(yv_np)
        elif validation_split:
            if not (0.0 < validation_split < 1.0):
                raise MlplabError(f"validation split must be in (0, 1) (got {validation_split!r})")
            draw = (float(validation_split), self.seed if split_seed is None else int(split_seed), len(y_np))
            if self.validation_draw is not None and self.history.rows and draw != self.validation_draw:
                frac, seed, n = self.validation_draw
                raise MlplabError(f"this model was trained with validation_split={frac:g} (seed {seed}) of "
                                  f"{n:,} samples; another split would validate on samples it trained on: "
                                  f"use validation_split={frac:g} with the same data, or validation_data=(x, y)")
            self.validation_draw = draw
            train_idx, val_idx = validation_split_indices(y_np, draw[0], draw[1])
            xv_np, yv_np = x_np[val_idx], y_np[val_idx]
            x_np, y_np = x_np[train_idx], y_np[train_idx]
        else:
            xv_np = yv_np = None

        dev = self.device
        x_t = torch.from_numpy(np.ascontiguousarray(x_np)).to(dev)      # (N, D) float32
        y_t = torch.from_numpy(np.ascontiguousarray(y_np)).to(dev)      # (N,) int64 or (N, C) float32
        xv_t = torch.from_numpy(np.ascontiguousarray(xv_np)).to(dev) if xv_np is not None else None
        yv_t = torch.from_numpy(np.ascontiguousarray(yv_np)).to(dev) if yv_np is not None else None
        n = len(x_t)
        if n == 0:
            raise MlplabError("no training samples")
        n_batches = math.ceil(n / self.batch_size)

        start_epoch = self.history.epochs_done if initial_epoch is None else int(initial_epoch)
        if start_epoch >= epochs:
            raise MlplabError(f"the run already has {start_epoch} epochs; ask for more with --epochs > {start_epoch}")
        lr_at = make_schedule(self.schedule_name, self.lr, steps_per_epoch=n_batches, epochs=epochs,
                              **self.schedule_options)
        constant_lr = self.schedule_name == "constant"
        # SGD's update runs inside the backward (model/fused_sgd.py); other optimizers step from .grad
        fused = FusedSGD(self.optimizer) if isinstance(self.optimizer, torch.optim.SGD) else None
        # the engine's route, named in the manifest; choosing it builds the kernels (about a second, the first
        # time) before the epoch clock starts
        step_precision = engine_precision(self.precision)  # tf32 steps are fp32 steps with TF32 products
        self.engine_route = engine.choose_route(self.model, dev, x_t.dtype, fused, self.loss, step_precision).name
        self._begin(callbacks)

        check_each_batch = dev.type == "cpu"  # a host sync per batch is free on the CPU, not on a GPU
        # Between two batches of an epoch only callbacks run: unless one may write the weights, each step can
        # promise the engine that the weights are as the previous step left them (the bf16 step then reuses its
        # rounded copy). Not across epochs: on_epoch_end hooks (EarlyStopping, checkpoints) may restore weights.
        vouch = fused is not None and not batch_hooks_may_write_weights(self.callbacks)
        with _ctrl_c_finishes_batch(self), products_for(self.precision):
            for epoch in range(start_epoch, epochs):
                for cb in self.callbacks:
                    cb.on_epoch_begin(self, epoch, n_batches)
                self.model.train()
                perm = torch.randperm(n, generator=self.shuffle_gen).to(dev)
                xs, ys = x_t[perm], y_t[perm]                            # one gather per epoch; batches are views
                # On the CPU the per-batch NaN check reads the loss anyway, so the sums are Python floats
                # (no tensor op per batch); on a GPU they stay on the device until the epoch ends.
                loss_acc = 0.0 if check_each_batch else torch.zeros((), dtype=torch.float64, device=dev)
                correct_acc = 0.0 if check_each_batch else torch.zeros((), dtype=torch.float64, device=dev)
                batch_losses = None if check_each_batch else torch.empty(n_batches, dtype=torch.float32, device=dev)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                stopped_at_batch = None
                for b in range(n_batches):
                    if not constant_lr:
                        self.current_lr = lr_at(epoch * n_batches + b) * self.lr_scale
                        for group in self.optimizer.param_groups:
                            group["lr"] = self.current_lr
                    s = b * self.batch_size
                    loss_sum, n_correct = engine.train_step(self.model, xs[s:s + self.batch_size],
                                                            ys[s:s + self.batch_size], self.loss,
                                                            generator=self.dropout_gen, sgd=fused,
                                                            precision=step_precision,
                                                            weights_untouched=vouch and b > 0)
                    if check_each_batch:
                        loss_value = float(loss_sum)
                        if not math.isfinite(loss_value):
                            if self._nan_handled(epoch, b):
                                stopped_at_batch = b
                                break
                            self._diverged(epoch, b)
                        loss_acc += loss_value
                        correct_acc += float(n_correct)
                    else:
                        loss_acc += loss_sum
                        correct_acc += n_correct
                        batch_losses[b] = loss_sum
                    if fused is None:
                        self.optimizer.step()
                    for cb in self.callbacks:
                        cb.on_batch_end(self, b, {"loss_sum": loss_acc, "correct": correct_acc,
                                                  "seen": min(n, s + self.batch_size)})
                    if self._stop_requested:
                        stopped_at_batch = b
                        break
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                seconds = time.perf_counter() - t0
                if stopped_at_batch is not None and self.stop_training:  # TerminateOnNaN: end without the epoch
                    self.history.terminated_on_nan = (epoch + 1, stopped_at_batch + 1)
                    break
                if stopped_at_batch is not None:
                    self.history.interrupted = True
                    self.interrupted_at = (epoch + 1, stopped_at_batch + 1)
                    for cb in self.callbacks:
                        cb.on_interrupt(self)
                    return self.history
                if not check_each_batch:
                    bad = (~torch.isfinite(batch_losses)).nonzero()
                    if len(bad):
                        if self._nan_handled(epoch, int(bad[0])):
                            self.history.terminated_on_nan = (epoch + 1, int(bad[0]) + 1)
                            break
                        self._diverged(epoch, int(bad[0]))
                row = {"epoch": epoch + 1, "loss": float(loss_acc) / n, "accuracy": float(correct_acc) / n,
                       "val_loss": math.nan, "val_accuracy": math.nan, "lr": self.current_lr, "seconds": seconds}
                if xv_t is not None:
                    row["val_loss"], row["val_accuracy"] = engine.evaluate(self.model, xv_t, yv_t, self.loss)
                self.history.append(row)
                # like Keras's logs: no val_* entries at all when there is no validation data
                logs = {k: v for k, v in row.items() if xv_t is not None or not k.startswith("val_")}
                for cb in self.callbacks:
                    cb.on_epoch_end(self, epoch, logs)
                if self.stop_training or self._stop_requested:
                    if self._stop_requested and not self.stop_training:
                        self.history.interrupted = True
                        self.interrupted_at = (epoch + 1, n_batches)
                    break
        if self.history.interrupted:  # Ctrl-C at the end of an epoch: that epoch is whole and saved
            for cb in self.callbacks:
                cb.on_interrupt(self)
            return self.history
        for cb in self.callbacks:
            cb.on_train_end(self)
        self.model.eval()  # as after Keras's fit: calling the model now runs inference (no dropout)
        return self.history

    def _begin(self, callbacks) -> None:
        self.callbacks = list(callbacks)
        self.stop_training = False
        self._stop_requested = False
        self.stop_signal = None  # set by _ctrl_c_finishes_batch: which signal asked to stop
        for cb in self.callbacks:
            cb.on_train_begin(self)
        if self._resumed_callback_state is not None:
            # Resuming: callbacks continue with the state they had (EarlyStopping's wait and best, ...),
            # matched by position and type so that a changed callback list is not silently mixed up.
            states, tensors = self._resumed_callback_state
            for i, cb in enumerate(self.callbacks):
                key = f"{i}:{type(cb).__name__}"
                if key in states:
                    group = tensors.get(f"cb{i}")
                    cb.load_state_dict(states[key], None if group is None
                                       else {k: v.to(self.device) for k, v in group.items()})
            self._resumed_callback_state = None

    def finish(self, callbacks=()) -> History:
        """The end of fit() without more epochs: for a resumed run whose last epoch was saved but whose process
        stopped (Ctrl-C, kill) before the end-of-training steps (restore_best_weights, final weights)."""
        self._begin(callbacks)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def _check_targets(self, y: np.ndarray) -> None:
        from mlplab.train.metrics import n_classes_of, output_layer_problem

        n_out = self.model.n_outputs
        problem = output_layer_problem(n_out, self.model.output_activation, self.loss)
        if problem:
            raise MlplabError(problem)
        if y.ndim == 1:
            k = n_classes_of(n_out)
            if len(y) and (y.min() < 0 or y.max() >= k):
                from mlplab.data.validate import label_gaps

                gaps = label_gaps(y) if y.min() >= 0 else ""
                raise MlplabError(f"labels must be in [0, {k}) for a model with {n_out} output(s); "
                                  f"found {int(y.min())}..{int(y.max())}" + (f"; {gaps}" if gaps else ""))
        elif y.shape[1] != n_out:
            raise MlplabError(f"targets have {y.shape[1]} columns but the model has {n_out} outputs")

    def _nan_handled(self, epoch: int, batch: int) -> bool:
        """A callback that takes over a NaN/inf loss (Keras's TerminateOnNaN) ends training without an error;
        without one, the loss going NaN raises TrainingDiverged."""
        handled = any(cb.on_nan_loss(self, epoch, batch) for cb in self.callbacks)
        if handled:
            self.stop_training = True
        return handled

    def _diverged(self, epoch: int, batch: int):
        raise TrainingDiverged(f"the loss became NaN or infinite at epoch {epoch + 1}, batch {batch + 1}; "
                               f"training stopped (try a smaller learning rate)")


# Signals that stop training like Ctrl-C: the batch finishes, the run is saved, the CLI prints how to resume.
# SIGTERM is what `kill`, systemd, Docker and batch schedulers send; SIGHUP what a closed terminal sends.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_for(signum: int):
    from mlplab.errors import Terminated

    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


@contextmanager
def _ctrl_c_finishes_batch(trainer: Trainer):
    """First Ctrl-C (or SIGTERM, SIGHUP): finish the batch and stop cleanly; trainer.stop_signal says which.
    A second one interrupts at once (KeyboardInterrupt, or errors.Terminated for SIGTERM/SIGHUP)."""
    if not trainer.finish_batch_on_ctrl_c or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in STOP_SIGNALS:
        old = signal.getsignal(signum)
        if old is None:  # a handler installed from C: restore Python's default afterwards
            old = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        previous[signum] = old

    def handler(signum, frame):
        if trainer._stop_requested:
            for s, old in previous.items():
                signal.signal(s, old)
            _raise_for(signum)
        trainer.stop_signal = signum
        trainer.request_stop()

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# fit()'s training settings and their defaults for a model's first fit() call (from the options table). Later
# calls keep the model's current settings for every one left out (None), as a compiled Keras model keeps its
# optimizer.
FIT_DEFAULTS = {name: TrainOptions.default(name) for name in (
    "loss", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "batch_size", "seed", "device",
    "threads", "precision")}


def fit(model, x, y, *, epochs: int = 1, batch_size: int | None = None, loss: str | None = None,
        optimizer: str | None = None, lr: float | None = None, momentum: float | None = None,
        nesterov: bool | None = None, weight_decay: float | None = None, schedule: str | None = None,
        validation_split: float = 0.0, validation_data=None, early_stopping: EarlyStopping | str | None = None,
        callbacks=(), seed: int | None = None, device=None, threads: int | None = None, precision: str | None = None,
        verbose="auto") -> History:
    """Keras-style fit: `epochs` more epochs on `model`; calling it again continues the same History.

    Settings left out (None) are the model's current ones (FIT_DEFAULTS on the first call); the optimizer
    state carries over while they stay the same. A validation split is drawn once: a later call with a
    different validation_split (or seed) is refused, since a new draw would validate on trained-on samples.
    `verbose`: 0 silent, 1 a live bar per epoch, 2 one line per epoch (Keras's meanings); "auto" is 1 in a
    Jupyter notebook and 0 elsewhere (train/progress.py).
    """
    from mlplab.train.progress import progress_callback, resolve_verbose

    resolve_verbose(verbose)  # a bad value fails before anything about the model changes
    given = dict(loss=loss, optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov,
                 weight_decay=weight_decay, schedule=schedule, batch_size=batch_size, seed=seed,
                 device=device, threads=threads, precision=precision)
    trainer = getattr(model, "_mlplab_trainer", None)
    current = trainer._settings if trainer is not None else FIT_DEFAULTS
    settings = {k: current[k] if v is None else v for k, v in given.items()}
    if trainer is None or trainer._settings != settings:
        previous = trainer
        trainer = Trainer(model, **settings)
        trainer._settings = settings
        if previous is not None:
            # Different settings need a new optimizer, but the run goes on: same History, the same validation
            # split, and the shuffle and dropout streams continue instead of replaying epoch 1's order and masks.
            trainer.history = previous.history
            trainer.validation_draw = previous.validation_draw
            trainer.shuffle_gen.set_state(previous.shuffle_gen.get_state())
            if previous.device == trainer.device:
                trainer.dropout_gen.set_state(previous.dropout_gen.get_state())
        model._mlplab_trainer = trainer
    progress = progress_callback(verbose, trainer.history.epochs_done + epochs,
                                 show_lr=settings["schedule"] != "constant")
    from mlplab.train.keras_protocol import adapt

    cbs = adapt(callbacks, trainer.history.epochs_done + epochs)  # Keras-protocol objects work unchanged
    if early_stopping is not None:
        cbs.append(EarlyStopping.from_string(early_stopping) if isinstance(early_stopping, str) else early_stopping)
    if progress is not None:
        cbs.append(progress)  # last: its epoch line follows what the other callbacks did to the epoch
    return trainer.fit(x, y, epochs=trainer.history.epochs_done + epochs, validation_split=validation_split,
                       validation_data=validation_data, callbacks=cbs, split_seed=trainer.first_split_seed())
