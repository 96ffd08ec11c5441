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
            raw = fh.read()
        # tomllib rejects a byte-order mark, which Windows editors add when they save UTF-8
        return tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except FileNotFoundError:
        raise MlplabError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise MlplabError(f"config file {path} is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise MlplabError(f"{path} is not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MlplabError(f"cannot read {path}: {exc}") from exc


def data_relative_to(value, folder: Path):
    """A `data` value read from a file: a relative path means relative to the file's folder (as an include in
    a Makefile or a compose file does), so the file works from any working directory. Dataset names, absolute
    paths and non-strings (reported by validation) are left as they are."""
    from mlplab.data.sources import canonical

    if not isinstance(value, str) or not value or canonical(value) is not None:
        return value
    path = Path(value).expanduser()
    return value if path.is_absolute() else str(Path(folder) / path)


def load_train_config(path) -> TrainOptions:
    """`mlplab train --config FILE.toml`: a flat table of the same options as the flags."""
    path = Path(path)
    doc = read_toml(path)
    if "data" in doc:
        doc["data"] = data_relative_to(doc["data"], path.parent)
    return TrainOptions.from_mapping(doc, where=str(path))
