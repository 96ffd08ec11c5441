"""EarlyStopping decides exactly what Keras's EarlyStopping decides on the same logged values."""

import os
import random

import pytest

from mlplab.errors import MlplabError
from mlplab.train.callbacks import EarlyStopping


class FakeTrainer:
    """The two things EarlyStopping touches: stop_training and weights to copy/restore."""

    def __init__(self):
        self.stop_training = False
        self.weights = 0
        self.loaded = None

        class H:
            restored_epoch = None
            stopped_early_at = None

        self.history = H()

    def copy_weights(self):
        return {"epoch_weights": self.weights}

    def load_weights_from(self, state):
        self.loaded = state["epoch_weights"]


def run_ours(values, **kwargs):
    es = EarlyStopping(**kwargs)
    tr = FakeTrainer()
    es.on_train_begin(tr)
    ran = 0
    for epoch, v in enumerate(values):
        tr.weights = epoch
        ran += 1
        es.on_epoch_end(tr, epoch, {kwargs.get("monitor", "val_loss"): v})
        if tr.stop_training:
            break
    es.on_train_end(tr)
    return ran, es.best_epoch, tr.loaded


keras = None
try:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras  # noqa: F811
except Exception:  # keras is a dev extra; without it only the scripted cases below run
    keras = None


def run_keras(values, **kwargs):
    es = keras.callbacks.EarlyStopping(**kwargs)

    class Model:
        stop_training = False
        current = 0
        loaded = None

        def get_weights(self):
            return [self.current]

        def set_weights(self, w):
            self.loaded = w[0]

    model = Model()
    es.set_model(model)
    es.on_train_begin()
    ran = 0
    for epoch, v in enumerate(values):
        model.current = epoch
        ran += 1
        es.on_epoch_end(epoch, {kwargs.get("monitor", "val_loss"): v})
        if model.stop_training:
            break
    es.on_train_end()
    return ran, es.best_epoch, model.loaded


@pytest.mark.skipif(keras is None, reason="keras (dev extra) not installed")
@pytest.mark.parametrize("case", range(300))
def test_same_decisions_as_keras(case):
    rng = random.Random(case)
    n = rng.randint(1, 40)
    # values on a 1e-3 grid: Keras compares in float32, so ties must be exact in both precisions
    start = rng.uniform(0.3, 1.0)
    values = [round(start + rng.uniform(-0.05, 0.04) * (i + 1) ** 0.5, 3) for i in range(n)]
    monitor = rng.choice(["val_loss", "val_accuracy", "loss"])
    kwargs = dict(monitor=monitor, patience=rng.randint(0, 6), min_delta=rng.choice([0.0, 0.002, 0.01]),
                  restore_best_weights=rng.random() < 0.5, start_from_epoch=rng.choice([0, 0, 2]),
                  mode=rng.choice(["auto", "min", "max"]) if monitor != "val_accuracy" else "max")
    if rng.random() < 0.2:
        kwargs["baseline"] = round(start - 0.02, 3)
    assert run_ours(values, **kwargs) == run_keras(values, **kwargs)


def test_notebook_patience_4_stops_four_epochs_after_the_best():
    values = [0.60, 0.50, 0.45, 0.44, 0.46, 0.47, 0.45, 0.48, 0.40]
    ran, best, loaded = run_ours(values, monitor="val_loss", patience=4, restore_best_weights=True)
    assert (ran, best, loaded) == (8, 3, 3)  # best at epoch index 3, stop after 4 non-improving epochs


def test_min_delta_counts_small_gains_as_no_improvement():
    ran, best, _ = run_ours([1.0, 0.999, 0.998, 0.997], monitor="loss", patience=2, min_delta=0.01)
    assert (ran, best) == (3, 0)


def test_patience_zero_never_stops_after_first_epoch():
    ran, _, _ = run_ours([1.0, 2.0], monitor="loss", patience=0)
    assert ran == 2  # epoch 0 is never a stopping epoch; epoch 1 stops


@pytest.mark.parametrize("text", ["val_loss", "val_loss:", "val_loss:x", "bogus:3", "val_loss:-1", ""])
def test_cli_form_rejects_bad_input(text):
    with pytest.raises(MlplabError) as err:
        EarlyStopping.from_string(text)
    assert "\n" not in str(err.value)
    assert "val_loss" in str(err.value)


def test_cli_form_parses():
    es = EarlyStopping.from_string("val_accuracy:7")
    assert (es.monitor, es.patience, es.mode) == ("val_accuracy", 7, "max")
