"""Read an image file as pixels in its sensor frame, with its levels and capture metadata.

One entry point, :func:`read_image`, for every supported format:

========  ===========================================  =====================================
format    decoder                                      pixels
========  ===========================================  =====================================
jpeg      simplejpeg, accurate DCT and upsampling      H×W×3 uint8, or H×W uint8 (grayscale)
png       Pillow                                       H×W×3 / H×W uint8, H×W uint16 (16-bit gray)
tiff      tifffile (Pillow where a codec is missing)   H×W×3 / H×W, uint8 or uint16 as stored
dng, raw  rawpy (LibRaw), before any processing        H×W uint16 CFA mosaic (visible area)
========  ===========================================  =====================================

Pixel positions stay sensor positions: EXIF orientation is recorded but never applied, and an
image stored rotated relative to its device's frame is turned back only when the caller says
how it was turned (see :func:`read_image`). Every unreadable file raises
:class:`~pipeline.data.errors.ImageReadError` naming the file and the cause.

Policies
--------
* **Header first.** The frame size (``max_pixels`` and the device frame, ``expected_shape``
  with ``rotate_back``) is checked from the file's header before any pixel is decoded.
* **Palette and low-bit-depth images are refused** (palette PNG/TIFF, 1-, 2- and 4-bit
  samples): their pixels are indices or coarse levels, with the sensor noise that defect
  analysis needs quantised away. GIF and BMP are not read at all.
* **One frame.** A file holding several images (MPO or Ultra HDR JPEG, animated PNG,
  multi-page TIFF) is read as its first image; :attr:`SensorImage.frames` says how many it
  holds, a note is added to :attr:`SensorImage.notes` and a ``logging`` warning names the file.
* **Nothing printed raw.** What the decoders say during a read (Pillow's Python warnings,
  including its ``DecompressionBombWarning`` for an image that is within `max_pixels`;
  tifffile's log records; libtiff's and LibRaw's lines on the C-level stderr) is captured:
  appended to the reason of the :class:`ImageReadError` when the read fails, otherwise kept in
  :attr:`SensorImage.notes` and logged as a warning naming the file. The C-level capture
  redirects file descriptor 2 only around LibRaw and Pillow-libtiff decodes, one thread at a
  time (they are serialised across threads), and whatever the process writes to descriptor 2
  meanwhile is captured with it.
* **Regular files only.** A named pipe, device or socket is refused before it is opened, since
  reading one can block forever (:func:`~pipeline.data.formats.detect_format`).

Identifying a file (:mod:`pipeline.data.formats`), reading its EXIF (:mod:`pipeline.data.exif`) and
capturing what decoders print (:mod:`pipeline.data.decoder_messages`) are modules of their own.

Why one module: some 700 lines, because the four format readers each apply the policies
above (header-first size checks, refused layouts, frame counts, the notes) while decoding, through
the same private helpers and :class:`SensorImage`; split per format, every reader would import
those helpers back, and the policies would be spread over five files.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rawpy
import simplejpeg
import tifffile
from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.data.decoder_messages import (c_stderr_into, decoders_said, describe_exception, python_warnings_into,
                                            tifffile_log_into, unique_lines)
from pipeline.data.errors import ImageReadError
from pipeline.data.exif import ExifWarning, ImageMetadata, inspect_exif
from pipeline.data.formats import detect_format
from pipeline.logs import get_logger

__all__ = ["DEFAULT_MAX_PIXELS", "SensorImage", "jpeg_frame", "read_image"]

logger = get_logger(__name__)

#: Images with more pixels than this are refused before decoding (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 250_000_000

_CFA_LETTERS = {"R": 0, "G": 1, "B": 2}
_PNG_COLOUR_TYPES = {0: "gray", 2: "rgb", 3: "palette", 4: "gray+alpha", 6: "rgb+alpha"}


@dataclass(frozen=True, eq=False, repr=False)
class SensorImage:
    """An image's stored pixels in the sensor frame, with levels and capture metadata.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``kind == 'rgb'``: H×W×3 uint8 or uint16; ``'gray'``: H×W; ``'cfa'``: H×W uint16, the
        raw mosaic's visible area. No black level has been subtracted.
    kind : {'rgb', 'gray', 'cfa'}
    cfa_pattern : numpy.ndarray or None
        For ``'cfa'``: the colour of each position of the repeating CFA tile (2×2 for Bayer,
        6×6 for X-Trans) as 0 = red, 1 = green, 2 = blue, anchored at ``pixels[0, 0]``:
        pixel ``(y, x)`` has colour ``cfa_pattern[y % n, x % n]``. None otherwise.
    black_level : float or numpy.ndarray
        For ``'cfa'``: an array shaped like ``cfa_pattern`` with the black level at each tile
        position. 0 for rendered (JPEG/PNG/TIFF) images.
    white_level : float
        The largest meaningful value (the sensor's saturation level for ``'cfa'``,
        ``2**bit_depth - 1`` otherwise).
    bit_depth : int
        Bits per sample as stored (for ``'cfa'``: the bits the white level needs).
    metadata : ImageMetadata
        Capture metadata; ``width``/``height`` are those of the stored pixels.
    path : str
    format : {'jpeg', 'png', 'tiff', 'dng', 'raw'}
        Detected from the content, not the extension.
    rotated_back : int
        Quarter turns (``numpy.rot90``'s ``k``) applied to bring the stored pixels back to the
        device frame; 0 when the pixels are as stored.
    frames : int
        Images the file holds (MPO/multi-picture JPEG, animated PNG, multi-page TIFF); only the
        first is read. 1 for an ordinary file.
    notes : tuple of str
        What a caller may want to record about this read, one sentence each, without the file
        name: that only the first of several frames was read, and what the decoders said
        (warnings captured instead of printed). Each note has also been logged as a warning
        naming the file (logger ``pipeline.data.imageio``). Empty for an ordinary file.
    """

    pixels: np.ndarray
    kind: str
    cfa_pattern: np.ndarray | None
    black_level: float | np.ndarray
    white_level: float
    bit_depth: int
    metadata: ImageMetadata
    path: str
    format: str
    rotated_back: int = 0
    frames: int = 1
    notes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the pixels."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    def __repr__(self) -> str:
        return (f"SensorImage(path={self.path!r}, format={self.format!r}, kind={self.kind!r}, "
                f"shape={self.pixels.shape}, dtype={self.pixels.dtype}, bit_depth={self.bit_depth}, "
                f"rotated_back={self.rotated_back}, frames={self.frames}, notes={len(self.notes)})")


def read_image(
    path: str | os.PathLike[str],
    *,
    expected_shape: tuple[int, int] | None = None,
    rotate_back: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    expected_kind: str | None = None,
    expected_bit_depth: int | None = None,
    data: bytes | None = None,
    decode_into: np.ndarray | None = None,
) -> SensorImage:
    """Read an image file as stored pixels in the sensor frame.

    The format is detected from the file's content; an extension that disagrees with the
    content is not an error. EXIF orientation is never applied to the pixels.

    Sensor-frame rule (used when `expected_shape` is given):

    * stored (H, W) equal to `expected_shape`: returned as stored. (A 180° turn keeps the
      shape and cannot be detected; the pixels are taken as stored.)
    * stored (W, H), i.e. rotated by 90° one way or the other: the file alone cannot say which
      way, because EXIF Orientation describes how to display the stored pixels, not how they
      were produced, and software that rotates pixels usually resets it to 1. Guessing wrong
      moves every pixel, so such an image is rejected with :class:`ImageReadError` unless the
      caller passes `rotate_back` (1 or 3: ``numpy.rot90``'s ``k`` that undoes the rotation),
      asserting the direction. A CFA mosaic is never rotated (a transposed mosaic is a
      different sensor layout) and is always rejected.
    * any other shape (resized, cropped, another camera): rejected with both shapes.
    * `expected_kind` / `expected_bit_depth` given and different (a grayscale or 16-bit file
      among a device's 8-bit RGB JPEGs): rejected, since its residuals are on another scale
      and cannot be pooled with the device's other images.

    Parameters
    ----------
    path : str or os.PathLike
        A JPEG, PNG, TIFF (8 or 16 bit), DNG or camera raw file.
    expected_shape : (int, int), optional
        (height, width) of the device's usual frame, to check the stored pixels against.
    rotate_back : {1, 3}, optional
        Quarter turns counter-clockwise (``numpy.rot90``'s ``k``) that undo a known 90°
        rotation of images stored transposed; only used for such images. Needs
        `expected_shape`.
    max_pixels : int, default 250_000_000
        Images larger than this are refused from their header, before decoding. (Pillow's own
        ``PIL.Image.MAX_IMAGE_PIXELS`` also applies to PNG: above twice it the file is refused;
        above it, the image is read and Pillow's warning becomes a note.)
    expected_kind : {'rgb', 'gray', 'cfa'}, optional
        The kind of the device's images (:attr:`SensorImage.kind`), to check this one against.
    expected_bit_depth : int, optional
        The device's bits per sample (:attr:`SensorImage.bit_depth`), to check against.
    data : bytes, optional
        The file's bytes, already read by the caller (for example to hash them), who has checked
        that `path` is a regular file. A JPEG or PNG is then identified, decoded and its EXIF read
        from them, without reading the file again; TIFF, DNG and raw files are still read from
        `path` by their decoders. `path` is still what messages name.
    decode_into : numpy.ndarray, optional
        A writable, C-contiguous uint8 array to decode a JPEG into, used when it has at least
        height × width × channels elements (else a new array is allocated): a caller decoding
        many images reuses one buffer instead of allocating (and page-faulting) one per image.
        The returned pixels are then a view of it, overwritten by the next decode into it.
        Ignored for other formats, and when the image is rotated back (a new array).

    Returns
    -------
    SensorImage

    Raises
    ------
    ImageReadError
        For every file that cannot be read as an image in its sensor frame: missing, empty,
        not a regular file (named pipe, device), truncated, corrupt, text, unsupported format
        or layout (CMYK JPEG, 16-bit RGB PNG, palette or 1/2/4-bit image, float TIFF,
        non-Bayer-like raw), larger than `max_pixels`, or not in the device frame (shape, kind
        or bit depth). Size and frame are checked from the header, before decoding.
    ValueError
        If `expected_shape`, `rotate_back`, `max_pixels`, `expected_kind` or
        `expected_bit_depth` is invalid.
    RuntimeError
        If ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` has been set to True by other code, which
        would make Pillow pad truncated files silently.

    Examples
    --------
    >>> image = read_image("IMG_0001.JPG", expected_shape=(3000, 4000))  # doctest: +SKIP
    >>> image.kind, image.pixels.shape, image.metadata.exposure_s  # doctest: +SKIP
    ('rgb', (3000, 4000, 3), 0.008)
    """
    expected_shape = _check_arguments(expected_shape, rotate_back, max_pixels)
    _check_layout_arguments(expected_kind, expected_bit_depth)
    path = Path(path)
    limits = _Limits(int(max_pixels), expected_shape, rotate_back)
    _check_decode_into(decode_into)
    image_format = detect_format(path, data=data)
    said: list[str] = []  # what the decoders said, captured instead of printed
    try:
        if image_format == "jpeg":
            image = _read_jpeg(path, limits, data, decode_into)
        elif image_format == "png":
            image = _read_png(path, limits, said, data)
        elif image_format == "tiff":
            image = _read_tiff(path, limits, said)
        else:
            image = _read_raw(path, image_format, limits, said)
    except ImageReadError as exc:
        if not said:
            raise
        raise ImageReadError(exc.path, f"{exc.reason}; {decoders_said(said)}", exc.advice) from None
    height, width = image.pixels.shape[:2]
    image = replace(image, metadata=replace(image.metadata, width=int(width), height=int(height)),
                    notes=image.notes + tuple(f"decoder message: {line}" for line in unique_lines(said)))
    image = _to_device_frame(image, expected_shape, rotate_back)
    _check_layout(image, expected_kind, expected_bit_depth)
    for note in image.notes:
        logger.warning("%s: %s", path, note)
    return image


# --- argument checks and the sensor frame -----------------------------------------------------

def _check_arguments(expected_shape, rotate_back, max_pixels) -> tuple[int, int] | None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if rotate_back is not None:
        if rotate_back not in (1, 3) or isinstance(rotate_back, bool):
            raise ValueError(f"rotate_back must be 1 or 3 (numpy.rot90's k), got {rotate_back!r}")
        if expected_shape is None:
            raise ValueError("rotate_back needs expected_shape: give the device frame's (height, width)")
    if expected_shape is None:
        return None
    try:
        height, width = (int(side) for side in expected_shape)
    except (TypeError, ValueError):
        raise ValueError(f"expected_shape must be (height, width), got {expected_shape!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"expected_shape must be positive, got {expected_shape!r}")
    return height, width


_KIND_WORDS = {"rgb": "colour (RGB)", "gray": "grayscale", "cfa": "raw CFA mosaic"}


def _check_layout_arguments(expected_kind, expected_bit_depth) -> None:
    if expected_kind is not None and expected_kind not in _KIND_WORDS:
        raise ValueError(f"expected_kind must be one of {', '.join(_KIND_WORDS)}, got {expected_kind!r}")
    if expected_bit_depth is not None and (isinstance(expected_bit_depth, bool)
                                           or not isinstance(expected_bit_depth, (int, np.integer))
                                           or expected_bit_depth <= 0):
        raise ValueError(f"expected_bit_depth must be a positive integer, got {expected_bit_depth!r}")


def _check_layout(image: SensorImage, expected_kind, expected_bit_depth) -> None:
    if expected_kind is not None and image.kind != expected_kind:
        raise ImageReadError(
            image.path, f"{_KIND_WORDS[image.kind]} image in a device whose images are "
            f"{_KIND_WORDS[expected_kind]}: its residuals cannot be pooled with theirs",
            "Use the camera's original file or exclude it from the manifest.")
    if expected_bit_depth is not None and image.bit_depth != expected_bit_depth:
        raise ImageReadError(
            image.path, f"{image.bit_depth}-bit samples in a device whose images are {expected_bit_depth}-bit: "
            "residual levels would not be comparable",
            "Use the camera's original file or exclude it from the manifest.")


def _check_decode_into(buffer) -> None:
    if buffer is None:
        return
    if (not isinstance(buffer, np.ndarray) or buffer.dtype != np.uint8 or not buffer.flags.c_contiguous
            or not buffer.flags.writeable):
        raise ValueError("decode_into must be a writable, C-contiguous uint8 numpy array "
                         "(e.g. np.empty(height * width * 3, np.uint8)), or None")


class _Limits(NamedTuple):
    """What the header is checked against before decoding."""

    max_pixels: int
    expected_shape: tuple[int, int] | None
    rotate_back: int | None


def _check_header(path: Path, height: int, width: int, limits: _Limits, *, cfa: bool = False) -> None:
    """Refuse, from the header's frame size, what would be refused after decoding."""
    _check_size(path, height, width, limits.max_pixels)
    _device_turn(path, (height, width), limits.expected_shape, limits.rotate_back, cfa)


def _to_device_frame(image: SensorImage, expected_shape, rotate_back) -> SensorImage:
    turn = _device_turn(Path(image.path), image.shape, expected_shape, rotate_back, image.kind == "cfa")
    if not turn:
        return image
    return replace(image, pixels=np.ascontiguousarray(np.rot90(image.pixels, turn)), rotated_back=turn)


def _device_turn(path: Path, stored: tuple[int, int], expected_shape, rotate_back, cfa: bool) -> int:
    """Quarter turns that bring a `stored` (height, width) frame to the device frame, or raise."""
    if expected_shape is None or stored == expected_shape:
        return 0

    def size(shape):
        return f"{shape[1]}×{shape[0]}"

    if stored != expected_shape[::-1] or stored[0] == stored[1]:
        raise ImageReadError(
            path,
            f"stored as {size(stored)} (width×height) but the device frame is {size(expected_shape)}: "
            "a resized or cropped image (or another camera's) does not keep sensor positions",
            "Use the original file or exclude it from the manifest.")
    if cfa:
        raise ImageReadError(
            path,
            f"raw mosaic is {size(stored)} but the device frame is {size(expected_shape)}: a raw "
            "file is never stored rotated, so this is another sensor layout",
            "Check the device of this file in the manifest.")
    if rotate_back is None:
        raise ImageReadError(
            path,
            f"stored rotated 90° relative to the device frame ({size(stored)} vs {size(expected_shape)}); "
            "the rotation direction cannot be recovered reliably, so pixel positions are not sensor "
            "positions",
            "Exclude it, supply the original, or pass rotate_back if you know how it was rotated.")
    return rotate_back


def _check_size(path: Path, height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageReadError(path, f"header gives an empty image ({width}×{height})")
    if height * width > max_pixels:
        raise ImageReadError(
            path, f"{width}×{height} = {height * width:,} pixels exceeds the limit of {max_pixels:,}",
            "Raise max_pixels if the file is genuine, or exclude it.")


_QUANTISED_ADVICE = "Use the camera's original file or exclude it from the manifest."


def _quantised_error(path: Path, what: str) -> ImageReadError:
    """The one refusal for palette and low-bit-depth images, whatever their format."""
    if what.startswith("palette"):
        why = ("its pixels are indices into a table of at most 256 colours, so the sensor noise "
               "defect analysis needs has been quantised away")
    else:
        why = "too few levels per sample: the sensor noise defect analysis needs has been quantised away"
    return ImageReadError(path, f"{what} image: {why}", _QUANTISED_ADVICE)


def _metadata(path: Path, image_format: str, data: bytes | None = None) -> ImageMetadata:
    metadata, issues = inspect_exif(path, image_format=image_format, data=data)
    for issue in issues:
        warnings.warn(f"{path}: {issue}", ExifWarning, stacklevel=3)
    return metadata


def _pillow_bomb_error(path: Path, exc: Exception) -> ImageReadError:
    return ImageReadError(path, f"too large for Pillow's decompression-bomb limit ({exc})",
                          "Raise PIL.Image.MAX_IMAGE_PIXELS if the file is genuine, or exclude it.")


def _check_pillow_is_strict() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code): Pillow would pad "
            "truncated images silently. Set it back to False before reading images for analysis.")


def _frames_note(count: int, what: str) -> tuple[str, ...]:
    return (f"the file holds {count} {what}; only the first was read",) if count > 1 else ()


# --- JPEG -------------------------------------------------------------------------------------

_ALTERED_ADVICE = ("Cameras write clean JPEGs, so the file was altered or damaged after capture: use the "
                   "camera's original file, or exclude it.")


def _read_jpeg(path: Path, limits: _Limits, data: bytes | None = None,
               decode_into: np.ndarray | None = None) -> SensorImage:
    data = path.read_bytes() if data is None else data
    try:
        height, width, colourspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise _jpeg_header_error(path, data, exc) from None
    _check_header(path, height, width, limits)
    if colourspace in ("CMYK", "YCCK"):
        raise ImageReadError(
            path, f"{colourspace} JPEG: not supported for defect analysis (no camera writes CMYK, "
            "so the file has been converted for print and its pixels are no longer the camera's)",
            "Use the camera's original file or exclude it.")
    gray = colourspace == "Gray"
    try:
        # strict: libjpeg's recoverable errors (premature end, corrupt data) raise instead of
        # being papered over; fastdct/fastupsample off: bit-identical to Pillow.
        size = height * width * (1 if gray else 3)
        buffer = decode_into[:size] if decode_into is not None and decode_into.size >= size else None
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB",
                                        fastdct=False, fastupsample=False, strict=True, buffer=buffer)
    except (ValueError, RuntimeError) as exc:
        message = str(exc)
        if "Premature end" in message:
            raise ImageReadError(path, f"truncated JPEG data (libjpeg-turbo: {message})") from None
        if message.startswith("Corrupt JPEG data"):
            raise ImageReadError(
                path, f"irregular JPEG data: libjpeg-turbo warns {message!r}; it could decode on by "
                "skipping or guessing data, which strict reading refuses", _ALTERED_ADVICE) from None
        raise ImageReadError(path, f"corrupt JPEG data (libjpeg-turbo: {message})") from None
    if gray:
        pixels = pixels[:, :, 0]
    frames = _jpeg_image_count(data)
    return SensorImage(pixels=pixels, kind="gray" if gray else "rgb", cfa_pattern=None,
                       black_level=0.0, white_level=255.0, bit_depth=8,
                       metadata=_metadata(path, "jpeg", data), path=str(path), format="jpeg",
                       frames=frames, notes=_frames_note(frames, "images (an MPO or multi-picture JPEG)"))


def jpeg_frame(data: bytes) -> tuple[tuple[int, int], str, int] | None:
    """Frame ``(height, width)``, kind and bit depth that :func:`read_image` gives a JPEG, from its header.

    None when ``data`` is not a JPEG whose header libjpeg-turbo reads, or is one that
    :func:`read_image` refuses whatever its pixels (CMYK, YCCK): the caller then decodes it
    and gets the reason. A JPEG whose header reads but whose data is corrupt still gets a
    frame here; decoding it fails later with the reason.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        height, width, colourspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    except Exception:  # simplejpeg raises ValueError, KeyError... on a header it cannot parse
        return None
    if colourspace in ("CMYK", "YCCK"):
        return None
    return (int(height), int(width)), "gray" if colourspace == "Gray" else "rgb", 8


def _jpeg_header_error(path: Path, data: bytes, exc: ValueError) -> ImageReadError:
    """Tell a recoverable libjpeg warning in the header from a broken or truncated header."""
    message = str(exc)
    try:
        simplejpeg.decode_jpeg_header(data, strict=False)
        recoverable = "Premature end" not in message
    except Exception:  # simplejpeg raises ValueError, KeyError... on a header it cannot parse
        recoverable = False
    if recoverable:
        return ImageReadError(
            path, f"irregular JPEG header: libjpeg-turbo warns {message!r}; it could read on by "
            "skipping the irregularity, which strict reading refuses", _ALTERED_ADVICE)
    return ImageReadError(path, f"corrupt or truncated JPEG header (libjpeg-turbo: {message}; the file has "
                                f"{len(data):,} bytes)")


def _jpeg_image_count(data: bytes) -> int:
    """Images listed by the JPEG's multi-picture index (APP2 'MPF'): 2+ for MPO and Ultra HDR.

    Only the marker segments before the first scan are looked at; a missing or malformed
    index counts as one image.
    """
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            break
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xE2 and data[position + 4:position + 8] == b"MPF\x00":
            return _mpf_image_count(data[position + 8:position + 2 + length])
        position += 2 + length
    return 1


def _mpf_image_count(index: bytes) -> int:
    """NumberOfImages (tag 0xB001) of an MPF index, a little TIFF structure."""
    order = {b"II": "<", b"MM": ">"}.get(index[:2])
    try:
        if order is None:
            return 1
        (offset,) = struct.unpack_from(order + "I", index, 4)
        (entries,) = struct.unpack_from(order + "H", index, offset)
        for entry in range(entries):
            tag, kind, count, value = struct.unpack_from(order + "HHII", index, offset + 2 + 12 * entry)
            if tag == 0xB001 and kind == 4 and count == 1:
                return max(1, min(int(value), 1000))
    except struct.error:
        pass
    return 1


# --- PNG --------------------------------------------------------------------------------------

def _read_png(path: Path, limits: _Limits, said: list[str], data: bytes | None = None) -> SensorImage:
    if data is None:
        with open(path, "rb") as fh:
            header = fh.read(33)
    else:
        header = data[:33]
    if len(header) < 33 or header[12:16] != b"IHDR":
        raise ImageReadError(path, "truncated or corrupt PNG header (no IHDR chunk)")
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    bit_depth, colour_type = header[24], header[25]
    _check_header(path, height, width, limits)
    if colour_type == 3:
        raise _quantised_error(path, "palette (indexed-colour) PNG")
    if bit_depth < 8:
        raise _quantised_error(path, f"{bit_depth}-bit {_PNG_COLOUR_TYPES.get(colour_type, 'colour')} PNG")
    if bit_depth == 16 and colour_type != 0:
        raise ImageReadError(
            path, f"16-bit {_PNG_COLOUR_TYPES.get(colour_type, 'colour')} PNG: Pillow would reduce "
            "it to 8 bits, losing the low-order bits defect analysis needs",
            "Convert it losslessly to a 16-bit TIFF, or exclude it.")
    _check_pillow_is_strict()
    data = path.read_bytes() if data is None else data
    if not _png_is_complete(data):
        # Pillow stops reading at the last pixel row, so a file cut within its final bytes
        # (the end of the compressed stream, the IEND chunk) would load without complaint.
        raise ImageReadError(path, f"truncated PNG data: the file ends ({len(data):,} bytes) before its "
                                   "IEND chunk")
    try:
        with python_warnings_into(said, "Pillow"):  # the chunks are parsed here, not in load()
            image = Image.open(BytesIO(data), formats=["PNG"])
        with image:
            frames = int(getattr(image, "n_frames", 1))
            image.load()
            pixels, kind, depth = _pillow_pixels(path, image)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise _pillow_bomb_error(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc).lower()
        if "too large" in message:
            raise ImageReadError(
                path, f"a compressed chunk expands beyond Pillow's safety limit, as in a decompression bomb "
                f"(Pillow: {describe_exception(exc)})", "Exclude the file, or re-save it without the oversized "
                "text or colour-profile chunk.") from None
        cause = "truncated PNG data" if "truncated" in message else "corrupt PNG data"
        if isinstance(exc, UnidentifiedImageError):
            exc = UnidentifiedImageError("Pillow cannot parse its chunks")  # its text names a BytesIO
        raise ImageReadError(path, f"{cause} (Pillow: {describe_exception(exc)})") from None
    return SensorImage(pixels=pixels, kind=kind, cfa_pattern=None, black_level=0.0,
                       white_level=float(2 ** depth - 1), bit_depth=depth,
                       metadata=_metadata(path, "png", data), path=str(path), format="png",
                       frames=frames, notes=_frames_note(frames, "frames (an animated PNG)"))


def _png_is_complete(data: bytes) -> bool:
    """Whether the PNG's chunk sequence reaches an IEND chunk inside `data` (CRCs are Pillow's job)."""
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        chunk_type = data[position + 4:position + 8]
        position += 12 + length
        if chunk_type == b"IEND":
            return position <= len(data)
    return False


def _pillow_pixels(path: Path, image: Image.Image) -> tuple[np.ndarray, str, int]:
    """Pixels of a loaded Pillow image as (array, kind, bit depth); alpha is dropped."""
    mode = image.mode
    if mode in ("P", "PA"):
        raise _quantised_error(path, f"palette (indexed-colour) {image.format or ''}".rstrip())
    if mode == "1":
        raise _quantised_error(path, f"1-bit (bilevel) {image.format or ''}".rstrip())
    if mode in ("RGB", "RGBA", "RGBX"):
        return np.asarray(image)[:, :, :3].copy(), "rgb", 8
    if mode in ("L", "LA"):
        pixels = np.asarray(image)
        return np.array(pixels[:, :, 0] if pixels.ndim == 3 else pixels), "gray", 8
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16), "gray", 16
    if mode == "I":
        pixels = np.asarray(image)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ImageReadError(path, "32-bit integer pixels out of the 16-bit range")
        return pixels.astype(np.uint16), "gray", 16
    raise ImageReadError(path, f"pixel mode {mode!r} is not supported (8/16-bit gray or 8-bit RGB are)",
                         "Convert it to an 8/16-bit TIFF, or exclude it.")


# --- TIFF -------------------------------------------------------------------------------------

def _read_tiff(path: Path, limits: _Limits, said: list[str]) -> SensorImage:
    try:
        with tifffile_log_into(said), tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            _check_header(path, int(page.imagelength), int(page.imagewidth), limits)
            photometric = tifffile.PHOTOMETRIC(page.photometric).name
            dtype, bits, samples = np.dtype(page.dtype), int(page.bitspersample), int(page.samplesperpixel)
            _check_tiff_layout(path, photometric, dtype, bits, samples, int(page.imagedepth))
            frames = len(tif.pages)
            try:
                pixels = _tiff_pixels_hwc(path, page.asarray(), page.axes)
            except (ValueError, NotImplementedError) as exc:  # a codec tifffile has only with imagecodecs
                if "imagecodecs" not in str(exc):
                    raise
                pixels = _tiff_with_pillow(path, page, exc, dtype, bits, photometric, said)
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageReadError(path, f"the TIFF's pixel data would not fit in memory ({describe_exception(exc)})",
                             "Exclude the file, or convert it to a plain 8/16-bit TIFF.") from None
    except Exception as exc:  # tifffile raises ValueError, TiffFileError, struct.error, zlib.error...
        raise ImageReadError(path, f"corrupt or truncated TIFF data ({describe_exception(exc)})") from None
    kind = "gray" if photometric == "MINISBLACK" else "rgb"
    if pixels.ndim == 3:
        pixels = pixels[:, :, 0] if kind == "gray" else pixels[:, :, :3]
    return SensorImage(pixels=np.ascontiguousarray(pixels), kind=kind, cfa_pattern=None,
                       black_level=0.0, white_level=float(2 ** bits - 1), bit_depth=bits,
                       metadata=_metadata(path, "tiff"), path=str(path), format="tiff",
                       frames=frames, notes=_frames_note(frames, "pages (a multi-page TIFF)"))


def _check_tiff_layout(path: Path, photometric: str, dtype: np.dtype, bits: int, samples: int,
                       depth: int) -> None:
    if photometric == "PALETTE":
        raise _quantised_error(path, "palette (indexed-colour) TIFF")
    if bits < 8:
        raise _quantised_error(path, "1-bit (bilevel) TIFF" if bits == 1 else f"{bits}-bit TIFF")
    if photometric not in ("MINISBLACK", "RGB", "YCBCR"):
        raise ImageReadError(
            path, f"TIFF with photometric interpretation {photometric} is not supported "
            "(grayscale and RGB are)", "Convert it to an RGB or grayscale TIFF, or exclude it.")
    if dtype not in (np.uint8, np.uint16):
        raise ImageReadError(path, f"TIFF samples of type {dtype} are not supported (8/16-bit unsigned are)",
                             "Convert it to an 8/16-bit TIFF, or exclude it.")
    if photometric == "RGB" and samples < 3:
        raise ImageReadError(path, f"RGB TIFF with {samples} sample(s) per pixel")
    if samples > 4 or depth > 1:
        what = f"{samples:,} samples per pixel" if samples > 4 else f"a volume {depth:,} images deep"
        raise ImageReadError(path, f"TIFF page with {what}: not a 2-D grayscale or RGB(A) image",
                             "Save the image as a single-page 8/16-bit grayscale or RGB TIFF.")


def _tiff_with_pillow(path: Path, page, exc: Exception, dtype: np.dtype, bits: int, photometric: str,
                      said: list[str]) -> np.ndarray:
    """Decode a TIFF whose compression tifffile cannot handle without imagecodecs."""
    compression = _enum_name(tifffile.COMPRESSION, page.compression)
    layout = "uncompressed" if compression == "NONE" else f"{compression}-compressed"
    needs = f"{layout} TIFF with {bits}-bit samples: tifffile needs the imagecodecs package"
    advice = "pip install imagecodecs, or save it as an uncompressed 8- or 16-bit TIFF."
    if bits not in (8, 16) or (bits == 16 and photometric != "MINISBLACK"):
        raise ImageReadError(path, f"{needs} to decode it ({exc})", advice)
    _check_pillow_is_strict()
    try:
        with c_stderr_into(said, "libtiff"), python_warnings_into(said, "Pillow"):
            with Image.open(path, formats=["TIFF"]) as image:
                image.load()
                pixels, _kind, _depth = _pillow_pixels(path, image)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as bomb:
        raise _pillow_bomb_error(path, bomb) from None
    except Exception as failure:  # Pillow raises OSError ("decoder error -2"), ValueError...
        raise ImageReadError(path, f"{needs}, and Pillow (libtiff), tried instead, could not decode it "
                                   f"either ({describe_exception(failure)})",
                             advice + " If it still fails, the file is damaged: re-copy or exclude it.") from None
    return pixels


def _enum_name(enum, value) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def _tiff_pixels_hwc(path: Path, pixels: np.ndarray, axes: str) -> np.ndarray:
    """Bring tifffile's array to height×width(×samples) using its axes ('YX', 'YXS', 'SYX')."""
    if axes == "YX" or axes == "YXS":
        return pixels
    if axes == "SYX":
        return np.moveaxis(pixels, 0, -1)
    raise ImageReadError(path, f"TIFF page with axes {axes!r} is not a single 2-D image",
                         "Save the image as a single-page 8/16-bit TIFF.")


# --- RAW / DNG --------------------------------------------------------------------------------

def _read_raw(path: Path, image_format: str, limits: _Limits, said: list[str]) -> SensorImage:
    raw = rawpy.RawPy()
    try:
        with c_stderr_into(said, "LibRaw"):  # LibRaw prints data errors to stderr
            raw.open_file(str(path))
            sizes = raw.sizes
            _check_size(path, int(sizes.raw_height), int(sizes.raw_width), limits.max_pixels)
            if (sizes.top_margin + sizes.height <= sizes.raw_height
                    and sizes.left_margin + sizes.width <= sizes.raw_width):
                # then raw_image_visible is exactly height×width: the frame can be checked now
                _check_header(path, int(sizes.height), int(sizes.width), limits, cfa=True)
            raw.unpack()
        if raw.raw_type != rawpy.RawType.Flat:
            raise ImageReadError(
                path, "raw data is not a CFA mosaic (a linear/demosaiced raw); pixel positions "
                "no longer map to single photosites", "Use the camera's original raw file.")
        descriptions = raw.color_desc.decode("ascii", errors="replace")
        pattern = raw.raw_pattern
        pixels = np.array(raw.raw_image_visible, dtype=np.uint16, copy=True)
        period = 1 if pattern is None else int(pattern.shape[0])
        colour_indices = np.array(raw.raw_colors_visible[:period, :period], copy=True)
        black_per_channel = np.asarray(raw.black_level_per_channel, dtype=np.float64)
        white_level = float(raw.white_level)
    except rawpy.LibRawError as exc:
        cause = ("truncated or unreadable raw data" if isinstance(exc, rawpy.LibRawIOError)
                 else "LibRaw cannot read it")
        raise ImageReadError(path, f"{cause} ({describe_exception(exc)})") from None
    finally:
        raw.close()
    if pattern is None:
        raise ImageReadError(path, "raw data has no colour filter pattern (monochrome or unknown sensor)")
    cfa_pattern = _rgb_cfa_pattern(path, colour_indices, descriptions)
    black_level = black_per_channel[colour_indices]
    return SensorImage(pixels=pixels, kind="cfa", cfa_pattern=cfa_pattern, black_level=black_level,
                       white_level=white_level, bit_depth=max(int(white_level).bit_length(), 1),
                       metadata=_metadata(path, image_format), path=str(path), format=image_format)


def _rgb_cfa_pattern(path: Path, colour_indices: np.ndarray, descriptions: str) -> np.ndarray:
    """Map LibRaw colour indices (into e.g. 'RGBG') to 0 = R, 1 = G, 2 = B."""
    try:
        lookup = np.array([_CFA_LETTERS[letter] for letter in descriptions], dtype=np.uint8)
        return lookup[colour_indices]
    except (KeyError, IndexError):
        raise ImageReadError(path, f"colour filter array with colours {descriptions!r} is not "
                             "supported (only red, green and blue filters are)") from None
