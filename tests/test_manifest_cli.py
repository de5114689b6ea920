"""`python -m pipeline.manifest`: build from EXIF of real camera files, check, list specs."""

import shutil

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
