"""The bias audit's CNN checks (SRNet, torch) on tiny synthetic datasets.

Acceptance (issue 7): with ``processing.processing_bias = 1`` and a Disjoint split of the
devices (class 0 from the two SIM Alpha bodies, class 1 from SIM Beta and VI Gamma), the
CNN's balanced-test accuracy falls to chance while its training accuracy stays high — the
camera-bias paper's Table II effect — and the audit reports it. Tiny settings keep this
cheap: 32 x 32 images (the network sees the whole frame, as the paper's networks did), 8
epochs, one torch thread (two in the end-to-end checks, where that is faster).
"""

import logging

import numpy as np
import pytest

pytest.importorskip("torch")

from pipeline.analysis.audit import FOUND, NO_BIAS, AuditConfig, run_audit
from pipeline.analysis.audit.cnn import CnnSettings
from pipeline.data.manifest import load_manifest
from pipeline.sim import default_dataset

pytestmark = [pytest.mark.cnn, pytest.mark.slow]


def dataset(root, width, height, images_per_class, **overrides):
    size = {f"models.{m}.{k}": v for m in ("alpha", "beta", "gamma") for k, v in (("width", width), ("height", height))}
    return default_dataset(root, progress=False, workers=1, **size,
                           **{"capture.images_per_class": images_per_class, **overrides})


def test_processing_bias_with_disjoint_devices_reproduces_table_ii(tmp_path):
    data = dataset(tmp_path / "sim", 32, 32, 40, **{"processing.processing_bias": 1.0, "scenes.scene_bias": 0.0})
    cnn = CnnSettings(patch=32, epochs=8, threads=1, camera_extras=False)
    result = run_audit(load_manifest(data.manifest_path), tmp_path / "out",
                       AuditConfig(checks=("camera",), cnn=cnn, progress=False))
    (camera,) = result["results"]
    assert camera.groups == {"0": ["SIM-alpha01", "SIM-alpha02"], "1": ["SIM-beta01", "SIM-gamma01"]}
    train = camera.figure("cnn_disjoint_train_accuracy")
    test = camera.figure("cnn_disjoint_accuracy")
    following = camera.figure("disjoint_following")
    assert train.value >= 0.9                                   # it fits its training set ...
    assert test.ci[0] <= 0.5 <= test.ci[1] and test.value < 0.65  # ... and is at chance on the balanced test
    assert following.verdict == FOUND and following.value > 0.75  # because it follows the device (Fig. 3)
    assert camera.susceptibility == FOUND
    assert camera.verdict == NO_BIAS                            # the data themselves are balanced per device
    assert any("Table II" in note for note in camera.notes)
    shares = camera.shares["cnn-disjoint"]
    assert np.mean([shares[d]["0"] for d in ("SIM-alpha01", "SIM-alpha02")]) > \
        np.mean([shares[d]["0"] for d in ("SIM-beta01", "SIM-gamma01")]) + 0.4
    text = (tmp_path / "out" / "audit.md").read_text()
    assert "stress test: **BIAS FOUND**" in text and "camera_fig3.png" in text


def test_every_check_runs_end_to_end_with_the_cnn(tmp_path):
    """Every CNN code path once, with the tiniest settings: structure, not figures."""
    data = dataset(tmp_path / "sim", 64, 48, 8, **{"scenes.scene_bias": 1.0})
    cnn = CnnSettings(patch=32, random_patch=16, n_random_train=2, n_random_test=3, epochs=2, threads=2,
                      device_id=True)
    result = run_audit(load_manifest(data.manifest_path), tmp_path / "out", AuditConfig(cnn=cnn, runs=2,
                       progress=False))
    checks = {r.name: r for r in result["results"]}
    # issue 16 added location, binary_mask (one judged figure each) and adversarial (two)
    assert list(checks) == ["content", "camera", "position", "patch", "location", "binary_mask", "adversarial"]
    # content: 2 baselines + the audited model without isolated-pixel traces (issue 15)
    assert result["record"]["levels"]["family_size"] == 2 + 1 + 4 + 2 + 3 + 1 + 1 + 2
    for key in ("left_to_right_accuracy", "other_positions_accuracy", "device_id_left_to_right_accuracy"):
        checks["position"].figure(key)
    for key in ("random_crop_accuracy", "jitter_drop", "grayscale_drop"):
        assert checks["patch"].figure(key).verdict is not None
    for key in ("cnn_partial_accuracy", "device_id_accuracy"):
        checks["camera"].figure(key)
    for name in ("audit.json", "audit.md", "overview.png", "camera_fig3.png", "position.png", "patch_colour.png",
                 "predictions.csv"):
        assert (tmp_path / "out" / name).is_file(), name
    models = {row.split(",")[1] for row in (tmp_path / "out" / "predictions.csv").read_text().splitlines()[1:]}
    assert {"cnn-balanced", "cnn-disjoint", "cnn-partial", "cnn-device_id", "random_crops", "jitter",
            "grayscale", "balanced@tr"} <= models


def test_an_audit_run_again_loads_its_finished_models_and_gives_the_same_figures(tmp_path, caplog):
    """Resume: trained networks are kept in OUT/models and loaded by a rerun; an interruption
    that lost one model (here: its checkpoint deleted) retrains only that one."""
    data = dataset(tmp_path / "sim", 64, 48, 8, **{"scenes.scene_bias": 1.0})
    cnn = CnnSettings(patch=32, random_patch=16, n_random_train=2, n_random_test=3, epochs=2, threads=2)
    # Two checks suffice: the model store is the same for all of them (end-to-end above runs all).
    config = AuditConfig(checks=("position", "patch"), cnn=cnn, runs=2, progress=False)
    manifest = load_manifest(data.manifest_path)

    def audit(lines):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="agetrace"):
            result = run_audit(manifest, tmp_path / "out", config)
        lines.extend(caplog.messages)
        figures = {(r.name, f.key): (f.value, f.ci, f.verdict) for r in result["results"] for f in r.figures}
        predictions = (tmp_path / "out" / "predictions.csv").read_text()
        return figures, predictions

    first_log, second_log, third_log = [], [], []
    first = audit(first_log)
    trained = sorted(line.split(":")[0].split()[-1] for line in first_log if line.startswith("  trained "))
    assert trained == ["balanced", "grayscale", "jitter", "random_crops"]
    assert sorted(p.stem for p in (tmp_path / "out" / "models").glob("*.pt")) == trained
    assert "models/" in __import__("json").loads((tmp_path / "out" / "audit.json").read_text())["files"]

    assert audit(second_log) == first
    assert not [line for line in second_log if line.startswith("  trained ")]
    assert sum(line.startswith("  loaded ") for line in second_log) == 4

    (tmp_path / "out" / "models" / "jitter.pt").unlink()
    assert audit(third_log) == first
    assert [line.split(":")[0] for line in third_log if line.startswith("  trained ")] == ["  trained jitter"]
