"""NumPy .npz archives: keys x_train/y_train/x_test/y_test (Keras's mnist.npz) or x/y, never unpickled.

An optional `class_names` key (an array of strings, which needs no pickle) names the classes.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


# deflate cannot expand data by more than about 1032:1 (see idx.py); stored members are not compressed
_MAX_RATIO = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}


def npy_header(fh, available: int, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Read a .npy header from fh and check that the array it announces fits in `available` bytes.

    numpy allocates the whole array the header claims before it reads any data, so a 1 kB file claiming
    (10**12,) float64 values would ask for terabytes. Checking the claim against the real size first turns
    that into one error line. Returns (shape, dtype); fh is left just after the header.
    """
    fmt = np.lib.format
    try:
        start = fh.tell()
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise MlplabError(f"{where}: .npy format version {version} is not supported (1.0 and 2.0 are)")
        header_len = fh.tell() - start
    except MlplabError:
        raise
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise MlplabError(f"{where}: not a valid .npy array header ({' '.join(str(exc).split())})") from exc
    if dtype.hasobject:
        raise MlplabError(f"{where}: holds Python objects (dtype {dtype}): cannot read safely, that would need "
                          "unpickling; save plain numeric arrays")
    if any(d < 0 for d in shape):
        raise MlplabError(f"{where}: header has a negative dimension in shape {shape}")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > available - header_len:
        raise MlplabError(f"{where}: header claims shape {shape} of {dtype} ({claimed:,} bytes) but the file holds "
                          f"only {max(available - header_len, 0):,} bytes of data; it is truncated or corrupt")
    return shape, dtype


def _check_members(path: Path) -> None:
    """Every .npy member's header must fit in what the member can really hold (see npy_header)."""
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            where = f"{path}: array {info.filename[:-4]!r}"
            ratio = _MAX_RATIO.get(info.compress_type)
            if ratio is not None and info.file_size > max(info.compress_size, 1) * ratio:
                raise MlplabError(f"{where}: claims {info.file_size:,} bytes from {info.compress_size:,} compressed "
                                  "bytes, more than the compression can produce; the file is corrupt")
            with zf.open(info) as fh:
                npy_header(fh, info.file_size, where)


def read_npz(path):
    """(x_train, y_train, x_test, y_test, class_names); the test pair and class_names may be None."""
    path = Path(path)
    try:
        _check_members(path)
        # allow_pickle=False: an .npz can carry pickled objects, and unpickling runs code from the file.
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if set(SPLIT_KEYS[:2]) <= keys:
                x, y = z["x_train"], z["y_train"]
                if ("x_test" in keys) != ("y_test" in keys):
                    raise MlplabError(f"{path}: has only one of x_test and y_test; keys are {sorted(keys)}")
                xt, yt = (z["x_test"], z["y_test"]) if "x_test" in keys else (None, None)
            elif {"x", "y"} <= keys:
                x, y, xt, yt = z["x"], z["y"], None, None
            else:
                raise MlplabError(f"{path}: expected arrays x_train, y_train (and x_test, y_test) or x, y; "
                                  f"found {', '.join(sorted(keys)) or 'no arrays'}")
            names = z["class_names"] if "class_names" in keys else None
    except MlplabError:
        raise
    except ValueError as exc:
        # numpy raises ValueError for object arrays when allow_pickle=False, and for non-npy members.
        raise MlplabError(f"{path}: cannot read safely ({exc})") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error) as exc:
        raise MlplabError(f"{path}: not a valid .npz file ({exc})") from exc
    except OSError as exc:
        raise MlplabError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise MlplabError(f"{path}: class_names must be a 1-D array of strings")
        names = [str(n) for n in names.tolist()]
    return x, y, xt, yt, names
