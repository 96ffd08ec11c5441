"""Where mlplab looks for data on this machine; every place can be moved with an environment variable.

MLPLAB_DATA      a folder of the user's own copies (NAME.npz, NAME/ with IDX files, torchvision's MNIST/raw)
XDG_CACHE_HOME   mlplab downloads into $XDG_CACHE_HOME/mlplab (default ~/.cache/mlplab)
KERAS_HOME       Keras's cache, read if present ($KERAS_HOME/datasets, default ~/.keras/datasets)
MLPLAB_MIRRORS   comma-separated base URLs that replace every built-in download mirror (tests, offline mirrors)
"""

from __future__ import annotations

import os
from pathlib import Path


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    base = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
    return base / "mlplab"


def keras_datasets_dir() -> Path:
    return (_env_path("KERAS_HOME") or Path.home() / ".keras") / "datasets"


def data_dir(explicit=None) -> Path | None:
    """The user's data folder: the argument when given, else $MLPLAB_DATA, else none."""
    return Path(explicit).expanduser() if explicit else _env_path("MLPLAB_DATA")


def mirrors_override(explicit=None) -> list[str] | None:
    """Mirror base URLs that replace the built-in ones: the argument when given, else $MLPLAB_MIRRORS."""
    if explicit:
        return [explicit] if isinstance(explicit, str) else list(explicit)
    value = os.environ.get("MLPLAB_MIRRORS", "").strip()
    return [m.strip() for m in value.replace(" ", ",").split(",") if m.strip()] or None
