"""Edge cases of a whole run (issue 21): manifest lines in failures and errors, full or unwritable
folders, runs that analyse nothing, skipped devices, content duplicates, leftover temporary files,
interrupted final commits, missing files.

Every run here is one or two devices of the small synthetic dataset, methods fg and nb, one or two
splits, in-process (``workers=1``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import pipeline.analysis.experiment as experiment
import pipeline.analysis.runfolder as runfolder
from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.data import atomic
from pipeline.data.errors import ImageReadError
from pipeline.data.imageio import read_image
from pipeline.data.manifest import load_manifest
from pipeline.ml_age import EXIT_ERROR, EXIT_NOTHING_ANALYSED, build_parser, main
from csv_rows import read_csv, write_rows

REPO = Path(__file__).resolve().parents[1]
CFG = {"methods": ("fg", "nb"), "runs": 1, "workers": 1, "progress": False}


def status_of(out: Path) -> str:
    return json.loads((out / "config.json").read_text())["status"]


@pytest.fixture
def root(small_dataset, tmp_path) -> Path:
    """A private copy of SIM-alpha01's images with its one-device manifest ``alpha.csv``."""
    copy = tmp_path / "data"
    (copy / "images").mkdir(parents=True)
    shutil.copytree(small_dataset.root / "images" / "SIM-alpha01", copy / "images" / "SIM-alpha01")
    shutil.copy(small_dataset.root / "classes.toml", copy / "classes.toml")
    rows = [r for r in read_csv(small_dataset.root / "manifest.csv") if r["device"] == "SIM-alpha01"]
    write_rows(copy / "alpha.csv", rows)
    return copy.resolve()


def _fail_writes(monkeypatch, under: Path, code: int, name: str | None = None):
    """Make atomic writes into ``under`` (of files called ``name``, if given) fail with ``code``."""
    real = atomic._create_temporary

    def create_temporary(path: Path):
        if Path(path).parent.resolve().is_relative_to(under.resolve()) and (name is None or Path(path).name == name):
            raise OSError(code, os.strerror(code))
        return real(path)

    monkeypatch.setattr(atomic, "_create_temporary", create_temporary)


# --- 3. messages: the manifest line, the folder ------------------------------------------------

def test_failures_csv_and_strict_errors_name_the_manifest_line(root, tmp_path):
    rows = read_csv(root / "alpha.csv")
    victim = root / rows[6]["path"]
    victim.write_bytes(victim.read_bytes()[:3000])
    run_experiment(load_manifest(root / "alpha.csv"), tmp_path / "run", ExperimentConfig(**CFG))
    failures = read_csv(tmp_path / "run" / "failures.csv")
    # the header is line 1, so rows[6] is line 8
    assert [(f["line"], f["device"], f["image"]) for f in failures] == [
        ("8", "SIM-alpha01", victim.relative_to(root).as_posix())]  # relative to the manifest's folder
    with pytest.raises(ImageReadError) as excinfo:
        run_experiment(load_manifest(root / "alpha.csv"), tmp_path / "strict", ExperimentConfig(**CFG, strict=True))
    message = str(excinfo.value)
    assert message.startswith(f"cannot read image '{victim}': ")
    assert f"line 8 of the manifest {root / 'alpha.csv'}" in message and "--strict" in message


def test_a_full_output_folder_is_named_with_what_to_do(root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _fail_writes(monkeypatch, out, errno.ENOSPC, name="metrics.csv")
    code = main(["--manifest", str(root / "alpha.csv"), "--out", str(out), "--cache", str(tmp_path / "cache"),
                 "--methods", "fg", "--runs", "1", "--workers", "1", "--no-progress", "-q"])  # progress off stderr
    assert code == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: cannot write to the output folder {out} (No space left on device")
    assert "--out" in err[0] and "resumes" in err[0]
    assert status_of(out) != "complete"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_cache_that_cannot_be_written_degrades_to_no_cache_with_one_warning(root, tmp_path, monkeypatch, caplog,
                                                                              code):
    manifest = load_manifest(root / "alpha.csv")
    cfg = ExperimentConfig(**CFG, cache_dir=str(tmp_path / "cache"))
    clean = run_experiment(manifest, tmp_path / "clean", ExperimentConfig(**CFG))
    _fail_writes(monkeypatch, tmp_path / "cache", code)
    with caplog.at_level(logging.WARNING, logger="agetrace"):
        result = run_experiment(manifest, tmp_path / "run", cfg)
    assert result["status"] == "complete" and result["metrics"] == clean["metrics"]
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and r.name.startswith("agetrace.")]
    assert len(warnings) == 1, warnings  # once, not once per image
    assert str(tmp_path / "cache") in warnings[0] and os.strerror(code) in warnings[0]
    assert "without caching" in warnings[0] and "--cache" in warnings[0]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["feature_cache"]
    assert str(tmp_path / "cache") in recorded["not_written"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_does_not_stop_the_run(root, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        result = run_experiment(load_manifest(root / "alpha.csv"), tmp_path / "run",
                                ExperimentConfig(**CFG, cache_dir=str(cache)))
    finally:
        cache.chmod(0o755)
    assert result["status"] == "complete"


# --- 4. and 5. devices that cannot be analysed ---------------------------------------------------

@pytest.mark.parametrize("keep", [[0], [0, 31]], ids=["one row", "two rows in two classes"])
def test_a_run_that_analyses_nothing_fails_and_says_why(root, tmp_path, capsys, keep):
    rows = read_csv(root / "alpha.csv")
    manifest = write_rows(root / "tiny.csv", [rows[i] for i in keep])
    out = tmp_path / "run"
    code = main(["--manifest", str(manifest), "--out", str(out), "--methods", "fg,nb", "--runs", "2",
                 "--workers", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert code == EXIT_NOTHING_ANALYSED
    assert "no device could be analysed" in captured.err and "SIM-alpha01" in captured.err
    reason = "one class" if len(keep) == 1 else "too few readable images"
    assert reason in captured.err
    # the reason is kept in the outputs
    assert status_of(out) == "no-device-analysed"
    summary = (out / "summary.md").read_text()
    assert "No device could be analysed" in summary and reason in summary and "| SIM-alpha01 |" in summary
    excluded = read_csv(out / "excluded.csv")
    assert [(e["line"], e["device"]) for e in excluded] == [("", "SIM-alpha01")]
    assert reason in excluded[0]["reason"] and "manifest line(s)" in excluded[0]["reason"]
    # the final message lists exactly what exists
    wrote = next(line for line in captured.out.splitlines() if line.startswith("Wrote "))
    listed = wrote.split(": ", 1)[1].split(", ")
    for name in listed:
        assert (out / name).exists(), name
        if name.endswith("/"):
            assert any((out / name).iterdir()), name
    assert not {"splits/", "defects/", "accuracy_boxplot.png"} & set(listed)
    # the exit status is documented in --help
    assert f"{EXIT_NOTHING_ANALYSED}  no device could be analysed" in build_parser().format_help()


def test_skipped_devices_are_listed_with_their_reason(small_dataset, root, tmp_path, capsys):
    rows = read_csv(root / "alpha.csv")
    others = [r for r in read_csv(small_dataset.root / "manifest.csv") if r["device"] == "SIM-beta01"]
    one_class = [{**r, "path": str(small_dataset.root / r["path"])} for r in others if r["label"] == "0"][:6]
    out = tmp_path / "run"
    manifest = write_rows(root / "mixed.csv", rows + one_class)
    assert main(["--manifest", str(manifest), "--out", str(out), "--methods", "fg", "--runs", "1",
                 "--workers", "1", "--no-progress"]) == 0
    excluded = read_csv(out / "excluded.csv")
    assert [(e["line"], e["image"], e["device"]) for e in excluded] == [("", "", "SIM-beta01")]
    assert "one class" in excluded[0]["reason"] and "manifest line(s) 34–39" in excluded[0]["reason"]
    assert "SIM-beta01: not analysed" in capsys.readouterr().err  # progress: the agetrace logger, on stderr
    summary = (out / "summary.md").read_text()
    assert "1 device(s) could not be analysed" in summary and "| SIM-beta01 | 6 | all its 6 readable" in summary
    assert status_of(out) == "complete"
    config = json.loads((out / "config.json").read_text())
    assert [s["device"] for s in config["skipped_devices"]] == ["SIM-beta01"]


# --- 6. content duplicates -------------------------------------------------------------------------

def test_content_duplicates_are_excluded_and_change_nothing(root, tmp_path):
    rows = read_csv(root / "alpha.csv")
    cfg = ExperimentConfig(**{**CFG, "runs": 2})
    clean = run_experiment(load_manifest(root / "alpha.csv"), tmp_path / "clean", cfg)
    # a PNG of a JPEG's decoded pixels under another name, and a byte copy of another JPEG
    png = str(Path(rows[4]["path"]).with_name("holiday.png"))
    Image.fromarray(read_image(root / rows[4]["path"]).pixels).save(root / png)
    copy = str(Path(rows[20]["path"]).with_name("copy_of_20.jpg"))
    shutil.copy(root / rows[20]["path"], root / copy)
    with_copies = rows + [{**rows[4], "path": png}, {**rows[20], "path": copy, "label": rows[20]["label"]}]
    out = tmp_path / "dup"
    result = run_experiment(load_manifest(write_rows(root / "dup.csv", with_copies)), out, cfg)
    excluded = read_csv(out / "excluded.csv")
    assert excluded == [
        {"line": "34", "image": png, "device": "SIM-alpha01", "reason": f"same pixels as line 6 ({rows[4]['path']})"},
        {"line": "35", "image": copy, "device": "SIM-alpha01",
         "reason": f"same file bytes as line 22 ({rows[20]['path']})"}]
    assert "2 image(s) have the content of an earlier manifest row" in result["summary_text"]
    # never in a split, and the results are those of the run without the copies
    for run in range(2):
        split = {Path(r["path"]).name for r in read_csv(out / "splits" / "SIM-alpha01" / f"run_{run:02d}.csv")}
        assert not split & {"holiday.png", "copy_of_20.jpg"}
    assert result["metrics"] == clean["metrics"]
    assert (out / "predictions.csv").read_bytes() == (tmp_path / "clean" / "predictions.csv").read_bytes()
    # a resumed run that reuses every part still lists them
    again = run_experiment(load_manifest(root / "dup.csv"), out, cfg)
    assert again["excluded"] == result["excluded"]


def test_a_multi_page_file_is_used_with_a_note_naming_its_line(root, tmp_path):
    """Issue 21, point 8: a file holding several images is read as its first; the run says so."""
    rows = read_csv(root / "alpha.csv")
    pixels = read_image(root / rows[7]["path"]).pixels.copy()
    pixels[0, 0] ^= 1  # not a duplicate of its source
    pages = str(Path(rows[7]["path"]).with_name("two_pages.tif"))
    Image.fromarray(pixels).save(root / pages, save_all=True, append_images=[Image.fromarray(pixels[::-1].copy())])
    manifest = write_rows(root / "pages.csv", rows + [{**rows[7], "path": pages}])
    out = tmp_path / "pages"
    result = run_experiment(load_manifest(manifest), out, ExperimentConfig(**{**CFG, "runs": 1}))
    notes = read_csv(out / "read_notes.csv")
    assert [(n["line"], n["image"]) for n in notes] == [(str(len(rows) + 2), pages)]
    assert "holds 2 pages" in notes[0]["note"] and "only the first was read" in notes[0]["note"]
    assert "1 image(s) were used with a note" in result["summary_text"]
    # a resumed run that reuses its parts, and a run from the cache, still list it
    again = run_experiment(load_manifest(manifest), out, ExperimentConfig(**{**CFG, "runs": 1}))
    assert read_csv(out / "read_notes.csv") == notes and again["summary_text"] == result["summary_text"]
    cached = run_experiment(load_manifest(manifest), tmp_path / "pages-again",
                            ExperimentConfig(**{**CFG, "runs": 1, "cache_dir": str(out / "cache")}))
    assert read_csv(tmp_path / "pages-again" / "read_notes.csv") == notes
    assert cached["summary_text"] == result["summary_text"]


def test_a_near_copy_with_one_pixel_changed_is_not_a_duplicate(root, tmp_path):
    """The pixel fingerprint samples rows; a match must be confirmed on every pixel before an
    image is excluded. One pixel changed in an unsampled row keeps the fingerprint and the image."""
    from pipeline.features.extract import pixel_fingerprint

    rows = read_csv(root / "alpha.csv")
    pixels = read_image(root / rows[4]["path"]).pixels
    changed = pixels.copy()
    changed[1, 1] = changed[1, 1] ^ 1
    assert pixel_fingerprint(changed) == pixel_fingerprint(pixels)  # so the full comparison decides
    near = str(Path(rows[4]["path"]).with_name("retouched.png"))
    Image.fromarray(changed).save(root / near)
    out = tmp_path / "near"
    cfg = ExperimentConfig(**{**CFG, "runs": 1})
    run_experiment(load_manifest(write_rows(root / "near.csv", rows + [{**rows[4], "path": near}])), out, cfg)
    assert not [e for e in read_csv(out / "excluded.csv") if e["image"] == near]


# --- 10. cache and resume --------------------------------------------------------------------------

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftover_temporaries_of_dead_writers_are_cleaned_up(root, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "shared-cache"
    # a writer killed mid-write (SIGKILL: no cleanup) leaves its temporary file, named after it
    killed = subprocess.run(
        [sys.executable, "-c", "import os\nfrom pipeline.data.atomic import atomic_write\n"
         f"with atomic_write({str(cache / 'screen' / 'ab' / 'entry.npz')!r}, 'wb') as fh:\n"
         "    fh.write(b'half')\n    os._exit(9)\n"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert killed.returncode == 9
    [left] = list((cache / "screen" / "ab").glob(".*.tmp"))
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())
    dead, alive = _dead_pid(), os.getppid()
    (out / "parts").mkdir(parents=True)
    removed = [left, out / f".metrics.csv.{host}-{dead}.x1y2z3ab.tmp", out / "parts" / ".run_00.json.k3j2h1g0.tmp"]
    kept = [out / f".summary.md.{host}-{alive}.a1b2c3d4.tmp",          # a live writer's
            cache / f".entry.npz.otherhost-{dead}.q9w8e7r6.tmp",       # another host's, fresh
            cache / ".entry.npz.f00ba7.tmp"]                            # no writer named, fresh
    for path in removed[1:] + kept:
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(removed[2], (two_hours_ago, two_hours_ago))  # no writer named, but old
    manifest = write_rows(root / "tiny.csv", read_csv(root / "alpha.csv")[:1])  # a quick run
    run_experiment(load_manifest(manifest), out, ExperimentConfig(**CFG, cache_dir=str(cache)))
    assert [p for p in removed if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


def test_an_interrupted_commit_leaves_no_complete_looking_tables(root, tmp_path, monkeypatch):
    manifest = load_manifest(root / "alpha.csv")
    out = tmp_path / "run"
    real = runfolder.write_json

    def killed_before_the_final_status(path, record):
        if Path(path).name == "config.json" and record.get("status") != "running":
            raise KeyboardInterrupt("killed")
        real(path, record)

    monkeypatch.setattr(runfolder, "write_json", killed_before_the_final_status)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(manifest, out, ExperimentConfig(**CFG))
    assert status_of(out) == "running"
    for name in ("metrics.csv", "predictions.csv", "summary.md", "calibration.csv"):
        assert not (out / name).exists(), name
    monkeypatch.undo()
    result = run_experiment(manifest, out, ExperimentConfig(**CFG))
    assert status_of(out) == "complete" and (out / "metrics.csv").is_file() and not (out / ".staging").exists()
    # a rerun of the complete run removes the old tables first: killed early, it leaves none behind
    monkeypatch.setattr(experiment, "_run_device", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(manifest, out, ExperimentConfig(**CFG))
    assert status_of(out) == "running" and not (out / "metrics.csv").exists()
    assert not list((out / "calibration").glob("*.png"))
    monkeypatch.undo()
    assert run_experiment(manifest, out, ExperimentConfig(**CFG))["metrics"] == result["metrics"]


def test_a_missing_file_is_recorded_with_its_line_and_the_run_goes_on(root, tmp_path, capsys):
    rows = read_csv(root / "alpha.csv")
    gone = root / rows[9]["path"]
    gone.unlink()  # deleted after the manifest was written
    out = tmp_path / "run"
    args = ["--manifest", str(root / "alpha.csv"), "--methods", "fg", "--runs", "1", "--workers", "1",
            "--no-progress"]
    assert main(args + ["--out", str(out)]) == 0
    failures = read_csv(out / "failures.csv")
    assert [(f["line"], f["image"]) for f in failures] == [("11", gone.relative_to(root).as_posix())]
    assert "not found" in failures[0]["reason"]
    assert status_of(out) == "complete"
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "strict"), "--strict"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "line 11" in err and str(gone) in err and "not found" in err
