"""Keras's callback protocol alongside mlplab's: an object written for Keras (`on_epoch_end(self, epoch, logs)`,
`self.model.stop_training = True`, `self.params`) works unchanged when passed to fit(callbacks=[...]).

mlplab's own hooks take the Trainer first (`on_epoch_end(trainer, epoch, logs)`); any callback that is not an
mlplab Callback is wrapped in KerasAdapter, which calls the Keras signatures with Keras's logs: `loss`,
`accuracy`, `val_loss`, `val_accuracy` (only with validation data) and `lr`, epochs 0-based.
"""

from __future__ import annotations

from mlplab.train.callbacks import Callback
from mlplab.train.progress import running_stats

KERAS_HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
               "on_train_end", "set_model", "set_params")
LOG_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")


def is_keras_style(obj) -> bool:
    return not isinstance(obj, Callback) and any(callable(getattr(obj, h, None)) for h in KERAS_HOOKS)


class _ModelView:
    """What a Keras callback sees as `self.model`: the mlplab model's attributes, plus a `stop_training`
    that stops the fit loop as Keras's does."""

    def __init__(self, trainer):
        object.__setattr__(self, "_trainer", trainer)

    def __getattr__(self, name):
        return getattr(self._trainer.model, name)

    def __setattr__(self, name, value):
        if name == "stop_training":
            self._trainer.stop_training = bool(value)
        else:
            setattr(self._trainer.model, name, value)

    @property
    def stop_training(self) -> bool:
        return self._trainer.stop_training


class KerasAdapter(Callback):
    def __init__(self, callback, epochs: int):
        self.callback = callback
        self.epochs = epochs
        self.last_logs: dict = {}
        # a Keras callback's batch hook is user code that may write the weights
        self.writes_weights_between_batches = callable(getattr(callback, "on_train_batch_end", None))

    def _call(self, hook: str, *args, **kwargs) -> None:
        fn = getattr(self.callback, hook, None)
        if callable(fn):
            fn(*args, **kwargs)

    def on_train_begin(self, trainer) -> None:
        self.trainer = trainer
        view = _ModelView(trainer)
        if callable(getattr(self.callback, "set_model", None)):
            self.callback.set_model(view)
        else:
            self.callback.model = view
        params = {"epochs": self.epochs, "verbose": 0, "steps": None}
        if callable(getattr(self.callback, "set_params", None)):
            self.callback.set_params(params)
        else:
            self.callback.params = params
        self._call("on_train_begin", logs={})

    def on_epoch_begin(self, trainer, epoch: int, n_batches: int) -> None:
        if isinstance(getattr(self.callback, "params", None), dict):
            self.callback.params["steps"] = n_batches
        self._call("on_epoch_begin", epoch, logs={})

    def on_batch_end(self, trainer, batch: int, logs: dict) -> None:
        if callable(getattr(self.callback, "on_train_batch_end", None)):
            loss, accuracy = running_stats(logs)  # Keras reports the running mean over the epoch so far
            self.callback.on_train_batch_end(batch, logs={"loss": loss, "accuracy": accuracy})

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        self.last_logs = {k: float(logs[k]) for k in LOG_KEYS if k in logs}
        self._call("on_epoch_end", epoch, logs=dict(self.last_logs))

    def on_train_end(self, trainer) -> None:
        self._call("on_train_end", logs=dict(self.last_logs))


def adapt(callbacks, epochs: int) -> list:
    """mlplab Callbacks as they are; Keras-protocol objects wrapped."""
    return [KerasAdapter(cb, epochs) if is_keras_style(cb) else cb for cb in callbacks]
