"""IDX files (the MNIST format), raw or gzip-compressed, read without trusting the header.

An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions, one big-endian
uint32 per dimension, then the values. The header is checked against the file's real size before any array
is allocated, so a corrupt or hostile header (say, 10^9 images in a 1 kB file) fails at once; for .gz files
decompression stops after the number of bytes the header claims, and the claim itself must fit what
deflate can expand the compressed size to.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from math import prod
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError

UBYTE = 0x08
# deflate cannot expand data by more than about 1032:1; anything claiming more is corrupt.
MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _header(f, where: str) -> tuple[int, ...]:
    magic = f.read(4)
    if len(magic) < 4:
        raise MlplabError(f"{where}: file is too short to be an IDX file ({len(magic)} bytes)")
    if magic[0] != 0 or magic[1] != 0 or not 1 <= magic[3] <= 4:
        raise MlplabError(f"{where}: not an IDX file (wrong magic number 0x{magic.hex()})")
    if magic[2] != UBYTE:
        raise MlplabError(f"{where}: IDX data type 0x{magic[2]:02x} is not supported (only unsigned byte, 0x08)")
    ndim = magic[3]
    raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise MlplabError(f"{where}: truncated IDX header")
    return struct.unpack(f">{ndim}I", raw)


def _read_exactly(f, n: int, where: str, dims) -> bytearray:
    """Read exactly n decompressed bytes, never more: memory grows only as real data arrives.

    A bytearray (not bytes) so that the arrays built on it are writable, like any other numpy array.
    """
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            raise MlplabError(f"{where}: truncated: header claims shape {tuple(dims)} ({n} bytes of data) "
                              f"but the file holds only {len(buf)}")
        buf += chunk
    if f.read(1):
        raise MlplabError(f"{where}: has data after the {n} bytes its header announces (shape {tuple(dims)})")
    return buf


def read_idx(path, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a uint8 array of the shape its header gives."""
    path = Path(path)
    where = str(path)
    try:
        size = os.path.getsize(path)
        gz = is_gzip(path)
        opener = gzip.open if gz else open
        with opener(path, "rb") as f:
            dims = _header(f, where)
            if expect_ndim is not None and len(dims) != expect_ndim:
                raise MlplabError(f"{where}: expected {expect_ndim}-D IDX data, the header says {len(dims)}-D "
                                  f"(shape {dims})")
            n_bytes = prod(dims)
            header_len = 4 + 4 * len(dims)
            if gz:
                if n_bytes > size * MAX_DEFLATE_RATIO:
                    raise MlplabError(f"{where}: header claims shape {dims} ({n_bytes} bytes), more than "
                                      f"{size} compressed bytes can hold; the file is corrupt")
            elif size != header_len + n_bytes:
                have = size - header_len
                problem = "truncated" if have < n_bytes else "too long"
                raise MlplabError(f"{where}: {problem}: header claims shape {dims} ({n_bytes} bytes of data) "
                                  f"but the file holds {have}")
            data = _read_exactly(f, n_bytes, where, dims)
    except MlplabError:
        raise
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise MlplabError(f"{where}: corrupt or truncated gzip data ({exc})") from exc
    except OSError as exc:
        raise MlplabError(f"{where}: cannot read: {exc.strerror or exc}") from exc
    try:
        return np.frombuffer(data, dtype=np.uint8).reshape(dims)
    except ValueError as exc:  # e.g. an empty array whose other dimensions overflow numpy's size limit
        raise MlplabError(f"{where}: header shape {dims} is not a valid array shape ({exc})") from exc


def write_idx(path, array, *, compress: bool | None = None) -> Path:
    """Write a uint8 array as IDX (gzip when the name ends in .gz); used by tests and for exporting."""
    path = Path(path)
    a = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, UBYTE, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


ROLES = ("train_images", "train_labels", "test_images", "test_labels")


def _role(name: str) -> str | None:
    """Role of a file by the usual MNIST-family names: train-images-idx3-ubyte, t10k-labels.idx1-ubyte.gz, ..."""
    n = name.lower()
    if n.endswith(".gz"):
        n = n[:-3]
    if "idx" not in n and "ubyte" not in n:
        return None
    split = "train" if "train" in n else "test" if ("t10k" in n or "test" in n) else None
    kind = "images" if ("images" in n or "idx3" in n) else "labels" if ("labels" in n or "idx1" in n) else None
    return f"{split}_{kind}" if split and kind else None


def find_idx_files(folder) -> dict[str, Path]:
    """The IDX files of a folder by role; raw files win over .gz copies (torchvision keeps both)."""
    folder = Path(folder)
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        role = _role(p.name) if p.is_file() else None
        if role:
            found.setdefault(role, []).append(p)
    out = {}
    for role, paths in found.items():
        raw = [p for p in paths if not p.name.lower().endswith(".gz")]
        pick = raw or paths
        if len(pick) > 1:
            names = ", ".join(p.name for p in pick)
            raise MlplabError(f"{folder}: several files look like the {role.replace('_', ' ')}: {names}; keep one")
        out[role] = pick[0]
    return out


def read_idx_folder(folder, files: dict[str, Path] | None = None):
    """(x_train, y_train, x_test, y_test) from a folder holding the four IDX files; test files are optional."""
    folder = Path(folder)
    files = files if files is not None else find_idx_files(folder)
    if "train_images" not in files or "train_labels" not in files:
        have = ", ".join(sorted(p.name for p in files.values())) or "none"
        raise MlplabError(f"{folder}: needs IDX files for training images and labels "
                          f"(e.g. train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz); found: {have}")
    if ("test_images" in files) != ("test_labels" in files):
        have, missing = ("test images", "test labels") if "test_images" in files else ("test labels", "test images")
        raise MlplabError(f"{folder}: has {have} but no {missing} file; add it or remove the other")
    out = []
    for split in ("train", "test"):
        if f"{split}_images" not in files:
            out += [None, None]
            continue
        images = read_idx(files[f"{split}_images"])
        if images.ndim not in (2, 3):
            raise MlplabError(f"{files[f'{split}_images']}: images must be 2-D or 3-D IDX data, got shape {images.shape}")
        labels = read_idx(files[f"{split}_labels"], expect_ndim=1)
        if len(images) != len(labels):
            raise MlplabError(f"{files[f'{split}_labels']}: {len(labels)} labels but "
                              f"{files[f'{split}_images'].name} has {len(images)} images; they must be equal")
        out += [images, labels]
    return tuple(out)
