"""Provenance and outputs (issue 18, item 4): what config.json and summary.md record, the defects
table's onset dates and classes, image paths relative to the manifest's folder, "— (n=1)", file
permissions from the umask, and the cache folder's platform location.

One small run (one device of the small synthetic dataset, Fridrich–Goljan, one split, in-process)
is shared by the tests that read a run folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import types
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import rawpy
import simplejpeg
from PIL import features as pil_features

import pipeline
from pipeline.analysis import provenance
from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.analysis.report import summary_markdown
from pipeline.analysis.transfer_report import report as transfer_markdown
from pipeline.data.atomic import atomic_write, atomic_write_text
from pipeline.data.manifest import load_manifest
from pipeline.features.cache import FeatureCache
from pipeline.sim import cache_root
from csv_rows import read_csv, write_rows

REPO = Path(__file__).resolve().parents[1]
DEVICE = "SIM-alpha01"


@contextlib.contextmanager
def umask(mask: int):
    """Run the block under ``mask`` and restore the process's umask after it."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def run(small_dataset, tmp_path_factory):
    """A finished run under umask 022 on a private copy of one device, with one truncated image."""
    data = tmp_path_factory.mktemp("provenance") / "data"
    (data / "images").mkdir(parents=True)
    shutil.copytree(small_dataset.root / "images" / DEVICE, data / "images" / DEVICE)
    rows = [r for r in read_csv(small_dataset.root / "manifest.csv") if r["device"] == DEVICE]
    manifest = write_rows(data / "alpha.csv", rows)
    victim = rows[5]["path"]
    (data / victim).write_bytes((data / victim).read_bytes()[:2000])
    out = data.parent / "run"
    started = datetime.now(timezone.utc).replace(microsecond=0)
    with umask(0o022):
        result = run_experiment(load_manifest(manifest), out,
                                ExperimentConfig(methods=("fg",), runs=1, workers=1, progress=False))
    assert result["status"] == "complete"
    return {"out": out, "data": data, "manifest": manifest, "rows": rows, "victim": victim, "started": started,
            "result": result}


# --- permissions ---------------------------------------------------------------------------------

def test_atomic_writes_get_the_permissions_the_umask_gives(tmp_path):
    with umask(0o022):
        atomic_write_text(tmp_path / "a" / "text.txt", "x")
        with atomic_write(tmp_path / "a" / "bytes.bin", "wb") as fh:
            fh.write(b"x")
    assert mode(tmp_path / "a" / "text.txt") == mode(tmp_path / "a" / "bytes.bin") == 0o644
    assert mode(tmp_path / "a") == 0o755
    with umask(0o077):  # the umask decides, not a fixed mode
        atomic_write_text(tmp_path / "private.txt", "x")
    assert mode(tmp_path / "private.txt") == 0o600
    with umask(0o002):
        atomic_write_text(tmp_path / "group.txt", "x")
    assert mode(tmp_path / "group.txt") == 0o664
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_feature_cache_entry_is_readable_by_others_under_umask_022(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    with umask(0o022):
        cache.store("screen", "ab" * 32, "p" * 24, {"x": np.arange(3)})
    entries = list((tmp_path / "cache").rglob("*.npz"))
    assert len(entries) == 1 and mode(entries[0]) == 0o644
    assert all(mode(d) == 0o755 for d in entries[0].parents if d.is_relative_to(tmp_path / "cache"))
    assert cache.load("screen", "ab" * 32, "p" * 24)["x"].tolist() == [0, 1, 2]


def test_every_file_of_a_run_is_0644_under_umask_022(run):
    files = [p for p in run["out"].rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.parent.name == "cache" or "cache" in p.parts for p in files)
    assert {str(p.relative_to(run["out"])): oct(mode(p)) for p in files if mode(p) != 0o644} == {}
    assert all(mode(p) == 0o755 for p in run["out"].rglob("*") if p.is_dir())


# --- config.json ---------------------------------------------------------------------------------

def test_config_json_records_the_command_line_and_native_versions(run):
    config = json.loads((run["out"] / "config.json").read_text())
    assert config["command"]["argv"] == sys.argv
    assert config["command"]["line"].startswith(config["command"]["entry_point"])
    versions = config["versions"]
    assert versions["libraw"] == ".".join(map(str, rawpy.libraw_version))
    assert versions["libjpeg_turbo"] == pil_features.version("libjpeg_turbo")
    jpeg = versions["decoders"]["jpeg"]  # the JPEGs are decoded by simplejpeg's own libjpeg-turbo
    assert jpeg["decoder"] == "simplejpeg" and jpeg["version"] == simplejpeg.__version__
    assert jpeg["libjpeg_turbo"] and "fastdct=False" in jpeg["settings"]
    assert versions["decoders"]["raw"]["libraw"] == versions["libraw"]
    assert config["manifest"]["folder"] == str(run["data"].resolve())
    git = shutil.which("git")
    head = subprocess.run([git, "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True) if git else None
    if head is not None and head.returncode == 0:
        assert versions["git_commit"] == head.stdout.strip() and isinstance(versions["git_dirty"], bool)
    else:
        assert "git_commit" not in versions


def test_the_command_line_names_its_entry_point(monkeypatch):
    main = types.ModuleType("__main__")
    main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/agetrace", "ml_age", "--out", "my results"])
    assert provenance.command_line() == {"argv": ["/opt/venv/bin/agetrace", "ml_age", "--out", "my results"],
                                         "entry_point": "agetrace", "line": "agetrace ml_age --out 'my results'"}
    main.__spec__ = types.SimpleNamespace(name="pipeline.ml_age")
    monkeypatch.setattr(sys, "argv", ["/src/pipeline/ml_age.py", "--runs", "2"])
    command = provenance.command_line()
    assert command["entry_point"] == "python -m pipeline.ml_age"
    assert command["line"] == "python -m pipeline.ml_age --runs 2"


def test_without_git_the_commit_is_absent_and_nothing_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    provenance.source_revision.cache_clear()
    try:
        versions = provenance.package_versions()
    finally:
        provenance.source_revision.cache_clear()
    assert "git_commit" not in versions and "git_dirty" not in versions
    assert versions["numpy"] == np.__version__


# --- summary.md ----------------------------------------------------------------------------------

def test_summary_md_opens_with_dataset_hash_version_and_date(run):
    text = (run["out"] / "summary.md").read_text()
    header = text.split("\n\n", 2)[:2]
    assert header[0] == "# Age experiment"
    lines = dict(line[2:].split(": ", 1) for line in header[1].splitlines())
    assert lines["Dataset"] == "manifest `../data/alpha.csv` (relative to this folder)"
    assert (run["out"] / "../data/alpha.csv").resolve() == run["manifest"].resolve()
    assert lines["Manifest SHA-256"] == f"`{hashlib.sha256(run['manifest'].read_bytes()).hexdigest()}`"
    version = metadata.version("agetrace")
    assert lines["agetrace"].split()[0] == getattr(pipeline, "__version__", version) == version
    date = datetime.fromisoformat(lines["Date (UTC)"].split(";")[0])
    assert run["started"] <= date <= datetime.now(timezone.utc)
    config = json.loads((run["out"] / "config.json").read_text())
    assert lines["Date (UTC)"].startswith(config["finished"])
    # the printed summary is the tables only
    assert run["result"]["summary_text"].startswith("Accuracy") and run["result"]["summary_text"] in text


def test_the_embedded_dataset_is_named_as_such(tmp_path):
    from pipeline.analysis.experiment_aggregates import summary_header
    from pipeline.analysis.runfolder import ManifestRecord, RunRecord

    record = RunRecord(tool="pipeline.ml_age", status="running", started="2026-01-02T03:04:05+00:00", config={},
                       result_config={}, manifest=ManifestRecord(str(tmp_path / "cache" / "manifest.csv"), "f" * 64,
                                                                 10, 0),
                       device_seeds={}, versions={}, code="", extra={"synthetic": {"root": str(tmp_path / "cache")}})
    header = summary_header(record, tmp_path / "out", "2026-01-02T04:00:00+00:00")
    assert "- Dataset: the embedded synthetic dataset (the default; manifest `../cache/manifest.csv`" in header
    assert "- Date (UTC): 2026-01-02T04:00:00+00:00; started 2026-01-02T03:04:05+00:00" in header


def test_one_run_shows_a_dash_not_a_zero_spread(run):
    table = summary_markdown([{"device": "d", "method": "fg", "runs": 1, "mean_accuracy": 0.5, "std_accuracy": None},
                              {"device": "e", "method": "fg", "runs": 3, "mean_accuracy": 0.5,
                               "std_accuracy": 0.125}], ["fg"])
    assert table.splitlines()[2:] == ["| d | 50.0 — (n=1) |  |", "| e | 50.0 ± 12.5 (n=3) |  |"]
    text = (run["out"] / "summary.md").read_text()
    assert "(n=1)" in text and "± 0.0 (n=1)" not in text and " — (n=1)" in text
    summary = read_csv(run["out"] / "summary.csv")
    assert summary and all(s["std_accuracy"] == "" for s in summary if s["runs"] == "1")


def test_the_cross_device_tables_show_a_dash_for_one_run():
    cell = {"method": "fg", "train_device": "a", "test_device": "a", "own_device": True, "runs": 1,
            "mean_accuracy": 0.75, "std_accuracy": float("nan"), "chance": 0.5, "p_above_chance": 0.1}
    manifest = types.SimpleNamespace(source=Path("m.csv"), sha256="0" * 64)
    cfg = ExperimentConfig(methods=("fg",), runs=1)
    text = transfer_markdown([cell], ["fg"], ["a"], cfg, {"compared": 0}, Path("exp"), manifest, {},
                             {"fg": "Fridrich–Goljan"})
    assert "| **a** | **75.0 — (n=1)** |" in text


# --- the defects table and the path convention ---------------------------------------------------

def test_the_defects_table_dates_and_classes_each_onset(run):
    by_path = {r["path"]: r for r in run["rows"]}
    defects = read_csv(run["out"] / "defects" / DEVICE / "run_00.csv")
    assert defects, "the run identified no defect"
    assert list(defects[0])[:8] == ["row", "col", "channel", "onset_index", "onset_path", "onset_date",
                                    "onset_timeslot", "onset_class"]
    for d in defects:
        row = by_path[d["onset_path"]]  # relative to the manifest's folder, as the manifest writes it
        assert datetime.fromisoformat(d["onset_date"]) == datetime.fromisoformat(row["captured_at"])
        assert (d["onset_timeslot"], d["onset_class"]) == (row["timeslot"], row["label"])


def test_image_paths_in_the_outputs_are_relative_to_the_manifest_folder(run):
    manifest_paths = {r["path"] for r in run["rows"]}
    failures = read_csv(run["out"] / "failures.csv")
    assert [f["image"] for f in failures] == [run["victim"]]
    predictions = read_csv(run["out"] / "predictions.csv")
    assert predictions and {p["image"] for p in predictions} <= manifest_paths


# --- the cache folder ----------------------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_CACHE_HOME is the Linux convention")
def test_the_cache_folder_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AGETRACE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "agetrace" / "synthetic"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "agetrace" / "synthetic"


def test_agetrace_cache_overrides_the_platform_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("AGETRACE_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine" / "synthetic"
