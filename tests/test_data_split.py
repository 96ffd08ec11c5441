"""Splits, to_features, the Dataset value, and scikit-learn's digits (always offline)."""

from __future__ import annotations

import numpy as np
import pytest

from mlplab.data import Dataset, load_dataset, to_features, train_val_split
from mlplab.errors import MlplabError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("MLPLAB_DATA", raising=False)
    monkeypatch.setenv("MLPLAB_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.chdir(tmp_path)


def test_train_val_split_is_stratified_disjoint_complete_and_seeded():
    y = np.repeat(np.arange(5), [100, 200, 300, 150, 250])  # 1,000 samples, unequal classes
    train_idx, val_idx = train_val_split(y, 0.1, seed=7)
    assert train_idx.dtype == np.int64 and val_idx.dtype == np.int64
    assert len(val_idx) == 100 and len(train_idx) == 900
    assert np.array_equal(np.sort(np.r_[train_idx, val_idx]), np.arange(1000))
    assert np.bincount(y[val_idx]).tolist() == [10, 20, 30, 15, 25]
    again = train_val_split(y, 0.1, seed=7)
    assert np.array_equal(again[1], val_idx) and np.array_equal(again[0], train_idx)
    other = train_val_split(y, 0.1, seed=8)[1]
    assert not np.array_equal(other, val_idx)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, "half", None])
def test_train_val_split_rejects_bad_fractions(bad):
    with pytest.raises(MlplabError, match="validation fraction must be"):
        train_val_split(np.arange(10) % 2, bad, 0)


def test_train_val_split_tiny_class_falls_back_to_plain_seeded_split():
    y = np.r_[np.zeros(20, int), 1]  # class 1 has one sample: stratification is impossible
    train_idx, val_idx = train_val_split(y, 0.2, seed=1)
    assert len(val_idx) == 5 and len(train_idx) == 16
    assert np.array_equal(val_idx, train_val_split(y, 0.2, seed=1)[1])
    with pytest.raises(MlplabError, match="cannot split 1 sample"):
        train_val_split(np.array([0]), 0.5, 0)


def test_to_features_scales_uint8_once_and_flattens():
    x = np.array([[[0, 255], [51, 128]]], dtype=np.uint8)
    f = to_features(x)
    assert f.dtype == np.float32 and f.shape == (1, 4)
    assert np.array_equal(f, x.reshape(1, -1).astype(np.float32) / 255)  # Keras's own expression
    assert f[0, 1] == 1.0 and f[0, 2] == np.float32(0.2)
    floats = np.full((2, 3, 3), 0.25, dtype=np.float64)
    assert np.array_equal(to_features(floats), np.full((2, 9), 0.25, np.float32))
    with pytest.raises(MlplabError, match=r"shape \(N, ...\)"):
        to_features(np.zeros(3, np.uint8))


def test_dataset_properties():
    ds = Dataset("t", np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.int64), np.zeros((2, 28, 28), np.uint8),
                 np.zeros(2, np.int64), ["a", "b", "c"], "here")
    assert (ds.n_classes, ds.input_shape, ds.input_dim) == (3, (28, 28), 784)
    assert "train=4" in repr(ds) and "array" not in repr(ds)


def test_digits_offline_with_reproducible_stratified_80_20_split():
    ds = load_dataset("digits")
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert (len(ds.y_train), len(ds.y_test)) == (1437, 360)
    assert ds.x_train.shape[1:] == (8, 8) and ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255
    assert ds.class_names == [str(i) for i in range(10)] and ds.input_dim == 64
    assert "stratified, seed 0" in ds.source and "20%" in ds.source
    # stratified: each class's test share is within one sample of 20%
    total = np.bincount(np.r_[ds.y_train, ds.y_test])
    assert np.all(np.abs(np.bincount(ds.y_test) - 0.2 * total) <= 1)
    again = load_dataset("digits")
    assert np.array_equal(again.x_test, ds.x_test) and np.array_equal(again.y_train, ds.y_train)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.y_test, ds.y_test)
    # the pixels are sklearn's 0..16 levels, rescaled without merging any two of them
    assert len(np.unique(np.r_[ds.x_train.ravel(), ds.x_test.ravel()])) == 17


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, mlplab.data; print(sorted(m for m in ('torch', 'sklearn', 'PIL', 'urllib.request') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=200), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_train_val_split_partitions_any_labels(ys, fraction, seed):
    y = np.array(ys)
    n_val = int(np.ceil(fraction * len(y)))
    if n_val >= len(y):
        with pytest.raises(MlplabError):
            train_val_split(y, fraction, seed)
        return
    train_idx, val_idx = train_val_split(y, fraction, seed)
    assert len(val_idx) == n_val
    assert np.array_equal(np.sort(np.r_[train_idx, val_idx]), np.arange(len(y)))
