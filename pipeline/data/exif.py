"""What a file is, and what its EXIF says about the capture.

:func:`detect_format` identifies a file from its first bytes (never from its extension
alone) and rejects what is not a supported image with an :class:`ImageReadError` that says
what it is instead. :func:`read_exif` returns the capture metadata the age estimators need
(:class:`ImageMetadata`): acquisition time, exposure, ISO, camera make/model/serial and the
orientation tag. It reads only headers, never pixels.

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
  Raw containers that are not TIFF-structured (RAF, CR3, ORF, RW2, ...) yield empty metadata
  with an issue saying so.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from typing import Any, Iterator, Mapping

import tifffile
from PIL import JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from pipeline.data.errors import ImageReadError

__all__ = [
    "ExifWarning",
    "IMAGE_EXTENSIONS",
    "ImageMetadata",
    "RAW_EXTENSIONS",
    "detect_format",
    "inspect_exif",
    "metadata_from_tags",
    "read_exif",
]

#: File name extensions of raw formats read with rawpy (lower case, without the dot).
RAW_EXTENSIONS = frozenset({
    "3fr", "arw", "cr2", "cr3", "crw", "dcr", "erf", "iiq", "k25", "kdc", "mef", "mos", "mrw",
    "nef", "nrw", "orf", "pef", "raf", "rw2", "rwl", "sr2", "srf", "srw", "x3f",
})
#: Extensions of every file type this package reads (lower case, without the dot).
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "png", "tif", "tiff", "dng"}) | RAW_EXTENSIONS

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_HEAD_BYTES = 512

# Raw containers with a signature of their own (TIFF-based ones are found via _TIFF_MAGICS).
_RAW_SIGNATURES = (
    (0, b"IIRO"), (0, b"IIRS"), (0, b"MMOR"),  # Olympus ORF
    (0, b"IIU\x00"),  # Panasonic RW2
    (0, b"FUJIFILMCCD-RAW"),  # Fujifilm RAF
    (4, b"ftypcrx "),  # Canon CR3
    (0, b"FOVb"),  # Sigma X3F
    (0, b"\x00MRM"),  # Minolta MRW
)

# Formats that are recognised so that the error can name them, but are not read.
_OTHER_SIGNATURES = (
    (0, b"GIF87a", "GIF"), (0, b"GIF89a", "GIF"), (0, b"BM", "BMP"),
    (8, b"WEBP", "WebP"), (4, b"ftypheic", "HEIC"), (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"), (4, b"ftypavif", "AVIF"), (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x0a", "JPEG XL"), (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"), (0, b"8BPS", "Photoshop PSD"),
    (0, b"%PDF", "PDF"), (0, b"PK\x03\x04", "ZIP archive"),
)

# EXIF / TIFF tag numbers.
_MAKE, _MODEL, _ORIENTATION = 0x010F, 0x0110, 0x0112
_EXIF_IFD = 0x8769
_EXPOSURE_TIME = 0x829A
_ISO_SPEED_RATINGS = 0x8827  # called PhotographicSensitivity since EXIF 2.3
_RECOMMENDED_EXPOSURE_INDEX, _ISO_SPEED = 0x8832, 0x8833
_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, _SUBSEC_TIME_ORIGINAL = 0x9003, 0x9011, 0x9291
_BODY_SERIAL_NUMBER = 0xA431
_CAMERA_SERIAL_NUMBER = 0xC62F  # DNG, IFD0
_DNG_VERSION = 0xC612

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


def detect_format(path: str | os.PathLike[str]) -> str:
    """Identify an image file from its content.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    str
        ``'jpeg'``, ``'png'``, ``'tiff'``, ``'dng'`` or ``'raw'``. A TIFF-structured file is
        ``'dng'`` when IFD0 has a DNGVersion tag, ``'raw'`` when it is a CR2 or its extension
        is a raw one (NEF, ARW, ... are TIFF inside), ``'tiff'`` otherwise. A file whose
        extension disagrees with its content is identified by its content.

    Raises
    ------
    ImageReadError
        If the file is missing, not a regular file (a named pipe, device or socket is refused
        before it is opened, since reading one can block forever), empty, text (e.g. an HTML
        error page saved as ``.jpg``), an image format that is not supported (GIF, HEIC, ...)
        or unrecognisable.
    """
    path = Path(path)
    head = _read_head(path)
    for magic, name in ((_JPEG_MAGIC, "JPEG"), (_PNG_MAGIC, "PNG"), *((m, "TIFF") for m in _TIFF_MAGICS)):
        if len(head) < len(magic) and magic.startswith(head):
            raise ImageReadError(path, f"truncated file: only {len(head)} byte(s), the start of a {name} file")
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head[:4] in _TIFF_MAGICS:
        return _classify_tiff_structure(path, head)
    if any(head[offset:offset + len(sig)] == sig for offset, sig in _RAW_SIGNATURES):
        return "raw"
    text_start = _text_start(head)
    if text_start is not None:
        raise ImageReadError(path, f"not an image: the file is text, starting with {text_start}",
                             "Replace it with the original image file or exclude it from the manifest.")
    for offset, signature, name in _OTHER_SIGNATURES:
        if head[offset:offset + len(signature)] == signature:
            raise ImageReadError(
                path, f"{name} files are not supported (JPEG, PNG, TIFF, DNG and camera raw are)",
                "Use the camera's original file or exclude it from the manifest.")
    if _extension(path) in RAW_EXTENSIONS:
        return "raw"  # LibRaw identifies raw formats without a fixed signature itself
    raise ImageReadError(path, f"unrecognised file format (first bytes {head[:8].hex(' ')})",
                         "Supported are JPEG, PNG, TIFF, DNG and camera raw; exclude the file.")


def inspect_exif(
    path: str | os.PathLike[str],
    *,
    image_format: str | None = None,
    data: bytes | None = None,
) -> tuple[ImageMetadata, list[str]]:
    """Read capture metadata and return it with the problems found in it.

    Parameters
    ----------
    path : str or os.PathLike
        The image file (used for reading unless `data` is given, and in messages).
    image_format : str, optional
        The result of :func:`detect_format` if already known; detected otherwise.
    data : bytes, optional
        The file's bytes if already in memory (JPEG/PNG only), to avoid reading it twice.

    Returns
    -------
    metadata : ImageMetadata
    issues : list of str
        One sentence per malformed field (the field is ``None``), empty when all is well.

    Raises
    ------
    ImageReadError
        If the file is not a supported image or its header cannot be parsed.
    """
    path = Path(path)
    image_format = image_format or detect_format(path)
    if image_format in ("jpeg", "png"):
        return _exif_with_pillow(path, data, image_format)
    if _is_tiff_structured(path):
        metadata, issues = _exif_with_tifffile(path)
        if image_format in ("dng", "raw"):
            metadata = replace(metadata, width=None, height=None)  # IFD0 is often a preview
        return metadata, issues
    return ImageMetadata(), [
        f"EXIF is not read from .{_extension(path) or '?'} raw files (not TIFF-structured); "
        "fill captured_at, exposure_s and iso in the manifest by hand"]


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


# --- identification -------------------------------------------------------------------------

_SPECIAL_FILES = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                  (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def _read_head(path: Path) -> bytes:
    try:
        mode = os.stat(path).st_mode  # before opening: opening a named pipe blocks until a writer comes
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "special file")
            raise ImageReadError(path, f"not a regular file ({kind}): reading it could block forever "
                                 "or never end", "Point to the image file itself.")
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found", "Check the path (relative paths are relative "
                             "to the manifest's folder).") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not a file", "Point to an image file.") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc.strerror or exc})",
                             "Check the file's permissions and the disk.") from None
    if not head:
        raise ImageReadError(path, "empty file (0 bytes)")
    return head


@contextmanager
def _tifffile_log_into(said: list[str]) -> Iterator[None]:
    """Collect tifffile's log records from this thread into `said` instead of letting them print.

    tifffile logs what it repairs or skips ("incorrect StripByteCounts count") on the
    ``tifffile`` logger, without the file name. Records of other threads pass through untouched.
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


_WARNINGS_LOCK = threading.Lock()  # warnings.catch_warnings swaps process-wide state


@contextmanager
def _python_warnings_into(said: list[str], source: str) -> Iterator[None]:
    """Record the Python warnings raised in the block into `said` as "<source>: <message>".

    The warning filters in force still apply (an ignored warning is not recorded, one turned
    into an error raises). Deprecation warnings are for developers, not about the file: they
    are re-issued as usual. ``catch_warnings`` is process-wide, so blocks are serialised with a
    lock; a warning raised by another thread meanwhile is recorded too.
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


def _structure_error(path: Path, exc: BaseException, said: list[str]) -> ImageReadError:
    reason = f"corrupt or truncated TIFF structure ({_describe(exc)})"
    if said:
        reason += "; the decoder also reported: " + "; ".join(repr(line[:300]) for line in dict.fromkeys(said))
    return ImageReadError(path, reason)


def _classify_tiff_structure(path: Path, head: bytes) -> str:
    if head[8:10] == b"CR":
        return "raw"  # Canon CR2
    said: list[str] = []  # on success the pixel reader meets (and reports) the same records
    try:
        with _tifffile_log_into(said), tifffile.TiffFile(path) as tif:
            is_dng = _DNG_VERSION in tif.pages.first.tags
    except Exception as exc:  # tifffile raises several types on a broken structure
        raise _structure_error(path, exc, said) from None
    if is_dng:
        return "dng"
    return "raw" if _extension(path) in RAW_EXTENSIONS else "tiff"


def _is_tiff_structured(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in _TIFF_MAGICS


def _text_start(head: bytes) -> str | None:
    """The quoted start of `head` if it looks like text, else None."""
    for bom, codec in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):  # e.g. an error page saved by a Windows tool
            body = head[len(bom):]
            return _text_start(body[:len(body) // 2 * 2].decode(codec, errors="replace").encode("utf-8"))
    if b"\x00" in head:
        return None
    text = None
    for cut in range(4):  # `head` may end inside a multi-byte UTF-8 character
        try:
            text = head[:len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    if text is None:
        return None
    text = text.lstrip("\ufeff")
    stripped = text.strip()
    if not stripped or sum(ch.isprintable() or ch in "\t\r\n" for ch in text) < 0.95 * len(text):
        return None
    first_line = stripped.splitlines()[0]
    more = len(first_line) > 40 or len(stripped) > len(first_line)
    return repr(first_line[:40] + ("…" if more else ""))


def _extension(path: Path) -> str:
    return path.suffix[1:].lower()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- readers ----------------------------------------------------------------------------------

def _exif_with_pillow(path: Path, data: bytes | None, image_format: str) -> tuple[ImageMetadata, list[str]]:
    source = BytesIO(data) if data is not None else str(path)
    # The plugin class rather than Image.open: only the header is parsed here, so Pillow's
    # decompression-bomb check (meant for decoding) must not reject large genuine photos.
    plugin = JpegImagePlugin.JpegImageFile if image_format == "jpeg" else PngImagePlugin.PngImageFile
    said: list[str] = []  # Pillow's warnings about the header ("Invalid APNG", "Corrupt EXIF data")
    try:
        with _python_warnings_into(said, "Pillow"), plugin(source) as image:
            width, height = image.size
            issues: list[str] = []
            try:
                exif = image.getexif()
                tags: dict[int, Any] = dict(exif)
                tags.update(exif.get_ifd(_EXIF_IFD))
            except Exception as exc:  # a malformed EXIF block must not make the image unreadable
                issues.append(f"malformed EXIF block ignored ({_describe(exc)})")
                tags = {}
            if not tags and len(image.info.get("exif") or b"") > 6:
                issues.append("the EXIF block is present but unreadable (malformed); ignored")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = f"corrupt image header ({_describe(exc)})"
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
        with _tifffile_log_into(said), tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            tags: dict[int, Any] = {}
            for tag in page.tags:
                try:
                    tags[tag.code] = tag.value
                except Exception as exc:
                    issues.append(f"TIFF tag {tag.code} unreadable ({_describe(exc)})")
            width, height = int(page.imagewidth), int(page.imagelength)
    except Exception as exc:
        raise _structure_error(path, exc, said) from None
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
