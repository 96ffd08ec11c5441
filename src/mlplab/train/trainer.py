"""The training loop: epochs of shuffled in-memory batches through the closed-form engine.

The whole dataset lives on the device as one tensor; each epoch permutes it once (one gather) and then
walks contiguous slices, so there is no DataLoader, no per-batch host copy and, on CUDA, no host sync per
batch. One seed fixes initialisation (the caller's build(seed=...)), the validation split, the shuffling
and the dropout masks, so the same seed gives the identical history on the CPU.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
import torch

from mlplab.errors import MlplabError
from mlplab.model.fused_sgd import FusedSGD
from mlplab.train.callbacks import Callback, EarlyStopping
from mlplab.train.history import History
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


class Trainer:
    """Holds everything that persists between fit() calls: optimizer state, RNGs, history, epoch count."""

    def __init__(self, model: torch.nn.Module, *, loss: str = "categorical_crossentropy", optimizer: str = "sgd",
                 lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 schedule: str = "constant", schedule_options: dict | None = None, batch_size: int = 128,
                 seed: int = 0, device="cpu", threads: int | None = None, precision: str = "fp32"):
        from mlplab.model import LOSSES
        from mlplab.model.precision import check as check_precision

        if loss not in LOSSES:
            raise MlplabError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise MlplabError(f"batch size must be an integer > 0 (got {batch_size!r})")
        if threads is not None:
            if not isinstance(threads, int) or threads <= 0:
                raise MlplabError(f"threads must be an integer > 0 (got {threads!r})")
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
        self.run_writer = None
        self._stop_requested = False
        # Ctrl-C finishes the batch and stops cleanly (the CLI turns this on); otherwise, as in any Python
        # code, it raises KeyboardInterrupt where it lands.
        self.finish_batch_on_ctrl_c = False
        self._resumed_callback_state: dict | None = None
        self.current_lr = self.lr

    # --- weights helpers used by callbacks ---------------------------------------------------------
    def copy_weights(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_weights_from(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(state[k])

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
        from mlplab.data import train_val_split
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
            train_idx, val_idx = train_val_split(class_indices(y_np), validation_split,
                                                 self.seed if split_seed is None else split_seed)
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
        self.engine_route = engine.choose_route(self.model, dev, x_t.dtype, fused, self.loss, self.precision).name
        self._begin(callbacks)

        check_each_batch = dev.type == "cpu"  # a host sync per batch is free on the CPU, not on a GPU
        with _ctrl_c_finishes_batch(self):
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
                        self.current_lr = lr_at(epoch * n_batches + b)
                        for group in self.optimizer.param_groups:
                            group["lr"] = self.current_lr
                    s = b * self.batch_size
                    loss_sum, n_correct = engine.train_step(self.model, xs[s:s + self.batch_size],
                                                            ys[s:s + self.batch_size], self.loss,
                                                            generator=self.dropout_gen, sgd=fused,
                                                            precision=self.precision)
                    if check_each_batch:
                        loss_value = float(loss_sum)
                        if not math.isfinite(loss_value):
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
                if stopped_at_batch is not None:
                    self.history.interrupted = True
                    self.interrupted_at = (epoch + 1, stopped_at_batch + 1)
                    if self.run_writer is not None:
                        self.run_writer.on_interrupt(self)
                    return self.history
                if not check_each_batch:
                    bad = (~torch.isfinite(batch_losses)).nonzero()
                    if len(bad):
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
                if self.run_writer is not None:
                    self.run_writer.on_epoch_end(self, row)
                if self.stop_training or self._stop_requested:
                    if self._stop_requested and not self.stop_training:
                        self.history.interrupted = True
                        self.interrupted_at = (epoch + 1, n_batches)
                    break
        if self.history.interrupted:  # Ctrl-C at the end of an epoch: that epoch is whole and saved
            if self.run_writer is not None:
                self.run_writer.on_interrupt(self)
            return self.history
        for cb in self.callbacks:
            cb.on_train_end(self)
        if self.run_writer is not None:
            self.run_writer.on_train_end(self)
        self.model.eval()  # as after Keras's fit: calling the model now runs inference (no dropout)
        return self.history

    def _begin(self, callbacks) -> None:
        self.callbacks = list(callbacks)
        self.stop_training = False
        self._stop_requested = False
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
        if self.run_writer is not None:
            self.run_writer.on_train_begin(self)

    def finish(self, callbacks=()) -> History:
        """The end of fit() without more epochs: for a resumed run whose last epoch was saved but whose process
        stopped (Ctrl-C, kill) before the end-of-training steps (restore_best_weights, final weights)."""
        self._begin(callbacks)
        for cb in self.callbacks:
            cb.on_train_end(self)
        if self.run_writer is not None:
            self.run_writer.on_train_end(self)
        return self.history

    def _check_targets(self, y: np.ndarray) -> None:
        n_out = self.model.n_outputs
        if y.ndim == 1:
            if len(y) and (y.min() < 0 or y.max() >= n_out):
                raise MlplabError(f"labels must be in [0, {n_out}) for a model with {n_out} outputs; "
                                  f"found {int(y.min())}..{int(y.max())}")
        elif y.shape[1] != n_out:
            raise MlplabError(f"targets have {y.shape[1]} columns but the model has {n_out} outputs")

    def _diverged(self, epoch: int, batch: int):
        good = self.history.epochs_done
        where = f"; the last good checkpoint (epoch {good}) is kept in {self.run_writer.path}" \
            if (self.run_writer is not None and good) else ""
        raise TrainingDiverged(f"the loss became NaN or infinite at epoch {epoch + 1}, batch {batch + 1}; "
                               f"training stopped (try a smaller learning rate){where}")


@contextmanager
def _ctrl_c_finishes_batch(trainer: Trainer):
    """First Ctrl-C: finish the batch and stop cleanly. A second one interrupts at once."""
    if not trainer.finish_batch_on_ctrl_c or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler installed from C: restore Python's default afterwards
        previous = signal.default_int_handler

    def handler(signum, frame):
        if trainer._stop_requested:
            signal.signal(signal.SIGINT, previous if callable(previous) else signal.default_int_handler)
            raise KeyboardInterrupt
        trainer.request_stop()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def fit(model, x, y, *, epochs: int = 1, batch_size: int = 128, loss: str = "categorical_crossentropy",
        optimizer: str = "sgd", lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0, schedule: str = "constant", validation_split: float = 0.0,
        validation_data=None, early_stopping: EarlyStopping | str | None = None, callbacks=(), seed: int = 0,
        device="cpu", threads: int | None = None, precision: str = "fp32") -> History:
    """Keras-style fit: `epochs` more epochs on `model`; calling it again continues the same History.

    The optimizer state carries over between calls with the same optimizer settings (as a compiled Keras
    model keeps its optimizer).
    """
    settings = dict(loss=loss, optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov,
                    weight_decay=weight_decay, schedule=schedule, batch_size=batch_size, seed=seed,
                    device=device, threads=threads, precision=precision)
    trainer = getattr(model, "_mlplab_trainer", None)
    if trainer is None or trainer._settings != settings:
        previous = trainer
        trainer = Trainer(model, **settings)
        trainer._settings = settings
        if previous is not None:
            # Different settings need a new optimizer, but the run goes on: same History, and the shuffle
            # and dropout streams continue instead of replaying epoch 1's order and masks.
            trainer.history = previous.history
            trainer.shuffle_gen.set_state(previous.shuffle_gen.get_state())
            if previous.device == trainer.device:
                trainer.dropout_gen.set_state(previous.dropout_gen.get_state())
        model._mlplab_trainer = trainer
    cbs = list(callbacks)
    if early_stopping is not None:
        cbs.append(EarlyStopping.from_string(early_stopping) if isinstance(early_stopping, str) else early_stopping)
    return trainer.fit(x, y, epochs=trainer.history.epochs_done + epochs, validation_split=validation_split,
                       validation_data=validation_data, callbacks=cbs)
