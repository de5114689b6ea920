"""Capture metadata read by ExifTool, for raw files the built-in reader cannot parse.

:mod:`pipeline.data.exif` reads EXIF itself from JPEG, PNG, TIFF, DNG and TIFF-based raw files.
Camera raw containers that are not TIFF-structured (Canon CR3, Fujifilm RAF, Olympus ORF,
Panasonic RW2, ...) hide their EXIF inside maker-specific boxes; for those it falls back to
Phil Harvey's ExifTool, run as a subprocess (``exiftool -json -n``). ExifTool is optional: on
Debian/Ubuntu ``apt-get install libimage-exiftool-perl``; elsewhere see exiftool.org. Without it,
:func:`read_exiftool_tags` gives every file the one message :data:`MISSING_MESSAGE` and no tags;
it never raises. It logs nothing but the commands it runs (debug): its callers report the issues
(as :class:`~pipeline.data.exif.ExifWarning` or as one manifest problem).

The tags come back as EXIF tag numbers (:data:`EXIFTOOL_TAGS`), so that
:func:`pipeline.data.exif.metadata_from_tags` turns them into
:class:`~pipeline.data.exif.ImageMetadata` with the same rules and units as the built-in reader.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any, Sequence

from pipeline.logs import get_logger

__all__ = ["EXIFTOOL_TAGS", "MISSING_MESSAGE", "exiftool_executable", "read_exiftool_tags"]

logger = get_logger(__name__)

#: ExifTool tag name -> the EXIF tag number it stands for in :func:`~pipeline.data.exif.metadata_from_tags`.
#: ExifTool takes each from wherever the format keeps it (EXIF boxes, maker notes), by its priority.
EXIFTOOL_TAGS = {
    "DateTimeOriginal": 0x9003,
    "SubSecTimeOriginal": 0x9291,
    "OffsetTimeOriginal": 0x9011,
    "ExposureTime": 0x829A,
    "ISO": 0x8827,
    "ISOSpeed": 0x8833,
    "RecommendedExposureIndex": 0x8832,
    "Make": 0x010F,
    "Model": 0x0110,
    "Orientation": 0x0112,
    "SerialNumber": 0xA431,
}

#: What every file is told when ExifTool is not on the PATH.
MISSING_MESSAGE = ("exiftool is not installed: CR3/RAF/ORF/RW2 metadata cannot be read; install it "
                   "(Debian/Ubuntu: apt-get install libimage-exiftool-perl) or give captured_at/exposure_s/iso "
                   "in the manifest")

_BATCH = 256  # files per exiftool run: keeps the command line far below ARG_MAX
_TIMEOUT_S = 60.0  # per run, plus _TIMEOUT_PER_FILE_S per file
_TIMEOUT_PER_FILE_S = 2.0


def exiftool_executable() -> str | None:
    """The ``exiftool`` program found on the PATH, or None.

    Returns
    -------
    str or None
        Its full path.
    """
    return shutil.which("exiftool")


def read_exiftool_tags(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[dict[int, Any], list[str]]]:
    """Read the capture tags of many files with as few ExifTool runs as possible.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        The files (each should exist; a missing one gets an issue).

    Returns
    -------
    list of (dict, list of str)
        One ``(tags, issues)`` per path, in order. `tags` maps EXIF tag numbers
        (:data:`EXIFTOOL_TAGS`) to ExifTool's values: numbers as ExifTool wrote them (text),
        times and names as text. `issues` holds what went wrong for that file:
        :data:`MISSING_MESSAGE` when ExifTool is not installed, ExifTool's error or warning,
        or a failed run. Never raises for a file or a missing ExifTool.
    """
    paths = [os.path.abspath(os.fspath(path)) for path in paths]  # "/..." is never read as an option
    if not paths:
        return []
    executable = exiftool_executable()
    if executable is None:
        return [({}, [MISSING_MESSAGE]) for _ in paths]
    results: list[tuple[dict[int, Any], list[str]]] = []
    for start in range(0, len(paths), _BATCH):
        results += _run(executable, paths[start:start + _BATCH])
    return results


def _run(executable: str, paths: list[str]) -> list[tuple[dict[int, Any], list[str]]]:
    command = [executable, "-json", "-n", "-Error", "-Warning", *(f"-{name}" for name in EXIFTOOL_TAGS), *paths]
    logger.debug("running %s on %d file(s)", executable, len(paths))
    try:
        # exit status 1 only means that some file could not be read: its entry says why
        finished = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL,
                                  timeout=_TIMEOUT_S + _TIMEOUT_PER_FILE_S * len(paths))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _failed(executable, str(exc), paths)
    try:
        entries = json.loads(finished.stdout.decode("utf-8", errors="surrogateescape") or "[]",
                             parse_int=str, parse_float=str)  # numbers kept as written (serials)
        if not isinstance(entries, list):
            raise ValueError(f"a JSON {type(entries).__name__} instead of a list")
    except ValueError as exc:
        said = finished.stderr.decode("utf-8", errors="replace").strip()
        return _failed(executable, f"its output is not ExifTool's JSON ({exc})"
                       + (f"; it said: {said[-300:]}" if said else ""), paths)
    # keyed with "/" separators: on Windows ExifTool echoes C:\x\y.cr3 as C:/x/y.cr3
    by_file = {_key(entry.get("SourceFile")): entry for entry in entries if isinstance(entry, dict)}
    errors = _errors_by_file(finished.stderr.decode("utf-8", errors="replace"))
    return [_tags_of(by_file.get(_key(path)), errors.get(_key(path))) for path in paths]


def _key(path: Any) -> str | None:
    return path.replace("\\", "/") if isinstance(path, str) else None


def _failed(executable: str, why: str, paths: list[str]) -> list[tuple[dict[int, Any], list[str]]]:
    return [({}, [f"exiftool ({executable}) failed: {why}"]) for _ in paths]


def _errors_by_file(stderr: str) -> dict[str, str]:
    """ExifTool's "Error: <what> - <file>" lines (e.g. "File not found"), by file."""
    found: dict[str, str] = {}
    for line in stderr.splitlines():
        if line.startswith("Error: ") and " - " in line:
            what, _, path = line[len("Error: "):].partition(" - ")
            found[_key(path)] = what
    return found


def _tags_of(entry: dict[str, Any] | None, error: str | None) -> tuple[dict[int, Any], list[str]]:
    if entry is None:
        return {}, [f"exiftool could not read it ({error or 'it gave no result for the file'})"]
    issues = []
    if entry.get("Error"):
        issues.append(f"exiftool could not read it ({entry['Error']})")
    tags = {code: entry[name] for name, code in EXIFTOOL_TAGS.items() if entry.get(name) not in (None, "")}
    if entry.get("Warning") and not tags:  # minor warnings beside good tags are not the user's concern
        issues.append(f"exiftool warned: {entry['Warning']}")
    iso = tags.get(EXIFTOOL_TAGS["ISO"])
    if isinstance(iso, str) and len(iso.split()) > 1:
        tags[EXIFTOOL_TAGS["ISO"]] = iso.split()[0]  # a multi-valued ISO ("100 100"): the first, as in EXIF
    return tags, issues
