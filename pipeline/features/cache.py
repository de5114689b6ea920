"""Content-addressed, atomically written cache of per-image results.

An entry is keyed by the SHA-256 of the image file's bytes and a fingerprint of every
parameter that affects the result, so a changed file or parameter misses exactly its own
entries, and a renamed or copied file still hits. Entries are ``.npz`` files written with
:func:`pipeline.data.atomic.atomic_write`: a process killed mid-write leaves no entry (and at
most a temporary file that is never read), so a rerun after a crash or ``kill -9`` recomputes
only what is missing. Any process (a local worker or a Dask worker on another machine that
sees the same folder) may read and write the cache concurrently: two writers of one key write
the same bytes. Entries and their folders get the permissions the umask gives (files 0644 and
folders 0755 under umask 022), so that a cache shared with other users, or with Dask workers
running as another user, can be read by them. A cache folder that cannot be written (full, over
quota, read-only) never stops the work: the first failed write switches writing off and is kept
in :attr:`FeatureCache.write_error` for the caller to report once; reading goes on.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from pipeline.data.atomic import atomic_write

__all__ = ["FeatureCache", "file_digest", "fingerprint"]

_CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(**params) -> str:
    """A short stable hash of parameters (numpy arrays hashed by dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for name in sorted(params):
        value = params[name]
        digest.update(name.encode())
        if isinstance(value, np.ndarray):
            digest.update(f"{value.dtype.str}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


class FeatureCache:
    """A folder of per-image results, keyed by file content and parameters.

    Parameters
    ----------
    root : path or None
        Cache folder (created on first write). None disables caching: every lookup misses
        and nothing is written.
    writable : bool, default True
        False: entries are read but never written.

    Attributes
    ----------
    write_error : str or None
        Why writing was switched off (the first failed write: folder and system message), or None.
    write_error_reported : bool
        Set by a caller once it has reported :attr:`write_error` (so that it reports it once).
    """

    def __init__(self, root: str | Path | None, writable: bool = True):
        self.root = None if root is None else Path(root)
        self.writable = writable
        self.write_error: str | None = None
        self.write_error_reported = False

    def __reduce__(self):  # picklable for worker processes
        return (FeatureCache, (None if self.root is None else str(self.root), self.writable))

    def stop_writing(self, reason: str) -> None:
        """Switch writing off for the rest of this object's life (and for copies made after)."""
        self.writable = False
        if self.write_error is None:
            self.write_error = reason

    def _path(self, kind: str, content: str, params: str) -> Path:
        return self.root / kind / content[:2] / f"{content}-{params}.npz"

    def load(self, kind: str, content: str, params: str) -> dict | None:
        """The arrays stored under this key, or None when absent or unreadable."""
        if self.root is None:
            return None
        path = self._path(kind, content, params)
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            # a damaged entry (e.g. a disk error) is recomputed, never trusted
            return None

    def store(self, kind: str, content: str, params: str, arrays: dict) -> None:
        """Write the arrays under this key atomically; a failed write switches writing off.

        The cache only saves time, so an ``OSError`` (full disk, quota, read-only or unwritable
        folder) is not raised: it is kept in :attr:`write_error` and nothing more is written.
        """
        if self.root is None or not self.writable:
            return
        path = self._path(kind, content, params)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb") as handle:
                np.savez(handle, **arrays)
        except OSError as exc:
            self.stop_writing(f"the feature cache folder {self.root} cannot be written "
                              f"({exc.strerror or exc}, at {path.parent})")

    def count(self, kind: str) -> int:
        """Number of entries of one kind."""
        if self.root is None or not (self.root / kind).exists():
            return 0
        return sum(1 for _ in (self.root / kind).glob("*/*.npz"))
