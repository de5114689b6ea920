"""`python -m pipeline.ml_age` end to end on a small synthetic dataset."""

import csv
import json
import logging
import shutil

import numpy as np
import pytest

from pipeline.analysis.config import ConfigMismatchError, ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.analysis.report import method_labels, summary_markdown
from pipeline.data.manifest import load_manifest
from pipeline.ml_age import main

@pytest.fixture
def dataset_copy(small_dataset, tmp_path):
    """A private copy (tests below corrupt files)."""
    root = tmp_path / "data"
    shutil.copytree(small_dataset.root, root)
    return root


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_outputs_and_identical_splits(small_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--manifest", str(small_dataset.manifest_path), "--runs", "2", "--out", str(out),
                 "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| SIM-alpha01 |" in printed and "Fridrich–Goljan" in printed
    for name in ("config.json", "predictions.csv", "metrics.csv", "summary.csv", "summary.md",
                 "accuracy_boxplot.png", "failures.csv", "excluded.csv"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    manifest = load_manifest(small_dataset.manifest_path)
    assert config["status"] == "complete"
    assert config["manifest"]["sha256"] == manifest.sha256
    assert config["versions"]["numpy"] and config["config"]["seed"] == 0
    assert set(config["device_seeds"]) == set(manifest.devices)
    preds = read_csv(out / "predictions.csv")
    # every method saw exactly the test images of the split files
    for device in manifest.devices:
        for run in (0, 1):
            split = read_csv(out / "splits" / device / f"run_{run:02d}.csv")
            test = sorted(r["path"] for r in split if r["subset"] == "test")
            for method in ("fg", "nb", "svm"):
                got = sorted(str(small_dataset.root / p["image"]) for p in preds
                             if p["device"] == device and p["run"] == str(run) and p["method"] == method)
                assert got == test, (device, run, method)
    for p in preds:
        probs = [float(p["p_0"]), float(p["p_1"])]
        raw = [float(p["raw_p_0"]), float(p["raw_p_1"])]
        # the decision is the method's own; the calibrated evidence is beside it
        assert abs(sum(probs) - 1) < 1e-6 and int(p["predicted"]) == int(np.argmax(raw))
        assert abs(float(p["log10_lr_1"]) + float(p["log10_lr_0"])) < 1e-9
        # the calibrated posterior follows from the LR and the training priors (here 1/2 each)
        assert abs(np.log10(probs[1] / probs[0]) - float(p["log10_lr_1"])) < 1e-6
    metrics = read_csv(out / "metrics.csv")
    assert len(metrics) == 4 * 2 * 3


def test_resume_recomputes_only_missing_parts(small_dataset, tmp_path, caplog):
    manifest = load_manifest(small_dataset.manifest_path)
    cfg = ExperimentConfig(runs=2, workers=1, progress=False)
    out = tmp_path / "run"
    first = run_experiment(manifest, out, cfg)
    part = out / "parts" / "SIM-beta01" / "run_01.json"
    kept = out / "parts" / "SIM-alpha01" / "run_00.json"
    kept_mtime = kept.stat().st_mtime_ns
    part.unlink()  # as if the run had been killed before this part was written
    (out / "config.json").write_text((out / "config.json").read_text().replace('"complete"', '"running"'))
    caplog.set_level(logging.INFO, logger="agetrace")
    caplog.clear()
    second = run_experiment(manifest, out, cfg)
    logged = [r.getMessage() for r in caplog.records if r.name == "agetrace.analysis.experiment"]
    assert kept.stat().st_mtime_ns == kept_mtime  # finished work was not recomputed
    assert [line for line in logged if "run" in line] == [line for line in logged if "SIM-beta01 run 1" in line]
    assert second["metrics"] == first["metrics"]
    # config.json says what was reused (the README promises it): 4 devices x 2 runs, one part lost
    reuse = json.loads((out / "config.json").read_text())["reuse"]
    assert (reuse["parts_reused"], reuse["parts_computed"], reuse["devices_reused"]) == (7, 1, 3)
    assert reuse["images_from_cache"]["screening"] == 32 and reuse["images_computed"]["screening"] == 0
    with pytest.raises(ConfigMismatchError, match="test_size"):
        run_experiment(manifest, out, ExperimentConfig(runs=2, test_size=0.2, workers=1, progress=False))
    # parts made by another version of the code are not mixed with this one's
    record = json.loads((out / "config.json").read_text())
    assert len(record["code"]) == 64
    (out / "config.json").write_text(json.dumps({**record, "code": "0" * 64}))
    with pytest.raises(ConfigMismatchError, match="another version of agetrace's code"):
        run_experiment(manifest, out, cfg)


def test_bad_image_is_recorded_and_run_goes_on(dataset_copy, tmp_path, capsys):
    rows = read_csv(dataset_copy / "manifest.csv")
    victim = dataset_copy / rows[3]["path"]
    victim.write_bytes(victim.read_bytes()[:500])  # truncated JPEG
    out = tmp_path / "run"
    assert main(["--manifest", str(dataset_copy / "manifest.csv"), "--runs", "1", "--out", str(out),
                 "--workers", "1", "--no-progress", "--methods", "fg"]) == 0
    failures = read_csv(out / "failures.csv")
    assert [f["image"] for f in failures] == [victim.relative_to(dataset_copy).as_posix()]  # manifest-relative
    assert "truncated" in failures[0]["reason"].lower() or "premature" in failures[0]["reason"].lower()
    assert "could not be read" in capsys.readouterr().out
    assert main(["--manifest", str(dataset_copy / "manifest.csv"), "--runs", "1", "--out", str(tmp_path / "s"),
                 "--workers", "1", "--no-progress", "--methods", "fg", "--strict"]) == 2
    assert str(victim) in capsys.readouterr().err


def test_explain_prints_per_defect_evidence(small_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--manifest", str(small_dataset.manifest_path), "--runs", "1", "--out", str(out),
                 "--workers", "1", "--no-progress", "--methods", "fg"]) == 0
    capsys.readouterr()
    part = json.loads((out / "parts" / "SIM-alpha01" / "run_00.json").read_text())
    test_image = small_dataset.root / next(p["image"] for p in part["predictions"])
    assert main(["explain", str(test_image), "--run", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SIM-alpha01" in text and "posterior" in text and "<- estimate" in text
    assert len([line for line in text.splitlines() if line.strip()[:1].isdigit()]) >= len(part["defects"]["rows"])
    assert main(["explain", str(test_image), "--run", str(tmp_path / "nothing")]) == 2


def test_explain_warns_about_a_training_image_and_shows_class_dates(small_dataset, tmp_path, capsys):
    """Issue 14, point 4: a trusted image of the split is flagged (by path, and as a renamed copy
    by content), with the runs in which it is held out; each class's date range is shown."""
    out = tmp_path / "run"
    assert main(["--manifest", str(small_dataset.manifest_path), "--runs", "3", "--out", str(out),
                 "--workers", "1", "--no-progress", "--methods", "fg"]) == 0
    capsys.readouterr()
    splits = {run: read_csv(out / "splits" / "SIM-alpha01" / f"run_{run:02d}.csv") for run in range(3)}
    subset = {run: {r["path"]: r["subset"] for r in rows} for run, rows in splits.items()}
    trained = next(p for p in subset[0] if subset[0][p] == "train" and "test" in
                   {subset[run].get(p) for run in (1, 2)})
    held_out = [run for run in (1, 2) if subset[run][trained] == "test"]
    assert main(["explain", trained, "--run", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("WARNING: this file is one of the TRAINING images of split run 0")
    assert f"use --split-run {held_out[0]}" in text
    copy = tmp_path / "renamed.jpg"
    shutil.copy(trained, copy)
    assert main(["explain", str(copy), "--run", str(out), "--device", "SIM-alpha01"]) == 0
    assert capsys.readouterr().out.startswith("WARNING: a file with the same bytes is one of the TRAINING images")
    assert main(["explain", trained, "--run", str(out), "--split-run", str(held_out[0])]) == 0
    text = capsys.readouterr().out
    assert "WARNING" not in text and f"held-out test images of split run {held_out[0]}" in text
    rows = [r for r in read_csv(small_dataset.manifest_path) if r["device"] == "SIM-alpha01"]
    for label in {r["label"] for r in rows}:
        dates = sorted(r["captured_at"][:10] for r in rows if r["label"] == label)
        assert f"{dates[0]} to {dates[-1]} ({len(dates)} images)" in text


def test_srnet_trains_on_the_same_split_files(small_dataset, tmp_path):
    rows = read_csv(small_dataset.manifest_path)
    one = tmp_path / "one_device.csv"
    with open(one, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            if row["device"] == "SIM-alpha01":
                writer.writerow({**row, "path": str(small_dataset.root / row["path"])})
    manifest = load_manifest(one)
    cfg = ExperimentConfig(methods=("fg", "srnet"), runs=2, workers=1, progress=False,
                           srnet_overrides={"epochs": 2, "patch": 32})
    out = tmp_path / "run"
    result = run_experiment(manifest, out, cfg)
    config = json.loads((out / "config.json").read_text())
    assert config["srnet"]["preset"] == "cpu" and config["srnet"]["epochs"] == 2
    preds = read_csv(out / "predictions.csv")
    srnet = sorted(p["image"] for p in preds if p["method"] == "srnet")
    fg_first = sorted(p["image"] for p in preds if p["method"] == "fg" and p["run"] == "0")
    assert srnet == fg_first  # the cpu preset trains on the first split only, the same test images
    assert "same first 1 of 2 splits" in result["summary_text"]
    assert {m["method"] for m in result["metrics"] if m["run"] == 0} == {"fg", "srnet"}
    assert "| SRNet (5-crop) |" in result["summary_text"]


def test_the_srnet_column_says_which_crops_were_fused():
    assert method_labels()["srnet"] == method_labels(("tl", "tr", "bl", "br", "ce"))["srnet"] == "SRNet (5-crop)"
    assert method_labels(("ce",))["srnet"] == "SRNet (1 crop: ce)"
    summary = [{"device": "d", "method": "srnet", "runs": 1, "mean_accuracy": 0.75, "std_accuracy": 0.0}]
    table = summary_markdown(summary, ["srnet"], {"d": 0.5}, method_labels(("ce", "tl")))
    assert table.splitlines()[0] == "| device | SRNet (2 crops: ce, tl) | chance |"
    assert table.splitlines()[2] == "| d | 75.0 — (n=1) | 50.0 |"  # one run: no spread, not "± 0.0"
