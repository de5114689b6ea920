"""`python -m pipeline.manifest`: build from EXIF of real camera files, check, list specs."""

import csv
import os
import shutil

import pytest

from pipeline.data.manifest import load_manifest
from pipeline.manifest import main


def test_build_then_check_real_camera_files(tmp_path, camera_jpegs, capsys):
    root = tmp_path / "photos"
    for device, names in {"body-a": ["r_canon.jpg", "r_sony.jpg"], "body-b": ["r_pana.jpg"]}.items():
        (root / device).mkdir(parents=True)
        for name in names:
            shutil.copy(camera_jpegs[name], root / device / name)
    out = tmp_path / "m.csv"
    assert main(["build", str(root), "--out", str(out)]) == 0
    text = out.read_text().splitlines()
    assert text[0].startswith("path,device,captured_at")
    assert sorted(line.split(",")[1] for line in text[1:]) == ["body-a", "body-a", "body-b"]
    # no label column yet: check says what to do, with the line of the header
    assert main(["check", str(out)]) == 1
    assert "no label column" in capsys.readouterr().err


def test_check_reports_all_problems(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"x")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,device,captured_at,label\na.jpg,cam,not-a-date,0\nmissing.jpg,cam,2015-01-01,1\n")
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "2 problems" in err and "line 2" in err and "line 3" in err


def test_specs_lists_shipped_specifications(capsys):
    assert main(["specs"]) == 0
    out = capsys.readouterr().out
    assert "NTIF" in out and "PLUS-nikon01" in out


def test_build_out_in_another_folder_then_check_passes(tmp_path, camera_jpegs, capsys):
    """Issue 21.1: the manifest written elsewhere names the images so that check accepts them."""
    root = tmp_path / "photos"
    (root / "body-a").mkdir(parents=True)
    for name in ("r_canon.jpg", "r_sony.jpg", "r_pana.jpg"):
        shutil.copy(camera_jpegs[name], root / "body-a" / name)
    out = tmp_path / "elsewhere" / "deeper" / "m.csv"
    out.parent.mkdir(parents=True)
    assert main(["build", str(root), "--out", str(out)]) == 0
    assert "3 path(s) written absolute" in capsys.readouterr().out
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert all(not row["path"].startswith("..") for row in rows)
    for i, row in enumerate(rows):  # the user adds the labels
        row["label"] = str(i % 2)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["check", str(out)]) == 0, capsys.readouterr().err
    assert "OK — 3 images" in capsys.readouterr().out
    assert sorted(r.path.name for r in load_manifest(out).rows) == ["r_canon.jpg", "r_pana.jpg", "r_sony.jpg"]


def test_check_lists_the_header_problem_and_every_row_problem(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"x")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,device,captured_at\na.jpg,cam,2015-01-01\nmissing.jpg,cam,2015-01-02\n"
                   "a.jpg,cam,not-a-date\n")
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "4 problems" in err and "no label column" in err
    assert "line 3" in err and "file not found" in err
    assert "line 4" in err and "duplicate path" in err and "not-a-date" in err


@pytest.mark.timeout(60, method="signal")  # a regression blocks in open() on the pipe: fail, not stall
def test_build_lists_a_named_pipe_and_check_calls_it_one(tmp_path, camera_jpegs, capsys):
    """Issue 21.9: build never opens a FIFO named .jpg and says what it is; so does check."""
    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy(camera_jpegs["r_sony.jpg"], root / "a.jpg")
    os.mkfifo(root / "pipe.jpg")
    out = root / "m.csv"
    assert main(["build", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "file 'pipe.jpg': left out, not a regular file (a named pipe)" in printed
    assert [line.split(",")[0] for line in out.read_text().splitlines()] == ["path", "a.jpg"]
    with open(out, "a", encoding="utf-8") as fh:
        fh.write("pipe.jpg,photos,2015-01-01T00:00:00\n")
    assert main(["check", str(out), "--no-files"]) == 1  # no label column: still one pass
    assert main(["check", str(out)]) == 1
    err = capsys.readouterr().err
    assert "line 3, column 'path', file 'pipe.jpg'" in err and "not a regular file (a named pipe)" in err
    assert "file not found" not in err
