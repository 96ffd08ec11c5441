"""Seeded, stratified splits: train/validation for training, and a test split for data that has none.

Stratified means every class keeps (to rounding) its share in both parts, so a 10% validation set of
MNIST has about 10% of each digit. The same (labels, fraction, seed) always gives the same indices, which is
what lets a run directory rebuild its validation set without storing it.
"""

from __future__ import annotations

import numpy as np

from mlplab.errors import MlplabError


def _check_fraction(fraction, what: str) -> float:
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise MlplabError(f"{what} must be a number between 0 and 1 (exclusive), got {fraction!r}") from None
    if not 0.0 < f < 1.0:
        raise MlplabError(f"{what} must be between 0 and 1 (exclusive), got {fraction!r}")
    return f


def train_val_split(y, val_fraction, seed=0, *, what: str = "validation fraction") -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): sorted int64 positions into y, stratified by class, reproducible for a seed.

    Stratification needs at least two samples of every class and parts at least as large as the number of
    classes; when the labels do not allow that (a class with a single sample, or a tiny split), the split
    falls back to a seeded random split without stratification rather than refusing the data.
    """
    f = _check_fraction(val_fraction, what)
    y = np.asarray(y)
    if y.ndim != 1:
        raise MlplabError(f"labels for splitting must be 1-D class numbers, got shape {y.shape}")
    n = len(y)
    n_val = int(np.ceil(f * n))  # the same rounding as scikit-learn's test_size
    if n < 2 or n_val < 1 or n_val >= n:
        raise MlplabError(f"cannot split {n} sample(s) with {what} {f}: each part needs at least one sample")
    _, counts = np.unique(y, return_counts=True)
    n_classes = len(counts)
    if counts.min() >= 2 and n_classes <= n_val <= n - n_classes:
        from sklearn.model_selection import StratifiedShuffleSplit  # sklearn only when a split is made

        splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=int(seed))
        train_idx, val_idx = next(splitter.split(np.zeros(n), y))
    else:
        perm = np.random.default_rng(int(seed)).permutation(n)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
    return np.sort(train_idx).astype(np.int64), np.sort(val_idx).astype(np.int64)


def split_off_test(x, y, test_fraction, seed):
    """(x_train, y_train, x_test, y_test, note) for data that came without a test part."""
    train_idx, test_idx = train_val_split(y, test_fraction, seed, what="test fraction")
    note = f"test split: {_pct(float(test_fraction))} held out, stratified, seed {int(seed)}"
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], note


def _pct(f: float) -> str:
    p = f * 100
    return f"{p:.0f}%" if abs(p - round(p)) < 1e-9 else f"{p:g}%"
