"""CSV files: one sample per row, the label in the first column, pixel values after it, header optional.

784 values per row become 28x28 images, any other perfect square s*s becomes s x s, everything else stays
tabular (N, D). Kaggle's mnist_train.csv / fashion-mnist_test.csv load as they are.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError


def _has_header(first_line: str) -> bool:
    field = first_line.split(",", 1)[0].strip().strip('"')
    try:
        float(field)
    except ValueError:
        return True
    return False


def image_shape(n_values: int) -> tuple[int, ...]:
    side = math.isqrt(n_values)
    return (side, side) if side > 1 and side * side == n_values else (n_values,)


def read_csv(path):
    """(x, y) with x reshaped to (N, s, s) when the row length is a perfect square, else (N, D)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = f.readline()
            if not first.strip():
                raise MlplabError(f"{path}: empty CSV file")
            skip = 1 if _has_header(first) else 0
            f.seek(0)
            # float32 holds every 8-bit pixel and label exactly, at half the memory of float64.
            with warnings.catch_warnings():  # an empty table is reported below as one error line
                warnings.simplefilter("ignore", UserWarning)
                table = np.loadtxt(f, delimiter=",", dtype=np.float32, skiprows=skip, ndmin=2)
    except MlplabError:
        raise
    except UnicodeDecodeError as exc:
        raise MlplabError(f"{path}: not a text CSV file ({exc.reason} at byte {exc.start})") from exc
    except ValueError as exc:
        # numpy names the row and column of the first bad value; keep that, on one line.
        raise MlplabError(f"{path}: bad CSV: {' '.join(str(exc).split())}") from exc
    except OSError as exc:
        raise MlplabError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if table.shape[0] == 0:
        raise MlplabError(f"{path}: no data rows")
    if table.shape[1] < 2:
        raise MlplabError(f"{path}: each row needs a label and at least one value; found {table.shape[1]} column(s)")
    y, x = table[:, 0], table[:, 1:]
    return x.reshape((len(x), *image_shape(x.shape[1]))), y
