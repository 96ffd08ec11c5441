"""Datasets: named sources (mnist, fashion-mnist, kmnist, digits), file formats, validation and splits.

Importing this package is cheap: numpy only. scikit-learn, Pillow and gzip readers load inside the
functions that need them, and torch is never imported here.
"""

from mlplab.data.dataset import Dataset, to_features
from mlplab.data.loader import load_dataset
from mlplab.data.split import train_val_split

__all__ = ["Dataset", "load_dataset", "to_features", "train_val_split"]
