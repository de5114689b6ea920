"""read_image (pipeline.data.imageio) and the error types (pipeline.data.errors)."""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import rawpy
import simplejpeg
import tifffile
from PIL import Image, ImageFile

from pipeline.data.errors import ImageReadError, ManifestError, ManifestProblem
from pipeline.data.exif import ExifWarning, inspect_exif
from pipeline.data.formats import detect_format
from pipeline.data.imageio import SensorImage, read_image

REAL_JPEGS = ("r_canon.jpg", "r_casio.jpg", "r_olympus.jpg", "r_pana.jpg", "r_pen.jpg",
              "r_ricoh.jpg", "r_sigma.jpg", "r_sony.jpg", "02.jpg", "L01.jpg")
BAYER_PATTERNS = {"RGGB": [[0, 1], [1, 2]], "BGGR": [[2, 1], [1, 0]],
                  "GRBG": [[1, 0], [2, 1]], "GBRG": [[1, 2], [0, 1]]}


def _copy(source, target):
    target.write_bytes(source.read_bytes())
    return target


def _png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes = b"") -> bytes:
    """A PNG file from its parts (IHDR, one IDAT holding `rows` compressed, IEND)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, colour_type, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + (chunk(b"IDAT", zlib.compress(rows)) if rows else b"") + chunk(b"IEND", b""))


# --- JPEG ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", REAL_JPEGS)
def test_jpeg_decode_is_bit_identical_to_pillow(camera_files, name):
    image = read_image(camera_files / name)
    with Image.open(camera_files / name) as reference:
        expected = np.asarray(reference)
    assert image.format == "jpeg"
    assert image.kind == ("gray" if expected.ndim == 2 else "rgb")
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == expected.shape
    np.testing.assert_array_equal(image.pixels, expected)
    assert (image.bit_depth, image.white_level, image.black_level, image.cfa_pattern) == (8, 255, 0, None)


def test_jpeg_metadata_attached(camera_files):
    image = read_image(camera_files / "r_pen.jpg")
    assert image.metadata.model == "E-P3" and image.metadata.iso == 1600
    assert (image.metadata.width, image.metadata.height) == (80, 80)
    assert image.path == str(camera_files / "r_pen.jpg")


@pytest.mark.parametrize("where", ["before EOI", "inside the scan"])
def test_truncated_jpeg(camera_files, tmp_path, where):
    data = (camera_files / "r_sony.jpg").read_bytes()
    scan_start = data.rfind(b"\xff\xda")
    keep = len(data) - 2 if where == "before EOI" else (scan_start + len(data)) // 2
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:keep])
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert caught.value.reason.startswith("truncated JPEG data")
    assert "Premature end of JPEG file" in caught.value.reason
    assert str(caught.value).startswith(f"cannot read image '{path}': truncated JPEG data")


def test_jpeg_cut_inside_its_header(camera_files, tmp_path):
    path = tmp_path / "header_only.jpg"
    path.write_bytes((camera_files / "r_canon.jpg").read_bytes()[:4000])  # inside the EXIF block
    with pytest.raises(ImageReadError, match="corrupt or truncated JPEG header"):
        read_image(path)


def test_corrupt_jpeg_scan(camera_files, tmp_path):
    data = bytearray((camera_files / "L01.jpg").read_bytes())
    start = data.rfind(b"\xff\xda")  # start of scan
    data[start + 200:start + 600] = b"\xff\xd0" * 200  # stray restart markers in the scan
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="JPEG data"):
        read_image(path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert str(caught.value) == (f"cannot read image '{path}': empty file (0 bytes). "
                                 "Re-copy the file or exclude it from the manifest.")


def test_text_named_jpg(tmp_path):
    path = tmp_path / "IMG_0001.jpg"
    path.write_text("<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head></html>\n")
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert caught.value.reason == "not an image: the file is text, starting with '<!DOCTYPE html>…'"


def test_mislabelled_but_valid_files_are_read_by_content(camera_files, tmp_path):
    jpeg_as_png = _copy(camera_files / "r_ricoh.jpg", tmp_path / "ricoh.png")
    assert read_image(jpeg_as_png).format == "jpeg"
    png_as_jpg = tmp_path / "picture.jpg"
    pixels = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(png_as_jpg, format="PNG")
    image = read_image(png_as_jpg)
    assert image.format == "png"
    np.testing.assert_array_equal(image.pixels, pixels)


def test_cmyk_jpeg_is_refused(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 50, 100, 0)).save(path)
    with pytest.raises(ImageReadError, match="CMYK JPEG: not supported for defect analysis"):
        read_image(path)


def test_exif_orientation_is_not_applied(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display"
    path = tmp_path / "tagged.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    image = read_image(path, expected_shape=(24, 40))
    assert image.metadata.orientation == 6
    assert image.pixels.shape == (24, 40, 3)
    with Image.open(path) as reference:
        np.testing.assert_array_equal(image.pixels, np.asarray(reference))


# --- sensor frame -------------------------------------------------------------------------

def test_sensor_frame_rules(camera_files):
    portrait = camera_files / "L01.jpg"  # stored 300 wide × 400 high
    stored = read_image(portrait).pixels
    assert read_image(portrait, expected_shape=(400, 300)).rotated_back == 0

    with pytest.raises(ImageReadError) as caught:
        read_image(portrait, expected_shape=(300, 400))
    assert "stored rotated 90° relative to the device frame (300×400 vs 400×300)" in caught.value.reason
    assert "rotation direction cannot be recovered reliably" in caught.value.reason

    for k in (1, 3):
        turned = read_image(portrait, expected_shape=(300, 400), rotate_back=k)
        assert turned.rotated_back == k and turned.pixels.shape == (300, 400, 3)
        np.testing.assert_array_equal(turned.pixels, np.rot90(stored, k))
        assert (turned.metadata.width, turned.metadata.height) == (300, 400)  # as stored

    with pytest.raises(ImageReadError, match=r"stored as 300×400 \(width×height\) but the device frame is 4000×3000"):
        read_image(portrait, expected_shape=(3000, 4000))


def test_rotated_raw_mosaic_is_refused(write_dng):
    path = write_dng(np.zeros((32, 48), np.uint16))  # LibRaw refuses sides under 22 pixels
    with pytest.raises(ImageReadError, match="raw file is never stored rotated"):
        read_image(path, expected_shape=(48, 32), rotate_back=1)


def test_argument_checks(camera_files):
    with pytest.raises(ValueError, match="rotate_back needs expected_shape"):
        read_image(camera_files / "r_pana.jpg", rotate_back=1)
    with pytest.raises(ValueError, match="rotate_back must be 1 or 3"):
        read_image(camera_files / "r_pana.jpg", expected_shape=(80, 80), rotate_back=2)
    with pytest.raises(ValueError, match="max_pixels"):
        read_image(camera_files / "r_pana.jpg", max_pixels=0)


def test_decompression_bomb_refused_from_the_header(camera_files, tmp_path):
    with pytest.raises(ImageReadError, match="6,400 pixels exceeds the limit of 6,399"):
        read_image(camera_files / "r_sigma.jpg", max_pixels=6399)
    # A PNG whose header claims 100000×100000 with no data: refused before decoding.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(100_000, 100_000, 8, 2))
    with pytest.raises(ImageReadError, match="10,000,000,000 pixels exceeds the limit of 250,000,000"):
        read_image(path)


# --- PNG ----------------------------------------------------------------------------------

def test_png_8_and_16_bit(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (11, 13, 3), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (11, 13), dtype=np.uint16)
    gray8 = rng.integers(0, 256, (11, 13), dtype=np.uint8)
    for name, array in (("rgb.png", rgb), ("gray16.png", gray16), ("gray8.png", gray8)):
        Image.fromarray(array).save(tmp_path / name)
        image = read_image(tmp_path / name)
        assert image.pixels.dtype == array.dtype
        np.testing.assert_array_equal(image.pixels, array)
    image16 = read_image(tmp_path / "gray16.png")
    assert (image16.kind, image16.bit_depth, image16.white_level) == ("gray", 16, 65535)
    assert image16.pixels.max() > 255  # the low-order byte was not dropped


def test_16_bit_rgb_png_is_refused_rather_than_reduced(tmp_path):
    pixels = np.full((4, 5, 3), 40000, ">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter byte 0 per row
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png(5, 4, 16, 2, rows))
    with Image.open(path) as reduced:
        assert reduced.mode == "RGB"  # what Pillow would give: 8 bits per sample
    with pytest.raises(ImageReadError, match="16-bit rgb PNG: Pillow would reduce it to 8 bits"):
        read_image(path)


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(ImageReadError, match="PNG data"):
        read_image(path)


def test_load_truncated_images_must_stay_off(tmp_path, monkeypatch):
    path = tmp_path / "ok.png"
    Image.new("L", (4, 4)).save(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        read_image(path)


# --- TIFF ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("dtype", "shape", "kwargs"), [
    (np.uint8, (10, 12, 3), {"photometric": "rgb"}),
    (np.uint16, (10, 12, 3), {"photometric": "rgb"}),
    (np.uint16, (10, 12, 3), {"photometric": "rgb", "compression": "zlib"}),
    (np.uint16, (10, 12), {"photometric": "minisblack"}),
    (np.uint8, (3, 10, 12), {"photometric": "rgb", "planarconfig": "separate"}),
])
def test_tiff_keeps_its_bits(tmp_path, dtype, shape, kwargs):
    info = np.iinfo(dtype)
    array = np.random.default_rng(5).integers(0, info.max + 1, shape, dtype=dtype)
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, array, **kwargs)
    image = read_image(path)
    expected = np.moveaxis(array, 0, -1) if kwargs.get("planarconfig") == "separate" else array
    assert image.format == "tiff" and image.pixels.dtype == dtype
    assert image.kind == ("gray" if expected.ndim == 2 else "rgb")
    assert image.bit_depth == info.bits and image.white_level == info.max
    np.testing.assert_array_equal(image.pixels, expected)


def test_real_lzw_tiff(camera_files):
    # LZW needs imagecodecs in tifffile; the reader falls back to Pillow for 8-bit data.
    image = read_image(camera_files / "01.tif")
    with Image.open(camera_files / "01.tif") as reference:
        expected = np.asarray(reference)[:, :, :3]  # RGBA: alpha dropped
    assert image.kind == "rgb" and image.pixels.shape == (400, 300, 3)
    np.testing.assert_array_equal(image.pixels, expected)
    assert image.metadata.model == "QV-R51"


def test_truncated_and_unsupported_tiff(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((100, 100, 3), np.uint16), photometric="rgb")
    path.write_bytes(path.read_bytes()[:30000])
    with pytest.raises(ImageReadError, match="corrupt or truncated TIFF data"):
        read_image(path)
    floats = tmp_path / "float.tif"
    tifffile.imwrite(floats, np.ones((4, 4), np.float32))
    with pytest.raises(ImageReadError, match="float32 are not supported"):
        read_image(floats)


# --- RAW / DNG ----------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", sorted(BAYER_PATTERNS))
def test_dng_mosaic_read_back_bit_exact_with_its_pattern(write_dng, pattern):
    mosaic = np.random.default_rng(6).integers(0, 65536, (32, 48), dtype=np.uint16)
    path = write_dng(mosaic, pattern, black_level=[60, 61, 62, 63], white_level=65535)
    image = read_image(path)
    assert (image.format, image.kind, image.pixels.dtype) == ("dng", "cfa", np.uint16)
    np.testing.assert_array_equal(image.pixels, mosaic)
    np.testing.assert_array_equal(image.cfa_pattern, BAYER_PATTERNS[pattern])
    np.testing.assert_array_equal(image.black_level, [[60, 61], [62, 63]])  # per tile position
    assert (image.white_level, image.bit_depth) == (65535, 16)
    assert (image.metadata.width, image.metadata.height) == (48, 32)


def test_dng_12_bit_packed(write_dng):
    mosaic = np.random.default_rng(7).integers(0, 4096, (32, 48), dtype=np.uint16)
    image = read_image(write_dng(mosaic, "GRBG", bits=12, black_level=128, white_level=4095))
    np.testing.assert_array_equal(image.pixels, mosaic)
    np.testing.assert_array_equal(image.black_level, np.full((2, 2), 128.0))
    assert (image.white_level, image.bit_depth) == (4095, 12)


def test_dng_named_jpg_and_truncated_dng(write_dng, tmp_path):
    mosaic = np.arange(32 * 48, dtype=np.uint16).reshape(32, 48)
    path = write_dng(mosaic, "BGGR")
    renamed = _copy(path, tmp_path / "camera.jpg")
    np.testing.assert_array_equal(read_image(renamed).pixels, mosaic)
    cut = tmp_path / "cut.dng"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ImageReadError, match="truncated or unreadable raw data"):
        read_image(cut)


def test_raw_extension_with_garbage(tmp_path):
    path = tmp_path / "IMG_1.CR3"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert "LibRaw" in caught.value.reason or "raw data" in caught.value.reason


def test_malformed_exif_warns_but_reads(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "yesterday"
    path = tmp_path / "odd.jpg"
    Image.new("RGB", (8, 8)).save(path, exif=exif)
    with pytest.warns(ExifWarning, match="DateTimeOriginal 'yesterday'"):
        image = read_image(path)
    assert isinstance(image, SensorImage) and image.metadata.captured_at is None


# --- error types --------------------------------------------------------------------------

def test_image_read_error_is_one_picklable_value_error():
    error = ImageReadError("/x/y.jpg", "truncated JPEG data (Premature end of JPEG file)")
    assert isinstance(error, ValueError)
    assert str(error) == ("cannot read image '/x/y.jpg': truncated JPEG data (Premature end of JPEG file). "
                          "Re-copy the file or exclude it from the manifest.")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


def test_manifest_error_lists_every_problem():
    problems = [ManifestProblem(3, "captured_at 'soon' is not a time", "a.jpg", "captured_at"),
                ManifestProblem(None, "the manifest needs a device column"),
                ManifestProblem(7, "file not found", "b.jpg")]
    error = ManifestError(problems, source="m.csv")
    assert isinstance(error, ValueError) and error.problems == problems
    assert str(error) == ("manifest 'm.csv' has 3 problems:\n"
                          "  line 3, column 'captured_at', file 'a.jpg': captured_at 'soon' is not a time\n"
                          "  manifest: the manifest needs a device column\n"
                          "  line 7, file 'b.jpg': file not found")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    with pytest.raises(ValueError, match="at least one"):
        ManifestError([])


def test_pillows_own_limit_is_reported_as_such(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # errors above twice this
    with pytest.raises(ImageReadError, match="too large for Pillow's decompression-bomb limit"):
        read_image(path)


# --- issue 21: header first, consistent formats, nothing printed raw, regular files only ------

def _tiff(width: int, height: int, bits: int, strip: bytes, *, photometric: int = 1,
          compression: int = 1) -> bytes:
    """A one-strip, one-sample little-endian TIFF from its parts (for layouts tifffile cannot write)."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, compression), (262, 3, photometric),
            (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    data_offset = 8 + 2 + 12 * len(tags) + 4
    entries = b"".join(tag.to_bytes(2, "little") + kind.to_bytes(2, "little") + (1).to_bytes(4, "little")
                       + (data_offset if tag == 273 else value).to_bytes(4, "little")
                       for tag, kind, value in tags)
    return (b"II*\x00" + (8).to_bytes(4, "little") + len(tags).to_bytes(2, "little") + entries
            + (0).to_bytes(4, "little") + strip)


def _big_gray_png(path, side: int) -> None:
    """An all-black side×side 8-bit grayscale PNG, compressed row by row (tiny on disk)."""
    compressor, row = zlib.compressobj(9), bytes(side + 1)  # filter byte 0, then the samples
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header_and_ihdr, iend = _png(side, side, 8, 0)[:33], _png(1, 1, 8, 0)[-12:]
    idat = len(body).to_bytes(4, "big") + b"IDAT" + body + zlib.crc32(b"IDAT" + body).to_bytes(4, "big")
    path.write_bytes(header_and_ihdr + idat + iend)


_PEAK_MEMORY_CHILD = r"""
import resource, sys
from pipeline.data.errors import ImageReadError
from pipeline.data.imageio import read_image

def peak_mib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux

before = peak_mib()
reasons = []
for limits in ({"expected_shape": (3000, 4000)}, {"expected_shape": (12000, 12000), "max_pixels": 100_000_000}):
    try:
        read_image(sys.argv[1], **limits)
        reasons.append("read")
    except ImageReadError as exc:
        reasons.append(exc.reason)
print(peak_mib() - before)
print("\n".join(reasons))
"""


def test_frame_size_of_a_huge_png_is_checked_from_its_header(tmp_path):
    # 12000×12000 (144 Mpixel, about 140 KB on disk): decoding it needs at least 144 MiB.
    pytest.importorskip("resource")
    path = tmp_path / "huge.png"
    _big_gray_png(path, 12_000)
    repository = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_CHILD, str(path)], cwd=repository,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(repository)})
    assert done.returncode == 0, done.stderr
    growth, *reasons = done.stdout.splitlines()
    assert reasons == ["stored as 12000×12000 (width×height) but the device frame is 4000×3000: a resized or "
                       "cropped image (or another camera's) does not keep sensor positions",
                       "12000×12000 = 144,000,000 pixels exceeds the limit of 100,000,000"]
    assert float(growth) < 40, f"peak memory grew by {float(growth):.0f} MiB: the pixels were decoded"


def _refuse_to_decode(*args, **kwargs):
    raise AssertionError("the pixels were decoded before the frame size was checked")


class _RawWithoutUnpack:
    """A rawpy.RawPy whose unpack() (the decode) fails the test."""

    def __init__(self, real=rawpy.RawPy):
        self._raw = real()

    def unpack(self):
        _refuse_to_decode()

    def __getattr__(self, name):
        return getattr(self._raw, name)


@pytest.mark.parametrize("image_format", ["jpeg", "tiff", "dng"])
def test_frame_size_is_checked_from_the_header_in_every_format(tmp_path, write_dng, monkeypatch, image_format):
    rng = np.random.default_rng(21)
    if image_format == "jpeg":
        path = tmp_path / "frame.jpg"
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(path, quality=95)
        monkeypatch.setattr(simplejpeg, "decode_jpeg", _refuse_to_decode)
    elif image_format == "tiff":
        path = tmp_path / "frame.tif"
        tifffile.imwrite(path, rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), photometric="rgb")
        monkeypatch.setattr(tifffile.TiffPage, "asarray", _refuse_to_decode)
    else:
        path = write_dng(rng.integers(0, 4096, (32, 48), dtype=np.uint16))
        monkeypatch.setattr(rawpy, "RawPy", _RawWithoutUnpack)
    with pytest.raises(ImageReadError, match=r"stored as 48×32 \(width×height\) but the device frame is 40×30"):
        read_image(path, expected_shape=(30, 40))
    rotated = "raw file is never stored rotated" if image_format == "dng" else "stored rotated 90°"
    with pytest.raises(ImageReadError, match=rotated):
        read_image(path, expected_shape=(48, 32))
    with pytest.raises(ImageReadError, match="1,536 pixels exceeds the limit of 1,535"):
        read_image(path, max_pixels=1535)


def test_pillows_bomb_warning_becomes_a_note_naming_the_file(tmp_path, monkeypatch, caplog):
    path = tmp_path / "large.png"
    Image.new("L", (12, 10)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 120 pixels: over the warning threshold only
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        image = read_image(path)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert image.notes == ("decoder message: Pillow: Image size (120 pixels) exceeds limit of 100 pixels, "
                           "could be decompression bomb DOS attack.",)
    assert f"{path}: decoder message: Pillow: Image size (120 pixels)" in caplog.text


@pytest.mark.parametrize(("bits", "reason"), [
    (4, "4-bit TIFF image: too few levels per sample"),
    (2, "2-bit TIFF image: too few levels per sample"),
    (12, "uncompressed TIFF with 12-bit samples: tifffile needs the imagecodecs package to decode it"),
])
def test_low_bit_depth_tiff_is_not_called_corrupt(tmp_path, bits, reason):
    path = tmp_path / f"gray{bits}.tif"
    path.write_bytes(_tiff(16, 8, bits, bytes(16 * 8 * bits // 8)))
    if bits == 12 and importlib.util.find_spec("imagecodecs") is not None:
        assert read_image(path).bit_depth == 12
        return
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert caught.value.reason.startswith(reason)
    assert "corrupt" not in caught.value.reason


def _jpeg_segments(data: bytes):
    """(offset, marker) of each marker segment of a JPEG before its first scan."""
    position = 2
    while data[position + 1] != 0xDA:
        yield position, data[position + 1]
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")


def test_jpeg_with_a_recoverable_libjpeg_warning_says_what_was_seen(camera_files, tmp_path):
    data = (camera_files / "r_sony.jpg").read_bytes()
    dqt = next(offset for offset, marker in _jpeg_segments(data) if marker == 0xDB)
    path = tmp_path / "junk.jpg"
    path.write_bytes(data[:dqt] + b"\x00" * 5 + data[dqt:])  # as some editing tools leave them
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    assert caught.value.reason == ("irregular JPEG header: libjpeg-turbo warns 'Corrupt JPEG data: 5 extraneous "
                                   "bytes before marker 0xdb'; it could read on by skipping the irregularity, "
                                   "which strict reading refuses")
    assert "re-copy" not in caught.value.advice.lower()


def test_palette_and_low_bit_images_are_refused_in_every_format(tmp_path):
    palette = Image.new("P", (16, 12))
    palette.putpalette([value for level in range(256) for value in (level, level, level)])
    files = {
        "palette.png": (lambda path: palette.save(path), "palette (indexed-colour) PNG image"),
        "palette.tif": (lambda path: palette.save(path), "palette (indexed-colour) TIFF image"),
        "bilevel.png": (lambda path: Image.new("1", (16, 12)).save(path), "1-bit gray PNG image"),
        "bilevel.tif": (lambda path: Image.new("1", (16, 12)).save(path), "1-bit (bilevel) TIFF image"),
        "gray4.png": (lambda path: path.write_bytes(_png(16, 12, 4, 0, bytes(12 * 9))), "4-bit gray PNG image"),
    }
    for name, (write, reason) in files.items():
        write(tmp_path / name)
        with pytest.raises(ImageReadError) as caught:
            read_image(tmp_path / name)
        assert caught.value.reason.startswith(reason + ": "), name
        assert "quantised away" in caught.value.reason


def test_multi_frame_files_record_that_only_the_first_frame_was_read(tmp_path, caplog):
    rng = np.random.default_rng(22)
    first, second = (Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)) for _ in range(2))
    first.save(tmp_path / "stereo.mpo", "MPO", save_all=True, append_images=[second])
    first.save(tmp_path / "animated.png", save_all=True, append_images=[second, first])
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for _ in range(4):
            tif.write(np.asarray(first), photometric="rgb")
    expected = {"stereo.mpo": (2, "images (an MPO or multi-picture JPEG)"),
                "animated.png": (3, "frames (an animated PNG)"), "pages.tif": (4, "pages (a multi-page TIFF)")}
    for name, (count, what) in expected.items():
        path = tmp_path / name
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="agetrace.data.imageio"):
            image = read_image(path)
        assert image.frames == count, name
        assert image.notes == (f"the file holds {count} {what}; only the first was read",)
        assert caplog.messages == [f"{path}: the file holds {count} {what}; only the first was read"]
        if name != "stereo.mpo":  # lossless: the first frame itself
            np.testing.assert_array_equal(image.pixels, np.asarray(first))
    single = tmp_path / "single.png"
    first.save(single)
    assert (read_image(single).frames, read_image(single).notes) == (1, ())


def test_decoder_chatter_goes_into_the_reason_not_to_stderr(tmp_path, capfd):
    # tifffile logs a repaired strip table (Python logging); libtiff, tried for a compression
    # tifffile cannot decode, prints to the C-level stderr. Neither names the file.
    data = bytearray(_tiff(16, 8, 8, bytes(128)))
    data[8 + 2 + 12 * 8 + 4:8 + 2 + 12 * 8 + 8] = (2).to_bytes(4, "little")  # StripByteCounts: 2 values
    short_table = tmp_path / "strips.tif"
    short_table.write_bytes(bytes(data))
    webp = tmp_path / "webp.tif"
    webp.write_bytes(_tiff(16, 8, 8, b"RIFF" + bytes(60), compression=50001, photometric=1))
    outcomes = []
    for path in (short_table, webp):
        try:
            outcomes.append(" ".join(read_image(path).notes))
        except ImageReadError as exc:
            outcomes.append(exc.reason)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert "tifffile: " in outcomes[0] and "StripByteCounts" in outcomes[0]
    if importlib.util.find_spec("imagecodecs") is None:
        assert outcomes[1].startswith("WEBP-compressed TIFF with 8-bit samples: tifffile needs the imagecodecs")


def test_c_level_stderr_of_a_decoder_is_captured(capfd):
    from pipeline.data.decoder_messages import c_stderr_into as _c_stderr_into

    said = []
    with _c_stderr_into(said, "libfoo"):
        os.write(2, b"libfoo: bad block 7\n\nsecond line\n")
    assert said == ["libfoo: libfoo: bad block 7", "libfoo: second line"]
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def _read_in_thread(function, path, timeout_s: float = 20.0):
    """Run function(path) in a thread; return what it raised or returned, or fail if it blocks."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["value"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        try:  # unblock the reader: a writer that closes at once gives it end-of-file
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        thread.join(5)
        pytest.fail(f"{function.__name__}({path}) was still blocked after {timeout_s} s")
    return outcome["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "IMG_0001.jpg"
    os.mkfifo(pipe)
    for function in (read_image, detect_format, inspect_exif):
        outcome = _read_in_thread(function, pipe)
        assert isinstance(outcome, ImageReadError), (function.__name__, outcome)
        assert outcome.reason.startswith("not a regular file (named pipe)")
        assert str(outcome).startswith(f"cannot read image '{pipe}': not a regular file (named pipe)")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_device_is_refused(tmp_path):
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    outcome = _read_in_thread(read_image, link)
    assert isinstance(outcome, ImageReadError) and outcome.reason.startswith("not a regular file (character device)")


def test_libraw_chatter_goes_into_the_reason_not_to_stderr(write_dng, tmp_path, capfd):
    path = write_dng(np.arange(32 * 48, dtype=np.uint16).reshape(32, 48))
    cut = tmp_path / "cut.dng"
    cut.write_bytes(path.read_bytes()[:-100])
    capfd.readouterr()
    with pytest.raises(ImageReadError) as caught:
        read_image(cut)
    assert capfd.readouterr().err == ""
    assert caught.value.reason.startswith("truncated or unreadable raw data")
    assert "the decoder also reported: 'LibRaw: " in caught.value.reason
    assert "Unexpected end of file" in caught.value.reason
