"""build_manifest / write_manifest (pipeline.data.manifest_builder) on a tree of real camera files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.errors import ManifestProblem
from pipeline.data.manifest_builder import MANIFEST_COLUMNS, build_manifest, write_manifest


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


@pytest.fixture
def photo_tree(camera_files, tmp_path):
    """root/olympus/{r_olympus.jpg, 2014/r_pen.JPG}, root/sony/r_sony.jpg + files to skip or report."""
    root = tmp_path / "photos"
    _copy(camera_files / "r_olympus.jpg", root / "olympus" / "r_olympus.jpg")
    _copy(camera_files / "r_pen.jpg", root / "olympus" / "2014" / "r_pen.JPG")
    _copy(camera_files / "r_sony.jpg", root / "sony" / "r_sony.jpg")
    Image.new("RGB", (8, 8)).save(root / "sony" / "no_exif.jpg")
    (root / "sony" / "empty.jpg").touch()
    (root / "sony" / "notes.txt").write_text("not an image, not listed")
    _copy(camera_files / "r_canon.jpg", root / "sony" / ".hidden.jpg")
    _copy(camera_files / "r_canon.jpg", root / ".trash" / "r_canon.jpg")
    return root


def test_rows_and_problems_from_a_device_tree(photo_tree):
    rows, problems = build_manifest(photo_tree)
    assert rows == [
        {"path": "olympus/2014/r_pen.JPG", "device": "olympus", "captured_at": "2014-08-23T13:05:43",
         "make": "OLYMPUS IMAGING CORP.", "model": "E-P3", "exposure_s": repr(1 / 30), "iso": "1600",
         "serial": ""},
        {"path": "olympus/r_olympus.jpg", "device": "olympus", "captured_at": "2013-11-12T13:54:29",
         "make": "OLYMPUS IMAGING CORP.", "model": "STYLUS1", "exposure_s": "0.04", "iso": "100",
         "serial": ""},
        {"path": "sony/no_exif.jpg", "device": "sony", "captured_at": "", "make": "", "model": "",
         "exposure_s": "", "iso": "", "serial": ""},
        {"path": "sony/r_sony.jpg", "device": "sony", "captured_at": "2013-04-13T10:22:18",
         "make": "SONY", "model": "DSC-RX1R", "exposure_s": "0.008", "iso": "100", "serial": ""},
    ]
    assert problems == [
        ManifestProblem(None, "left out, unreadable: empty file (0 bytes)", "sony/empty.jpg"),
        ManifestProblem(4, "no DateTimeOriginal in the EXIF: fill captured_at in (ISO 8601) or remove the row",
                        "sony/no_exif.jpg", "captured_at"),
    ]


def test_device_from_serial_and_from_name(camera_files, tmp_path):
    root = tmp_path / "mixed"
    _copy(camera_files / "r_casio.jpg", root / "a.jpg")
    _copy(camera_files / "r_sigma.jpg", root / "b.jpg")
    rows, problems = build_manifest(root, device_from="serial")
    assert [row["device"] for row in rows] == ["EX-100-hex:10156012950003570078617c0090773f", ""]
    assert rows[0]["serial"] == "hex:10156012950003570078617c0090773f"
    assert [(problem.line, problem.column) for problem in problems] == [(3, "device")]

    rows, problems = build_manifest(root, device="cam-01")
    assert [row["device"] for row in rows] == ["cam-01", "cam-01"] and problems == []

    rows, _ = build_manifest(root)  # images directly in root: the root folder's name
    assert [row["device"] for row in rows] == ["mixed", "mixed"]


def test_paths_relative_inside_the_manifest_folder_absolute_outside(photo_tree, tmp_path):
    """Build writes what load_manifest accepts: a relative path only if it stays inside the
    manifest's folder (symbolic links followed), an absolute path otherwise (never ``../``)."""
    elsewhere = tmp_path / "manifests"
    elsewhere.mkdir()
    rows, _ = build_manifest(photo_tree / "sony", relative_to=elsewhere)
    assert [row["path"] for row in rows] == [(photo_tree / "sony" / "no_exif.jpg").as_posix(),
                                             (photo_tree / "sony" / "r_sony.jpg").as_posix()]
    rows, _ = build_manifest(photo_tree / "sony", relative_to=photo_tree)
    assert [row["path"] for row in rows] == ["sony/no_exif.jpg", "sony/r_sony.jpg"]
    # a file in the tree that is a link to a file outside the manifest's folder: absolute
    outside = _copy(photo_tree / "sony" / "r_sony.jpg", tmp_path / "outside" / "r_linked.jpg")
    (photo_tree / "sony" / "r_linked.jpg").symlink_to(outside)
    rows, _ = build_manifest(photo_tree)
    assert [row["path"] for row in rows] == ["olympus/2014/r_pen.JPG", "olympus/r_olympus.jpg",
                                             "sony/no_exif.jpg", (photo_tree / "sony" / "r_linked.jpg").as_posix(),
                                             "sony/r_sony.jpg"]


@pytest.mark.timeout(60, method="signal")  # a regression hangs in open() on the pipe: fail, not stall
def test_named_pipe_is_listed_as_a_problem_and_never_opened(camera_files, tmp_path):
    root = tmp_path / "cam"
    _copy(camera_files / "r_sony.jpg", root / "good.jpg")
    os.mkfifo(root / "pipe.jpg")
    rows, problems = build_manifest(root, verify_pixels=True)
    assert [row["path"] for row in rows] == ["good.jpg"]
    assert problems == [ManifestProblem(None, "left out, not a regular file (a named pipe): remove it or move "
                                              "it out of the folder", "pipe.jpg")]


def test_verify_pixels_reports_truncated_images(camera_files, tmp_path):
    root = tmp_path / "cam"
    data = (camera_files / "r_pana.jpg").read_bytes()
    (root).mkdir()
    (root / "cut.jpg").write_bytes(data[:-2])
    _copy(camera_files / "r_pana.jpg", root / "whole.jpg")
    rows, problems = build_manifest(root)
    assert len(rows) == 2 and problems == []  # headers alone look fine
    rows, problems = build_manifest(root, verify_pixels=True)
    assert [row["path"] for row in rows] == ["whole.jpg"]
    assert len(problems) == 1 and problems[0].path == "cut.jpg"
    assert problems[0].message.startswith("left out, unreadable: truncated JPEG data")


def test_dng_in_the_tree(write_dng, tmp_path):
    mosaic = np.zeros((32, 48), np.uint16)
    dng = write_dng(mosaic, tags={"Model": "Bench", "DateTimeOriginal": "2020:01:02 03:04:05",
                                  "CameraSerialNumber": "77"})
    root = tmp_path / "raws"
    _copy(dng, root / "bench" / "x.dng")
    rows, problems = build_manifest(root, device_from="serial")
    assert problems == []
    assert rows[0]["device"] == "Bench-77" and rows[0]["captured_at"] == "2020-01-02T03:04:05"


def test_write_manifest_round_trip_and_atomicity(photo_tree, tmp_path):
    rows, _ = build_manifest(photo_tree)
    out = photo_tree / "manifest.csv"
    assert write_manifest(rows, out) == out
    with open(out, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        assert list(reader) == rows
    before = out.read_bytes()

    class Unprintable:
        def __str__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_manifest(rows + [{"path": Unprintable()}], out)
    assert out.read_bytes() == before  # the old manifest is intact
    assert sorted(p.name for p in photo_tree.iterdir() if p.is_file()) == ["manifest.csv"]


def test_write_manifest_extra_columns_and_none(tmp_path):
    out = write_manifest([{"path": "a.jpg", "device": "d", "captured_at": None, "note": "x"}],
                         tmp_path / "m.csv")
    assert out.read_text(encoding="utf-8").splitlines() == [
        ",".join(MANIFEST_COLUMNS) + ",note", "a.jpg,d,,,,,,,x"]


def test_bad_arguments(tmp_path):
    with pytest.raises(NotADirectoryError):
        build_manifest(tmp_path / "missing")
    with pytest.raises(ValueError, match="needs a device name"):
        build_manifest(tmp_path, device_from="name")
    with pytest.raises(ValueError, match="device_from must be one of"):
        build_manifest(tmp_path, device_from="exif")
    with pytest.raises(ValueError, match="a device name was given"):
        build_manifest(tmp_path, device="x", device_from="folder")
