"""Load and validate image manifests (the CSV of DESIGN.md, one row per image).

Every problem in a manifest is collected and reported at once, each with its line number
(the header is line 1), so that a user fixes a manifest in one pass and not one run per error.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pipeline.data.classspec import ClassSpec, load_class_spec
from pipeline.data.errors import ManifestError, ManifestProblem

__all__ = ["ManifestRow", "Manifest", "Exclusion", "load_manifest", "parse_capture_time", "file_sha256"]

REQUIRED_COLUMNS = ("path", "device")
KNOWN_COLUMNS = ("path", "device", "captured_at", "timeslot", "label",
                 "exposure_s", "iso", "make", "model")


@dataclass(frozen=True)
class ManifestRow:
    """One validated image row.

    ``path`` is absolute; ``captured_at`` is naive (a timezone-aware time is converted to UTC
    and its zone dropped, naive times are taken as the camera's clock); ``extra`` carries the
    columns agetrace does not interpret, untouched.
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
        Rows with a class label, in file order.
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
        raise ValueError(f"cannot parse {text!r} as an ISO 8601 time (e.g. 2015-03-21T14:05:00)") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def _optional_float(value: str, column: str, problems: list, line: int, path: str) -> float | None:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        problems.append(ManifestProblem(line, f"{column} {value!r} is not a number", path))
        return None
    if not math.isfinite(number) or number <= 0:
        problems.append(ManifestProblem(line, f"{column} {value!r} must be a positive finite number", path))
        return None
    return number


def _optional_int(value: str, column: str, problems: list, line: int, path: str) -> int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        problems.append(ManifestProblem(line, f"{column} {value!r} is not an integer", path))
        return None


def _resolve(base: Path, raw: str, problems: list, line: int) -> Path | None:
    candidate = Path(raw)
    if candidate.is_absolute():
        return candidate
    resolved = (base / candidate).resolve()
    try:
        resolved.relative_to(base.resolve())
    except ValueError:
        folder, lexical = Path(os.path.abspath(base)), Path(os.path.abspath(base / candidate))
        inside = folder in lexical.parents
        how = (f"through a symbolic link it leads to {resolved}, outside" if inside
               else "it points outside")
        problems.append(ManifestProblem(
            line, f"relative path {raw!r} escapes the manifest's folder {base} ({how}): relative paths "
                  "must stay inside that folder; write the file's absolute path instead, or move the "
                  "manifest to a folder that holds the images", raw))
        return None
    return resolved


def _same_file_key(path: Path) -> str:
    """Key under which two spellings of one file (``..``, symbolic links) compare equal."""
    return os.path.realpath(path)


def _check_file(image_path: Path, problems: list, line: int, raw: str) -> None:
    if image_path.is_file():
        return
    if image_path.is_dir():
        problems.append(ManifestProblem(line, f"{image_path} is a folder, not an image file: give the "
                                              "image's path or remove the row", raw))
    elif image_path.is_symlink():
        problems.append(ManifestProblem(line, f"{image_path} is a broken symbolic link (to "
                                              f"{os.readlink(image_path)}): fix the link or remove the row", raw))
    else:
        problems.append(ManifestProblem(line, f"file not found: {image_path} (relative paths are taken "
                                              "from the manifest's folder): correct the path or remove the "
                                              "row", raw))


def _read_records(fh):
    """Yield (line, fields) for every non-blank CSV record; ``line`` is the physical line on
    which the record starts (header = 1), counting blank lines and line breaks inside quotes."""
    reader = csv.reader(fh)
    previous_end = 0
    for fields in reader:
        start, previous_end = previous_end + 1, reader.line_num
        if fields:
            yield start, fields


def load_manifest(path: str | Path, *, class_spec: ClassSpec | str | Path | None = None,
                  check_files: bool = True) -> Manifest:
    """Read, validate and label a manifest.

    Parameters
    ----------
    path : str or Path
        The CSV file. Relative image paths are taken relative to its folder.
    class_spec : ClassSpec, str or Path, optional
        Class specification used to derive labels for rows that have none (a shipped name
        like ``"ntif"``, a TOML path, or a loaded spec). When given, every device of the
        manifest must appear in it.
    check_files : bool, default True
        Whether a row whose image file does not exist is a problem.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        Listing every problem found, each with its line number: missing or repeated column,
        missing file (or a folder or broken link in its place), unparseable date, neither
        ``captured_at`` nor ``timeslot``, unknown device in the class specification, duplicate
        path (the same file however spelled: ``./``, ``..``, absolute, symbolic link), a
        relative path that leads out of the manifest's folder (also through a symbolic link),
        a row with too many fields or too few for its required columns, bad numbers, no label
        at all; or the manifest itself missing, a folder, unreadable or not UTF-8 CSV. Line
        numbers are physical lines of the file (blank lines and line breaks inside quoted
        fields count), the header being line 1.
    """
    source = Path(path)
    if source.is_dir():
        raise ManifestError([ManifestProblem(None, f"{source} is a folder, not a manifest: give the CSV file",
                                             str(source))], source)
    if not source.is_file():
        raise ManifestError([ManifestProblem(None, f"manifest {source} does not exist", str(source))], source)
    if isinstance(class_spec, (str, Path)):
        class_spec = load_class_spec(class_spec)
    base = source.parent
    problems: list[ManifestProblem] = []
    rows: list[ManifestRow] = []
    excluded: list[Exclusion] = []
    seen: dict[str, int] = {}

    try:
        with open(source, newline="", encoding="utf-8-sig") as fh:
            records = _read_records(fh)
            columns = [c.strip() for c in next(records, (1, []))[1]]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if not columns:
                raise ManifestError([ManifestProblem(1, "the manifest is empty: it needs a header "
                                                        "with at least path,device", str(source))], source)
            if missing:
                raise ManifestError([ManifestProblem(
                    1, f"missing required column(s) {', '.join(missing)}; the header is {columns}", str(source))], source)
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            if repeated:
                raise ManifestError([ManifestProblem(
                    1, f"column(s) {', '.join(repeated)} appear more than once in the header: keep one "
                       "of each", str(source))], source)
            if "captured_at" not in columns and "timeslot" not in columns:
                raise ManifestError([ManifestProblem(
                    1, "the manifest needs a captured_at or a timeslot column to order images in time",
                    str(source))], source)
            if "label" not in columns and class_spec is None:
                raise ManifestError([ManifestProblem(
                    1, "no label column and no class specification: add a label column or pass a "
                       "class specification (e.g. --classes ntif)", str(source))], source)
            times = [c for c in ("captured_at", "timeslot") if c in columns]
            for line_no, fields in records:
                if len(fields) > len(columns):
                    problems.append(ManifestProblem(line_no, f"{len(fields) - len(columns)} more field(s) than "
                                                             f"the header has columns ({len(columns)}): quote "
                                                             "values that contain commas"))
                    continue
                values = {k: (v or "").strip() for k, v in zip(columns, fields)}
                values.update({k: "" for k in columns[len(fields):]})
                raw_path, device = values.get("path", ""), values.get("device", "")
                # a short row may leave out trailing optional columns, not those it cannot do without
                cut_off = columns[len(fields):]
                lacking = [c for c in ("path", "device") if c in cut_off]
                if all(c in cut_off for c in times):
                    lacking += times
                if "label" in cut_off and class_spec is None:
                    lacking.append("label")
                if lacking:
                    problems.append(ManifestProblem(
                        line_no, f"the row has {len(fields)} field(s) but the header has {len(columns)}: "
                                 f"{', '.join(lacking)} missing; complete the row or remove it", raw_path or None))
                    continue
                if not raw_path:
                    problems.append(ManifestProblem(line_no, "empty path: give the image file or remove the row"))
                    continue
                if not device:
                    problems.append(ManifestProblem(line_no, "empty device: give the camera body's id", raw_path))
                image_path = _resolve(base, raw_path, problems, line_no)
                if image_path is not None:
                    key = _same_file_key(image_path)
                    if key in seen:
                        problems.append(ManifestProblem(
                            line_no, f"duplicate path: the same file as line {seen[key]}; remove one of "
                                     "the two rows", raw_path))
                    else:
                        seen[key] = line_no
                    if check_files:
                        _check_file(image_path, problems, line_no, raw_path)
                captured_at = None
                if values.get("captured_at"):
                    try:
                        captured_at = parse_capture_time(values["captured_at"])
                    except ValueError as exc:
                        problems.append(ManifestProblem(line_no, f"captured_at: {exc}", raw_path))
                timeslot = _optional_int(values.get("timeslot", ""), "timeslot", problems, line_no, raw_path)
                if not values.get("captured_at") and not values.get("timeslot"):
                    problems.append(ManifestProblem(
                        line_no, "neither captured_at nor timeslot is given: the image cannot be "
                                 "placed in time", raw_path))
                label = _optional_int(values.get("label", ""), "label", problems, line_no, raw_path)
                exposure = _optional_float(values.get("exposure_s", ""), "exposure_s", problems, line_no, raw_path)
                iso = _optional_float(values.get("iso", ""), "iso", problems, line_no, raw_path)
                if label is not None and label < 0:
                    problems.append(ManifestProblem(line_no, f"label {label} must be >= 0", raw_path))
                if label is None and class_spec is not None and device:
                    if device not in class_spec.devices:
                        problems.append(ManifestProblem(
                            line_no, f"device {device!r} is not in class specification {class_spec.name!r} "
                                     f"(known: {', '.join(sorted(class_spec.devices))})", raw_path))
                        continue
                    label, reason = class_spec.label_for(device, timeslot=timeslot, captured_at=captured_at)
                    if label is None:
                        excluded.append(Exclusion(line_no, raw_path, device, reason))
                        continue
                elif label is None and not values.get("label"):
                    problems.append(ManifestProblem(
                        line_no, "empty label and no class specification to derive it from", raw_path))
                    continue
                extra = {k: v for k, v in values.items() if k not in KNOWN_COLUMNS}
                if image_path is not None and label is not None:
                    rows.append(ManifestRow(line_no, image_path, device, captured_at, timeslot, label, exposure,
                                            iso, values.get("make") or None, values.get("model") or None, extra))
    except UnicodeDecodeError as exc:
        raise ManifestError([ManifestProblem(None, f"not a UTF-8 text file ({exc.reason}); save the "
                                                   "manifest as UTF-8 CSV", str(source))], source) from None
    except csv.Error as exc:
        raise ManifestError([ManifestProblem(None, f"malformed CSV: {exc}", str(source))], source) from None
    except OSError as exc:
        raise ManifestError([ManifestProblem(None, f"cannot read the manifest ({exc.strerror or exc}): check "
                                                   "its permissions", str(source))], source) from None

    if not rows and not problems and not excluded:
        problems.append(ManifestProblem(None, "the manifest has a header but no rows", str(source)))
    if problems:
        raise ManifestError(problems, source)
    return Manifest(rows, excluded, source, file_sha256(source), columns)
