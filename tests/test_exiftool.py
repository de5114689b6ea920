"""The ExifTool backend: dating CR3 and RAF files that the built-in EXIF reader cannot parse.

The real files are ExifTool's own test images (a Canon EOS M50 CR3, a Fujifilm FinePix S5Pro
RAF), fetched and pinned by :func:`fetch_camera_files.fetch_raw_samples`. The expected values
are written here as ExifTool's test suite states them in its expected outputs
``t/CanonRaw_8.out`` ("Date/Time Original: 2018:02:21 12:08:56.21+00:00", "Exposure Time: 1/80",
"ISO: 12800") and ``t/FujiFilm_4.out`` ("2007:05:22 13:58:30", "1/250", "ISO: 100").

Without ExifTool the real-file tests skip with the reason (CI installs it: ``.ci/run``); the
tests of a missing or broken ExifTool use a PATH of the test's own and run everywhere.
"""

from __future__ import annotations

import csv
import shutil
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fetch_camera_files import FetchError, NoAptError, OfflineError, fetch_raw_samples
from pipeline.data.exif import ExifWarning, inspect_exif, read_exif
from pipeline.data.exiftool import MISSING_MESSAGE
from pipeline.data.manifest_builder import build_manifest
from pipeline.manifest import main

# the start of a Canon CR3 (an ISO base media file of brand "crx "): detected as raw, opaque to the built-in reader
_CR3_HEAD = b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom" + bytes(1000)


@pytest.fixture(scope="module")
def raw_samples() -> Path:
    """ExifTool's CR3 and RAF test images; skips without ExifTool, fails if they cannot be fetched."""
    if shutil.which("exiftool") is None:
        pytest.skip("exiftool is not installed (Debian/Ubuntu: apt-get install libimage-exiftool-perl; "
                    ".ci/run installs it)")
    try:
        return fetch_raw_samples()
    except (OfflineError, NoAptError) as exc:
        pytest.skip(str(exc))
    except FetchError as exc:
        pytest.fail(f"ExifTool's raw test images unavailable: {exc}", pytrace=False)


def test_manifest_build_dates_cr3_and_raf(raw_samples, tmp_path, capsys):
    root = tmp_path / "photos"
    for device, name in (("m50", "CanonRaw.cr3"), ("s5pro", "FujiFilm.raf")):
        (root / device).mkdir(parents=True)
        shutil.copy(raw_samples / name, root / device / name)
    out = tmp_path / "manifest.csv"
    assert main(["build", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "problem" not in printed, printed
    with open(out, newline="") as fh:
        rows = {row["device"]: row for row in csv.DictReader(fh)}
    assert rows["m50"] == {"path": "photos/m50/CanonRaw.cr3", "device": "m50",
                           "captured_at": "2018-02-21T12:08:56.210000+00:00", "make": "Canon",
                           "model": "Canon EOS M50", "exposure_s": "0.0125", "iso": "12800",
                           "serial": rows["m50"]["serial"]}
    assert rows["m50"]["serial"]  # from the maker notes; the built-in reader's rule keeps it as text
    assert rows["s5pro"] == {"path": "photos/s5pro/FujiFilm.raf", "device": "s5pro",
                             "captured_at": "2007-05-22T13:58:30", "make": "FUJIFILM", "model": "FinePix S5Pro",
                             "exposure_s": "0.004", "iso": "100", "serial": ""}


def test_inspect_exif_reads_a_cr3_through_exiftool_in_the_built_in_units(raw_samples):
    metadata, issues = inspect_exif(raw_samples / "CanonRaw.cr3")
    assert issues == []
    assert metadata.source == "exiftool"
    assert metadata.captured_at == datetime(2018, 2, 21, 12, 8, 56, 210000, tzinfo=timezone.utc)
    assert metadata.captured_at.utcoffset() == timedelta(0)
    assert metadata.exposure_s == pytest.approx(1 / 80, rel=1e-12) and metadata.iso == 12800.0
    assert metadata.orientation == 1 and metadata.width is None and metadata.height is None
    # the built-in reader alone finds nothing in it
    alone, said = inspect_exif(raw_samples / "CanonRaw.cr3", exiftool=False)
    assert alone.source is None and alone.captured_at is None and "not TIFF-structured" in said[0]


def test_without_exiftool_one_clear_message_and_no_crash(tmp_path, monkeypatch, camera_jpegs):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("IMG_1.CR3", "IMG_2.CR3"):
        (root / name).write_bytes(_CR3_HEAD)
    shutil.copy(camera_jpegs["r_canon.jpg"], root / "r_canon.jpg")  # read by the built-in reader, untouched
    built = build_manifest(root)
    said = [problem for problem in built.problems if MISSING_MESSAGE in problem.message]
    assert len(said) == 1 and said[0].line is None and "(2 file(s): IMG_1.CR3, IMG_2.CR3)" in said[0].message
    assert "apt-get install libimage-exiftool-perl" in said[0].message
    rows = {row["path"]: row for row in built.rows}
    assert rows["IMG_1.CR3"]["captured_at"] == "" and rows["r_canon.jpg"]["captured_at"] != ""
    missing_time = [problem.path for problem in built.problems if problem.column == "captured_at"]
    assert sorted(missing_time) == ["IMG_1.CR3", "IMG_2.CR3"]
    # one file read on its own says the same, as an issue / ExifWarning
    metadata, issues = inspect_exif(root / "IMG_1.CR3")
    assert metadata.source is None and issues == [MISSING_MESSAGE]
    with pytest.warns(ExifWarning, match="exiftool is not installed"):
        read_exif(root / "IMG_1.CR3")


def test_a_broken_exiftool_is_an_issue_not_a_crash(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "exiftool"
    fake.write_text("#!/bin/sh\necho 'Can'\"'\"'t locate Image/ExifTool.pm' >&2\necho 'not json'\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    path = tmp_path / "IMG_1.CR3"
    path.write_bytes(_CR3_HEAD)
    metadata, issues = inspect_exif(path)
    assert metadata.captured_at is None and len(issues) == 1
    assert issues[0].startswith(f"exiftool ({fake}) failed: its output is not ExifTool's JSON")
    assert "Can't locate Image/ExifTool.pm" in issues[0]


def test_a_file_exiftool_cannot_parse_gets_its_error(raw_samples, tmp_path):
    path = tmp_path / "IMG_1.CR3"
    path.write_bytes(_CR3_HEAD)
    truncated = tmp_path / "cut.raf"
    truncated.write_bytes((raw_samples / "FujiFilm.raf").read_bytes()[:16])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inspect_exif reports, it does not warn
        results = [inspect_exif(path), inspect_exif(truncated)]
    for metadata, issues in results:
        assert metadata.source is None and metadata.captured_at is None
        assert len(issues) == 1 and issues[0].startswith("exiftool"), issues
