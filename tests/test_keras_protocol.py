"""A callback written for Keras's protocol (reads only `logs`, sets model.stop_training) works unchanged in
mlplab.fit, next to mlplab's own (trainer, epoch, logs) callbacks."""

from __future__ import annotations

import math

import numpy as np

import mlplab


class Recorder:  # no mlplab base class: exactly what a Keras user writes
    def __init__(self):
        self.calls, self.epoch_logs, self.batches = [], [], 0

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        assert set(logs) == {"loss", "accuracy"} and math.isfinite(logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch}")
        self.epoch_logs.append(dict(logs))

    def on_train_end(self, logs=None):
        self.calls.append("train_end")
        self.final = dict(logs)


class StopAfterTwo:
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            self.model.stop_training = True


def data():
    rng = np.random.default_rng(0)
    x = rng.random((100, 6), dtype=np.float32)
    return x, (x[:, 0] > 0.5).astype(np.int64)


def test_keras_style_callback_sees_keras_logs():
    x, y = data()
    model = mlplab.build("8:relu,2:softmax", 6, seed=0)
    rec, seen = Recorder(), []
    own = mlplab.LambdaCallback(on_epoch_end=lambda trainer, epoch, logs: seen.append(epoch))
    history = mlplab.fit(model, x, y, epochs=3, batch_size=20, lr=0.1, validation_split=0.2, callbacks=[rec, own],
                         verbose=0)
    assert rec.calls == ["train_begin", "epoch_begin 0", "epoch_end 0", "epoch_begin 1", "epoch_end 1",
                         "epoch_begin 2", "epoch_end 2", "train_end"]
    assert seen == [0, 1, 2] and rec.batches == 3 * 4  # 80 training samples / 20
    assert rec.params["epochs"] == 3 and rec.params["steps"] == 4
    for logs, row in zip(rec.epoch_logs, history.rows):
        assert logs == {k: row[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr")}
    assert rec.final == rec.epoch_logs[-1]
    # without validation data, no val_* keys at all (as Keras)
    rec2 = Recorder()
    mlplab.fit(mlplab.build("8:relu,2:softmax", 6, seed=0), x, y, epochs=1, callbacks=[rec2], verbose=0)
    assert set(rec2.epoch_logs[0]) == {"loss", "accuracy", "lr"}


def test_keras_style_callback_stops_training():
    x, y = data()
    model = mlplab.build("8:relu,2:softmax", 6, seed=0)
    history = mlplab.fit(model, x, y, epochs=5, callbacks=[StopAfterTwo()], verbose=0)
    assert len(history) == 2
