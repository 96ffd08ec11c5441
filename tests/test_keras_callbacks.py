"""Keras's callbacks under Keras's names: ReduceLROnPlateau (against Keras's own, epoch by epoch), TerminateOnNaN,
CSVLogger and ModelCheckpoint, on real training."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import mlplab  # noqa: E402
from mlplab.errors import MlplabError  # noqa: E402
from mlplab.runs.callbacks import CSVLogger, ModelCheckpoint  # noqa: E402
from mlplab.runs.checkpoint import load_weights  # noqa: E402
from mlplab.train.callbacks import ReduceLROnPlateau, TerminateOnNaN  # noqa: E402
from mlplab.train.trainer import TrainingDiverged  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    ds = mlplab.load_dataset("digits")
    return ds.x_train.reshape(len(ds.x_train), -1) / 16.0, ds.y_train


def small_model(seed=0):
    return mlplab.build("32:relu,10:softmax", 64, seed=seed)


class _Trainer:
    """The two attributes ReduceLROnPlateau reads and writes, for a scripted comparison with Keras."""

    def __init__(self, lr):
        self.base, self.lr_scale = lr, 1.0

    def set_lr_scale(self, scale):
        self.lr_scale = scale

    @property
    def current_lr(self):
        return self.base * self.lr_scale


@pytest.mark.parametrize("kwargs", [
    dict(factor=0.5, patience=2),
    dict(factor=0.1, patience=1, cooldown=2, min_lr=1e-4),
    dict(factor=0.5, patience=0, min_delta=0.05),
    dict(monitor="val_accuracy", mode="max", factor=0.2, patience=1),
])
def test_reduce_lr_on_plateau_matches_keras_epoch_by_epoch(kwargs):
    import keras

    values = [1.0, 0.9, 0.95, 0.93, 0.92, 0.97, 0.89, 0.9, 0.9, 0.91, 0.95, 0.88, 0.88, 0.87, 0.99]
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    theirs = keras.callbacks.ReduceLROnPlateau(verbose=0, **kwargs)
    theirs.set_model(model)
    ours, trainer = ReduceLROnPlateau(**kwargs), _Trainer(0.1)
    monitor = kwargs.get("monitor", "val_loss")
    for epoch, value in enumerate(values):
        theirs.on_epoch_end(epoch, {monitor: value})
        ours.on_epoch_begin(trainer, epoch, 1)
        ours.on_epoch_end(trainer, epoch, {monitor: value})
        assert trainer.current_lr == pytest.approx(float(model.optimizer.learning_rate), rel=1e-6), epoch


def test_reduce_lr_on_plateau_in_training_and_its_resumable_state(digits):
    x, y = digits
    model = small_model()
    # monitor the training loss with zero patience and a huge min_delta: every epoch after the first is a plateau,
    # and the rate drops at its end (so from epoch 3 on)
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    history = mlplab.fit(model, x, y, epochs=4, lr=0.08, callbacks=[cb])
    assert [r["lr"] for r in history.rows] == pytest.approx([0.08, 0.08, 0.04, 0.02])
    again = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    again.load_state_dict(cb.state_dict())
    assert again.scale == cb.scale == 0.125 and again.best == cb.best


def test_terminate_on_nan_ends_training_without_an_error(digits):
    x, y = digits
    with pytest.raises(TrainingDiverged):
        mlplab.fit(small_model(), x, y, epochs=3, lr=1e30)
    model = small_model()
    history = mlplab.fit(model, x, y, epochs=3, lr=1e30, callbacks=[TerminateOnNaN()])
    assert history.terminated_on_nan is not None and history.terminated_on_nan[0] == len(history.rows) + 1
    assert all(np.isfinite(r["loss"]) for r in history.rows)


def test_csv_logger_writes_keras_columns_and_appends(tmp_path, digits):
    x, y = digits
    path = tmp_path / "log.csv"
    model = small_model()
    h = mlplab.fit(model, x, y, epochs=3, validation_split=0.2, callbacks=[CSVLogger(path)])
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["epoch", "accuracy", "loss", "lr", "seconds", "val_accuracy", "val_loss"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [float(r["val_loss"]) for r in rows] == [r["val_loss"] for r in h.rows]  # repr: exact
    mlplab.fit(model, x, y, epochs=2, validation_split=0.2, callbacks=[CSVLogger(path, append=True)])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    with pytest.raises(MlplabError, match="separator"):
        CSVLogger(path, separator=";;")


def test_model_checkpoint_saves_what_it_says(tmp_path, digits):
    x, y = digits
    model = small_model()
    every = ModelCheckpoint(tmp_path / "all" / "w-{epoch:02d}-{loss:.3f}.safetensors")
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_loss", save_best_only=True)
    history = mlplab.fit(model, x, y, epochs=4, lr=0.05, validation_split=0.2, callbacks=[every, best])
    assert [p.name for p in every.saved] == [f"w-{r['epoch']:02d}-{r['loss']:.3f}.safetensors" for r in history.rows]
    final = small_model(seed=1)
    load_weights(final, every.saved[-1])
    for a, b in zip(final.state_dict().values(), model.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())  # bit for bit
    improved = [r for i, r in enumerate(history.rows)
                if r["val_loss"] < min([q["val_loss"] for q in history.rows[:i]], default=np.inf)]
    assert len(best.saved) == len(improved) and best.best == min(r["val_loss"] for r in history.rows)
    with pytest.raises(MlplabError, match="cannot be formatted"):
        mlplab.fit(small_model(), x, y, epochs=1, callbacks=[ModelCheckpoint(tmp_path / "{nope}.safetensors")])


def test_public_names():
    assert mlplab.ReduceLROnPlateau is ReduceLROnPlateau and mlplab.TerminateOnNaN is TerminateOnNaN
    assert mlplab.CSVLogger is CSVLogger and mlplab.ModelCheckpoint is ModelCheckpoint
    with pytest.raises(MlplabError, match="factor"):
        ReduceLROnPlateau(factor=2)
