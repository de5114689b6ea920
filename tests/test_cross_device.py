"""`python -m pipeline.cross_device` on a small synthetic dataset (4 devices, 32 images each)."""

import csv
import json
import shutil

import numpy as np
import pytest
from scipy.stats import binom

from pipeline.analysis.cross_device import DEFECT_TRANSFER_NOTE, experiment_config_from, run_cross_device
from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.cross_device import main
from pipeline.data.manifest import load_manifest
from pipeline.sim import default_dataset

SMALL = {f"models.{m}.{k}": v for m in ("alpha", "beta", "gamma") for k, v in (("width", 256), ("height", 192))}
SMALL["capture.images_per_class"] = 16
RUNS = 2


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return default_dataset(tmp_path_factory.mktemp("sim"), progress=False, workers=1, **SMALL)


@pytest.fixture(scope="module")
def crossed(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("cross")
    manifest = load_manifest(small_dataset.manifest_path)
    cfg = ExperimentConfig(runs=RUNS, workers=1, progress=False)
    run_experiment(manifest, out / "experiment", cfg)  # the entry point runs it first, as here
    result = run_cross_device(manifest, out, cfg)
    return out, result


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_own_device_cells_reproduce_the_experiment(crossed):
    out, result = crossed
    recorded = {(m["device"], int(m["run"]), m["method"]): float(m["accuracy"])
                for m in read_csv(out / "experiment" / "metrics.csv")}
    own = {(m["train_device"], int(m["run"]), m["method"]): float(m["accuracy"])
           for m in read_csv(out / "cross_metrics.csv") if m["train_device"] == m["test_device"]}
    assert len(recorded) == 4 * RUNS * 3
    assert own == recorded
    assert result["own_device_check"] == {"compared": len(recorded), "mismatches": [], "reproduced": True}


@pytest.mark.parametrize("method", ["fg", "nb", "svm"])
def test_defect_methods_are_at_chance_off_their_own_device(crossed, method):
    out, _ = crossed
    rows = [m for m in read_csv(out / "cross_metrics.csv") if m["method"] == method]
    off = [m for m in rows if m["train_device"] != m["test_device"]]
    own = [m for m in rows if m["train_device"] == m["test_device"]]
    assert len(off) == 4 * 3 * RUNS
    # A method whose prediction does not depend on the image is right with probability at most the
    # largest class share. Each test device's images are reused by the three other training
    # devices, so count each (test device, run, image) once: n independent Bernoulli draws.
    n = sum(int(m["n_test"]) for m in own)
    chance = max(float(m["chance"]) for m in off)
    alpha = 1e-3
    low, high = binom.ppf(alpha / 2, n, chance) / n, binom.isf(alpha / 2, n, chance) / n
    off_acc = np.mean([float(m["accuracy"]) for m in off])
    own_acc = np.mean([float(m["accuracy"]) for m in own])
    assert low <= off_acc <= high, (off_acc, low, high)
    # while on its own device the method is far above chance (one-sided binomial tail)
    own_correct = round(sum(float(m["accuracy"]) * int(m["n_test"]) for m in own))
    assert binom.sf(own_correct - 1, n, chance) < 0.01, (own_acc, n)
    assert all(m["note"].startswith(DEFECT_TRANSFER_NOTE) for m in off)
    assert all(m["note"] == "" for m in own)


def test_fg_dates_other_devices_images_to_the_oldest_class(crossed):
    out, _ = crossed
    off = [p for p in read_csv(out / "predictions.csv")
           if p["method"] == "fg" and p["train_device"] != p["test_device"]]
    assert off and np.mean([p["predicted"] == "0" for p in off]) > 0.9
    report = (out / "cross_device.md").read_text()
    fg_section = report.split("## Fridrich–Goljan")[1].split("## ")[0]
    assert "oldest class" in fg_section and "0 of the 12 off-diagonal cells are above chance" in fg_section


def test_files_and_record(crossed, small_dataset):
    out, result = crossed
    for name in result["files"]:
        assert (out / name).is_file(), name
    for method in ("fg", "nb", "svm"):
        assert (out / f"heatmap_{method}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"boxplot_{method}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        matrix = read_csv(out / f"matrix_{method}.csv")
        devices = load_manifest(small_dataset.manifest_path).devices
        assert [r["statistic"] for r in matrix] == ["mean", "std", "runs", "chance"] * 4
        assert list(matrix[0]) == ["train_device", "statistic", *devices]
        assert all(matrix[i][d] == str(RUNS) for i in range(2, 16, 4) for d in devices)
    config = json.loads((out / "config.json").read_text())
    manifest = load_manifest(small_dataset.manifest_path)
    assert config["status"] == "complete" and config["tool"] == "pipeline.cross_device"
    assert config["manifest"]["sha256"] == manifest.sha256
    assert config["versions"]["numpy"] and config["config"]["seed"] == 0 and config["config"]["runs"] == RUNS
    assert set(config["device_seeds"]) == set(manifest.devices)
    assert config["own_device_check"]["reproduced"]
    summary = read_csv(out / "cross_summary.csv")
    assert len(summary) == 3 * 16
    report = (out / "cross_device.md").read_text()
    assert "A defect map belongs to one sensor" in report and "n=2" in report
    assert "reproduce the experiment's recorded accuracies exactly" in report


def test_cli_reuses_a_finished_experiment(crossed, tmp_path, capsys):
    out, _ = crossed
    part = out / "experiment" / "parts" / "SIM-beta01" / "run_01.json"
    mtime = part.stat().st_mtime_ns
    metrics_before = read_csv(out / "experiment" / "metrics.csv")
    target = tmp_path / "cli"
    assert main(["--experiment", str(out / "experiment"), "--methods", "fg", "--out", str(target),
                 "--workers", "1", "--no-progress"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "using the manifest of" in captured.err
    assert f"Wrote {target}/" in printed and "matrix_fg.csv" in printed and "heatmap_fg.png" in printed
    assert part.stat().st_mtime_ns == mtime  # nothing recomputed
    assert read_csv(out / "experiment" / "metrics.csv") == metrics_before  # nb and svm rows kept
    assert not (target / "matrix_nb.csv").exists()
    assert json.loads((target / "config.json").read_text())["config"]["runs"] == RUNS


def test_cli_without_manifest_uses_the_synthetic_default(crossed, small_dataset, tmp_path, capsys, monkeypatch):
    import pipeline.sim as simulator

    monkeypatch.setattr(simulator, "default_dataset", lambda **_: small_dataset)
    # a copy of the finished experiment as OUT/experiment: resumed, not recomputed
    shutil.copytree(crossed[0] / "experiment", tmp_path / "x" / "experiment")
    assert main(["--methods", "fg", "--out", str(tmp_path / "x"), "--workers", "1", "--no-progress"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "embedded synthetic" in captured.err and "Wrote" in printed and "Fridrich–Goljan" in printed
    config = json.loads((tmp_path / "x" / "config.json").read_text())
    assert config["synthetic"]["root"] == str(small_dataset.root)


def test_bad_manifest_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    assert main(["--manifest", str(missing), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--manifest" in err and str(missing) in err and "no such file" in err
    assert not (tmp_path / "x").exists()


def test_refuses_to_write_into_another_tools_folder(crossed, capsys):
    experiment = crossed[0] / "experiment"
    before = (experiment / "config.json").read_text()
    assert main(["--experiment", str(experiment), "--out", str(experiment), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pipeline.ml_age" in err and "choose another --out" in err
    assert (experiment / "config.json").read_text() == before


def test_experiment_config_from_a_recorded_folder(crossed):
    out, _ = crossed
    cfg = experiment_config_from(out / "experiment", methods=("fg",), workers=1)
    assert cfg.runs == RUNS and cfg.methods == ("fg",) and cfg.workers == 1
    assert experiment_config_from(out / "nothing", runs=3).runs == 3
    with pytest.raises(ValueError, match="unknown experiment setting"):
        experiment_config_from(None, colour="red")


@pytest.mark.cnn
def test_srnet_is_applied_to_every_device_with_its_runs_labelled(small_dataset, tmp_path):
    pytest.importorskip("torch")
    rows = read_csv(small_dataset.manifest_path)
    two = tmp_path / "two_devices.csv"
    with open(two, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            if row["device"] in ("SIM-alpha01", "SIM-beta01"):
                writer.writerow({**row, "path": str(small_dataset.root / row["path"])})
    manifest = load_manifest(two)
    cfg = ExperimentConfig(methods=("srnet",), runs=2, workers=1, progress=False,
                           srnet_overrides={"epochs": 1, "patch": 32, "crops": ["ce", "tl"], "num_threads": 1})
    out = tmp_path / "run"
    run_experiment(manifest, out / "experiment", cfg)
    result = run_cross_device(manifest, out, cfg)
    # the cpu preset trains SRNet on the first split only: one run behind every cell, and said so
    assert {(s["train_device"], s["test_device"], s["runs"]) for s in result["summary"]} == {
        (a, b, 1) for a in ("SIM-alpha01", "SIM-beta01") for b in ("SIM-alpha01", "SIM-beta01")}
    assert result["own_device_check"] == {"compared": 2, "mismatches": [], "reproduced": True}
    matrix = read_csv(out / "matrix_srnet.csv")
    assert [r[d] for r in matrix if r["statistic"] == "runs" for d in ("SIM-alpha01", "SIM-beta01")] == ["1"] * 4
    assert (out / "heatmap_srnet.png").is_file() and (out / "boxplot_srnet.png").is_file()
    report = (out / "cross_device.md").read_text()
    assert "(n=1)" in report and "What SRNet does on another device" in report
    assert "## SRNet (2 crops: ce, tl)" in report  # says what was fused, not the usual five crops
    preds = [p for p in read_csv(out / "predictions.csv") if p["test_device"] == "SIM-beta01"]
    split = read_csv(out / "experiment" / "splits" / "SIM-beta01" / "run_00.csv")
    test = sorted(str(small_dataset.root / r["path"]) if not r["path"].startswith("/") else r["path"]
                  for r in split if r["subset"] == "test")
    for train in ("SIM-alpha01", "SIM-beta01"):
        got = sorted(p["image"] for p in preds if p["train_device"] == train)
        assert got == test  # both models saw exactly beta01's test split of run 0
