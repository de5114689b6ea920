"""Issue 15 acceptance: the constrained learned models against simulator ground truth.

Thresholds are written here, not imported from the code. Every model runs with ``device='cpu'``
and a pinned thread count (``num_threads=1`` on the content-only data, as the issue asks; two threads
on the defects-only data, to keep the suite's time: torch's CPU results are fixed for a fixed thread
count), through ``run_experiment`` (what ``python -m pipeline.ml_age`` runs: the
same split files, calibration part and checkpoints as SRNet) and ``run_cross_device``.

* **Content only** (``scenes.scene_bias = 1``, ``defects.rate_per_year = 0``): the classes differ in
  scene content alone. defect-cnn must be at chance: over three split seeds (90 test predictions) the
  exact 99 % interval of its accuracy contains 0.5 and its upper end is at most 0.65. The audit of
  SRNet on the same data finds the content bias: its Balanced model, scored with isolated-pixel traces
  scrubbed, is above chance ("bias found"), and it is well above chance as is.
* **Defects only** (``scene_bias = 0``, the default defects): defect-cnn reaches within 5 points of
  the best defect-based method on the same two splits of two devices (120 test predictions), and is
  clearly above chance.
* **Cross-device** (two bodies of the same model): defect-cnn and srnet-res fall to chance on the
  other device (exact 99 % interval of the off-device accuracy contains the off-device chance), as
  Fridrich-Goljan does, while defect-cnn is above chance on its own device.

What is *not* asserted, because it is false here (measured, ``benchmarks/bench_constrained_cnns.py``,
results in ``benchmarks/RESULTS.md``): that ``srnet-res`` and ``srnet-cs`` are at chance on content-only
data. Both learn the content shortcut from the median residual / prediction errors (edges and textures
of the scenes survive both), so the issue's premise that these constraints remove content does not hold
on this simulator; the decision is asked in the issue.

To keep the suite's time, the SRNet-family models here fuse one crop (``crops=('ce',)``); the benchmark
runs the shipped five-crop configuration.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.stats import binomtest

from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.cross_device import run_cross_device
from pipeline.analysis.experiment import run_experiment
from pipeline.data.manifest import load_manifest
from pipeline.sim import default_dataset

pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.cnn]

ALPHA = 0.01
ALPHA_ONE_SIDED = 0.05
DEVICES = [{"name": "SIM-alpha01", "model": "alpha", "serial": "SA1-00417"},
           {"name": "SIM-alpha02", "model": "alpha", "serial": "SA1-00523"}]
SMALL = {"seed": 20141006, "models.alpha.width": 256, "models.alpha.height": 192, "capture.images_per_class": 50}
PINNED = {"num_threads": 1, "device": "cpu", "crops": ("ce",)}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _experiment(manifest_path, out, methods, *, runs, seed=0, srnet_runs=None, cache=None, threads=1):
    cfg = ExperimentConfig(methods=tuple(methods), runs=runs, test_size=0.3, seed=seed, workers=1, progress=False,
                           srnet_preset="cpu", srnet_runs=srnet_runs,
                           srnet_overrides={**PINNED, "num_threads": threads},
                           cache_dir=None if cache is None else str(cache))
    run_experiment(load_manifest(manifest_path), out, cfg)
    return cfg


def _correct(predictions, method, device=None):
    rows = [p for p in predictions if p["method"] == method and (device is None or p["device"] == device)]
    return sum(p["true"] == p["predicted"] for p in rows), len(rows)


@pytest.fixture(scope="module")
def content_only(tmp_path_factory):
    data = default_dataset(tmp_path_factory.mktemp("content_data"), workers=1, progress=False, devices=DEVICES[:1],
                           **SMALL, **{"scenes.scene_bias": 1.0, "defects.rate_per_year": 0.0})
    predictions = []
    cache = tmp_path_factory.mktemp("content_cache")
    for seed in (0, 1, 2):
        out = tmp_path_factory.mktemp(f"content_seed{seed}") / "run"
        _experiment(data.manifest_path, out, ("fg", "defect-cnn"), runs=1, seed=seed, cache=cache)
        predictions += _rows(out / "predictions.csv")
    return {"data": data, "predictions": predictions}


def test_defect_cnn_is_at_chance_when_only_content_differs(content_only):
    k, n = _correct(content_only["predictions"], "defect-cnn")
    assert n >= 60
    interval = binomtest(k, n).proportion_ci(confidence_level=1 - ALPHA, method="exact")
    assert interval.low <= 0.5 <= interval.high and interval.high <= 0.65, (
        f"defect-cnn {k}/{n} on content-only data: 99 % interval [{interval.low:.3f}, {interval.high:.3f}]")


def test_the_audit_finds_srnets_content_bias_on_the_same_data(content_only, tmp_path):
    from pipeline.analysis.audit.cnn import CnnSettings
    from pipeline.analysis.audit.run import AuditConfig, run_audit

    cnn = CnnSettings(threads=2, camera_extras=False, overrides={"device": "cpu"}, method="srnet")
    result = run_audit(load_manifest(content_only["data"].manifest_path), tmp_path / "audit",
                       AuditConfig(checks=("content",), runs=3, test_size=0.3, cnn=cnn, progress=False))
    content = next(r for r in result["results"] if r.name == "content")
    figure = content.figure("learned_without_traces")
    learned = content.details["learned_model"]
    assert learned["method"] == "srnet" and learned["test_images"] >= 20
    assert learned["accuracy_as_is"] >= 0.8, learned
    assert figure.verdict == "bias found", (figure.verdict, figure.value, figure.ci)
    assert figure.ci[0] > 0.5


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    """scene_bias = 0 and the default defects: only defects carry age. Two splits for the defect
    methods and defect-cnn; then the SRNet variants on the first only, and the cross-device evaluation
    of that run."""
    data = default_dataset(tmp_path_factory.mktemp("defects_data"), workers=1, progress=False, devices=DEVICES,
                           **SMALL, **{"scenes.scene_bias": 0.0})
    root = tmp_path_factory.mktemp("defects")
    methods = ("fg", "nb", "svm", "defect-cnn")
    _experiment(data.manifest_path, root / "experiment", methods, runs=2, srnet_runs=2, cache=root / "cache", threads=2)
    experiment = _rows(root / "experiment" / "predictions.csv")
    # the cross evaluation on run 0, with the SRNet variants added (trained there on run 0 only)
    cfg = _experiment(data.manifest_path, root / "cross_experiment", ("fg", "defect-cnn", "srnet-res", "srnet-cs"),
                      runs=1, cache=root / "cache", threads=2)
    run_cross_device(load_manifest(data.manifest_path), root / "cross", cfg, experiment_dir=root / "cross_experiment")
    return {"experiment": experiment, "cross": _rows(root / "cross" / "cross_metrics.csv"),
            "cross_experiment": root / "cross_experiment",
            "cross_predictions": _rows(root / "cross" / "predictions.csv")}


def test_defect_cnn_is_within_five_points_of_the_best_defect_method(two_devices):
    predictions = two_devices["experiment"]
    share = {}
    for method in ("fg", "nb", "svm", "defect-cnn"):
        k, n = _correct(predictions, method)
        assert n >= 100, (method, n)  # 2 devices x 2 splits x 30 test images
        share[method] = k / n
    best = max(share[m] for m in ("fg", "nb", "svm"))
    assert share["defect-cnn"] >= best - 0.05, share
    k, n = _correct(predictions, "defect-cnn")
    assert binomtest(k, n, 0.5, alternative="greater").pvalue < ALPHA_ONE_SIDED, (k, n)


@pytest.mark.parametrize("method", ["defect-cnn", "srnet-res", "fg"])
def test_off_device_accuracy_falls_to_chance(two_devices, method):
    predictions = [p for p in two_devices["cross_predictions"] if p["method"] == method
                   and p["train_device"] != p["test_device"]]
    assert len(predictions) >= 50
    k = sum(p["true"] == p["predicted"] for p in predictions)
    truths = [p["true"] for p in predictions]
    # the chance of a prediction that ignores the image: the test sets are stratified, so ~0.5
    chance = max(truths.count(c) for c in set(truths)) / len(truths)
    interval = binomtest(k, len(predictions)).proportion_ci(confidence_level=1 - ALPHA, method="exact")
    assert interval.low <= chance <= interval.high, (method, k, len(predictions), interval)


def test_defect_cnn_is_above_chance_on_its_own_device(two_devices):
    own = [p for p in two_devices["cross_predictions"] if p["method"] == "defect-cnn"
           and p["train_device"] == p["test_device"]]
    k = sum(p["true"] == p["predicted"] for p in own)
    assert binomtest(k, len(own), 0.5, alternative="greater").pvalue < ALPHA_ONE_SIDED, (k, len(own))
    # the matrix holds every cell of each method
    cells = {(r["method"], r["train_device"], r["test_device"]) for r in two_devices["cross"]}
    for method in ("fg", "defect-cnn", "srnet-res", "srnet-cs"):
        assert {(method, a["name"], b["name"]) for a in DEVICES for b in DEVICES} <= cells, method
    assert np.isfinite([float(r["accuracy"]) for r in two_devices["cross"]]).all()


@pytest.mark.parametrize("model", ["srnet-res", "srnet-cs"])
def test_cams_explain_the_srnet_variants(two_devices, tmp_path, model):
    from pipeline.analysis.saliency import SaliencyConfig, explain_run

    config = SaliencyConfig(methods=("gradcam",), model=model, device="cpu", num_threads=1, progress=False,
                            faithfulness_crops=0)
    report = explain_run(two_devices["cross_experiment"], tmp_path / model, config)
    assert report["model"] == model
    written = {str(p) for p in report["files"]}
    assert any(p.endswith(".npz") for p in written), written
    saved = json.loads((tmp_path / model / "saliency.json").read_text())
    assert saved["model"] == model and saved["srnet"]["crops"] == ["ce"]
    assert (saved["srnet"]["input"], saved["srnet"]["stem"]) == (
        ("median-residual", "plain") if model == "srnet-res" else ("pixels", "constrained"))
    assert set(saved["devices"]) == {d["name"] for d in DEVICES}


def test_defect_cnn_is_explained_by_its_defects_and_looks_at_them(two_devices, tmp_path):
    from pipeline.analysis.saliency import SaliencyConfig, explain_run

    config = SaliencyConfig(methods=("gradcam", "gradcam++"), model="defect-cnn", device="cpu", num_threads=1,
                            progress=False)
    report = explain_run(two_devices["cross_experiment"], tmp_path / "defect-cnn", config)
    assert report["model"] == "defect-cnn" and set(report["devices"]) == {d["name"] for d in DEVICES}
    with open(tmp_path / "defect-cnn" / "saliency_defect_cnn.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for device, summary in report["devices"].items():
        print(device, summary["accuracy"], summary["contributions"]["top_share"],
              {m: (f["share"], f["area_share"], f["lift"], f["p_value"]) for m, f in summary["methods"].items()})
        assert summary["accuracy"] >= 0.8                       # it learned the defects ...
        for method, figure in summary["methods"].items():       # ... and its patch network looks at them
            assert figure["verdict"] == "centred on the defects", (device, method, figure)
            assert figure["p_value"] <= 0.01                    # no box away from the centre comes close
        mine = [r for r in rows if r["device"] == device]
        slots = {r["slot"] for r in mine}
        assert len(mine) == summary["n_test_images"] * len(slots)
        assert (tmp_path / "defect-cnn" / "defect_cnn" / f"{device}.png").is_file()
    text = (tmp_path / "defect-cnn" / "saliency.md").read_text()
    assert "# Where does defect-cnn look?" in text and "centred on the defects" in text
    with pytest.raises(ValueError, match="gradcam"):
        explain_run(two_devices["cross_experiment"], tmp_path / "cam", SaliencyConfig(methods=("cam",),
                                                                                      model="defect-cnn"))
