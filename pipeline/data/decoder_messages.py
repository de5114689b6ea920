"""Capture what image decoders say, so that it can be reported with the file it is about.

Decoders report recoverable problems by printing: Pillow with Python warnings, tifffile with log
records, libtiff and LibRaw on the C-level stderr. Printed raw, these lines name no file. The
context managers here collect them into a list of lines around each decode; the readers
(:mod:`pipeline.data.formats`, :mod:`pipeline.data.exif`, :mod:`pipeline.data.imageio`) put them
in the reason of an :class:`~pipeline.data.errors.ImageReadError` or in an image's notes.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

__all__ = ["c_stderr_into", "decoders_said", "describe_exception", "python_warnings_into", "tifffile_log_into",
           "unique_lines"]

_WARNINGS_LOCK = threading.Lock()  # warnings.catch_warnings swaps process-wide state
_STDERR_LOCK = threading.Lock()  # redirecting file descriptor 2 changes it for every thread
_MAX_CAPTURED_BYTES = 16_384


@contextmanager
def tifffile_log_into(said: list[str]) -> Iterator[None]:
    """Collect tifffile's log records from this thread into `said` instead of letting them print.

    tifffile logs what it repairs or skips ("incorrect StripByteCounts count") on the
    ``tifffile`` logger, without the file name. Records of other threads pass through untouched.

    Parameters
    ----------
    said : list of str
        Receives one ``"tifffile: <message>"`` line per record.
    """
    capture = _ThreadRecords(said)
    log = logging.getLogger("tifffile")
    log.addFilter(capture)
    try:
        yield
    finally:
        log.removeFilter(capture)


class _ThreadRecords(logging.Filter):
    def __init__(self, said: list[str]):
        super().__init__()
        self.thread = threading.get_ident()
        self.said = said

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        self.said.append(f"tifffile: {record.getMessage()}")
        return False


@contextmanager
def python_warnings_into(said: list[str], source: str) -> Iterator[None]:
    """Record the Python warnings raised in the block into `said` as "<source>: <message>".

    The warning filters in force still apply (an ignored warning is not recorded, one turned
    into an error raises). Deprecation warnings are for developers, not about the file: they
    are re-issued as usual. ``catch_warnings`` is process-wide, so blocks are serialised with a
    lock; a warning raised by another thread meanwhile is recorded too.

    Parameters
    ----------
    said : list of str
        Receives the lines.
    source : str
        The decoder's name, e.g. ``"Pillow"``.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as recorded:
            try:
                yield
            finally:
                caught = list(recorded)
    finally:
        for warning in caught:
            if issubclass(warning.category, (DeprecationWarning, PendingDeprecationWarning)):
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            else:
                said.append(f"{source}: {warning.message}")


@contextmanager
def c_stderr_into(said: list[str], source: str) -> Iterator[None]:
    """Record what C libraries write to file descriptor 2 during the block into `said`.

    Descriptor 2 is redirected for the whole process, so blocks are serialised with a lock and
    whatever the process writes to it meanwhile is captured too; at most 16 KiB are kept.

    Parameters
    ----------
    said : list of str
        Receives one ``"<source>: <line>"`` line per non-empty line written.
    source : str
        The library's name, e.g. ``"LibRaw"``.
    """
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 (a daemon): nothing can be printed anyway
            yield
            return
        try:
            with tempfile.TemporaryFile() as sink:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (AttributeError, OSError, ValueError):
                        pass
                os.dup2(sink.fileno(), 2)
                try:
                    yield
                finally:
                    os.dup2(saved, 2)
                    sink.seek(0)
                    text = sink.read(_MAX_CAPTURED_BYTES).decode("utf-8", errors="replace")
                    said.extend(f"{source}: {line.strip()}" for line in text.splitlines() if line.strip())
        finally:
            os.close(saved)


def unique_lines(lines: list[str]) -> list[str]:
    """`lines` without repeats, in order, a repeated line marked with its count.

    Examples
    --------
    >>> unique_lines(["a", "b", "a"])
    ['a (×2)', 'b']
    """
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    return [line if count == 1 else f"{line} (×{count})" for line, count in counts.items()]


def decoders_said(said: list[str]) -> str:
    """The clause appended to an error's reason: the first eight distinct lines, quoted.

    Examples
    --------
    >>> decoders_said(["LibRaw: data error", "LibRaw: data error"])
    "the decoder also reported: 'LibRaw: data error (×2)'"
    """
    lines = unique_lines(said)
    shown = "; ".join(repr(line[:300]) for line in lines[:8])
    more = f" and {len(lines) - 8} more" if len(lines) > 8 else ""
    return f"the decoder also reported: {shown}{more}"


def describe_exception(exc: BaseException) -> str:
    """``"<type>: <message>"``, or the type alone when the message is empty.

    Examples
    --------
    >>> describe_exception(ValueError("bad"))
    'ValueError: bad'
    """
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
