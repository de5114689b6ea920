"""Issue 8 acceptance: Dask gives the local executor's results; a killed run resumes to the same results.

* the same experiment with ``executor='local'`` and with ``executor='dask'`` on a
  ``LocalCluster`` of 2 workers writes identical defect tables and predictions;
* ``python -m pipeline.ml_age`` killed with SIGKILL half way (the process and its workers, as
  a crash would), then started again with the same ``--out``: it finishes, reuses the finished
  work (complete parts and cached per-image features), and its results equal an uninterrupted
  run's.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.analysis.experiment import ExperimentConfig, run_experiment
from pipeline.data.manifest import load_manifest
from pipeline.ml_age import main

ARGS = ["--runs", "2", "--methods", "fg,nb", "--no-progress"]


@pytest.fixture(scope="module")
def reference(small_dataset, tmp_path_factory):
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["--manifest", str(small_dataset.manifest_path), *ARGS, "--workers", "2", "--out", str(out)]) == 0
    return out


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def results_of(out: Path) -> dict:
    """Everything a run concluded: predictions, metrics, defect tables, splits."""
    found = {name: read_csv(out / name) for name in ("predictions.csv", "metrics.csv", "failures.csv")}
    for folder in ("defects", "splits"):
        for path in sorted((out / folder).rglob("*.csv")):
            found[str(path.relative_to(out))] = read_csv(path)
    return found


def test_dask_local_cluster_equals_local_executor(small_dataset, tmp_path):
    pytest.importorskip("distributed")
    manifest = load_manifest(small_dataset.manifest_path)
    common = dict(methods=("fg", "nb"), runs=2, progress=False, batch_size=4)
    run_experiment(manifest, tmp_path / "local", ExperimentConfig(**common, workers=1), log=lambda *_: None)
    run_experiment(manifest, tmp_path / "dask", ExperimentConfig(**common, executor="dask", workers=2),
                   log=lambda *_: None)
    local, dask = results_of(tmp_path / "local"), results_of(tmp_path / "dask")
    assert local.keys() == dask.keys() and len(local["predictions.csv"]) > 0
    assert any(read_csv(p) for p in (tmp_path / "local" / "defects").rglob("*.csv")), "no defect was identified"
    for name in local:
        assert local[name] == dask[name], name
    config = json.loads((tmp_path / "dask" / "config.json").read_text())
    assert config["config"]["executor"] == "dask"
    assert config["feature_cache"]["screening_computed"] == len(manifest.rows)


@pytest.mark.parametrize("kill_when", ["screening half done", "first device done"])
def test_killed_run_resumes_to_the_uninterrupted_result(small_dataset, reference, tmp_path, kill_when):
    out = tmp_path / "run"
    n_images = len(load_manifest(small_dataset.manifest_path).rows)
    cmd = [sys.executable, "-m", "pipeline.ml_age", "--manifest", str(small_dataset.manifest_path), *ARGS,
           "--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def reached() -> bool:
        if kill_when == "first device done":
            return any((out / "parts").rglob("run_01.json"))
        return len(list((out / "cache" / "screen").rglob("*.npz"))) >= n_images // 2

    deadline = time.monotonic() + 300
    while not reached():
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes, as a crash would
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "predictions.csv").exists()
    assert json.loads((out / "config.json").read_text())["status"] == "running"
    screened_before = len(list((out / "cache" / "screen").rglob("*.npz")))
    parts_before = {p: p.read_bytes() for p in (out / "parts").rglob("*.json")}

    assert main(["--manifest", str(small_dataset.manifest_path), *ARGS, "--workers", "2", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "complete" and config["resumed"] == 1
    # finished work was reused, not recomputed
    for path, content in parts_before.items():
        assert path.read_bytes() == content, f"{path} was rewritten"
    cache = config["feature_cache"]
    assert cache.get("screening_computed", 0) <= n_images - screened_before
    assert cache.get("screening_computed", 0) < n_images
    # and the results are those of a run that was never interrupted
    assert results_of(out) == results_of(reference)
