"""File writers of the synthetic camera: JPEG with EXIF (Pillow), 16-bit TIFF and DNG (tifffile).

All three carry Make, Model, DateTimeOriginal, ExposureTime, ISO and BodySerialNumber. JPEG
puts them in the EXIF IFD; TIFF and DNG put them in IFD0 (TIFF/EP style), where exiftool,
Pillow's ``getexif()`` and LibRaw find them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from pipeline.sim.config import CFA_PATTERNS, JPEG_SUBSAMPLING, ModelConfig

__all__ = ["ExifInfo", "encode_jpeg", "write_jpeg", "write_tiff16", "write_dng", "FILE_SUFFIX"]

FILE_SUFFIX = {"jpeg": ".jpg", "tiff": ".tiff", "dng": ".dng"}

_TAG_MAKE, _TAG_MODEL, _TAG_DATETIME, _TAG_SOFTWARE = 0x010F, 0x0110, 0x0132, 0x0131
_TAG_EXIF_IFD = 0x8769
_TAG_EXPOSURE, _TAG_ISO, _TAG_DATETIME_ORIGINAL, _TAG_BODY_SERIAL = 0x829A, 0x8827, 0x9003, 0xA431
SOFTWARE = "agetrace synthetic camera"


@dataclass(frozen=True)
class ExifInfo:
    """The metadata every simulated file carries."""

    make: str
    model: str
    serial: str
    captured_at: datetime
    exposure_s: float
    iso: int

    @property
    def exif_time(self) -> str:
        """``YYYY:MM:DD HH:MM:SS`` as EXIF writes times."""
        return self.captured_at.strftime("%Y:%m:%d %H:%M:%S")

    @property
    def exposure_fraction(self) -> Fraction:
        return Fraction(self.exposure_s).limit_denominator(100000)


def _pillow_exif(info: ExifInfo) -> Image.Exif:
    exif = Image.Exif()
    exif[_TAG_MAKE] = info.make
    exif[_TAG_MODEL] = info.model
    exif[_TAG_DATETIME] = info.exif_time
    exif[_TAG_SOFTWARE] = SOFTWARE
    sub = exif.get_ifd(_TAG_EXIF_IFD)
    sub[_TAG_DATETIME_ORIGINAL] = info.exif_time
    fraction = info.exposure_fraction
    sub[_TAG_EXPOSURE] = IFDRational(fraction.numerator, fraction.denominator)
    sub[_TAG_ISO] = int(info.iso)
    sub[_TAG_BODY_SERIAL] = info.serial
    return exif


def encode_jpeg(rgb: np.ndarray, info: ExifInfo, quality: int, subsampling: str = "4:4:4") -> bytes:
    """Encode an ``(H, W, 3)`` uint8 image as baseline JPEG with EXIF (Pillow / libjpeg)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_jpeg needs (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=int(quality), subsampling=JPEG_SUBSAMPLING[subsampling],
                              exif=_pillow_exif(info), optimize=False, progressive=False)
    return buffer.getvalue()


def write_jpeg(path: Path, rgb: np.ndarray, info: ExifInfo, quality: int, subsampling: str = "4:4:4") -> None:
    """Write :func:`encode_jpeg`'s bytes to ``path``."""
    Path(path).write_bytes(encode_jpeg(rgb, info, quality, subsampling))


def _tiff_ep_tags(info: ExifInfo) -> list[tuple]:
    fraction = info.exposure_fraction
    return [
        (_TAG_MAKE, "s", 0, info.make, True),
        (_TAG_MODEL, "s", 0, info.model, True),
        (_TAG_EXPOSURE, "2I", 1, (fraction.numerator, fraction.denominator), True),
        (_TAG_ISO, "H", 1, int(info.iso), True),
        (_TAG_DATETIME_ORIGINAL, "s", 0, info.exif_time, True),
        (_TAG_BODY_SERIAL, "s", 0, info.serial, True),
    ]


def write_tiff16(path: Path, rgb16: np.ndarray, info: ExifInfo) -> None:
    """Write an ``(H, W, 3)`` uint16 processed image as an uncompressed 16-bit RGB TIFF."""
    if rgb16.dtype != np.uint16 or rgb16.ndim != 3 or rgb16.shape[2] != 3:
        raise ValueError(f"write_tiff16 needs (H, W, 3) uint16, got {rgb16.shape} {rgb16.dtype}")
    tifffile.imwrite(path, rgb16, photometric="rgb", metadata=None, software=SOFTWARE,
                     datetime=info.exif_time, extratags=_tiff_ep_tags(info))


def write_dng(path: Path, raw: np.ndarray, info: ExifInfo, model: ModelConfig) -> None:
    """Write a raw CFA mosaic (uint16, black level included) as a DNG 1.4 readable by rawpy.

    The CFA pattern, black and white levels and the as-shot neutral (the model's spectral
    response) are recorded; the colour matrix is the identity (the simulated sensor's
    primaries are taken as the output primaries).
    """
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"write_dng needs a (H, W) uint16 mosaic, got {raw.shape} {raw.dtype}")
    neutral = [Fraction(v / max(model.spectral_response)).limit_denominator(10000) for v in model.spectral_response]
    identity = []
    for i in range(9):
        identity += [1 if i in (0, 4, 8) else 0, 1]
    tags = [
        (33421, "H", 2, (2, 2), True),                              # CFARepeatPatternDim
        (33422, "B", 4, CFA_PATTERNS[model.cfa], True),              # CFAPattern
        (50706, "B", 4, (1, 4, 0, 0), True),                         # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),                         # DNGBackwardVersion
        (50708, "s", 0, f"{info.make} {info.model}", True),          # UniqueCameraModel
        (50714, "I", 1, int(model.black_level), True),               # BlackLevel
        (50717, "I", 1, int(model.white_level), True),               # WhiteLevel
        (50721, "2i", 9, tuple(identity), True),                     # ColorMatrix1
        (50778, "H", 1, 21, True),                                   # CalibrationIlluminant1 = D65
        (50728, "2I", 3, tuple(x for f in neutral for x in (f.numerator, f.denominator)), True),  # AsShotNeutral
    ] + _tiff_ep_tags(info)
    tifffile.imwrite(path, raw, photometric=32803, subfiletype=0, metadata=None, software=SOFTWARE,
                     datetime=info.exif_time, extratags=tags)
