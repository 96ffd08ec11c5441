"""Config files: `mlplab train --config FILE.toml` is a flat table of the training options.

The options themselves (names, types, defaults, checks) are declared once in `mlplab.train.options`.
"""

from __future__ import annotations

from pathlib import Path

from mlplab.errors import MlplabError
from mlplab.train.options import TrainOptions

__all__ = ["TrainOptions", "read_toml", "load_train_config"]

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def read_toml(path) -> dict:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise MlplabError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise MlplabError(f"config file {path} is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise MlplabError(f"{path} is not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MlplabError(f"cannot read {path}: {exc}") from exc


def load_train_config(path) -> TrainOptions:
    """`mlplab train --config FILE.toml`: a flat table of the same options as the flags."""
    return TrainOptions.from_mapping(read_toml(path), where=str(path))
