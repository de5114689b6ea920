"""Atomic file writes: a reader sees the previous file or the complete new one, never a part.

Everything a run writes goes through here (splits, manifests, results, plots, checkpoints), so
that an interrupted run never leaves a half-written file that looks whole.

The temporary file of a write is ``.<name>.<host>-<pid>.<random>.tmp`` beside the destination:
a writer killed mid-write (``kill -9``) leaves it behind, and the host and process id in its name
let :func:`remove_stale_temporaries` tell a dead writer's leftovers from a live writer's file.
A write that fails because its folder is full, over quota, read-only or not writable raises
:class:`FolderWriteError`, which names the file and the folder.

A written file gets the permissions any new file of the process gets: ``0o666`` less the umask
(0644 under the usual umask 022), as :func:`open` would give it, so that a shared output or cache
folder can be read by another user or a Dask worker running as another user. (The temporary
file is opened with mode 0o666 and ``O_EXCL``, so the system applies the umask, and a default
ACL of the folder, itself: no process-wide umask is read or changed.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import time
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "FolderWriteError", "FOLDER_ERRNOS", "remove_stale_temporaries"]

#: errno values of a write that fails because of its folder or disk, not of the data written
FOLDER_ERRNOS = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS,
                                            errno.EACCES, errno.EPERM) if code is not None)

#: a temporary file whose writer cannot be checked is left alone until it is this old (seconds)
STALE_AFTER_S = 3600.0

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"^\..+\.tmp$")
_WRITER = re.compile(r"\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")

#: flags of a new temporary file: created here or failing, never through a link, binary on Windows
_CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
                 | getattr(os, "O_CLOEXEC", 0))


def _create_temporary(path: Path) -> tuple[int, str]:
    """Open a new temporary file beside ``path`` with mode 0o666 (the system applies the umask).

    :func:`tempfile.mkstemp` would create it 0600, and the rename would keep that: every output
    would then be unreadable to anyone but its writer.
    """
    prefix = f".{path.name}.{_HOST}-{os.getpid()}."
    for _ in range(100):
        tmp = str(path.parent / f"{prefix}{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name found", str(path.parent))


class FolderWriteError(OSError):
    """A file could not be written because of its folder: full, over quota, read-only, no permission.

    Parameters
    ----------
    code : int
        The ``errno`` of the failure (one of :data:`FOLDER_ERRNOS`), kept as :attr:`errno`.
    path : str or os.PathLike
        The file being written (kept as :attr:`filename`).
    reason : str
        The system's description, e.g. ``"No space left on device"``.
    """

    def __init__(self, code: int, path: str | os.PathLike, reason: str):
        super().__init__(code, reason, os.fspath(path))

    @property
    def folder(self) -> Path:
        """The folder that could not be written."""
        return Path(self.filename).parent

    def __str__(self) -> str:
        return (f"cannot write {self.filename}: {self.strerror} (folder {self.folder}); free space there, "
                "fix its permissions, or write somewhere else")

    def __reduce__(self):
        return (type(self), (self.errno, self.filename, self.strerror))


def _folder_error(exc: OSError, path: Path) -> OSError:
    if isinstance(exc, FolderWriteError) or exc.errno not in FOLDER_ERRNOS:
        return exc
    return FolderWriteError(exc.errno, path, exc.strerror or str(exc))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8"):
    """Open a temporary file beside ``path``; on success flush, fsync and rename it over ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder is created if missing.
    mode : {"w", "wb"}
        Text or binary.
    encoding : str or None
        Text encoding (ignored in binary mode).

    Yields
    ------
    file object
        On an exception inside the ``with`` block the temporary file is removed and ``path``
        is left as it was. The file written gets mode ``0o666`` less the umask.

    Raises
    ------
    FolderWriteError
        When the folder is full, over quota, read-only or not writable (an ``OSError`` whose
        message names the file and the folder).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = _create_temporary(path)
    except OSError as exc:
        error = _folder_error(exc, path)
        if error is exc:
            raise
        raise error from exc
    try:
        kwargs = {"encoding": encoding, "newline": ""} if mode == "w" else {}
        with os.fdopen(handle, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        error = _folder_error(exc, path) if isinstance(exc, OSError) else exc
        if error is exc:
            raise
        raise error from exc


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path) as fh:
        fh.write(text)


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, *, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left under ``folder``.

    A temporary file (``.*.tmp``) is removed when its writer, named in the file name, was a process
    of this host that no longer runs, or when it is older than ``max_age_s`` (a writer on another
    host sharing the folder, or a file written before writers were named). A live writer's file
    is never touched, so a folder may be shared by concurrent runs.

    Parameters
    ----------
    folder : str or os.PathLike
        Searched recursively; a missing folder is nothing to clean.
    max_age_s : float
        Age (by modification time) beyond which any temporary file counts as abandoned.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    now = time.time()
    for base, _dirs, files in os.walk(folder):
        for name in files:
            if not _TEMPORARY.match(name):
                continue
            path = Path(base) / name
            writer = _WRITER.search(name)
            try:
                dead = (writer is not None and writer["host"] == _HOST and int(writer["pid"]) != os.getpid()
                        and not _writer_alive(int(writer["pid"])))
                if dead or now - path.stat().st_mtime > max_age_s:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue  # its writer finished (renamed it) or another cleaner was first
            except OSError:
                continue  # not ours to remove (permissions): left alone
    return removed
