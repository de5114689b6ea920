"""Content-addressed, atomically written cache of per-image results.

An entry is keyed by the SHA-256 of the image file's bytes and a fingerprint of every
parameter that affects the result, so a changed file or parameter misses exactly its own
entries, and a renamed or copied file still hits. Entries are ``.npz`` files written with
:func:`pipeline.data.atomic.atomic_write`: a process killed mid-write leaves no entry (and at
most a temporary file that is never read), so a rerun after a crash or ``kill -9`` recomputes
only what is missing. Any process (a local worker or a Dask worker on another machine that
sees the same folder) may read and write the cache concurrently: two writers of one key write
the same bytes.
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
    """

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root)

    def __reduce__(self):  # picklable for worker processes
        return (FeatureCache, (None if self.root is None else str(self.root),))

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
        """Write the arrays under this key atomically."""
        if self.root is None:
            return
        path = self._path(kind, content, params)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **arrays)

    def count(self, kind: str) -> int:
        """Number of entries of one kind."""
        if self.root is None or not (self.root / kind).exists():
            return 0
        return sum(1 for _ in (self.root / kind).glob("*/*.npz"))
