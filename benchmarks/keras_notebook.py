"""The anchor for the README: Keras with the notebook's own recipe on Fashion-MNIST, on this machine.

784-512-512-10 (ReLU, Dropout 0.2, softmax), SGD (Keras's default lr 0.01), batch 128, EarlyStopping on
val_loss with patience 4 (validating on a held-out 10% of the training set, not on the test set), up to
100 epochs; prints the test accuracy, epochs run and seconds, and optionally the seconds until the
validation accuracy first reached a target (time-to-accuracy).

Runs in any Python with Keras 3 and a backend (TensorFlow or PyTorch); it reads the IDX files itself so
that it needs nothing from mlplab:

    KERAS_BACKEND=tensorflow /path/to/tf-venv/bin/python benchmarks/keras_notebook.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np

FASHION = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--target", type=float, default=0.89, help="validation accuracy for time-to-accuracy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import keras

    keras.utils.set_random_seed(args.seed)
    x_train = read_idx(FASHION / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype("float32") / 255
    y_train = read_idx(FASHION / "train-labels-idx1-ubyte.gz").astype("int64")
    x_test = read_idx(FASHION / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype("float32") / 255
    y_test = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz").astype("int64")
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(x_train))
    n_val = len(x_train) // 10
    val, tr = perm[:n_val], perm[n_val:]

    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(512, activation="relu"), keras.layers.Dropout(0.2),
        keras.layers.Dense(512, activation="relu"), keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    reached = {}
    t_start = time.perf_counter()

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if "at" not in reached and logs.get("val_accuracy", 0) >= args.target:
                reached["at"] = time.perf_counter() - t_start
                reached["epoch"] = epoch + 1

    es = keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience)
    hist = model.fit(x_train[tr], y_train[tr], batch_size=128, epochs=args.epochs, verbose=0,
                     validation_data=(x_train[val], y_train[val]), callbacks=[es, Clock()])
    seconds = time.perf_counter() - t_start
    _, test_acc = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({
        "backend": keras.backend.backend(), "keras": keras.__version__, "epochs_run": len(hist.history["loss"]),
        "test_accuracy": round(float(test_acc), 4), "seconds": round(seconds, 1),
        "best_val_accuracy": round(max(hist.history["val_accuracy"]), 4),
        f"seconds_to_val_acc_{args.target}": round(reached["at"], 1) if reached else None,
        "epoch_reached": reached.get("epoch"),
    }))


if __name__ == "__main__":
    main()
