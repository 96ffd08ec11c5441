"""Checks applied where data enters mlplab; every failure is one MlplabError naming the file and the problem.

Each loader hands its raw arrays through here, so the rest of mlplab can rely on: labels are int64 in
[0, n_classes), x and y have the same length, pixels are finite and either uint8 or float32.
"""

from __future__ import annotations

import numpy as np

from mlplab.errors import MlplabError

# A label like 4_000_000_000 in a bad file would otherwise turn into billions of class names.
MAX_CLASSES = 10_000


def labels(y, where: str, n_classes: int | None = None) -> np.ndarray:
    """Labels as int64 (N,), checked to be whole numbers in [0, n_classes) (n_classes <= MAX_CLASSES if not given)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # a column vector from a CSV or another framework
    if y.ndim != 1:
        raise MlplabError(f"{where}: labels must be a 1-D array of class numbers, got shape {y.shape}")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.number):
        raise MlplabError(f"{where}: labels must be integers, got values of type {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise MlplabError(f"{where}: labels contain NaN or infinite values")
        if (y != np.round(y)).any():
            bad = y[y != np.round(y)][0]
            raise MlplabError(f"{where}: labels must be whole numbers, found {float(bad):g}")
    limit = MAX_CLASSES if n_classes is None else n_classes
    if len(y):
        low, high = y.min(), y.max()
        if low < 0 or high >= limit:
            bad = low if low < 0 else high
            raise MlplabError(f"{where}: label {int(bad)} is out of range; labels must be in [0, {limit})")
    return y.astype(np.int64, copy=False)


def pixels(x, where: str) -> np.ndarray:
    """Pixels as uint8 when they are whole numbers in 0..255, otherwise finite float32."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise MlplabError(f"{where}: expected samples with shape (N, ...), got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise MlplabError(f"{where}: pixel values must be numbers, got values of type {x.dtype}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise MlplabError(f"{where}: pixel values must be real numbers, got complex values")
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x)
        if not finite.all():
            n_bad = int(x.size - finite.sum())
            raise MlplabError(f"{where}: {n_bad} value(s) are NaN or infinite")
    if x.size and x.min() >= 0 and x.max() <= 255 and (
            np.issubdtype(x.dtype, np.integer) or (x == np.round(x)).all() and x.max() > 1):
        # Whole numbers 0..255 are 8-bit pixels; store them as such (a quarter of the memory of float32).
        # Floats that are all 0 or 1 stay float: that is more likely [0, 1] data than near-black pixels.
        return x.astype(np.uint8)
    return x.astype(np.float32, copy=False)


def pair(x, y, where: str, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check one split: pixels, labels, and that they have as many samples as each other."""
    x = pixels(x, where)
    y = labels(y, where, n_classes)
    if len(x) != len(y):
        raise MlplabError(f"{where}: {len(x)} samples but {len(y)} labels; they must be equal")
    if len(x) == 0:
        raise MlplabError(f"{where}: no samples")
    return x, y


def same_shape(x_train: np.ndarray, x_test: np.ndarray, where: str) -> None:
    if x_train.shape[1:] != x_test.shape[1:]:
        raise MlplabError(f"{where}: training samples have shape {x_train.shape[1:]} but test samples "
                          f"{x_test.shape[1:]}; they must match")


def class_count(*ys: np.ndarray) -> int:
    """Number of classes implied by labels 0..max."""
    return int(max(int(y.max()) for y in ys if len(y)) + 1)


def label_gaps(*ys: np.ndarray) -> str:
    """A sentence about unused class numbers when labels skip some (0, 100, ..., 900), else "".

    Labels are class indices, so labels with gaps imply classes without samples; the model would need an
    output unit for each. Messages about output sizes add this so that they point at the labels, not the spec.
    """
    present = np.unique(np.concatenate([np.asarray(y).ravel() for y in ys if len(y)])) if any(len(y) for y in ys) \
        else np.array([], dtype=np.int64)
    if not len(present):
        return ""
    implied = int(present.max()) + 1
    if len(present) == implied:
        return ""
    shown = ", ".join(str(int(v)) for v in present[:4]) + (f", ..., {int(present[-1])}" if len(present) > 4 else "")
    return (f"the labels are {len(present)} distinct values ({shown}) but class numbers run 0..{implied - 1}, so "
            f"{implied - len(present)} classes have no samples; renumber the labels 0..{len(present) - 1}")


def harmonize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give both splits one dtype: if only one came out as uint8, keep the original values as float32 in both."""
    if x_train.dtype != x_test.dtype:
        return x_train.astype(np.float32), x_test.astype(np.float32)
    return x_train, x_test
