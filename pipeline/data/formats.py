"""What a file is: identify an image file from its first bytes, never from its extension alone.

:func:`detect_format` tells JPEG, PNG, TIFF, DNG and camera raw apart by their signatures (a
TIFF-structured file by its IFD0) and rejects everything else with an
:class:`~pipeline.data.errors.ImageReadError` that says what the file is instead: missing, not a
regular file, empty, truncated, text (an HTML error page saved as ``.jpg``), or an unsupported
image format (GIF, HEIC, ...). :mod:`pipeline.data.exif` and :mod:`pipeline.data.imageio` call it
before reading headers or pixels.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import tifffile

from pipeline.data.decoder_messages import describe_exception, tifffile_log_into
from pipeline.data.errors import ImageReadError

__all__ = ["IMAGE_EXTENSIONS", "RAW_EXTENSIONS", "detect_format", "file_extension", "is_tiff_structured",
           "tiff_structure_error"]

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

_DNG_VERSION = 0xC612  # the IFD0 tag that makes a TIFF a DNG


def detect_format(path: str | os.PathLike[str], *, data: bytes | None = None) -> str:
    """Identify an image file from its content.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    data : bytes, optional
        The file's bytes, already read by the caller (who has checked that it is a regular
        file): identified from them without opening the file again, except that a
        TIFF-structured file is still opened to tell DNG, raw and TIFF apart.

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
    if data is None:
        head = _read_head(path)
    else:
        head = bytes(data[:_HEAD_BYTES])
        if not head:
            raise ImageReadError(path, "empty file (0 bytes)")
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
    if file_extension(path) in RAW_EXTENSIONS:
        return "raw"  # LibRaw identifies raw formats without a fixed signature itself
    raise ImageReadError(path, f"unrecognised file format (first bytes {head[:8].hex(' ')})",
                         "Supported are JPEG, PNG, TIFF, DNG and camera raw; exclude the file.")


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


def tiff_structure_error(path: Path, exc: BaseException, said: list[str]) -> ImageReadError:
    """The error for a TIFF-structured file whose IFDs tifffile could not parse.

    Parameters
    ----------
    path : Path
        The file.
    exc : BaseException
        What tifffile raised.
    said : list of str
        What tifffile logged meanwhile (see :func:`~pipeline.data.decoder_messages.tifffile_log_into`).

    Returns
    -------
    ImageReadError
    """
    reason = f"corrupt or truncated TIFF structure ({describe_exception(exc)})"
    if said:
        reason += "; the decoder also reported: " + "; ".join(repr(line[:300]) for line in dict.fromkeys(said))
    return ImageReadError(path, reason)


def _classify_tiff_structure(path: Path, head: bytes) -> str:
    if head[8:10] == b"CR":
        return "raw"  # Canon CR2
    said: list[str] = []  # on success the pixel reader meets (and reports) the same records
    try:
        with tifffile_log_into(said), tifffile.TiffFile(path) as tif:
            is_dng = _DNG_VERSION in tif.pages.first.tags
    except Exception as exc:  # tifffile raises several types on a broken structure
        raise tiff_structure_error(path, exc, said) from None
    if is_dng:
        return "dng"
    return "raw" if file_extension(path) in RAW_EXTENSIONS else "tiff"


def is_tiff_structured(path: Path) -> bool:
    """Whether the file starts with a TIFF (or BigTIFF) header, as DNG and most camera raws do."""
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


def file_extension(path: Path) -> str:
    """The file name's extension in lower case, without the dot (``""`` when there is none)."""
    return path.suffix[1:].lower()
