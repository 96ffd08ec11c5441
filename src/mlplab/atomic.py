"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The run folder's files, reports, plots, embeddings and comparison pages are written here: to a temporary file
in the same folder, fsynced, os.replace()d over the target (atomic on POSIX), then the folder is fsynced so the
rename itself survives a power cut. A failure (full disk, permissions) removes the temporary file and leaves the
previous target untouched; it surfaces as one MlplabError line.

Writers that stream, or whose file another program produces, do the same temp-and-rename themselves: downloads
(data/download.py, checked against their SHA-256 before the rename), the compiled kernels (model/kernels.py: the
compiler writes the temporary library) and streamed activations (inspect/activations.py: per-layer memmaps moved
into place when complete). data/idx.write_idx writes in place (test fixtures and exports).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from mlplab.errors import MlplabError


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not allow opening folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask() briefly changes process state, not thread-safe


def _os_error(exc: OSError, path) -> MlplabError:
    if exc.errno == errno.ENOSPC:
        return MlplabError(f"disk full while writing {path}; the previous version of the file is intact")
    return MlplabError(f"cannot write {path}: {exc.strerror or exc}")


@contextmanager
def temp_folder_beside(path):
    """A private temporary folder next to `path` (same filesystem, so its files can be renamed into place),
    removed afterwards. A folder that cannot be written (read-only run, permissions, full disk) is one
    MlplabError naming `path`, like every other write."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise _os_error(exc, path) from exc
    try:
        yield tmp
    except OSError as exc:
        raise _os_error(exc, path) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_with(path, write, *, mode: str = "wb") -> Path:
    """Call write(file_object) on a temporary file, then move it over `path` atomically."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MlplabError(f"cannot create folder {folder}: {exc.strerror or exc}") from exc
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise MlplabError(f"disk full while writing {path}; the previous version of the file is intact") from exc
        raise MlplabError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        # mkstemp creates 0600; give the file the mode an ordinary open() would (0666 minus the umask)
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                raise MlplabError(f"disk full while writing {path}; the previous version of the file is intact") from exc
            raise MlplabError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    _fsync_dir(folder)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write_with(path, lambda fh: fh.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def write_npz(path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write an uncompressed .npz atomically, one member at a time in bounded chunks (np.lib.format.write_array
    streams through a buffer), so memmapped layers larger than memory can be packed. Readable with
    numpy with pickling off (the default): object arrays are refused here."""
    import numpy as np

    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise MlplabError(f"cannot store {key!r}: object arrays would need pickle to load")

    def write(fh):
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, value in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)

    return atomic_write_with(path, write)
