"""Load and validate image manifests (the CSV of DESIGN.md, one row per image).

Every problem in a manifest is collected and reported at once, each with its line number
(the header is line 1), so that a user fixes a manifest in one pass and not one run per error.
The CSV text is split into records by :mod:`pipeline.data.manifest_csv`; this module checks the
header, every row's values and the files the rows name.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pipeline.data.classspec import ClassSpec, load_class_spec
from pipeline.data.errors import ManifestError, ManifestProblem
from pipeline.data.manifest_csv import decode_manifest_text, read_records

__all__ = ["ManifestRow", "Manifest", "Exclusion", "load_manifest", "manifest_path", "non_regular_kind",
           "parse_capture_time", "file_sha256"]

REQUIRED_COLUMNS = ("path", "device")
KNOWN_COLUMNS = ("path", "device", "captured_at", "timeslot", "label",
                 "exposure_s", "iso", "make", "model")


@dataclass(frozen=True)
class ManifestRow:
    """One validated image row.

    ``line`` is the physical line of the manifest on which the row starts (header = line 1,
    blank lines and line breaks inside quoted fields counted), for messages that send the user
    back to the row; ``path`` is absolute; ``captured_at`` is naive (a timezone-aware time is
    converted to UTC and its zone dropped, naive times are taken as the camera's clock);
    ``extra`` carries the columns agetrace does not interpret, untouched.
    """

    line: int
    path: Path
    device: str
    captured_at: datetime | None
    timeslot: int | None
    label: int | None
    exposure_s: float | None = None
    iso: float | None = None
    make: str | None = None
    model: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def time_key(self) -> tuple:
        """Sort key for time ordering: slot first where present, then capture time, then line."""
        return (self.timeslot if self.timeslot is not None else -1,
                self.captured_at or datetime.min, self.line)


@dataclass(frozen=True)
class Exclusion:
    """A row that is valid but takes no part in the experiment, with the reason."""

    line: int
    path: str
    device: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    """A validated manifest.

    Attributes
    ----------
    rows : list of ManifestRow
        Rows with a class label (with ``needs_labels=False`` also those without: label None), in file order.
    excluded : list of Exclusion
        Valid rows outside every class of the class specification (never dropped silently:
        runs write them to their outputs).
    source : Path
        The manifest file.
    sha256 : str
        SHA-256 of the manifest file's bytes, recorded with every run.
    columns : list of str
        The header as written.
    """

    rows: list[ManifestRow]
    excluded: list[Exclusion]
    source: Path
    sha256: str
    columns: list[str]

    @property
    def devices(self) -> list[str]:
        """Device ids in order of first appearance."""
        return list(dict.fromkeys(r.device for r in self.rows))

    def for_device(self, device: str) -> list[ManifestRow]:
        """The rows of one device, in time order."""
        return sorted((r for r in self.rows if r.device == device), key=lambda r: r.time_key)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def parse_capture_time(text: str) -> datetime:
    """Parse an ISO 8601 time (or an EXIF ``YYYY:MM:DD HH:MM:SS``) into a naive datetime.

    Raises
    ------
    ValueError
        If the text is not a time; the message quotes it.
    """
    value = text.strip()
    if len(value) >= 19 and value[4] == ":" and value[7] == ":":  # EXIF DateTimeOriginal style
        value = value[:4] + "-" + value[5:7] + "-" + value[8:]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"cannot parse {_shown(text)} as an ISO 8601 time (e.g. 2015-03-21T14:05:00)") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def _optional_float(value: str, column: str, problems: list, line: int, path: str) -> float | None:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        problems.append(ManifestProblem(line, f"{column} {_shown(value)} is not a number", path, column))
        return None
    if not math.isfinite(number) or number <= 0:
        problems.append(ManifestProblem(line, f"{column} {_shown(value)} must be a positive finite number", path,
                                        column))
        return None
    return number


def _optional_int(value: str, column: str, problems: list, line: int, path: str) -> int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        problems.append(ManifestProblem(line, f"{column} {_shown(value)} is not an integer", path, column))
        return None


def _shown(value: str, limit: int = 80) -> str:
    """``repr`` of a value from the manifest, cut to about `limit` characters, for messages."""
    return repr(value if len(value) <= limit else value[:limit - 1] + "…")


def manifest_path(image_path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> str:
    """The path to write in a manifest kept in `folder` for the image at `image_path`.

    This is the rule :func:`load_manifest` enforces: a relative path must stay inside the
    manifest's folder, also once symbolic links are followed; any other image is written as an
    absolute path.

    Parameters
    ----------
    image_path : str or os.PathLike
        The image file.
    folder : str or os.PathLike
        The folder the manifest is (or will be) stored in.

    Returns
    -------
    str
        The path relative to `folder` with POSIX separators when it stays inside `folder`;
        otherwise the image's absolute path (symbolic links kept as given).

    Examples
    --------
    >>> manifest_path("/data/photos/cam/a.jpg", "/data/photos")
    'cam/a.jpg'
    >>> manifest_path("/data/photos/cam/a.jpg", "/home/me/manifests")
    '/data/photos/cam/a.jpg'
    """
    folder = Path(folder)
    try:
        relative = Path(os.path.relpath(image_path, folder))
    except ValueError:  # another drive on Windows
        return Path(os.path.abspath(image_path)).as_posix()
    if _inside(folder, relative) is not None:
        return relative.as_posix()
    return Path(os.path.abspath(image_path)).as_posix()


def _inside(folder: Path, relative: Path) -> Path | None:
    """Where `relative`, taken from `folder`, leads once links are followed, if that is inside
    `folder`; None if it leads out of it."""
    resolved = (folder / relative).resolve()
    return resolved if resolved.is_relative_to(folder.resolve()) else None


def _resolve(base: Path, raw: str, problems: list, line: int) -> Path | None:
    candidate = Path(raw)
    if candidate.is_absolute():
        return candidate
    resolved = _inside(base, candidate)
    if resolved is not None:
        return resolved
    folder, lexical = Path(os.path.abspath(base)), Path(os.path.abspath(base / candidate))
    how = (f"through a symbolic link it leads to {(base / candidate).resolve()}, outside"
           if folder in lexical.parents else "it points outside")
    problems.append(ManifestProblem(
        line, f"relative path {_shown(raw)} escapes the manifest's folder {base} ({how}): relative paths "
              "must stay inside that folder; write the file's absolute path instead, or move the "
              "manifest to a folder that holds the images", raw, "path"))
    return None


def _same_file_key(path: Path) -> str:
    """Key under which two spellings of one file (``..``, symbolic links) compare equal."""
    return os.path.realpath(path)


_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def non_regular_kind(mode: int) -> str | None:
    """What a file of this ``st_mode`` is when it is not a regular file, else None.

    Parameters
    ----------
    mode : int
        ``os.stat(path).st_mode``.

    Returns
    -------
    str or None
        ``"a folder"``, ``"a named pipe"``, ``"a socket"``, ``"a character device"``,
        ``"a block device"`` or ``"a special file"``; None for a regular file.
    """
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "a special file")


def _check_file(image_path: Path, problems: list, line: int, raw: str) -> None:
    """Report a row whose image is missing or not a regular file, without opening it."""
    try:
        mode = os.stat(image_path).st_mode
    except FileNotFoundError:
        mode = None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        problems.append(ManifestProblem(line, f"cannot look at {image_path} ({reason}): check the path and "
                                              "the permissions of its folders", raw, "path"))
        return
    kind = None if mode is None else non_regular_kind(mode)
    if mode is not None and kind is None:
        return
    if kind == "a folder":
        problems.append(ManifestProblem(line, f"{image_path} is a folder, not an image file: give the "
                                              "image's path or remove the row", raw, "path"))
    elif kind is not None:
        problems.append(ManifestProblem(line, f"{image_path} is not a regular file ({kind}): an image must be "
                                              "a regular file; give the image's path or remove the row",
                                        raw, "path"))
    elif image_path.is_symlink():
        problems.append(ManifestProblem(line, f"{image_path} is a broken symbolic link (to "
                                              f"{os.readlink(image_path)}): fix the link or remove the row",
                                        raw, "path"))
    else:
        problems.append(ManifestProblem(line, f"file not found: {image_path} (relative paths are taken "
                                              "from the manifest's folder): correct the path or remove the "
                                              "row", raw, "path"))


# --- checking the header -------------------------------------------------------------------

def _separator_hint(columns: list[str]) -> str | None:
    """The separator a one-column header apparently uses instead of a comma, if any."""
    if len(columns) != 1:
        return None
    for delimiter in (";", "\t"):
        parts = [c.strip() for c in columns[0].split(delimiter)]
        if delimiter in columns[0] and all(c in parts for c in REQUIRED_COLUMNS):
            return delimiter
    return None


def _header_problems(columns: list[str], class_spec, delimiter: str, needs_labels: bool = True) -> list[ManifestProblem]:
    """Problems of the header alone (line 1); the rows are checked whatever they are."""
    problems = []
    if delimiter != ",":
        name = "';'" if delimiter == ";" else "a tab"
        problems.append(ManifestProblem(
            1, f"the separator must be a comma, and this file appears to use {name}: the header was read as "
               f"one column; re-save it as comma-separated CSV (in Excel: file type 'CSV UTF-8 (Comma "
               f"delimited)'). The rows below were checked as if {name} were the separator."))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        text = f"missing required column(s) {', '.join(missing)}; the header is {columns}: add them"
        if "path" in missing:
            text += ". No row was checked: without a path column no row names an image"
        problems.append(ManifestProblem(1, text))
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        problems.append(ManifestProblem(
            1, f"column(s) {', '.join(repeated)} appear more than once in the header: keep one of each (the rows "
               "were checked with the first)"))
    if "captured_at" not in columns and "timeslot" not in columns:
        problems.append(ManifestProblem(1, "the manifest needs a captured_at or a timeslot column to order "
                                           "images in time"))
    if needs_labels and "label" not in columns and class_spec is None:
        problems.append(ManifestProblem(1, "no label column and no class specification: add a label column or "
                                           "pass a class specification (e.g. --classes ntif)"))
    return problems


def load_manifest(path: str | Path, *, class_spec: ClassSpec | str | Path | None = None,
                  check_files: bool = True, needs_labels: bool = True) -> Manifest:
    """Read, validate and label a manifest.

    Parameters
    ----------
    path : str or Path
        The CSV file. Relative image paths are taken relative to its folder and must stay
        inside it (also through symbolic links); images elsewhere need absolute paths.
    class_spec : ClassSpec, str or Path, optional
        Class specification used to derive labels for rows that have none (a shipped name
        like ``"ntif"``, a TOML path, or a loaded spec). When given, every device of the
        manifest must appear in it.
    check_files : bool, default True
        Whether a row whose image file does not exist (or is not a regular file) is a problem.
        Files are looked at with ``os.stat`` only, never opened.
    needs_labels : bool, default True
        Whether every row needs an age class (a ``label`` column or a class specification). Dating
        (``pipeline.date``) needs capture times, not classes: with False, rows without a label are
        kept with label None.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        Listing every problem found in one pass, each with its line number (and column where
        it concerns one): a problem of the header (missing or repeated column, no time column,
        no label column and no class specification, a separator other than a comma) does not
        hide the problems of the rows, which are checked as far as the header allows (all of
        them, unless there is no ``path`` column, which the message then says). Row problems:
        missing file (or a folder, broken link, named pipe or other non-regular file in its
        place), unparseable date, neither ``captured_at`` nor ``timeslot``, unknown device in
        the class specification, duplicate path (the same file however spelled: ``./``,
        ``..``, absolute, symbolic link), a relative path that leads out of the manifest's
        folder (also through a symbolic link), a NUL byte or line break in a path, a row with
        too many fields or too few for its required columns, bad numbers, no label at all; or
        the manifest itself missing, a folder, unreadable, not UTF-8 (with the byte offset and
        line) or with a quote left open (with the line where it opens). Line numbers are
        physical lines of the file (blank lines and line breaks inside quoted fields count),
        the header being line 1; :attr:`ManifestRow.line` is the line where the row starts.
    """
    source = Path(path)
    if source.is_dir():
        raise ManifestError([ManifestProblem(None, f"{source} is a folder, not a manifest: give the CSV file",
                                             str(source))], source)
    if not source.is_file():
        what = "is not a regular file" if os.path.exists(source) else "does not exist"
        raise ManifestError([ManifestProblem(None, f"manifest {source} {what}", str(source))], source)
    if isinstance(class_spec, (str, Path)):
        class_spec = load_class_spec(class_spec)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ManifestError([ManifestProblem(None, f"cannot read the manifest ({exc.strerror or exc}): check "
                                                   "its permissions", str(source))], source) from None
    lines = io.StringIO(decode_manifest_text(data, source), newline="").readlines()
    records, csv_problem = read_records(lines, ",")
    if not records:
        problem = csv_problem or ManifestProblem(1, "the manifest is empty: it needs a header with at least "
                                                    "path,device", str(source))
        raise ManifestError([problem], source)
    columns = [c.strip() for c in records[0][2]]
    delimiter = _separator_hint(columns) or ","
    if delimiter != ",":  # read the rows as the file means them, so that their problems are listed too
        records, csv_problem = read_records(lines, delimiter)
        columns = [c.strip() for c in records[0][2]] if records else columns
    problems = _header_problems(columns, class_spec, delimiter, needs_labels)
    rows: list[ManifestRow] = []
    excluded: list[Exclusion] = []
    if "path" in columns:
        _check_rows(records[1:], columns, source.parent, class_spec, check_files, needs_labels, problems, rows,
                    excluded)
    if csv_problem is not None:
        problems.append(csv_problem)
    if len(records) == 1 and not problems:
        problems.append(ManifestProblem(None, "the manifest has a header but no rows", str(source)))
    if problems:
        raise ManifestError(sorted(problems, key=lambda p: p.line or 0), source)
    return Manifest(rows, excluded, source, hashlib.sha256(data).hexdigest(), columns)


def _check_rows(records, columns: list[str], base: Path, class_spec: ClassSpec | None, check_files: bool,
                needs_labels: bool, problems: list, rows: list, excluded: list) -> None:
    """Validate every record after the header, adding to `problems`, `rows` and `excluded`.

    Checks that a header problem makes meaningless (a missing device, time or label column)
    are left out: the header problem already says it, once.
    """
    times = [c for c in ("captured_at", "timeslot") if c in columns]
    seen: dict[str, int] = {}
    for line_no, last_line, fields in records:
        # a row that runs over several lines and has the wrong number of fields: a stray quote
        spans = (f" (the row runs from line {line_no} to line {last_line}: is a quote left open on line "
                 f"{line_no}?)" if last_line > line_no else "")
        if len(fields) > len(columns):
            problems.append(ManifestProblem(line_no, f"{len(fields) - len(columns)} more field(s) than "
                                                     f"the header has columns ({len(columns)}): quote "
                                                     f"values that contain commas{spans}"))
            continue
        values: dict[str, str] = {}
        for name, value in zip(columns, fields):
            values.setdefault(name, (value or "").strip())  # a repeated column: the first counts
        for name in columns[len(fields):]:
            values.setdefault(name, "")
        raw_path, device = values.get("path", ""), values.get("device", "")
        # a short row may leave out trailing optional columns, not those it cannot do without
        cut_off = columns[len(fields):]
        lacking = [c for c in REQUIRED_COLUMNS if c in cut_off]
        if times and all(c in cut_off for c in times):
            lacking += times
        if needs_labels and "label" in cut_off and class_spec is None:
            lacking.append("label")
        if lacking:
            problems.append(ManifestProblem(
                line_no, f"the row has {len(fields)} field(s) but the header has {len(columns)}: "
                         f"{', '.join(lacking)} missing; complete the row or remove it{spans}", raw_path or None))
            continue
        if not raw_path:
            problems.append(ManifestProblem(line_no, "empty path: give the image file or remove the row",
                                            column="path"))
            continue
        if not device and "device" in columns:
            problems.append(ManifestProblem(line_no, "empty device: give the camera body's id", raw_path,
                                            "device"))
        image_path = None
        if "\x00" in raw_path:
            problems.append(ManifestProblem(
                line_no, f"the path {_shown(raw_path)} contains a NUL byte (\\x00), which no file name can hold: "
                         "correct the path (re-export the manifest as plain UTF-8 text) or remove the row",
                raw_path, "path"))
        elif "\n" in raw_path or "\r" in raw_path:
            problems.append(ManifestProblem(
                line_no, f"the path {_shown(raw_path)} contains a line break (the row runs from line {line_no} to "
                         f"line {last_line}): a quote is probably left open on line {line_no}; close it",
                raw_path, "path"))
        else:
            try:
                image_path = _resolve(base, raw_path, problems, line_no)
                key = None if image_path is None else _same_file_key(image_path)
            except (OSError, ValueError) as exc:  # e.g. a name too long for the file system
                problems.append(ManifestProblem(line_no, f"the path {_shown(raw_path)} cannot be used ({exc}): "
                                                         "correct it or remove the row", raw_path, "path"))
                image_path = key = None
            if key is not None:
                if key in seen:
                    problems.append(ManifestProblem(
                        line_no, f"duplicate path: the same file as line {seen[key]}; remove one of "
                                 "the two rows", raw_path, "path"))
                else:
                    seen[key] = line_no
                if check_files:
                    _check_file(image_path, problems, line_no, raw_path)
        captured_at = None
        if values.get("captured_at"):
            try:
                captured_at = parse_capture_time(values["captured_at"])
            except ValueError as exc:
                problems.append(ManifestProblem(line_no, f"captured_at: {exc}", raw_path, "captured_at"))
        timeslot = _optional_int(values.get("timeslot", ""), "timeslot", problems, line_no, raw_path)
        if times and not values.get("captured_at") and not values.get("timeslot"):
            problems.append(ManifestProblem(
                line_no, "neither captured_at nor timeslot is given: the image cannot be "
                         "placed in time", raw_path, times[0] if len(times) == 1 else None))
        label = _optional_int(values.get("label", ""), "label", problems, line_no, raw_path)
        exposure = _optional_float(values.get("exposure_s", ""), "exposure_s", problems, line_no, raw_path)
        iso = _optional_float(values.get("iso", ""), "iso", problems, line_no, raw_path)
        if label is not None and label < 0:
            problems.append(ManifestProblem(line_no, f"label {label} must be >= 0", raw_path, "label"))
        if label is None and class_spec is not None and device:
            if device not in class_spec.devices:
                problems.append(ManifestProblem(
                    line_no, f"device {_shown(device)} is not in class specification {class_spec.name!r} "
                             f"(known: {', '.join(sorted(class_spec.devices))})", raw_path, "device"))
                continue
            label, reason = class_spec.label_for(device, timeslot=timeslot, captured_at=captured_at)
            if label is None:
                excluded.append(Exclusion(line_no, raw_path, device, reason))
                continue
        elif needs_labels and label is None and "label" in columns and not values.get("label"):
            problems.append(ManifestProblem(
                line_no, "empty label and no class specification to derive it from", raw_path, "label"))
            continue
        extra = {k: v for k, v in values.items() if k not in KNOWN_COLUMNS}
        if image_path is not None and (label is not None or not needs_labels):
            rows.append(ManifestRow(line_no, image_path, device, captured_at, timeslot, label, exposure,
                                    iso, values.get("make") or None, values.get("model") or None, extra))
