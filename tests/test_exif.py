"""EXIF reading (pipeline.data.exif) on real camera files and on malformed metadata."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from pipeline.data.errors import ImageReadError
from pipeline.data.exif import ExifWarning, ImageMetadata, inspect_exif, metadata_from_tags, read_exif
from pipeline.data.formats import detect_format

# What the real files carry (read once with exiftool-equivalent Pillow dumps, then pinned).
CAMERA_EXIF = {
    "r_canon.jpg": ("Canon", "Canon PowerShot G1 X Mark II", datetime(2013, 12, 17, 14, 4, 24), 1 / 50, 100, None),
    "r_casio.jpg": ("CASIO COMPUTER CO.,LTD.", "EX-100", datetime(2014, 3, 24, 17, 18, 28), 1 / 40, 80,
                    "hex:10156012950003570078617c0090773f"),
    "r_olympus.jpg": ("OLYMPUS IMAGING CORP.", "STYLUS1", datetime(2013, 11, 12, 13, 54, 29), 1 / 25, 100, None),
    "r_pana.jpg": ("Panasonic", "DMC-L10", datetime(2007, 9, 15, 13, 15, 57), 1 / 200, 100, None),
    "r_pen.jpg": ("OLYMPUS IMAGING CORP.", "E-P3", datetime(2014, 8, 23, 13, 5, 43), 1 / 30, 1600, None),
    "r_ricoh.jpg": ("PENTAX RICOH IMAGING", "GR", datetime(2013, 3, 29, 10, 6, 41), 1 / 500, 100, None),
    "r_sigma.jpg": ("SIGMA", "SIGMA DP3 Merrill", datetime(2012, 12, 28, 15, 25, 17), 1 / 5, 100, None),
    "r_sony.jpg": ("SONY", "DSC-RX1R", datetime(2013, 4, 13, 10, 22, 18), 1 / 125, 100, None),
}


@pytest.mark.parametrize("name", sorted(CAMERA_EXIF))
def test_real_camera_jpeg_exif(camera_files, name):
    make, model, captured_at, exposure_s, iso, serial = CAMERA_EXIF[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExifWarning)
        metadata = read_exif(camera_files / name)
    assert metadata == ImageMetadata(captured_at=captured_at, exposure_s=pytest.approx(exposure_s), iso=iso,
                                     make=make, model=model, serial=serial, orientation=1,
                                     width=80, height=80)


def test_capture_time_is_date_time_original_not_modification_time(camera_files):
    # 02.jpg (Casio QV-R51) was edited in 2011 (DateTime) but taken in 2006 (DateTimeOriginal).
    metadata = read_exif(camera_files / "02.jpg")
    assert metadata.captured_at == datetime(2006, 2, 16, 21, 19, 26)
    assert metadata.exposure_s == pytest.approx(0.00625)
    assert metadata.iso is None  # the file has no ISO tag: nothing is invented
    assert (metadata.make, metadata.model, metadata.width, metadata.height) == \
        ("CASIO COMPUTER CO.,LTD", "QV-R51", 400, 210)


def test_real_tiff_exif_read_with_tifffile(camera_files):
    metadata = read_exif(camera_files / "01.tif")
    assert metadata == ImageMetadata(captured_at=datetime(2006, 2, 14, 22, 0, 58), exposure_s=1 / 160,
                                     iso=None, make="CASIO COMPUTER CO.,LTD", model="QV-R51",
                                     serial=None, orientation=None, width=300, height=400)


def test_dng_exif_from_ifd0(write_dng):
    path = write_dng(np.zeros((8, 12), np.uint16), tags={
        "Make": "AgeTrace", "Model": "Bench", "DateTimeOriginal": "2021:03:04 05:06:07",
        "SubsecTimeOriginal": "25", "ExposureTime": [[1, 125]], "PhotographicSensitivity": [400],
        "CameraSerialNumber": "SN-0042", "Orientation": 1})
    metadata = read_exif(path)
    assert metadata == ImageMetadata(captured_at=datetime(2021, 3, 4, 5, 6, 7, 250000), exposure_s=0.008,
                                     iso=400, make="AgeTrace", model="Bench", serial="SN-0042",
                                     orientation=1, width=None, height=None)


def _jpeg_with_exif(path, ifd0: dict, exif_ifd: dict, size=(16, 12)):
    exif = Image.Exif()
    for tag, value in ifd0.items():
        exif[tag] = value
    if exif_ifd:
        exif.get_ifd(0x8769).update(exif_ifd)
    Image.new("RGB", size, (10, 20, 30)).save(path, exif=exif)
    return path


def test_offset_and_subseconds(tmp_path):
    path = _jpeg_with_exif(tmp_path / "a.jpg", {0x010F: "Maker", 0x0110: "Body 1", 0x0112: 6},
                           {0x9003: "2015:06:01 23:59:58", 0x9291: "5", 0x9011: "-03:30",
                            0xA431: "0123456", 0x829A: IFDRational(1, 60), 0x8827: 3200})
    metadata = read_exif(path)
    assert metadata.captured_at == datetime(2015, 6, 1, 23, 59, 58, 500000,
                                            tzinfo=timezone(-timedelta(hours=3, minutes=30)))
    assert metadata.serial == "0123456"
    assert metadata.orientation == 6
    assert metadata.exposure_s == pytest.approx(1 / 60)
    assert metadata.iso == 3200
    assert (metadata.width, metadata.height) == (16, 12)


def test_image_without_exif_has_all_fields_none(tmp_path):
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metadata = read_exif(path)
    assert metadata == ImageMetadata(width=8, height=8)


@pytest.mark.parametrize(("exif_ifd", "field", "message"), [
    ({0x9003: "not a date at all"}, "captured_at", "DateTimeOriginal"),
    ({0x9003: "    :  :     :  :  "}, "captured_at", "blank"),
    ({0x9003: "2015:13:45 10:00:00"}, "captured_at", "not a valid time"),
    ({0x829A: IFDRational(0, 1)}, "exposure_s", "ExposureTime"),
    ({0x8827: 0}, "iso", "ISOSpeedRatings"),
])
def test_malformed_fields_are_none_with_a_warning(tmp_path, exif_ifd, field, message):
    path = _jpeg_with_exif(tmp_path / "bad.jpg", {0x010F: "Maker"}, exif_ifd)
    with pytest.warns(ExifWarning, match=message):
        metadata = read_exif(path)
    assert getattr(metadata, field) is None
    assert metadata.make == "Maker"


def test_bad_orientation_and_offset(tmp_path):
    path = _jpeg_with_exif(tmp_path / "bad.jpg", {0x0112: 9},
                           {0x9003: "2015:06:01 12:00:00", 0x9011: "CET"})
    metadata, issues = inspect_exif(path)
    assert metadata.orientation is None
    assert metadata.captured_at == datetime(2015, 6, 1, 12)  # kept, without the malformed offset
    assert len(issues) == 2
    assert any("Orientation 9" in issue for issue in issues)
    assert any("OffsetTimeOriginal 'CET'" in issue for issue in issues)


def test_corrupt_exif_block_does_not_crash(tmp_path):
    path = tmp_path / "corrupt_exif.jpg"
    Image.new("RGB", (8, 8)).save(path)
    data = path.read_bytes()
    # An APP1 Exif segment whose IFD offset points far beyond the segment.
    payload = b"Exif\x00\x00II*\x00\xff\xff\x00\x00" + b"\x00" * 8
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    path.write_bytes(data[:2] + segment + data[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow's own "Corrupt EXIF data" warning
        metadata, issues = inspect_exif(path)
    assert issues == ["the EXIF block is present but unreadable (malformed); ignored"]
    assert metadata.captured_at is None and metadata.make is None
    assert (metadata.width, metadata.height) == (8, 8)


def test_metadata_from_tags_handles_tifffile_and_pillow_values():
    metadata, issues = metadata_from_tags({
        0x010F: "NIKON CORPORATION\x00", 0x0110: b"NIKON D7000\x00\x00", 0x829A: (10, 4000),
        0x8827: (65535, 65535), 0x8833: 102400, 0x9003: "2016:01:02 03:04:05\x00",
        0xA431: "  12345  \x00"})
    assert issues == []
    assert metadata == ImageMetadata(captured_at=datetime(2016, 1, 2, 3, 4, 5), exposure_s=0.0025,
                                     iso=102400, make="NIKON CORPORATION", model="NIKON D7000",
                                     serial="12345")


def test_zero_denominator_exposure_is_rejected():
    metadata, issues = metadata_from_tags({0x829A: (1, 0)})
    assert metadata.exposure_s is None and "ExposureTime" in issues[0]


def test_detect_format_uses_content_not_extension(tmp_path, camera_files):
    png_named_jpg = tmp_path / "really_png.jpg"
    Image.new("RGB", (4, 4)).save(png_named_jpg, format="PNG")
    jpeg_named_tif = tmp_path / "really_jpeg.tif"
    jpeg_named_tif.write_bytes((camera_files / "r_sony.jpg").read_bytes())
    assert detect_format(png_named_jpg) == "png"
    assert detect_format(jpeg_named_tif) == "jpeg"
    assert detect_format(camera_files / "01.tif") == "tiff"


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty file (0 bytes)"),
    (b"<!DOCTYPE html>\n<html><body>Error 404</body></html>\n", "not an image: the file is text, starting with '<!DOCTYPE html>…'"),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "GIF files are not supported"),
    (bytes(range(200, 256)) * 4, "unrecognised file format"),
])
def test_detect_format_rejects_non_images(tmp_path, content, reason):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as caught:
        detect_format(path)
    assert caught.value.path == str(path)
    assert caught.value.reason.startswith(reason)
    with pytest.raises(ImageReadError):
        read_exif(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_exif(tmp_path / "nope.jpg")


def test_header_reading_ignores_pillows_decompression_bomb_limit(camera_files, monkeypatch):
    # Only headers are read, so a photo larger than Pillow's decoding limit keeps its EXIF.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert read_exif(camera_files / "r_sony.jpg").model == "DSC-RX1R"
