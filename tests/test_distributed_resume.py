"""Issue 8 acceptance: Dask gives the local executor's results; a killed run resumes to the same results.

* the same experiment with ``executor='local'`` and with ``executor='dask'`` on a
  ``LocalCluster`` of 2 workers writes identical defect tables and predictions;
* ``python -m pipeline.ml_age`` killed with SIGKILL half way (the process and its workers, as
  a crash would), then started again with the same ``--out``: it finishes, reuses the finished
  work (complete parts and cached per-image features), and its results equal an uninterrupted
  run's.

The kill point is deterministic, not found by polling the output folder (which, on a busy
machine, overshoots by an unknown amount of work): the killed run gets a ``sitecustomize`` on
its ``PYTHONPATH`` (see :data:`KILL_HOOK`), imported by the run and by each of its worker
processes, that SIGKILLs the whole process group right after the file write (``os.replace``, the
last step of every atomic write) that brings the number of files matching a pattern to k. No
library code knows about it.
"""

import csv
import json
import os
import signal
import glob
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.data.manifest import load_manifest
from pipeline.ml_age import main

ARGS = ["--runs", "2", "--methods", "fg,nb", "--no-progress"]
REPO = Path(__file__).resolve().parents[1]

#: sitecustomize.py for the run to kill: ``AGETRACE_TEST_KILL_AFTER="<glob pattern>=<k>"``.
KILL_HOOK = """
import os

_spec = os.environ.get("AGETRACE_TEST_KILL_AFTER")
if _spec:
    import fnmatch, glob, signal

    _pattern, _, _count = _spec.rpartition("=")
    _replace = os.replace

    def _replace_then_maybe_die(src, dst, *args, **kwargs):
        _replace(src, dst, *args, **kwargs)
        # counted on disk: the worker processes write too
        if fnmatch.fnmatchcase(os.fsdecode(dst), _pattern) and len(glob.glob(_pattern)) >= int(_count):
            os.killpg(os.getpgrp(), signal.SIGKILL)  # the run and its workers, as a crash would

    os.replace = _replace_then_maybe_die
"""


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
    common = dict(methods=("fg", "nb", "svm"), runs=2, progress=False, batch_size=4)
    run_experiment(manifest, tmp_path / "local", ExperimentConfig(**common, workers=1))
    run_experiment(manifest, tmp_path / "dask", ExperimentConfig(**common, executor="dask", workers=2))
    local, dask = results_of(tmp_path / "local"), results_of(tmp_path / "dask")
    assert local.keys() == dask.keys() and len(local["predictions.csv"]) > 0
    assert any(read_csv(p) for p in (tmp_path / "local" / "defects").rglob("*.csv")), "no defect was identified"
    for name in local:
        assert local[name] == dask[name], name
    config = json.loads((tmp_path / "dask" / "config.json").read_text())
    assert config["config"]["executor"] == "dask"
    assert config["feature_cache"]["screening_computed"] == len(manifest.rows)


def _run_killed_at(tmp_path: Path, out: Path, manifest: Path, pattern: str, count: int) -> None:
    """Start the run in its own process group, with the kill hook armed; wait until it is killed."""
    hook = tmp_path / "kill_hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    env = {**os.environ, "AGETRACE_TEST_KILL_AFTER": f"{pattern}={count}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(hook), str(REPO), os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "pipeline.ml_age", "--manifest", str(manifest), *ARGS,
           "--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=REPO, env=env)
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the run neither finished nor reached the kill point within 600 s")
    assert proc.returncode == -signal.SIGKILL, f"the run ended before its kill point: {err.decode()[-3000:]}"


@pytest.mark.parametrize("kill_when", ["screening half done", "first device done"])
def test_killed_run_resumes_to_the_uninterrupted_result(small_dataset, reference, tmp_path, kill_when):
    out = tmp_path / "run"
    manifest = load_manifest(small_dataset.manifest_path)
    n_images = len(manifest.rows)
    first_device = manifest.devices[0]
    screen, parts = glob.escape(str(out / "cache" / "screen")), glob.escape(str(out / "parts"))
    if kill_when == "screening half done":
        _run_killed_at(tmp_path, out, small_dataset.manifest_path, f"{screen}/*/*.npz", n_images // 2)
    else:  # killed right after the first device's last part: nothing of the next device is kept
        _run_killed_at(tmp_path, out, small_dataset.manifest_path, f"{parts}/*/run_01.json", 1)
    assert not (out / "predictions.csv").exists()
    assert json.loads((out / "config.json").read_text())["status"] == "running"
    screened_before = len(list((out / "cache" / "screen").rglob("*.npz")))
    parts_before = {p: p.read_bytes() for p in (out / "parts").rglob("*.json")}
    if kill_when == "screening half done":
        assert n_images // 2 <= screened_before < n_images
    else:
        assert sorted(p.relative_to(out).as_posix() for p in parts_before) == \
            [f"parts/{first_device}/run_00.json", f"parts/{first_device}/run_01.json"]
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
