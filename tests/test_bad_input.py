"""The bad-input suite: malformed files and manifests thrown at the pipeline at three levels.

1. :func:`pipeline.data.imageio.read_image` — every bad file raises
   :class:`~pipeline.data.errors.ImageReadError` naming the file, the problem and what to do.
2. :func:`pipeline.data.manifest.load_manifest` — every bad row is a
   :class:`~pipeline.data.errors.ManifestProblem` with its (physical) line number and a remedy;
   rows outside every class go to ``excluded``, never silently away.
3. :func:`pipeline.analysis.experiment.run_experiment` and ``python -m pipeline.ml_age`` — a run
   on a small synthetic dataset with bad files finishes, lists each bad file with its reason in
   ``failures.csv``, predicts none of them, leaves the other devices' results exactly as they
   were, and with ``strict`` stops at the bad image, naming it, in one line.

What no decoder can catch, and this suite therefore does not pretend to: a byte flipped inside
a JPEG's entropy-coded data often decodes without any error (JPEG carries no checksum), to
slightly different pixels. Those cases are asserted to decode to an image of the right frame
(never to crash, hang or change shape); the run's content-addressed cache keys on the file's
hash, so a changed file is at least never mistaken for the original.

A run reads every image of a device (the screening pass) before it splits them, so a bad file
changes nothing but its own absence; the device's frame, kind and bit depth are those most of
a few images spread over its time range share, so one foreign first image does not condemn
the rest; and a device with no readable image is skipped with its failures recorded.

Every test runs under a time limit (pytest-timeout, see below), so a decoder that hangs on a
crafted file fails its own test instead of stalling the suite or ending it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.data.errors import ImageReadError, ManifestError
from pipeline.data.exif import ExifWarning
from pipeline.data.imageio import read_image
from pipeline.data.manifest import load_manifest
from pipeline.ml_age import main as ml_age_main
from csv_rows import read_csv, write_rows

REPO = Path(__file__).resolve().parents[1]

# --- time limits ------------------------------------------------------------------------------
# pytest-timeout (in the dev extra) fails the one test that runs past its limit, printing its
# stack, and the suite goes on. Its signal method (SIGALRM, main thread) raises inside the test: it
# interrupts Python code and blocking system calls alike (a read, an open() on a named pipe). Its
# thread method is the only one that could end a hang inside C code that never returns to the
# interpreter, but it does so by ending the whole pytest process (as the faulthandler watchdog used
# here before did, on slow machines too): no test here needs it, every input being a small finite
# file. The limits are generous for a busy 2-core machine, and a run's limit also covers building the
# fixtures it is the first to use (the clean dataset and the baseline run).

DEFAULT_LIMIT_S = 120
RUN_LIMIT_S = 600  # whole experiments, on a shared and possibly busy machine

pytestmark = pytest.mark.timeout(DEFAULT_LIMIT_S, method="signal")


def time_limit(seconds: int):
    """Give one test a time limit other than DEFAULT_LIMIT_S (it fails that test only)."""
    return pytest.mark.timeout(seconds, method="signal")


# --- file factories ---------------------------------------------------------------------------

def _test_pixels(height=96, width=128, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([(2 * xx) % 256, (2 * yy) % 256, (xx + yy) % 256], axis=-1)
    return np.clip(rgb + rng.integers(-20, 21, rgb.shape), 0, 255).astype(np.uint8)


def _jpeg_bytes(pixels: np.ndarray, mode: str | None = None, **options) -> bytes:
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=options.pop("quality", 90), **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None = None,
               extra_chunks: bytes = b"") -> bytes:
    """A PNG written by hand (Pillow writes no 16-bit RGB, and a bomb must not be allocated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra_chunks
            + _png_chunk(b"IDAT", zlib.compress(rows if rows is not None else b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def _png_rows(samples: np.ndarray) -> bytes:
    """Filter type 0 (none) before every row of big-endian samples."""
    samples = samples.astype(samples.dtype.newbyteorder(">"))
    return b"".join(b"\x00" + row.tobytes() for row in samples)


def _sof_offset(data: bytes) -> int:
    """Offset of the first baseline/progressive SOF marker segment of a JPEG."""
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        position = data.find(marker)
        if position > 0:
            return position
    raise AssertionError("no SOF marker in the test JPEG")


def _with_frame(jpeg: bytes, height: int, width: int) -> bytes:
    """The same JPEG whose SOF header claims another frame size (no pixel data to match)."""
    data = bytearray(jpeg)
    sof = _sof_offset(jpeg)
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _flip_bytes(data: bytes, seed: int, n_flips: int = 4, start: int = 2) -> bytes:
    rng = np.random.default_rng(seed)
    flipped = bytearray(data)
    for position in rng.integers(start, len(data), n_flips):
        flipped[position] ^= 1 << int(rng.integers(8))
    return bytes(flipped)


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    return _jpeg_bytes(_test_pixels())


@pytest.fixture
def good_jpeg(tmp_path, jpeg_bytes) -> Path:
    path = tmp_path / "good.jpg"
    path.write_bytes(jpeg_bytes)
    return path


# --- assertions -------------------------------------------------------------------------------

# words of the advice that every ImageReadError gives (what the user can do)
_ADVICE = re.compile(r"exclude|re-copy|replace|use the|check|convert|raise|point|fix|remove|supply|pass",
                     re.IGNORECASE)


def assert_names_file(exc: ImageReadError, path: Path, reason: str) -> None:
    """The error names the file, says what is wrong (matching `reason`) and what to do."""
    assert isinstance(exc, ImageReadError)
    assert exc.path == str(path)
    assert re.search(reason, exc.reason, re.IGNORECASE), f"reason {exc.reason!r} does not match {reason!r}"
    assert _ADVICE.search(exc.advice), f"advice {exc.advice!r} says nothing to do"
    text = str(exc)
    assert str(path) in text and exc.reason in text and exc.advice in text
    assert "\n" not in text, "an image error is one line"


def read_error(path: Path, **kwargs) -> ImageReadError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExifWarning)
        with pytest.raises(ImageReadError) as excinfo:
            read_image(path, **kwargs)
    return excinfo.value


# === level 1: read_image ========================================================================

_TRUNCATED = r"truncated|premature end"


@pytest.mark.parametrize("seed", range(8))
def test_jpeg_cut_at_a_random_offset_is_truncated(tmp_path, jpeg_bytes, seed):
    cut = int(np.random.default_rng(seed).integers(1, len(jpeg_bytes)))
    path = tmp_path / f"cut_{cut}.jpg"
    path.write_bytes(jpeg_bytes[:cut])
    assert_names_file(read_error(path), path, _TRUNCATED)


@pytest.mark.parametrize("where", ["1 byte", "2 bytes", "inside the header", "before the scan",
                                   "half", "without EOI", "last byte missing"])
def test_jpeg_cut_at_a_boundary_is_truncated(tmp_path, jpeg_bytes, where):
    sof = _sof_offset(jpeg_bytes)
    cut = {"1 byte": 1, "2 bytes": 2, "inside the header": sof + 4, "before the scan": jpeg_bytes.find(b"\xff\xda"),
           "half": len(jpeg_bytes) // 2, "without EOI": len(jpeg_bytes) - 2,
           "last byte missing": len(jpeg_bytes) - 1}[where]
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes[:cut])
    assert_names_file(read_error(path), path, _TRUNCATED)


@pytest.mark.parametrize("seed", range(10))
def test_jpeg_with_flipped_bytes_fails_clearly_or_keeps_its_frame(tmp_path, jpeg_bytes, seed):
    """A flip libjpeg notices is an ImageReadError naming the file; one it cannot notice (JPEG has
    no checksum) decodes to an image of the original frame. Nothing else (no other exception)."""
    path = tmp_path / f"flipped_{seed}.jpg"
    path.write_bytes(_flip_bytes(jpeg_bytes, seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExifWarning)
        try:
            image = read_image(path, expected_shape=(96, 128), expected_kind="rgb", expected_bit_depth=8)
        except ImageReadError as exc:
            assert_names_file(exc, path, r"corrupt|truncated")
        else:
            assert image.pixels.shape == (96, 128, 3) and image.pixels.dtype == np.uint8


def test_byte_flips_are_mostly_caught(tmp_path, jpeg_bytes):
    """Over many seeds, a good share of random flips is detected, and every outcome is one of the two."""
    caught = 0
    for seed in range(40):
        path = tmp_path / "flipped.jpg"
        path.write_bytes(_flip_bytes(jpeg_bytes, 1000 + seed))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExifWarning)
                assert read_image(path, expected_shape=(96, 128)).pixels.shape == (96, 128, 3)
        except ImageReadError as exc:
            assert_names_file(exc, path, r"corrupt|truncated")
            caught += 1
    assert caught >= 10


def test_png_cut_short_of_its_end_is_truncated(tmp_path):
    """Pillow stops at the last pixel row: a PNG cut in its last bytes must still be refused."""
    buffer = io.BytesIO()
    Image.fromarray(_test_pixels()).save(buffer, "PNG")
    data = buffer.getvalue()
    for cut in (len(data) - 1, len(data) - 12, len(data) - 20, len(data) // 2, 40, 5):
        path = tmp_path / f"cut_{cut}.png"
        path.write_bytes(data[:cut])
        assert_names_file(read_error(path), path, _TRUNCATED)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert_names_file(read_error(path), path, r"empty file \(0 bytes\)")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_html_saved_as_jpg(tmp_path, encoding):
    path = tmp_path / "IMG_0042.jpg"
    path.write_bytes("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n".encode(encoding))
    assert_names_file(read_error(path), path, r"not an image: the file is text, starting with '<!DOCTYPE html>")


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_decompression_bomb_is_refused_from_its_header(tmp_path, jpeg_bytes, kind):
    """A small file claiming 60000×60000 is refused before any pixel buffer is allocated."""
    if kind == "jpeg":
        data, path = _with_frame(jpeg_bytes, 60000, 60000), tmp_path / "bomb.jpg"
    else:
        data, path = _png_bytes(60000, 60000, 8, 2), tmp_path / "bomb.png"
    path.write_bytes(data)
    assert path.stat().st_size < 10_000
    tracemalloc.start()
    try:
        exc = read_error(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_names_file(exc, path, r"60000×60000 = 3,600,000,000 pixels exceeds the limit")
    assert "max_pixels" in exc.advice
    assert peak < 50_000_000  # numpy buffers are traced: nothing near 10.8 GB was allocated


def test_png_bomb_under_our_limit_meets_pillows(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(14000, 14000, 8, 0))
    assert_names_file(read_error(path), path, r"decompression-bomb limit")


def test_png_text_chunk_bomb(tmp_path):
    """A compressed text chunk that expands to 20 MB (Pillow's cap is 1 MB)."""
    bomb = _png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * 20_000_000, 9))
    path = tmp_path / "ztxt.png"
    path.write_bytes(_png_bytes(4, 4, 8, 0, b"\x00" * 5 * 4, extra_chunks=bomb))
    assert_names_file(read_error(path), path, r"decompression bomb")


def test_max_pixels_is_a_choice_of_the_caller(good_jpeg):
    assert_names_file(read_error(good_jpeg, max_pixels=1000), good_jpeg, r"exceeds the limit of 1,000")


def test_jpeg_header_with_an_empty_frame(tmp_path, jpeg_bytes):
    path = tmp_path / "zero_height.jpg"
    path.write_bytes(_with_frame(jpeg_bytes, 0, 128))
    assert_names_file(read_error(path), path, r"corrupt|empty image")


def test_grayscale_jpeg_reads_as_gray_and_is_refused_in_an_rgb_device(tmp_path):
    pixels = _test_pixels()
    path = tmp_path / "gray.jpg"
    path.write_bytes(_jpeg_bytes(pixels, "L"))
    image = read_image(path)
    assert image.kind == "gray" and image.pixels.shape == (96, 128) and image.bit_depth == 8
    assert np.array_equal(image.pixels, np.asarray(Image.open(path)))
    assert read_image(path, expected_kind="gray", expected_bit_depth=8).kind == "gray"
    assert_names_file(read_error(path, expected_shape=(96, 128), expected_kind="rgb"), path,
                      r"grayscale image in a device whose images are colour \(RGB\)")


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "print.jpg"
    path.write_bytes(_jpeg_bytes(_test_pixels(), "CMYK"))
    assert_names_file(read_error(path), path, r"CMYK JPEG: not supported")


def test_16bit_gray_png_keeps_16_bits_and_is_refused_among_8bit_images(tmp_path):
    samples = np.random.default_rng(3).integers(0, 65536, (32, 48)).astype(np.uint16)
    path = tmp_path / "gray16.png"
    path.write_bytes(_png_bytes(48, 32, 16, 0, _png_rows(samples)))
    image = read_image(path)
    assert image.kind == "gray" and image.bit_depth == 16 and image.pixels.dtype == np.uint16
    assert np.array_equal(image.pixels, samples)  # no bit lost
    assert_names_file(read_error(path, expected_kind="gray", expected_bit_depth=8), path,
                      r"16-bit samples in a device whose images are 8-bit")


def test_16bit_rgb_png_is_refused_rather_than_reduced_to_8_bits(tmp_path):
    samples = np.random.default_rng(4).integers(0, 65536, (32, 48, 3)).astype(np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_bytes(48, 32, 16, 2, _png_rows(samples.reshape(32, -1))))
    assert_names_file(read_error(path), path, r"16-bit rgb PNG")


def test_another_resolution_inside_a_device(good_jpeg):
    assert_names_file(read_error(good_jpeg, expected_shape=(150, 200)), good_jpeg,
                      r"stored as 128×96 \(width×height\) but the device frame is 200×150")


def test_transposed_image_inside_a_device(tmp_path):
    pixels = _test_pixels()
    path = tmp_path / "portrait.png"  # lossless, so that turning it back can be checked exactly
    Image.fromarray(np.ascontiguousarray(np.rot90(pixels, -1))).save(path)
    assert_names_file(read_error(path, expected_shape=(96, 128)), path, r"stored rotated 90°")
    assert np.array_equal(read_image(path, expected_shape=(96, 128), rotate_back=1).pixels, pixels)


def test_missing_file_and_folder_in_place_of_a_file(tmp_path):
    assert_names_file(read_error(tmp_path / "gone.jpg"), tmp_path / "gone.jpg", r"file not found")
    folder = tmp_path / "IMG_0001.jpg"
    folder.mkdir()
    assert_names_file(read_error(folder), folder, r"is a directory")


def test_layout_arguments_are_checked(good_jpeg):
    with pytest.raises(ValueError, match="expected_kind must be one of rgb, gray, cfa"):
        read_image(good_jpeg, expected_kind="RGB")
    with pytest.raises(ValueError, match="expected_bit_depth must be a positive integer"):
        read_image(good_jpeg, expected_bit_depth=0)


# --- unreadable permissions ---------------------------------------------------------------------

NOBODY = 65534


def _as_nobody(func, *args) -> str:
    """Run ``func(*args)`` in a forked child without root's privileges; 'ok' or 'Type: message'.

    Root reads a file whatever its mode, so as root a chmod-000 file proves nothing; the
    child gives the privileges up first, then tries.
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a multi-threaded process
        pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    func(*args)
                outcome = "ok"
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                outcome = f"{type(exc).__name__}: {exc}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.fixture
def world_folder():
    """A folder anyone may enter (tmp_path's parents are root-only), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="agetrace-perm-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _unreadable_outcome(func, path: Path) -> str:
    path.chmod(0o000)
    if os.geteuid() != 0:
        try:
            func(path)
            return "ok"
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
    if not hasattr(os, "fork"):
        pytest.skip("running as root without os.fork: a chmod-000 file is readable to root")
    return _as_nobody(func, path)


def test_unreadable_image(world_folder, jpeg_bytes):
    readable, locked = world_folder / "ok.jpg", world_folder / "locked.jpg"
    readable.write_bytes(jpeg_bytes)
    readable.chmod(0o644)
    locked.write_bytes(jpeg_bytes)
    if os.geteuid() == 0:
        assert _as_nobody(read_image, readable) == "ok"  # the unprivileged child can read at all
    outcome = _unreadable_outcome(read_image, locked)
    assert outcome == (f"ImageReadError: cannot read image '{locked}': cannot open the file (Permission denied). "
                       "Check the file's permissions and the disk.")


def test_unreadable_manifest(world_folder):
    manifest = world_folder / "m.csv"
    manifest.write_text("path,device,timeslot,label\na.jpg,cam,1,0\n")
    outcome = _unreadable_outcome(load_manifest, manifest)
    assert outcome.startswith("ManifestError: ") and str(manifest) in outcome
    assert "cannot read the manifest (Permission denied): check its permissions" in outcome


# === level 2: load_manifest =====================================================================

HEADER = "path,device,timeslot,label\n"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A manifest folder with four (dummy) image files, a sub-folder and a file outside it."""
    root = tmp_path / "set"
    root.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (root / name).write_bytes(b"x")
    (tmp_path / "outside.jpg").write_bytes(b"x")
    return root


def manifest_problems(path: Path, **kwargs) -> dict[int | None, str]:
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(path, **kwargs)
    error = excinfo.value
    assert error.source == str(path) and str(path) in str(error)
    found: dict[int | None, str] = {}
    for problem in error.problems:
        found[problem.line] = found.get(problem.line, "") + str(problem)
        assert str(problem) in str(error)  # every problem is in the message, with its line
    return found


def write_manifest(folder: Path, text: str, name: str = "m.csv") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_duplicate_rows_are_found_whatever_their_spelling(folder):
    text = (HEADER + "a.jpg,cam,1,0\n"
            "a.jpg,cam,2,1\n"                                  # 3: the same spelling
            "./a.jpg,cam,3,0\n"                                # 4: ./
            f"{folder / 'a.jpg'},cam,4,1\n"                    # 5: absolute
            f"{folder.parent / 'set' / '..' / 'set' / 'a.jpg'},cam,5,0\n"  # 6: absolute through ..
            "b.jpg,cam,6,1\n")
    (folder / "link_to_b.jpg").symlink_to(folder / "b.jpg")
    text += "link_to_b.jpg,cam,7,0\n"                          # 8: a link to b.jpg
    found = manifest_problems(write_manifest(folder, text))
    assert sorted(found) == [3, 4, 5, 6, 8]
    for line in (3, 4, 5, 6):
        assert "duplicate path: the same file as line 2; remove one of the two rows" in found[line]
    assert "the same file as line 7" in found[8]


def test_line_numbers_are_physical_lines(folder):
    """Blank lines and line breaks inside quoted fields do not shift the reported line."""
    text = (HEADER + "a.jpg,cam,1,0\n"
            "\n"
            "\n"
            '"b.jpg",cam,2,"1"\n'
            'c.jpg,"cam\nera",3,0\n'   # lines 6-7
            "missing.jpg,cam,4,1\n")   # line 8
    found = manifest_problems(write_manifest(folder, text))
    assert list(found) == [8] and "missing.jpg" in found[8]


def test_missing_rows_fields_and_files(folder):
    (folder / "sub").mkdir()
    (folder / "dangling.jpg").symlink_to(folder / "deleted.jpg")
    text = (HEADER + "a.jpg,cam,1,0\n"
            "b.jpg,cam\n"              # 3: a short row
            ",cam,2,1\n"               # 4: no path
            "c.jpg,,3,1\n"             # 5: no device
            "missing.jpg,cam,4,1\n"    # 6: no such file
            "sub,cam,5,0\n"            # 7: a folder
            "dangling.jpg,cam,6,1\n")  # 8: a broken link
    found = manifest_problems(write_manifest(folder, text))
    assert sorted(found) == [3, 4, 5, 6, 7, 8]
    assert "the row has 2 field(s) but the header has 4: timeslot, label missing; complete the row" in found[3]
    assert "empty path: give the image file or remove the row" in found[4]
    assert "empty device: give the camera body's id" in found[5]
    assert "file not found" in found[6] and "correct the path or remove the row" in found[6]
    assert "is a folder, not an image file" in found[7]
    assert "file not found" in found[8] or "broken symbolic link" in found[8]


def test_short_rows_may_leave_out_trailing_optional_columns(folder):
    manifest = load_manifest(write_manifest(folder, "path,device,timeslot,label,exposure_s,iso\n"
                                                    "a.jpg,cam,1,0\nb.jpg,cam,2,1,0.01\n"))
    assert [r.exposure_s for r in manifest.rows] == [None, 0.01]


def test_extra_fields_are_a_problem(folder):
    found = manifest_problems(write_manifest(folder, HEADER + "a.jpg,cam,1,0\nb.jpg,cam,1,0,extra,more\n"))
    assert "2 more field(s) than the header has columns" in found[3] and "quote" in found[3]


@pytest.mark.parametrize("value", ["2014-13-01", "2014-02-30T10:00:00", "yesterday", "21/03/2015", "2014"])
def test_unparseable_dates(folder, value):
    path = write_manifest(folder, f"path,device,captured_at,label\na.jpg,cam,2014-10-01T10:00:00,0\nb.jpg,cam,{value},1\n")
    found = manifest_problems(path)
    assert list(found) == [3]
    assert f"captured_at: cannot parse {value!r} as an ISO 8601 time (e.g. 2015-03-21T14:05:00)" in found[3]


@pytest.mark.parametrize("header, rows, message", [
    ("path,captured_at,label", ["a.jpg,2014-10-01,0", "gone.jpg,2014-10-02,1", "a.jpg,2014-10-03,1"],
     r"missing required column\(s\) device"),
    ("path,device,label", ["a.jpg,cam,0", "gone.jpg,cam,1", "a.jpg,cam,1"], r"captured_at or a timeslot column"),
    ("path,device,timeslot", ["a.jpg,cam,1", "gone.jpg,cam,2", "a.jpg,cam,3"],
     r"no label column and no class specification"),
    ("path,device,timeslot,label,device", ["a.jpg,cam,1,0,cam", "gone.jpg,cam,2,1,cam", "a.jpg,cam,3,1,cam"],
     r"device appear more than once in the header"),
])
def test_missing_or_repeated_columns_hide_no_row_problem(folder, header, rows, message):
    """A header problem is listed with every row problem (here a missing file and a duplicate), in one pass."""
    found = manifest_problems(write_manifest(folder, "\n".join([header, *rows]) + "\n"))
    assert sorted(found) == [1, 3, 4] and re.search(message, found[1])
    assert "file not found" in found[3] and "duplicate path: the same file as line 2" in found[4]


def test_without_a_path_column_rows_cannot_be_checked_and_the_message_says_so(folder):
    found = manifest_problems(write_manifest(folder, "device,timeslot,label\ncam,1,0\n"))
    assert list(found) == [1] and re.search(r"missing required column\(s\) path", found[1])
    assert "No row was checked: without a path column no row names an image" in found[1]


def test_empty_manifest_folder_and_header_only(folder):
    assert "is a folder, not a manifest" in str(manifest_problems(folder)[None])
    assert "needs a header" in manifest_problems(write_manifest(folder, ""))[1]
    assert "header but no rows" in manifest_problems(write_manifest(folder, HEADER, "h.csv"))[None]


def test_rows_outside_every_class_are_excluded_with_their_line(folder):
    path = write_manifest(folder, "path,device,timeslot\n"
                                  "a.jpg,NTIF-canon01,2\n"
                                  "b.jpg,NTIF-canon01,12\n"    # between the classes
                                  "c.jpg,NTIF-canon01,22\n"
                                  "d.jpg,NTIF-canon01,70\n")   # after them
    manifest = load_manifest(path, class_spec="ntif")
    assert [r.path.name for r in manifest.rows] == ["a.jpg", "c.jpg"]
    assert [(e.line, e.path) for e in manifest.excluded] == [(3, "b.jpg"), (5, "d.jpg")]
    assert all("outside every class" in e.reason for e in manifest.excluded)


def test_relative_paths_that_escape_the_folder(folder):
    (folder / "out_link.jpg").symlink_to(folder.parent / "outside.jpg")
    (folder / "in_link.jpg").symlink_to(folder / "c.jpg")
    text = (HEADER + "a.jpg,cam,1,0\n"
            "../outside.jpg,cam,2,1\n"         # 3: ../
            "sub/../../outside.jpg,cam,3,0\n"  # 4: ../ further in
            "out_link.jpg,cam,4,1\n"           # 5: a link that leads out
            "in_link.jpg,cam,5,0\n")           # 6: a link that stays in: fine
    found = manifest_problems(write_manifest(folder, text))
    assert sorted(found) == [3, 4, 5]
    for line in (3, 4):
        assert "escapes the manifest's folder" in found[line] and "it points outside" in found[line]
        assert "write the file's absolute path instead" in found[line]
    assert "through a symbolic link it leads to" in found[5] and str(folder.parent / "outside.jpg") in found[5]


def test_absolute_paths_outside_the_folder_are_allowed_as_written(folder):
    """DESIGN.md: a path is relative to the manifest's folder *or absolute*; an absolute path is the
    user's explicit choice and is kept as written (not re-rooted), and is checked like any other."""
    outside = folder.parent / "outside.jpg"
    manifest = load_manifest(write_manifest(folder, HEADER + f"a.jpg,cam,1,0\n{outside},cam,2,1\n"))
    assert manifest.rows[1].path == outside
    found = manifest_problems(write_manifest(folder, HEADER + f"{folder.parent / 'nowhere.jpg'},cam,1,0\n", "n.csv"))
    assert "file not found" in found[2]
    # and the image reader then judges the file's content, naming it (here: not an image)
    assert_names_file(read_error(outside), outside, r"not an image|unrecognised file format")


def test_every_problem_in_one_pass(folder):
    """One ManifestError lists all problems of all kinds, each on its own line of the message."""
    text = ("path,device,captured_at,label\n"
            "a.jpg,cam,2014-10-01T10:00:00,0\n"
            "a.jpg,cam,2014-10-02T10:00:00,1\n"
            "gone.jpg,cam,2014-10-03T10:00:00,1\n"
            "b.jpg,cam,not a date,0\n"
            "../outside.jpg,cam,2014-10-04T10:00:00,1\n"
            "c.jpg,cam,2014-10-05T10:00:00,minus one\n")
    found = manifest_problems(write_manifest(folder, text))
    assert sorted(found) == [3, 4, 5, 6, 7]


# === level 3: the whole run =====================================================================

DEVICES = ("SIM-alpha01", "SIM-beta01")  # alpha gets the bad files; beta must not notice
RUN_CFG = {"methods": ("fg", "nb"), "runs": 2, "workers": 1, "progress": False}


@pytest.fixture(scope="module")
def clean_root(small_dataset, tmp_path_factory) -> Path:
    """The small synthetic dataset with a two-device manifest ``two.csv`` (a private copy)."""
    dataset = small_dataset
    root = tmp_path_factory.mktemp("clean") / "data"
    shutil.copytree(dataset.root, root)
    rows = [r for r in read_csv(root / "manifest.csv") if r["device"] in DEVICES]
    write_rows(root / "two.csv", rows)
    return root


@pytest.fixture(scope="module")
def baseline(clean_root, tmp_path_factory) -> dict:
    """The run on the untouched two-device manifest."""
    out = tmp_path_factory.mktemp("baseline")
    run_experiment(load_manifest(clean_root / "two.csv"), out, ExperimentConfig(**RUN_CFG))
    return {"metrics": read_csv(out / "metrics.csv"), "predictions": read_csv(out / "predictions.csv")}


@pytest.fixture
def root(clean_root, tmp_path) -> Path:
    """A private copy of the clean dataset that a test may damage."""
    copy = tmp_path / "data"
    shutil.copytree(clean_root, copy)
    return copy.resolve()  # the manifest resolves relative paths, so compare resolved ones


def _corrupt_detectably(path: Path) -> None:
    """Flip bytes (seeded) inside the scan data until libjpeg notices."""
    data = path.read_bytes()
    scan = data.find(b"\xff\xda")
    for seed in range(100):
        path.write_bytes(_flip_bytes(data, seed, n_flips=8, start=scan + 20))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExifWarning)
                read_image(path)
        except ImageReadError:
            return
    raise AssertionError("no seed gave a detectable corruption")


def _add_image(rows: list[dict], like: dict, root: Path, name: str, data: bytes) -> str:
    """A new row for the device of `like`, at the same time, with a file of the given content."""
    rel = str(Path(like["path"]).with_name(name))
    (root / rel).write_bytes(data)
    rows.insert(rows.index(like) + 1, {**like, "path": rel})
    return rel


def damage(root: Path) -> tuple[list[dict], dict[str, str]]:
    """Corrupt some of SIM-alpha01's files and add foreign ones; returns (rows, {path: reason pattern})."""
    rows = read_csv(root / "two.csv")
    alpha = [r for r in rows if r["device"] == "SIM-alpha01"]
    bad: dict[str, str] = {}

    def file_of(i):
        return root / alpha[i]["path"]

    file_of(3).write_bytes(file_of(3).read_bytes()[:4000])
    bad[alpha[3]["path"]] = _TRUNCATED
    file_of(7).write_bytes(b"")
    bad[alpha[7]["path"]] = r"empty file \(0 bytes\)"
    file_of(11).write_bytes(b"<!DOCTYPE html>\n<html><body>Service unavailable</body></html>\n")
    bad[alpha[11]["path"]] = r"not an image: the file is text"
    _corrupt_detectably(file_of(18))
    bad[alpha[18]["path"]] = r"corrupt|truncated"
    file_of(22).write_bytes(_jpeg_bytes(np.asarray(Image.open(file_of(22))), "CMYK"))
    bad[alpha[22]["path"]] = r"CMYK JPEG"

    pixels = np.asarray(Image.open(file_of(5)))
    rel = _add_image(rows, alpha[5], root, "resized.jpg",
                     _jpeg_bytes(np.asarray(Image.fromarray(pixels).resize((200, 150)))))
    bad[rel] = r"stored as 200×150 \(width×height\) but the device frame is 256×192"
    rel = _add_image(rows, alpha[20], root, "portrait.jpg",
                     _jpeg_bytes(np.ascontiguousarray(np.rot90(np.asarray(Image.open(file_of(20)))))))
    bad[rel] = r"stored rotated 90°"
    samples = (np.asarray(Image.open(file_of(26))).astype(np.uint16) * 257).reshape(192, -1)
    rel = _add_image(rows, alpha[26], root, "rgb16.png", _png_bytes(256, 192, 16, 2, _png_rows(samples)))
    bad[rel] = r"16-bit rgb PNG"
    return rows, bad


def _by_device(rows: list[dict], device: str, keys=None) -> list:
    keep = [r for r in rows if r["device"] == device]
    return keep if keys is None else [{k: r[k] for k in keys} for r in keep]


@time_limit(RUN_LIMIT_S)
def test_run_records_every_bad_file_and_goes_on(root, baseline, tmp_path):
    rows, bad = damage(root)
    out = tmp_path / "run"
    result = run_experiment(load_manifest(write_rows(root / "bad.csv", rows)), out, ExperimentConfig(**RUN_CFG))

    # failures.csv: exactly the bad files, each with its own reason
    failures = read_csv(out / "failures.csv")
    listed = {f["image"]: f for f in failures}  # relative to the manifest's folder, as every output
    assert set(listed) == set(bad)
    for rel, pattern in bad.items():
        assert listed[rel]["device"] == "SIM-alpha01"
        assert re.search(pattern, listed[rel]["reason"], re.IGNORECASE), (rel, listed[rel]["reason"])
    assert len(result["failures"]) == len(bad)

    # nothing predicted for a bad file; everything else of each split's test set predicted
    predictions = read_csv(out / "predictions.csv")
    assert not {p["image"] for p in predictions} & set(bad)
    for run in range(RUN_CFG["runs"]):
        split = read_csv(out / "splits" / "SIM-alpha01" / f"run_{run:02d}.csv")
        expected = sorted(str(Path(r["path"]).relative_to(root)) for r in split
                          if r["subset"] == "test" and str(Path(r["path"]).relative_to(root)) not in bad)
        for method in RUN_CFG["methods"]:
            got = sorted(p["image"] for p in predictions
                         if p["device"] == "SIM-alpha01" and p["run"] == str(run) and p["method"] == method)
            assert got == expected, (run, method)
        for defect in read_csv(out / "defects" / "SIM-alpha01" / f"run_{run:02d}.csv"):
            assert defect["onset_path"] not in bad  # no defect dated by a bad image

    # the run is complete and says so
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "complete" and config["n_failures"] == len(bad)
    assert f"{len(bad)} image(s) could not be read" in (out / "summary.md").read_text()

    # the untouched device's results are exactly those of the clean run
    keys = ("device", "run", "method", "accuracy", "n_test", "n_train", "n_defects")
    assert _by_device(read_csv(out / "metrics.csv"), "SIM-beta01", keys) == \
        _by_device(baseline["metrics"], "SIM-beta01", keys)
    assert _by_device(predictions, "SIM-beta01") == _by_device(baseline["predictions"], "SIM-beta01")


@time_limit(RUN_LIMIT_S)
def test_bad_files_change_nothing_but_their_own_absence(root, tmp_path):
    """Accuracy on the remaining images equals a run whose manifest simply leaves the bad files out."""
    rows, bad = damage(root)
    damaged = run_experiment(load_manifest(write_rows(root / "bad.csv", rows)), tmp_path / "bad",
                             ExperimentConfig(**RUN_CFG))
    without = run_experiment(load_manifest(write_rows(root / "without.csv", [r for r in rows if r["path"] not in bad])),
                             tmp_path / "without", ExperimentConfig(**RUN_CFG))
    assert len(damaged["failures"]) == len(bad) and not without["failures"]
    keys = ("device", "run", "method", "accuracy", "n_test")
    assert [{k: m[k] for k in keys} for m in damaged["metrics"]] == \
        [{k: m[k] for k in keys} for m in without["metrics"]]
    assert read_csv(tmp_path / "bad" / "predictions.csv") == read_csv(tmp_path / "without" / "predictions.csv")


@pytest.mark.parametrize("kind", ["grayscale JPEG", "16-bit gray PNG"])
@time_limit(RUN_LIMIT_S)
def test_grayscale_or_16bit_image_in_an_rgb_device_is_recorded(root, tmp_path, kind):
    rows = read_csv(root / "two.csv")
    alpha = [r for r in rows if r["device"] == "SIM-alpha01"]
    pixels = np.asarray(Image.open(root / alpha[9]["path"]))
    if kind == "grayscale JPEG":
        rel = _add_image(rows, alpha[9], root, "gray.jpg", _jpeg_bytes(pixels, "L"))
    else:
        gray16 = np.asarray(Image.fromarray(pixels).convert("L")).astype(np.uint16) * 257
        rel = _add_image(rows, alpha[9], root, "gray16.png", _png_bytes(256, 192, 16, 0, _png_rows(gray16)))
    try:
        result = run_experiment(load_manifest(write_rows(root / "bad.csv", rows)), tmp_path / "run",
                                ExperimentConfig(**RUN_CFG))
    except ValueError as exc:
        raise AssertionError(f"the run crashed on the {kind} instead of recording it: {exc}") from exc
    assert [(f["image"], bool(re.search(r"grayscale|16-bit", f["reason"]))) for f in result["failures"]] == \
        [(Path(rel).as_posix(), True)]


@pytest.mark.parametrize("how", ["transposed", "resized"])
@time_limit(RUN_LIMIT_S)
def test_a_foreign_first_image_does_not_condemn_its_device(root, tmp_path, how):
    rows = read_csv(root / "two.csv")
    first = min((r for r in rows if r["device"] == "SIM-alpha01"), key=lambda r: (int(r["timeslot"]), r["captured_at"]))
    pixels = np.asarray(Image.open(root / first["path"]))
    foreign = np.rot90(pixels) if how == "transposed" else np.asarray(Image.fromarray(pixels).resize((200, 150)))
    (root / first["path"]).write_bytes(_jpeg_bytes(np.ascontiguousarray(foreign)))
    result = run_experiment(load_manifest(root / "two.csv"), tmp_path / "run", ExperimentConfig(**RUN_CFG))
    assert [f["image"] for f in result["failures"]] == [first["path"]]  # relative to the manifest's folder


@time_limit(RUN_LIMIT_S)
def test_a_device_with_no_readable_image_does_not_end_the_run(root, baseline, tmp_path):
    rows = read_csv(root / "two.csv")
    dead = []
    for row in [r for r in rows if r["device"] == "SIM-alpha01"]:
        (root / row["path"]).write_bytes(b"<html>quota exceeded</html>\n")
        dead.append(str(root / row["path"]))
    try:
        result = run_experiment(load_manifest(root / "two.csv"), tmp_path / "run", ExperimentConfig(**RUN_CFG))
    except ImageReadError as exc:
        raise AssertionError(f"one dead device ended the run: {exc}") from exc
    assert sorted(str(root / f["image"]) for f in result["failures"]) == sorted(dead)  # relative to root
    keys = ("device", "run", "method", "accuracy")
    assert _by_device(read_csv(tmp_path / "run" / "metrics.csv"), "SIM-beta01", keys) == \
        _by_device(baseline["metrics"], "SIM-beta01", keys)


def _one_truncated(root: Path) -> tuple[Path, Path]:
    """two.csv with one of SIM-alpha01's files truncated: (manifest, the bad file)."""
    rows = read_csv(root / "two.csv")
    victim = root / [r for r in rows if r["device"] == "SIM-alpha01"][13]["path"]
    victim.write_bytes(victim.read_bytes()[:3000])
    return root / "two.csv", victim


@time_limit(RUN_LIMIT_S)
def test_strict_stops_at_the_bad_image_naming_it(root, tmp_path):
    manifest, victim = _one_truncated(root)
    out = tmp_path / "run"
    with pytest.raises(ImageReadError) as excinfo:
        run_experiment(load_manifest(manifest), out, ExperimentConfig(**RUN_CFG, strict=True))
    assert_names_file(excinfo.value, victim, _TRUNCATED)
    assert "--strict" in excinfo.value.advice
    # an interrupted run never looks complete
    assert json.loads((out / "config.json").read_text())["status"] != "complete"
    assert not (out / "predictions.csv").exists()


@time_limit(RUN_LIMIT_S)
def test_cli_strict_exits_with_one_line_naming_the_file(root, tmp_path):
    manifest, victim = _one_truncated(root)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "pipeline.ml_age", "-q", "--manifest", str(manifest), "--strict",
                           "--methods", "fg", "--runs", "1", "--workers", "1", "--no-progress",
                           "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=RUN_LIMIT_S - 30,
                          check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: cannot read image '{victim}': ")
    assert re.search(_TRUNCATED, lines[0], re.IGNORECASE) and "--strict" in lines[0]


def test_cli_reports_manifest_problems_with_their_lines(folder, tmp_path, capsys):
    path = write_manifest(folder, HEADER + "a.jpg,cam,1,0\n../outside.jpg,cam,2,1\ngone.jpg,cam,3,1\n")
    assert ml_age_main(["--manifest", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith(f"error: manifest '{path}' has 2 problems:")
    assert "line 3" in captured.err and "line 4" in captured.err



# === the suite's own time limits ================================================================

_PROBE_PLUGIN = '''
import faulthandler, json, os
import pytest

_killers, _limits = [], {}
_arm = faulthandler.dump_traceback_later

def _recording_arm(timeout, repeat=False, file=None, exit=False):
    if exit:
        _killers.append(timeout)
    return _arm(timeout, repeat=repeat, exit=exit, **({} if file is None else {"file": file}))

faulthandler.dump_traceback_later = _recording_arm

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    for item in items:
        marker = item.get_closest_marker("timeout")
        _limits[item.name] = None if marker is None else marker.kwargs.get("method")

def pytest_sessionfinish(session):
    with open(os.environ["PROBE_OUT"], "w") as fh:
        json.dump({"killers": _killers, "limits": _limits,
                   "pytest_timeout": session.config.pluginmanager.hasplugin("timeout")}, fh)
'''


def test_a_test_past_its_limit_fails_alone_and_never_ends_the_process(tmp_path):
    """No process-wide watchdog (faulthandler with exit=True ends pytest, every test after it lost);
    every test of this module has a pytest-timeout limit with the signal method, which fails that test."""
    (tmp_path / "probe_plugin.py").write_text(_PROBE_PLUGIN)
    env = {**os.environ, "PROBE_OUT": str(tmp_path / "probe.json"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "probe_plugin", "-p", "no:cacheprovider", "-q",
                           "-k", "test_zero_byte_file or test_missing_file_and_folder", __file__],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=DEFAULT_LIMIT_S - 20,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["pytest_timeout"], "pytest-timeout is not installed: pip install -e '.[dev]'"
    assert probe["killers"] == [], "a watchdog that ends the whole pytest process was armed"
    assert len(probe["limits"]) > 50
    assert {name for name, method in probe["limits"].items() if method != "signal"} == set()
