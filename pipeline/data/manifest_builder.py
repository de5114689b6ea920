"""Build a manifest for a folder tree of images from their EXIF.

:func:`build_manifest` walks a folder, reads each image's header (:func:`~pipeline.data.exif.inspect_exif`)
and returns one row per image plus the problems found; :func:`write_manifest` writes the rows
as CSV atomically. ``python -m pipeline.manifest build DIR`` calls both.

Problems never stop the walk: an unreadable file gets no row and a problem, and so does a named
pipe, socket or device file with an image's name (it is never opened, so it cannot hang the
walk); an image without ``DateTimeOriginal`` gets a row with ``captured_at`` empty and a problem
(the manifest loader flags such rows, so the user fills the time in or removes the row).

Raw files the built-in EXIF reader finds nothing in (CR3, RAF, ORF, RW2, ...) are read with
ExifTool in one batch after the walk (:func:`~pipeline.data.exif.complete_with_exiftool`); when
ExifTool is not installed, one problem says so for all of them.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from tqdm import tqdm

from pipeline.data.atomic import atomic_write
from pipeline.data.errors import ImageReadError, ManifestProblem
from pipeline.data.exif import ExifWarning, ImageMetadata, complete_with_exiftool, inspect_exif
from pipeline.data.exiftool import MISSING_MESSAGE
from pipeline.data.formats import IMAGE_EXTENSIONS, detect_format
from pipeline.data.imageio import read_image
from pipeline.data.manifest import manifest_path as _manifest_path
from pipeline.data.manifest import non_regular_kind
from pipeline.logs import get_logger

__all__ = ["BuiltManifest", "DEVICE_SOURCES", "MANIFEST_COLUMNS", "build_manifest", "write_manifest"]

#: Columns written by the builder, in order.
MANIFEST_COLUMNS = ("path", "device", "captured_at", "make", "model", "exposure_s", "iso", "serial")
#: Where the ``device`` column can come from.
DEVICE_SOURCES = ("folder", "serial", "name")

logger = get_logger(__name__)


class BuiltManifest(NamedTuple):
    """Result of :func:`build_manifest`.

    Attributes
    ----------
    rows : list of dict
        One dict per image, keys :data:`MANIFEST_COLUMNS`, values strings ('' when unknown),
        ordered by path.
    problems : list of ManifestProblem
        ``line`` is the row's line in the CSV that :func:`write_manifest` writes (header =
        line 1), or None for a file that got no row; ``path`` is the manifest path.
    """

    rows: list[dict[str, str]]
    problems: list[ManifestProblem]


def build_manifest(
    root: str | os.PathLike[str],
    *,
    device: str | None = None,
    device_from: str | None = None,
    relative_to: str | os.PathLike[str] | None = None,
    verify_pixels: bool = False,
    progress: bool = False,
) -> BuiltManifest:
    """List the images under a folder with their capture metadata.

    Parameters
    ----------
    root : str or os.PathLike
        Folder to walk recursively. Files with an image extension (jpg, jpeg, png, tif, tiff,
        dng and camera raw such as nef, cr2, arw; any case) are listed; hidden files and
        folders (names starting with '.') are skipped.
    device : str, optional
        Device id for every image; implies ``device_from='name'``.
    device_from : {'folder', 'serial', 'name'}, optional
        ``'folder'`` (the default without `device`): the first folder below `root` on the
        image's path (``root/canon01/2015/img.jpg`` → ``canon01``); images directly in `root`
        take the name of `root` itself. ``'serial'``: ``<model>-<serial>`` from EXIF
        (BodySerialNumber, or CameraSerialNumber for DNG; just the serial if the model is
        unknown) — two bodies of one model are two devices; images without a serial get an
        empty device and a problem. ``'name'``: the given `device`.
    relative_to : str or os.PathLike, optional
        Folder the manifest will be written to. An image inside it is written relative to it
        (POSIX separators); an image outside it, or reached from it only through a symbolic
        link that leads out of it, is written as an absolute path, since
        :func:`~pipeline.data.manifest.load_manifest` accepts a relative path only if it stays
        inside the manifest's folder (:func:`~pipeline.data.manifest.manifest_path`).
        Default: `root`.
    verify_pixels : bool, default False
        Also decode every image (:func:`~pipeline.data.imageio.read_image`) so that truncated
        or corrupt pixel data is reported too; slower (a full decode per file).
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    BuiltManifest
        ``(rows, problems)``.

    Raises
    ------
    NotADirectoryError
        If `root` is not a folder.
    ValueError
        If `device_from` is unknown, or ``'name'`` is asked for without `device`.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder: give the folder that holds the images")
    device_from = _resolve_device_source(device, device_from)
    base = Path(relative_to) if relative_to is not None else root
    files = sorted(_image_files(root), key=lambda found: found.relative_to(root).as_posix())

    # per file, in order: the problem that leaves it out, or what the built-in reader found
    entries: list[ManifestProblem | tuple[Path, str, str, ImageMetadata, list[str]]] = []
    for image_path in tqdm(files, desc="reading EXIF", unit="file", disable=not progress):
        manifest_path = _manifest_path(image_path, base)
        try:
            kind = non_regular_kind(os.stat(image_path).st_mode)
        except OSError:
            kind = None  # gone or unreachable: inspect_exif says which
        if kind is not None:
            entries.append(ManifestProblem(None, f"left out, not a regular file ({kind}): remove it or move it "
                                                 "out of the folder", manifest_path))
            continue
        try:
            image_format = detect_format(image_path)
            metadata, issues = inspect_exif(image_path, image_format=image_format, exiftool=False)
            if verify_pixels:
                _decode(image_path)
        except ImageReadError as exc:
            entries.append(ManifestProblem(None, f"left out, unreadable: {exc.reason}", manifest_path))
            continue
        entries.append((image_path, manifest_path, image_format, metadata, issues))
    read = [entry for entry in entries if not isinstance(entry, ManifestProblem)]
    completed = iter(complete_with_exiftool([(path, fmt, metadata, issues) for path, _, fmt, metadata, issues in read]))

    rows: list[dict[str, str]] = []
    problems: list[ManifestProblem] = []
    without_exiftool: list[str] = []
    n_exiftool = 0
    for entry in entries:
        if isinstance(entry, ManifestProblem):
            problems.append(entry)
            continue
        image_path, manifest_path = entry[0], entry[1]
        metadata, issues = next(completed)
        n_exiftool += metadata.source == "exiftool"
        if MISSING_MESSAGE in issues:  # said once for all files, below
            without_exiftool.append(manifest_path)
            issues = [issue for issue in issues if issue != MISSING_MESSAGE]
        line = len(rows) + 2
        problems += [ManifestProblem(line, issue, manifest_path) for issue in issues]
        device_id = _device_for(image_path, root, metadata, device, device_from)
        if not device_id:
            problems.append(ManifestProblem(line, "no device: the image has no serial number in its "
                                            "EXIF; fill the device column in", manifest_path, "device"))
        if metadata.captured_at is None:
            problems.append(ManifestProblem(line, "no DateTimeOriginal in the EXIF: fill captured_at "
                                            "in (ISO 8601) or remove the row", manifest_path, "captured_at"))
        rows.append(_row(manifest_path, device_id, metadata))
    if without_exiftool:
        listed = ", ".join(without_exiftool[:3]) + (", ..." if len(without_exiftool) > 3 else "")
        problems.insert(0, ManifestProblem(None, f"{MISSING_MESSAGE} ({len(without_exiftool)} file(s): {listed})"))
    if n_exiftool:
        logger.info("%d of %d image(s) had their metadata read by exiftool", n_exiftool, len(rows))
    return BuiltManifest(rows, problems)


def write_manifest(
    rows: Iterable[Mapping[str, Any]],
    out_csv: str | os.PathLike[str],
    *,
    columns: Sequence[str] = MANIFEST_COLUMNS,
) -> Path:
    """Write manifest rows as CSV, atomically (a temporary file renamed over `out_csv`).

    Parameters
    ----------
    rows : iterable of mapping
        Rows as returned by :func:`build_manifest`; ``None`` is written as an empty field.
        Keys not in `columns` are appended as extra columns in order of first appearance.
    out_csv : str or os.PathLike
        Destination; its folder must exist.
    columns : sequence of str
        Leading columns, in order.

    Returns
    -------
    pathlib.Path
        `out_csv`.
    """
    rows = [dict(row) for row in rows]
    header = list(columns)
    for row in rows:
        header += [key for key in row if key not in header]
    out_csv = Path(out_csv)
    if not out_csv.parent.is_dir():
        raise FileNotFoundError(f"folder {out_csv.parent} does not exist: create it or choose another --out")
    with atomic_write(out_csv) as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return out_csv


def _resolve_device_source(device: str | None, device_from: str | None) -> str:
    if device_from is None:
        device_from = "name" if device is not None else "folder"
    if device_from not in DEVICE_SOURCES:
        raise ValueError(f"device_from must be one of {DEVICE_SOURCES}, got {device_from!r}")
    if device_from == "name" and not (device and device.strip()):
        raise ValueError("device_from='name' needs a device name (e.g. device='canon01')")
    if device is not None and device_from != "name":
        raise ValueError(f"a device name was given but device_from={device_from!r}: "
                         "use device_from='name' or leave the name out")
    return device_from


def _image_files(root: Path) -> Iterable[Path]:
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in names:
            if not name.startswith(".") and Path(name).suffix[1:].lower() in IMAGE_EXTENSIONS:
                yield Path(folder) / name


def _device_for(image_path: Path, root: Path, metadata: ImageMetadata, device: str | None,
                device_from: str) -> str:
    if device_from == "name":
        return device.strip()
    if device_from == "serial":
        if metadata.serial is None:
            return ""
        return f"{metadata.model}-{metadata.serial}" if metadata.model else metadata.serial
    parts = image_path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else root.resolve().name


def _decode(image_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExifWarning)  # already reported from inspect_exif
        read_image(image_path)


def _row(manifest_path: str, device: str, metadata: ImageMetadata) -> dict[str, str]:
    return {
        "path": manifest_path,
        "device": device,
        "captured_at": metadata.captured_at.isoformat() if metadata.captured_at else "",
        "make": metadata.make or "",
        "model": metadata.model or "",
        "exposure_s": _number(metadata.exposure_s),
        "iso": _number(metadata.iso),
        "serial": metadata.serial or "",
    }


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
