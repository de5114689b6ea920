"""What an image file's EXIF says about the capture.

:func:`read_exif` returns the capture metadata the age estimators need
(:class:`ImageMetadata`): acquisition time, exposure, ISO, camera make/model/serial and the
orientation tag. It reads only headers, never pixels.

The file is first identified by :func:`pipeline.data.formats.detect_format`, which rejects
what is not a supported image.

Rules
-----
* Missing fields are ``None``; nothing is guessed. In particular ``captured_at`` comes from
  ``DateTimeOriginal`` only (with ``SubsecTimeOriginal`` and ``OffsetTimeOriginal`` when
  present), never from ``DateTime``, which editing software rewrites.
* Malformed values (an unparseable date, a zero-denominator exposure, an orientation of 9)
  make that field ``None`` and produce an issue; :func:`read_exif` turns issues into
  :class:`ExifWarning` warnings, :func:`inspect_exif` returns them.
* JPEG and PNG are read with Pillow (``getexif()`` and its Exif IFD, tag 0x8769); TIFF, DNG
  and TIFF-based raw files (NEF, CR2, ARW, ...) with tifffile (IFD0 and its Exif IFD).
* Raw files where that built-in reader finds nothing (no capture time, exposure, ISO, make or
  model) -- above all the containers that are not TIFF-structured (CR3, RAF, ORF, RW2, ...) --
  are read again with ExifTool when it is installed (:mod:`pipeline.data.exiftool`), through
  the same tag rules. Without it they yield empty metadata and an issue saying how to install
  it. :attr:`ImageMetadata.source` tells which reader supplied the fields.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from typing import Any, Mapping, Sequence

import tifffile
from PIL import JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from pipeline.data.decoder_messages import describe_exception, python_warnings_into, tifffile_log_into
from pipeline.data.errors import ImageReadError
from pipeline.data.exiftool import read_exiftool_tags
from pipeline.data.formats import detect_format, file_extension, is_tiff_structured, tiff_structure_error

__all__ = [
    "ExifWarning",
    "ImageMetadata",
    "complete_with_exiftool",
    "inspect_exif",
    "metadata_from_tags",
    "read_exif",
]

# EXIF / TIFF tag numbers.
_MAKE, _MODEL, _ORIENTATION = 0x010F, 0x0110, 0x0112
_EXIF_IFD = 0x8769
_EXPOSURE_TIME = 0x829A
_ISO_SPEED_RATINGS = 0x8827  # called PhotographicSensitivity since EXIF 2.3
_RECOMMENDED_EXPOSURE_INDEX, _ISO_SPEED = 0x8832, 0x8833
_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, _SUBSEC_TIME_ORIGINAL = 0x9003, 0x9011, 0x9291
_BODY_SERIAL_NUMBER = 0xA431
_CAMERA_SERIAL_NUMBER = 0xC62F  # DNG, IFD0

_SATURATED_ISO = 65535  # EXIF 2.3: the real value is in ISOSpeed or RecommendedExposureIndex
_MAX_PLAUSIBLE_EXPOSURE_S = 86400.0  # 0xFFFFFFFF/1 and the like mean "unknown"

_DATE_PATTERN = re.compile(r"^\s*(\d{4})[:\-/](\d{2})[:\-/](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET_PATTERN = re.compile(r"^([+-])(\d{2}):(\d{2})$")


class ExifWarning(UserWarning):
    """A metadata field of an image was malformed and has been left empty."""


@dataclass(frozen=True)
class ImageMetadata:
    """Capture metadata of one image; every field is ``None`` when the file does not say.

    Attributes
    ----------
    captured_at : datetime or None
        ``DateTimeOriginal`` (+ ``SubsecTimeOriginal``); timezone-aware only when the file
        carries ``OffsetTimeOriginal``, naive otherwise.
    exposure_s : float or None
        ``ExposureTime`` in seconds.
    iso : float or None
        ``ISOSpeedRatings`` / ``PhotographicSensitivity`` (``ISOSpeed`` or
        ``RecommendedExposureIndex`` when the former is saturated at 65535).
    make, model : str or None
        Camera maker and model, trailing NULs and blanks removed.
    serial : str or None
        ``BodySerialNumber`` (Exif IFD) or ``CameraSerialNumber`` (DNG). A serial that is not
        printable text (some makers store binary bytes there) is given as ``"hex:"`` followed
        by its bytes in hexadecimal, so that it still identifies the body.
    orientation : int or None
        EXIF ``Orientation`` (1-8), recorded but never applied to pixels.
    width, height : int or None
        Size of the stored image in pixels, as stored (not rotated). ``None`` for RAW/DNG in
        :func:`read_exif`, where only decoding tells the visible area; ``read_image`` fills
        them in.
    source : {'built-in', 'exiftool'} or None
        Which reader supplied the fields: this module's own (``'built-in'``) or ExifTool
        (``'exiftool'``, for raw files the built-in reader finds nothing in); ``None`` when no
        field was found. Not part of equality.
    """

    captured_at: datetime | None = None
    exposure_s: float | None = None
    iso: float | None = None
    make: str | None = None
    model: str | None = None
    serial: str | None = None
    orientation: int | None = None
    width: int | None = None
    height: int | None = None
    source: str | None = field(default=None, compare=False)

    def has_capture_fields(self) -> bool:
        """Whether any of capture time, exposure, ISO, make or model is known."""
        return any(value is not None for value in (self.captured_at, self.exposure_s, self.iso, self.make, self.model))


def inspect_exif(
    path: str | os.PathLike[str],
    *,
    image_format: str | None = None,
    data: bytes | None = None,
    exiftool: bool = True,
) -> tuple[ImageMetadata, list[str]]:
    """Read capture metadata and return it with the problems found in it.

    Parameters
    ----------
    path : str or os.PathLike
        The image file (used for reading unless `data` is given, and in messages).
    image_format : str, optional
        The result of :func:`~pipeline.data.formats.detect_format` if already known; detected otherwise.
    data : bytes, optional
        The file's bytes if already in memory (JPEG/PNG only), to avoid reading it twice.
    exiftool : bool, default True
        Read a raw file that the built-in reader finds nothing in with ExifTool
        (:func:`complete_with_exiftool`). False: the built-in reader only (callers that batch
        many files through :func:`complete_with_exiftool` themselves).

    Returns
    -------
    metadata : ImageMetadata
    issues : list of str
        One sentence per malformed field (the field is ``None``), or why nothing could be
        read (e.g. ExifTool is not installed); empty when all is well.

    Raises
    ------
    ImageReadError
        If the file is not a supported image or its header cannot be parsed.
    """
    path = Path(path)
    image_format = image_format or detect_format(path)
    if image_format in ("jpeg", "png"):
        metadata, issues = _exif_with_pillow(path, data, image_format)
    elif is_tiff_structured(path):
        metadata, issues = _exif_with_tifffile(path)
        if image_format in ("dng", "raw"):
            metadata = replace(metadata, width=None, height=None)  # IFD0 is often a preview
    else:
        metadata, issues = ImageMetadata(), [
            f"EXIF is not read from .{file_extension(path) or '?'} raw files (not TIFF-structured) by the "
            "built-in reader; install exiftool or fill captured_at, exposure_s and iso in the manifest by hand"]
    if metadata.has_capture_fields():
        metadata = replace(metadata, source="built-in")
    if exiftool:
        return complete_with_exiftool([(path, image_format, metadata, issues)])[0]
    return metadata, issues


def complete_with_exiftool(
    entries: Sequence[tuple[str | os.PathLike[str], str, ImageMetadata, list[str]]],
) -> list[tuple[ImageMetadata, list[str]]]:
    """Read with ExifTool the raw files that the built-in reader found nothing in.

    All such files go to one ExifTool run (:func:`~pipeline.data.exiftool.read_exiftool_tags`),
    and its tags through :func:`metadata_from_tags`, so units and time zones follow the same
    rules. The other entries are returned unchanged.

    Parameters
    ----------
    entries : sequence of (path, image_format, ImageMetadata, list of str)
        Results of ``inspect_exif(path, image_format=image_format, exiftool=False)``.

    Returns
    -------
    list of (ImageMetadata, list of str)
        One per entry, in order. Where ExifTool found a field, its metadata (``source`` is
        ``'exiftool'``) and its issues; where it found nothing, the built-in result with the
        reason added (for instance :data:`~pipeline.data.exiftool.MISSING_MESSAGE` when ExifTool
        is not installed). Never raises because of ExifTool.
    """
    results = [(metadata, list(issues)) for _, _, metadata, issues in entries]
    wanted = [index for index, (_, image_format, metadata, _) in enumerate(entries)
              if image_format == "raw" and not metadata.has_capture_fields()]
    found = read_exiftool_tags([entries[index][0] for index in wanted])
    for index, (tags, tool_issues) in zip(wanted, found):
        path, _, metadata, issues = entries[index]
        read, tag_issues = metadata_from_tags(tags)
        if read.has_capture_fields():
            results[index] = replace(read, source="exiftool"), tool_issues + tag_issues
            continue
        # what the built-in reader said about a container it does not parse is replaced by why ExifTool failed
        kept = list(issues) if _tiff_structured(Path(path)) else []
        results[index] = metadata, kept + (tool_issues + tag_issues or ["exiftool found no capture metadata in it"])
    return results


def read_exif(path: str | os.PathLike[str]) -> ImageMetadata:
    """Read capture metadata from an image file's header.

    Malformed fields are left ``None`` and reported with an :class:`ExifWarning`.

    Parameters
    ----------
    path : str or os.PathLike
        A JPEG, PNG, TIFF, DNG or camera raw file.

    Returns
    -------
    ImageMetadata

    Raises
    ------
    ImageReadError
        If the file is not a supported image or its header cannot be parsed.

    Examples
    --------
    >>> meta = read_exif("IMG_0001.JPG")  # doctest: +SKIP
    >>> meta.captured_at, meta.exposure_s, meta.iso  # doctest: +SKIP
    (datetime.datetime(2013, 12, 17, 14, 4, 24), 0.02, 100.0)
    """
    metadata, issues = inspect_exif(path)
    for issue in issues:
        warnings.warn(f"{os.fspath(path)}: {issue}", ExifWarning, stacklevel=2)
    return metadata


def metadata_from_tags(tags: Mapping[int, Any]) -> tuple[ImageMetadata, list[str]]:
    """Turn a mapping of EXIF/TIFF tag numbers to values into :class:`ImageMetadata`.

    Parameters
    ----------
    tags : mapping of int to value
        IFD0 and Exif-IFD tags merged (Exif IFD wins on a clash). Values may be as Pillow
        gives them (``IFDRational``, str) or as tifffile does (``(num, den)`` tuples, enums).

    Returns
    -------
    metadata : ImageMetadata
        ``width`` and ``height`` are ``None``: they come from the image, not its tags.
    issues : list of str
    """
    issues: list[str] = []
    serial = _serial(tags.get(_BODY_SERIAL_NUMBER), issues, "BodySerialNumber")
    if serial is None:
        serial = _serial(tags.get(_CAMERA_SERIAL_NUMBER), issues, "CameraSerialNumber")
    metadata = ImageMetadata(
        captured_at=_capture_time(tags, issues),
        exposure_s=_exposure(tags.get(_EXPOSURE_TIME), issues),
        iso=_iso(tags, issues),
        make=_name(tags.get(_MAKE), issues, "Make"),
        model=_name(tags.get(_MODEL), issues, "Model"),
        serial=serial,
        orientation=_orientation(tags.get(_ORIENTATION), issues),
    )
    return metadata, issues


def _tiff_structured(path: Path) -> bool:
    try:
        return is_tiff_structured(path)
    except OSError:  # gone since it was read: nothing to keep either way
        return False


# --- readers ----------------------------------------------------------------------------------

def _exif_with_pillow(path: Path, data: bytes | None, image_format: str) -> tuple[ImageMetadata, list[str]]:
    source = BytesIO(data) if data is not None else str(path)
    # The plugin class rather than Image.open: only the header is parsed here, so Pillow's
    # decompression-bomb check (meant for decoding) must not reject large genuine photos.
    plugin = JpegImagePlugin.JpegImageFile if image_format == "jpeg" else PngImagePlugin.PngImageFile
    said: list[str] = []  # Pillow's warnings about the header ("Invalid APNG", "Corrupt EXIF data")
    try:
        with python_warnings_into(said, "Pillow"), plugin(source) as image:
            width, height = image.size
            issues: list[str] = []
            try:
                exif = image.getexif()
                tags: dict[int, Any] = dict(exif)
                tags.update(exif.get_ifd(_EXIF_IFD))
            except Exception as exc:  # a malformed EXIF block must not make the image unreadable
                issues.append(f"malformed EXIF block ignored ({describe_exception(exc)})")
                tags = {}
            if not tags and len(image.info.get("exif") or b"") > 6:
                issues.append("the EXIF block is present but unreadable (malformed); ignored")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = f"corrupt image header ({describe_exception(exc)})"
        if said:
            reason += "; the decoder also reported: " + "; ".join(repr(line) for line in dict.fromkeys(said))
        raise ImageReadError(path, reason) from None
    metadata, tag_issues = metadata_from_tags(tags)
    warned = [f"{line} (while reading the header)" for line in dict.fromkeys(said)]
    return replace(metadata, width=width, height=height), warned + issues + tag_issues


def _exif_with_tifffile(path: Path) -> tuple[ImageMetadata, list[str]]:
    issues: list[str] = []
    said: list[str] = []  # on success the pixel reader meets (and reports) the same records
    try:
        with tifffile_log_into(said), tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            tags: dict[int, Any] = {}
            for tag in page.tags:
                try:
                    tags[tag.code] = tag.value
                except Exception as exc:
                    issues.append(f"TIFF tag {tag.code} unreadable ({describe_exception(exc)})")
            width, height = int(page.imagewidth), int(page.imagelength)
    except Exception as exc:
        raise tiff_structure_error(path, exc, said) from None
    exif_ifd = tags.pop(_EXIF_IFD, None)
    if isinstance(exif_ifd, Mapping):  # tifffile gives the Exif IFD as {name: value}
        for name, value in exif_ifd.items():
            code = tifffile.TIFF.EXIF_TAGS.get(name)
            if isinstance(code, int):
                tags[code] = value
    elif exif_ifd is not None:
        issues.append("the Exif IFD pointer does not lead to a readable IFD")
    metadata, tag_issues = metadata_from_tags(tags)
    return replace(metadata, width=width, height=height), issues + tag_issues


# --- field parsers: each returns None (and records an issue) on a malformed value -------------

def _raw_bytes(value: Any) -> bytes | None:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("latin-1")  # how Pillow decoded it
        except UnicodeEncodeError:
            return value.encode("utf-8", errors="surrogateescape")
    return None


def _text_value(value: Any) -> str | None:
    raw = _raw_bytes(value)
    if raw is None:
        return None
    return raw.decode("utf-8", errors="replace")


def _name(value: Any, issues: list[str], field: str) -> str | None:
    if value is None:
        return None
    raw = _raw_bytes(value)
    if raw is None:
        issues.append(f"{field} is not text ({value!r})")
        return None
    text = raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()
    if not text:
        return None
    if not text.isprintable():
        issues.append(f"{field} is not readable text ({text!r})")
        return None
    return text


def _serial(value: Any, issues: list[str], field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raw = _raw_bytes(value)
    if raw is None:
        issues.append(f"{field} is not text ({value!r})")
        return None
    raw = raw.rstrip(b"\x00 ").lstrip(b" ")
    if not raw:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return "hex:" + raw.hex()
    return text if text.isprintable() else "hex:" + raw.hex()


def _capture_time(tags: Mapping[int, Any], issues: list[str]) -> datetime | None:
    value = tags.get(_DATETIME_ORIGINAL)
    if value is None:
        return None
    text = _text_value(value)
    if text is None:
        issues.append(f"DateTimeOriginal is not text ({value!r})")
        return None
    text = text.replace("\x00", "").strip()
    match = _DATE_PATTERN.match(text)
    if match is None:
        if not text.strip(" :0-"):
            issues.append(f"DateTimeOriginal is blank ({text!r})")
        else:
            issues.append(f"DateTimeOriginal {text!r} is not a 'YYYY:MM:DD HH:MM:SS' time")
        return None
    try:
        captured = datetime(*(int(group) for group in match.groups()))
    except ValueError as exc:
        if not text.strip(" :0-"):
            issues.append(f"DateTimeOriginal is blank ({text!r})")
        else:
            issues.append(f"DateTimeOriginal {text!r} is not a valid time ({exc})")
        return None
    captured = captured.replace(microsecond=_subseconds(tags.get(_SUBSEC_TIME_ORIGINAL), issues))
    offset = _utc_offset(tags.get(_OFFSET_TIME_ORIGINAL), issues)
    return captured if offset is None else captured.replace(tzinfo=offset)


def _subseconds(value: Any, issues: list[str]) -> int:
    if value is None:
        return 0
    text = (_text_value(value) or "").replace("\x00", "").strip()
    if not text:
        return 0
    if not text.isdigit():
        issues.append(f"SubsecTimeOriginal {text!r} is not a number; ignored")
        return 0
    return int(text[:6].ljust(6, "0"))  # "5" means 0.5 s, "123" 0.123 s


def _utc_offset(value: Any, issues: list[str]) -> timezone | None:
    if value is None:
        return None
    text = (_text_value(value) or "").replace("\x00", "").strip()
    if not text.strip(" :"):
        return None
    match = _OFFSET_PATTERN.match(text)
    if match is None:
        issues.append(f"OffsetTimeOriginal {text!r} is not '+HH:MM'; time kept without offset")
        return None
    sign, hours, minutes = match.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14):
        issues.append(f"OffsetTimeOriginal {text!r} is out of range; time kept without offset")
        return None
    return timezone(-delta if sign == "-" else delta)


def _rational(value: Any) -> float | None:
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(part, int) for part in value):
            numerator, denominator = value  # tifffile's RATIONAL
            return None if denominator == 0 else numerator / denominator
        if len(value) == 1:
            return _rational(value[0])
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _exposure(value: Any, issues: list[str]) -> float | None:
    if value is None:
        return None
    seconds = _rational(value)
    if seconds is None or seconds <= 0 or seconds > _MAX_PLAUSIBLE_EXPOSURE_S:
        issues.append(f"ExposureTime {value!r} is not a plausible exposure time in seconds")
        return None
    return seconds


def _first_number(value: Any) -> float | None:
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _iso(tags: Mapping[int, Any], issues: list[str]) -> float | None:
    value = tags.get(_ISO_SPEED_RATINGS)
    if value is None:
        return None
    iso = _first_number(value)
    if iso is None or iso <= 0:
        issues.append(f"ISOSpeedRatings {value!r} is not a positive number")
        return None
    if iso >= _SATURATED_ISO:  # EXIF 2.3: the real value is stored in one of these
        for code in (_ISO_SPEED, _RECOMMENDED_EXPOSURE_INDEX):
            alternative = _first_number(tags.get(code))
            if alternative is not None and alternative > 0:
                return alternative
    return iso


def _orientation(value: Any, issues: list[str]) -> int | None:
    if value is None:
        return None
    number = _first_number(value)
    if number is None or number != int(number) or not 1 <= number <= 8:
        issues.append(f"Orientation {value!r} is not one of 1-8")
        return None
    return int(number)
