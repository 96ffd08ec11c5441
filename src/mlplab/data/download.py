"""Downloads that can never leave a half or wrong file behind.

Each file is streamed into a temporary file in the destination folder while its SHA-256 is computed; only
when the digest is one of the known ones is it fsynced and os.replace()d into place (atomic on POSIX).
Any failure (network, wrong digest, Ctrl-C) deletes the temporary file. Mirrors are tried in order; if all
fail, DownloadError lists every URL tried and why. Progress goes to a callback; this module never prints.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

from mlplab.errors import MlplabError

# Short: a dead mirror should cost seconds, not minutes, before the next one is tried.
TIMEOUT_S = 10.0
# No dataset mlplab knows is larger; a misbehaving server cannot fill the disk.
MAX_BYTES = 200 * 1024 * 1024
_CHUNK = 1 << 16

Progress = Callable[[str, int, "int | None"], None]  # (file name, bytes so far, total bytes or None)


class DownloadError(MlplabError):
    """Every mirror failed for a file; .attempts holds (url, reason) pairs."""

    def __init__(self, filename: str, attempts: list[tuple[str, str]]):
        self.filename = filename
        self.attempts = attempts
        tried = "; ".join(f"{url} ({why})" for url, why in attempts) or "no mirrors configured"
        super().__init__(f"could not download {filename}: {tried}")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def join_url(base: str, filename: str) -> str:
    return base.rstrip("/") + "/" + filename


class _Rejected(Exception):
    """The server answered, but with the wrong bytes."""


def _stream(url: str, tmp_file, filename: str, progress: Progress | None, timeout: float) -> str:
    """Copy url into tmp_file; return the SHA-256 hex digest of what arrived."""
    if not url.lower().startswith(("http://", "https://")):
        raise _Rejected("only http:// and https:// mirrors are supported")
    req = urllib.request.Request(url, headers={"User-Agent": "mlplab"})
    h = hashlib.sha256()
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > MAX_BYTES:
            raise _Rejected(f"server announces {total} bytes, more than the {MAX_BYTES} allowed")
        done = 0
        if progress:
            progress(filename, 0, total)
        while block := resp.read(_CHUNK):
            done += len(block)
            if done > MAX_BYTES:
                raise _Rejected(f"more than {MAX_BYTES} bytes")
            tmp_file.write(block)
            h.update(block)
            if progress:
                progress(filename, done, total)
        if total is not None and done != total:
            raise _Rejected(f"connection closed after {done} of {total} bytes")
    return h.hexdigest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return getattr(reason, "strerror", None) or str(reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return " ".join(str(exc).split()) or type(exc).__name__


def fetch(filename: str, digests: Iterable[str], mirrors: Iterable[str], dest_dir, *,
          progress: Progress | None = None, timeout: float = TIMEOUT_S) -> Path:
    """Download `filename` from the first mirror that serves bytes with one of `digests` into dest_dir.

    Returns the final path. A file already there with a good digest is kept without downloading.
    Raises DownloadError (an MlplabError) when no mirror delivers; nothing is left in dest_dir then.
    """
    digests = {d.lower() for d in digests}
    dest_dir = Path(dest_dir)
    target = dest_dir / filename
    if target.is_file() and sha256_file(target) in digests:
        return target
    created = [p for p in (dest_dir, *dest_dir.parents) if not p.exists()]  # to tidy up after a failure
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MlplabError(f"cannot create download folder {dest_dir}: {exc.strerror or exc}") from exc
    attempts: list[tuple[str, str]] = []
    for base in mirrors:
        url = join_url(base, filename)
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                digest = _stream(url, out, filename, progress, timeout)
                if digest not in digests:
                    raise _Rejected(f"SHA-256 {digest[:12]}... is not the known "
                                    f"{' or '.join(sorted(d[:12] + '...' for d in digests))}")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
            return target
        except (_Rejected, OSError, http.client.HTTPException, ValueError) as exc:
            attempts.append((url, _reason(exc)))
        finally:
            if os.path.exists(tmp):  # still there: this attempt failed or was interrupted
                os.unlink(tmp)
    for folder in created:  # deepest first, so a failed first download leaves no empty folders behind
        _remove_if_empty(folder)
    raise DownloadError(filename, attempts)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (other files of the dataset) or already gone: leave it
