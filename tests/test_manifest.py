"""Manifest loading and validation: every problem reported, with its line number."""

from datetime import datetime

import pytest

from pipeline.data.errors import ManifestError
from pipeline.data.manifest import load_manifest, parse_capture_time


@pytest.fixture
def images(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def write(folder, text, name="m.csv"):
    path = folder / name
    path.write_text(text)
    return path


def problems_of(excinfo):
    return [(p.line, p.message) for p in excinfo.value.problems]


def test_valid_manifest_round_trip(images):
    m = load_manifest(write(images, "path,device,captured_at,label,exposure_s,iso,lens\n"
                                    "a.jpg,cam1,2014-10-01T10:00:00,0,0.01,100,50mm\n"
                                    "b.jpg,cam1,2016-10-01T10:00:00+02:00,1,,,\n"))
    assert [r.label for r in m.rows] == [0, 1]
    assert m.rows[0].path == (images / "a.jpg").resolve()
    assert m.rows[0].exposure_s == 0.01 and m.rows[1].exposure_s is None
    assert m.rows[1].captured_at == datetime(2016, 10, 1, 8, 0)  # aware times are converted to UTC
    assert m.rows[0].extra == {"lens": "50mm"}  # unknown columns are carried through untouched
    assert len(m.sha256) == 64 and m.devices == ["cam1"]


def test_several_problems_are_all_reported_with_line_numbers(images):
    path = write(images, "path,device,captured_at,timeslot,label\n"
                         "a.jpg,cam1,2014-10-01,,0\n"          # line 2: fine
                         "missing.jpg,cam1,2014-10-02,,0\n"    # line 3: missing file
                         "b.jpg,cam1,yesterday,,1\n"           # line 4: bad date
                         "c.jpg,cam1,,,1\n"                    # line 5: no time at all
                         "a.jpg,cam1,2014-10-03,,1\n"          # line 6: duplicate path
                         "d.jpg,cam1,,seven,1\n")              # line 7: bad slot
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(path)
    found = problems_of(excinfo)
    lines = {line for line, _ in found}
    assert lines == {3, 4, 5, 6, 7}
    text = str(excinfo.value)
    for needle in ("file not found", "yesterday", "neither captured_at nor timeslot", "duplicate", "seven"):
        assert needle in text
    assert "line 4" in text or ":4" in text


def test_missing_column_is_named(images):
    with pytest.raises(ManifestError, match="missing required column.*device"):
        load_manifest(write(images, "path,captured_at,label\na.jpg,2014-10-01,0\n"))
    with pytest.raises(ManifestError, match="captured_at or a timeslot"):
        load_manifest(write(images, "path,device,label\na.jpg,cam,0\n"))
    with pytest.raises(ManifestError, match="no label column and no class specification"):
        load_manifest(write(images, "path,device,timeslot\na.jpg,cam,1\n"))


def test_class_spec_labels_rows_and_reports_unknown_devices(images):
    path = write(images, "path,device,timeslot\n"
                         "a.jpg,NTIF-canon01,2\n"
                         "b.jpg,NTIF-canon01,22\n"
                         "c.jpg,NTIF-canon01,12\n"
                         "d.jpg,NTIF-canon01,1\n")
    m = load_manifest(path, class_spec="ntif")
    assert [(r.path.name, r.label) for r in m.rows] == [("a.jpg", 0), ("b.jpg", 1), ("d.jpg", 0)]
    assert [(e.line, e.path) for e in m.excluded] == [(4, "c.jpg")]  # listed, not silently dropped
    assert "outside every class" in m.excluded[0].reason
    assert [r.path.name for r in m.for_device("NTIF-canon01")] == ["d.jpg", "a.jpg", "b.jpg"]

    path = write(images, "path,device,timeslot\na.jpg,NTIF-canon01,2\nb.jpg,my-phone,3\n", "u.csv")
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(path, class_spec="ntif")
    assert problems_of(excinfo)[0][0] == 3 and "my-phone" in str(excinfo.value)


def test_paths_escaping_the_manifest_folder_are_rejected(images):
    sub = images / "sub"
    sub.mkdir()
    with pytest.raises(ManifestError, match="escapes the manifest's folder"):
        load_manifest(write(sub, "path,device,timeslot,label\n../a.jpg,cam,1,0\n"))
    m = load_manifest(write(sub, f"path,device,timeslot,label\n{images / 'a.jpg'},cam,1,0\n", "abs.csv"))
    assert m.rows[0].path == images / "a.jpg"


def test_empty_and_malformed_files(tmp_path):
    with pytest.raises(ManifestError, match="empty"):
        load_manifest(write(tmp_path, ""))
    with pytest.raises(ManifestError, match="no rows"):
        load_manifest(write(tmp_path, "path,device,timeslot,label\n", "h.csv"))
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"path,device\n\xff\xfe\x00garbage\n")
    with pytest.raises(ManifestError, match="UTF-8"):
        load_manifest(tmp_path / "bin.csv")


def test_exif_style_times_are_accepted():
    assert parse_capture_time("2015:03:21 14:05:00") == datetime(2015, 3, 21, 14, 5)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_capture_time("21/03/2015")
