"""Manifest loading and validation: every problem reported, with its line number."""

import hashlib
import os
import re
from datetime import datetime

import pytest

from pipeline.data.errors import ManifestError
from pipeline.data.manifest import load_manifest, manifest_path, parse_capture_time


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


# --- issue 21: every problem in one pass, and messages that say where and what to do -----------

def test_header_problems_do_not_hide_row_problems(images):
    """No label column (and no class specification) is reported together with every row's problems."""
    sub = images / "sub"
    sub.mkdir()
    (sub / "a.jpg").write_bytes(b"x")
    path = write(sub, "path,device,captured_at\n"
                      "a.jpg,cam1,2014-10-01\n"        # line 2: fine apart from the header
                      "missing.jpg,cam1,2014-10-02\n"  # line 3: missing file
                      "a.jpg,cam1,yesterday\n"         # line 4: duplicate and bad date
                      "../b.jpg,cam1,2014-10-03\n")    # line 5: escapes the folder
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(path)
    found = {}
    for line, message in problems_of(excinfo):
        found[line] = found.get(line, "") + message
    assert sorted(found) == [1, 3, 4, 5]
    assert "no label column and no class specification" in found[1]
    assert "file not found" in found[3]
    assert "duplicate path" in found[4] and "yesterday" in found[4]
    assert "escapes the manifest's folder" in found[5]
    # no "empty label" complaint repeated on every row: the header problem says it once
    assert "label" not in "".join(found[line] for line in (3, 4, 5))


@pytest.mark.parametrize("header, row, header_message", [
    ("path,captured_at,label", "missing.jpg,2014-10-01,0", r"missing required column\(s\) device"),
    ("path,device,label", "missing.jpg,cam,0", r"captured_at or a timeslot column"),
    ("path,device,timeslot,timeslot,label", "missing.jpg,cam,1,1,0", r"timeslot appear more than once"),
])
def test_each_header_problem_comes_with_the_row_problems(images, header, row, header_message):
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(images, f"{header}\na.jpg{row[len('missing.jpg'):]}\n{row}\n"))
    found = problems_of(excinfo)
    assert [line for line, _ in found] == [1, 3]
    assert re.search(header_message, found[0][1]) and "file not found" in found[1][1]


def test_without_a_path_column_the_message_says_why_rows_were_not_checked(images):
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(images, "file,device,timeslot,label\nmissing.jpg,cam,1,0\n"))
    [(line, message)] = problems_of(excinfo)
    assert line == 1 and "missing required column(s) path" in message
    assert "No row was checked: without a path column no row names an image" in message


def test_nul_byte_in_a_path_is_a_problem_of_its_line_and_column(images):
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(images, "path,device,timeslot,label\na.jpg,cam,1,0\nb\x00.jpg,cam,2,1\n"))
    [problem] = excinfo.value.problems
    assert (problem.line, problem.column) == (3, "path")
    assert "contains a NUL byte" in problem.message
    assert "\x00" not in str(excinfo.value)  # shown escaped, on one line


def test_not_utf8_names_the_byte_offset_line_and_bytes(images):
    data = "path,device,timeslot,label\na.jpg,cam,1,0\nCafé.jpg,cam,2,1\n".encode("cp1252")
    (images / "latin.csv").write_bytes(data)
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(images / "latin.csv")
    [problem] = excinfo.value.problems
    offset = data.index(b"\xe9")
    assert problem.line == 3
    assert f"byte offset {offset} (line 3)" in problem.message and r"b'\xe9'" in problem.message
    assert "after 'Caf'" in problem.message
    assert "UTF-8" in problem.message and "CSV UTF-8" in problem.message  # says how to re-save it


@pytest.mark.parametrize("separator, name", [(";", "';'"), ("\t", "a tab")])
def test_wrong_separator_gets_a_hint_and_rows_are_still_checked(images, separator, name):
    text = "".join(separator.join(fields) + "\n" for fields in
                   (("path", "device", "timeslot", "label"), ("a.jpg", "cam", "1", "0"),
                    ("missing.jpg", "cam", "2", "1")))
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(images, text))
    found = problems_of(excinfo)
    assert [line for line, _ in found] == [1, 3]
    assert f"the separator must be a comma, and this file appears to use {name}" in found[0][1]
    assert "file not found" in found[1][1]


def test_unterminated_quote_gives_a_short_message_with_its_line(images):
    text = ("path,device,timeslot,label\na.jpg,cam,1,0\n"
            '"b.jpg,cam,2,1\n' + "".join(f"img_{i:05d}.jpg,cam,{i},0\n" for i in range(2000)))
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(images, text))
    message = str(excinfo.value)
    assert len(message) < 500, message
    [problem] = excinfo.value.problems
    assert problem.line == 3 and "never closed" in problem.message and "close the quote" in problem.message
    excerpt = re.search(r"The line reads: '(.*)'", problem.message).group(1)
    assert excerpt == '"b.jpg,cam,2,1' and len(excerpt) <= 80


def test_unterminated_quote_in_a_long_line_is_cut_to_80_characters(images):
    long_device = "x" * 300
    text = f'path,device,timeslot,label\na.jpg,{long_device},1,"0\nb.jpg,cam,2,1\n'
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(images, text))
    [problem] = excinfo.value.problems
    assert problem.line == 2
    excerpt = re.search(r"The line reads: '(.*)'", problem.message).group(1)
    assert len(excerpt) <= 82 and excerpt.endswith(',1,"0')  # "…" + 80 characters around the quote


def test_stray_quote_inside_the_file_points_at_its_line(images):
    text = ('path,device,timeslot,label\na.jpg,cam,1,0\nb.jpg,"cam,2,1\n'
            + "".join(f"x{i}.jpg,cam,{i},0\n" for i in range(10)) + '"c.jpg",cam,3,1\n')
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(images, text))
    [problem] = excinfo.value.problems
    assert problem.line == 3 and "is a quote left open on line 3?" in problem.message
    assert len(str(excinfo.value)) < 500


@pytest.mark.timeout(60, method="signal")
def test_named_pipe_is_not_a_regular_file_and_is_never_opened(images):
    os.mkfifo(images / "pipe.jpg")  # opening it for reading would block until a writer comes
    with pytest.raises(ManifestError) as excinfo:
        load_manifest(write(images, "path,device,timeslot,label\na.jpg,cam,1,0\npipe.jpg,cam,2,1\n"))
    [problem] = excinfo.value.problems
    assert (problem.line, problem.column) == (3, "path")
    assert "not a regular file (a named pipe)" in problem.message and "file not found" not in problem.message


def test_row_line_is_the_physical_line_where_the_row_starts(images):
    text = ("\ufeffpath,device,timeslot,label,note\r\n"
            "a.jpg,cam,1,0,\r\n"
            "\r\n"
            'b.jpg,cam,2,1,"two\r\nlines"\r\n'
            "\n"
            "c.jpg,cam,3,0,\r\n")
    (images / "crlf.csv").write_bytes(text.encode("utf-8"))
    m = load_manifest(images / "crlf.csv")
    assert [(r.line, r.path.name) for r in m.rows] == [(2, "a.jpg"), (4, "b.jpg"), (7, "c.jpg")]
    assert m.sha256 == hashlib.sha256((images / "crlf.csv").read_bytes()).hexdigest()


def test_manifest_path_rule(tmp_path):
    """Relative inside the manifest's folder (links followed), absolute otherwise."""
    photos = tmp_path / "photos"
    (photos / "cam").mkdir(parents=True)
    (photos / "cam" / "a.jpg").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (photos / "linked").symlink_to(elsewhere)
    (elsewhere / "b.jpg").write_bytes(b"x")
    assert manifest_path(photos / "cam" / "a.jpg", photos) == "cam/a.jpg"
    assert manifest_path(photos / "cam" / "a.jpg", elsewhere) == (photos / "cam" / "a.jpg").as_posix()
    assert manifest_path(photos / "linked" / "b.jpg", photos) == (photos / "linked" / "b.jpg").as_posix()
    rows = "".join(f"{manifest_path(p, photos)},cam,{i},0\n"
                   for i, p in enumerate([photos / "cam" / "a.jpg", photos / "linked" / "b.jpg"]))
    m = load_manifest(write(photos, "path,device,timeslot,label\n" + rows))
    assert [r.path.name for r in m.rows] == ["a.jpg", "b.jpg"]
