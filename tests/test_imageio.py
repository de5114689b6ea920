"""read_image (pipeline.data.imageio) and the error types (pipeline.data.errors)."""

from __future__ import annotations

import pickle
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile

from pipeline.data.errors import ImageReadError, ManifestError, ManifestProblem
from pipeline.data.exif import ExifWarning
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
