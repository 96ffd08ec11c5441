"""The Dataset value every loader returns, and to_features: the one place pixels become model inputs.

Loaders keep images as they are stored (uint8, 0-255) so that thumbnails and `datasets show` see the real
pixels and memory stays at one byte per pixel; scaling to [0, 1] and flattening happen once, in to_features,
right before the data meets a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

from mlplab.errors import MlplabError


@dataclass
class Dataset:
    name: str                 # "fashion-mnist", "digits", or the path as the user gave it
    x_train: np.ndarray       # (N, H, W) uint8 images, (N, D) for tabular CSV; float32 when the file held floats
    y_train: np.ndarray       # (N,) int64 in [0, n_classes)
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] = field(default_factory=list)
    source: str = ""          # where it was read from, plus "test split: ..." when mlplab made one

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def input_dim(self) -> int:
        return int(prod(self.input_shape))

    def __repr__(self) -> str:  # the default repr would print whole arrays
        return (f"Dataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"input_shape={self.input_shape}, n_classes={self.n_classes}, source={self.source!r})")


def to_features(x) -> np.ndarray:
    """(N, ...) images or rows -> float32 (N, D); uint8 pixels are divided by 255, floats are kept as they are.

    Dividing in float32 (not multiplying by 1/255) gives the same numbers as Keras's
    `x.astype("float32") / 255`, so results can be compared with the notebook bit for bit.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise MlplabError(f"expected a batch of samples with shape (N, ...), got an array of shape {x.shape}")
    if len(x) == 0 or x[0].size == 0:
        raise MlplabError(f"no samples: got an array of shape {x.shape}")
    flat = x.reshape(len(x), -1)
    if x.dtype == np.uint8:
        return np.divide(flat, np.float32(255.0), dtype=np.float32)
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating):
        out = np.ascontiguousarray(flat, dtype=np.float32)
        if not np.isfinite(out).all():  # NaN in, NaN predictions out: refuse where input enters
            raise MlplabError(f"{int(out.size - np.isfinite(out).sum())} input value(s) are NaN or infinite "
                              "(or beyond float32's range)")
        return out
    raise MlplabError(f"cannot use data of type {x.dtype} as model inputs; expected numbers")
