"""One writer per run folder: an OS lock (flock) on RUN/.lock, held while a process writes the run.

The kernel drops a flock when its process dies (kill -9 included), so a lock is never left stuck and there is
no stale-lock cleanup. The holder writes its pid and action into the file so that a second writer can say who
holds the folder. Re-entrant within a process (a lock is counted per folder), because one writer may call
another (an experiment trains a run, then embeds and reports it).
"""

from __future__ import annotations

import fcntl
import functools
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from mlplab.errors import MlplabError

LOCK_NAME = ".lock"

_held: dict[str, list] = {}   # resolved folder -> [fd, count]
_guard = threading.Lock()


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    return f"pid {text[0]}, {' '.join(text[1:])}" if text else "pid unknown"


@contextmanager
def run_lock(path, action: str, *, create: bool = False):
    """Hold RUN/.lock for the block; MlplabError (one line, naming the holder's pid) if another process has it.

    create=True makes the folder first (a new run); otherwise a missing folder is left to the caller's own check.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MlplabError(f"{path} is a file; give a folder for the run")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MlplabError(f"cannot create run directory {path}: {exc.strerror or exc}") from exc
    key = str(path.resolve())
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield
        finally:
            with _guard:
                entry[1] -= 1
        return
    lock_file = path / LOCK_NAME
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise MlplabError(f"cannot write in run folder {path} ({exc.strerror or exc}); mlplab needs to write "
                          f"there to {action}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MlplabError(f"run folder {path} is being written by another mlplab process ({_holder(fd)}); "
                              f"wait for it to end or stop it, then try again") from None
        except OSError as exc:
            raise MlplabError(f"cannot lock run folder {path}: {exc.strerror or exc}") from exc
        try:  # who holds it, for the message above; informational only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {action}\n".encode(), 0)
        except OSError:
            pass
        with _guard:
            _held[key] = [fd, 1]
        try:
            yield
        finally:
            with _guard:
                del _held[key]
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def writes_run(action: str, *, when=None):
    """Decorator: the function's first argument is a Run (or a run folder path); hold its lock while it runs.

    when(*args, **kwargs) -> bool, if given, decides per call (an export written outside the run needs no lock).
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(run, *args, **kwargs):
            if when is not None and not when(run, *args, **kwargs):
                return fn(run, *args, **kwargs)
            with run_lock(getattr(run, "path", run), action):
                return fn(run, *args, **kwargs)
        return wrapper
    return decorate


def inside(path, folder) -> bool:
    """Whether `path` is inside `folder` (after resolving links)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False
