"""Issue 6 acceptance: `python -m pipeline.saliency` tells a content shortcut from defect evidence.

Two small synthetic datasets of one camera (SIM-alpha01, 256x192, 60 images per age class),
each run through the ``ml_age`` experiment with SRNet only (one stratified split, 20 % of each
class held out: 24 test images; the ``cpu`` preset with one crop network, the centre crop,
64x64), then explained by ``python -m pipeline.saliency`` with its defaults (CAM at layer12;
Grad-CAM and Grad-CAM++ at layer9, 16x16 cells, which ``--layer auto`` picks for 64-pixel
crops because layer12's 4x4 cells each see nearly the whole crop):

* **content** -- ``scene_bias = 1``: the classes are shot in disjoint scene groups (indoor /
  outdoor light), a content shortcut; the shipped defect process (sparse, mostly weak).
* **defects** -- ``scene_bias = 0``: content says nothing about age; dense, strong hot pixels
  (100 per year, all hot, median amplitude 20000 DN: saturated whatever the exposure) arriving
  from the start of the camera's use, so that older images show many more of them.

The claims are the tool's own documented criteria, with its thresholds.  Content case: the
content figure (a map's Spearman rho with its own image's colour, luminance or texture minus its
rho with the other test images', keeping its direction over the maps of a target class) reaches
``CONTENT_RHO`` by more than three standard errors, and the defect share stays within a factor
``DEFECT_LIFT`` of the area share that the defect neighbourhoods cover.  Defect case: the defect
share is at least ``DEFECT_LIFT`` times the area share *and* above the 99th percentile of the
circular-shift null (p <= 0.01).  The content figure is not required to be low in the defect case:
a network that reads hot pixels may also learn where they are visible (for its "young" class it
looks at dark areas, where a hot pixel would stand out), which is a relation with the scene; it is
printed.  Both cases are sanity-checked by SRNet's accuracy: the network must have learned
something for its maps to mean anything.  Every dataset, split and network initialisation is fixed
by seeds.
"""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest

pytest.importorskip("torch")  # the maps are upsampled with torch; the acceptance tests train SRNet

from pipeline.analysis.saliency import (
    CONTENT_RHO,
    DEFECT_LIFT,
    ContentTally,
    cells_away_from_defects,
    content_correlations,
    defect_mask,
    defect_shares,
    own_and_other_correlations,
    pool_cells,
    shift_null,
    structure_features,
    summarise_defects,
)
from pipeline.analysis.saliency.adversarial import ADVERSARIAL_COLUMNS, adversarial_crops, summarise_shares
from pipeline.analysis.saliency.defect_cnn import centre_shares, centre_statistics
from pipeline.analysis.saliency.inputs import points_in_crop as _points_in_crop
from pipeline.analysis.saliency.report import FAITHFULNESS_COLUMNS, verdict_markdown
from pipeline.analysis.saliency.stats import NO_FAITHFUL_METHOD, device_verdict
from pipeline.saliency import has_srnet

DEVICE = "SIM-alpha01"
DATASET = {
    "seed": 20141006,
    "devices": [{"name": DEVICE, "model": "alpha", "serial": "SA1-00417"}],
    "models.alpha.width": 256,
    "models.alpha.height": 192,
    "capture.images_per_class": 60,
}
SCENARIOS = {
    "content": {"scenes.scene_bias": 1.0},
    "defects": {
        "scenes.scene_bias": 0.0,
        "defects.rate_per_year": 100.0,
        "defects.stuck_fraction": 0.0,  # hot pixels: dark current
        "defects.strong_fraction": 1.0,
        "defects.strong_median_dn": 20000.0,
        "defects.amplitude_log_sigma": 0.3,
        "time.manufacture_lead_days": 0.0,
    },
}
EPOCHS = {"content": 8, "defects": 12}
FINE_METHODS = ("gradcam", "gradcam++")  # the methods whose maps (layer9, 16x16) can localise


def trained_run(tmp_path_factory, name: str) -> dict:
    """Simulate a dataset and train SRNet on it through the ml_age experiment."""
    from pipeline.analysis.config import ExperimentConfig
    from pipeline.analysis.experiment import run_experiment
    from pipeline.data.manifest import load_manifest
    from pipeline.sim import default_dataset

    dataset = default_dataset(tmp_path_factory.mktemp(f"sim_{name}"), workers=1, progress=False,
                              **{**DATASET, **SCENARIOS[name]})
    run = tmp_path_factory.mktemp(name) / "run"
    epochs = EPOCHS[name]
    cfg = ExperimentConfig(methods=("srnet",), runs=1, srnet_calibration_fraction=0.0, test_size=0.2, seed=0, workers=1, progress=False,
                           srnet_preset="cpu",
                           srnet_overrides={"crops": ["ce"], "epochs": epochs, "lr_drop_epoch": epochs - 2})
    run_experiment(load_manifest(dataset.manifest_path), run, cfg)
    return {"run": run, "dataset": dataset}


@pytest.fixture(scope="module")
def content_run(tmp_path_factory):
    return trained_run(tmp_path_factory, "content")


@pytest.fixture(scope="module")
def defect_run(tmp_path_factory):
    return trained_run(tmp_path_factory, "defects")


def explain_cli(run, out, capsys, *extra) -> tuple[dict, str]:
    from pipeline.saliency import main

    assert main(["--run", str(run), "--out", str(out), "--no-progress", *extra]) == 0
    printed = capsys.readouterr().out
    return json.loads((out / "saliency.json").read_text()), printed


def figures(report: dict, method: str) -> dict:
    return report["devices"][DEVICE]["methods"][method]


def faithfulness_figures(device: dict) -> str:
    """The faithfulness figures of one device, one line (printed with -s)."""
    out = {}
    for method, f in device["methods"].items():
        record = f["faithfulness"]
        auc = record.get("auc") or {}
        out[method] = {"label": record["label"], "informative": f"{record['n_informative']}/{record['n_scanned']}",
                       "auc_del": auc.get("deletion"), "auc_del_random": auc.get("deletion_random"),
                       "auc_ins": auc.get("insertion"), "auc_ins_random": auc.get("insertion_random"),
                       "p_del": (record.get("deletion_gain") or {}).get("p_value"),
                       "p_ins": (record.get("insertion_gain") or {}).get("p_value"),
                       "rho": record["randomisation_median_abs_rho"]}
    return json.dumps(out)


def measured(device: dict) -> str:
    """The figures of one device, one line (printed with -s: they go into the report)."""
    return json.dumps({"accuracy": device["srnet_accuracy"], **{
        m: {"content": f["content"]["figure"], "feature": f["content"]["feature"],
            "se": f["content"][f["content"]["feature"]]["se"], "share": f["defects"]["share"],
            "area": f["defects"]["area_share"], "lift": f["defects"]["lift"], "p": f["defects"]["p_value"],
            "verdict": f["verdict"]} for m, f in device["methods"].items()}})


# ---------------------------------------------------------------------- acceptance

@pytest.mark.slow
@pytest.mark.cnn
def test_a_content_shortcut_is_detected(content_run, tmp_path, capsys):
    report, printed = explain_cli(content_run["run"], tmp_path / "saliency", capsys)
    device = report["devices"][DEVICE]
    print(measured(device))
    assert device["srnet_accuracy"]["0"] >= 0.9, "SRNet must have learned the shortcut for its maps to mean anything"
    for method in FINE_METHODS:
        content, defects = figures(report, method)["content"], figures(report, method)["defects"]
        assert figures(report, method)["map_shape"] == [16, 16]
        stats = content[content["feature"]]
        assert content["figure"] >= CONTENT_RHO and content["figure"] > 3 * stats["se"], (method, content)
        assert defects["n_maps"] >= 10
        assert 1 / DEFECT_LIFT < defects["lift"] < DEFECT_LIFT, (method, defects)
        assert figures(report, method)["verdict"] == "content"
    assert device["verdict"] == "content"
    assert "SRNet reads image content, not sensor defects" in printed
    print(faithfulness_figures(device))
    for method in FINE_METHODS:  # faithfulness: not failed, so their verdicts are the ones used
        assert figures(report, method)["faithfulness"]["faithful"] is not False
        assert figures(report, method)["verdict_used"] is True
    # a colour shortcut needs no change at the defects for its class to flip
    adversarial = device["adversarial"]
    print("adversarial:", adversarial)
    assert adversarial["flipped"] >= 12 and "defects" not in adversarial["reading"]
    assert adversarial["defects"]["mean_energy_share"] < 2 * adversarial["defects"]["mean_area_share"]


@pytest.mark.slow
@pytest.mark.cnn
def test_dense_strong_defects_are_detected(defect_run, tmp_path, capsys):
    report, printed = explain_cli(defect_run["run"], tmp_path / "saliency", capsys)
    device = report["devices"][DEVICE]
    print(measured(device))
    assert device["srnet_accuracy"]["0"] >= 0.8, "SRNet must have learned the defects for its maps to mean anything"
    for method in FINE_METHODS:
        defects = figures(report, method)["defects"]
        assert defects["n_maps"] >= 10
        assert defects["share"] >= DEFECT_LIFT * defects["area_share"], (method, defects)
        assert defects["p_value"] <= 0.01 and defects["share"] > defects["null_p95"], (method, defects)
        assert "defects" in figures(report, method)["verdict"] and "neither" not in figures(report, method)["verdict"]
    assert device["verdict"] in ("defects", "both content and defects")
    assert "the defects" in printed
    print(faithfulness_figures(device))
    for method in FINE_METHODS:  # maps that find the hot pixels beat a random pixel order and depend on the weights
        record = figures(report, method)["faithfulness"]
        assert record["faithful"] is True and record["n_informative"] >= 6, (method, record)
        assert record["auc"]["deletion"] < record["auc"]["deletion_random"]
        assert record["auc"]["insertion"] > record["auc"]["insertion_random"]
        assert record["randomisation_median_abs_rho"] < record["randomisation_threshold"]
    # the perturbation that flips a defect reader's class goes to the defects
    adversarial = device["adversarial"]
    print("adversarial:", adversarial)
    assert adversarial["flipped"] >= 12 and adversarial["reading"] in ("defects", "content edges and defects")
    assert adversarial["defects"]["n"] >= 6 and adversarial["defects"]["share"] >= 0.8
    assert adversarial["defects"]["mean_energy_share"] > 3 * adversarial["defects"]["mean_area_share"]


@pytest.mark.slow
@pytest.mark.cnn
def test_outputs_are_written_and_listed(content_run, tmp_path, capsys):
    out = tmp_path / "saliency"
    report, printed = explain_cli(content_run["run"], out, capsys, "--methods", "cam,gradcam", "--sheet-images", "2")
    written = [out / "saliency.json", out / "saliency.md", out / "saliency_maps.csv", out / "maps" / f"{DEVICE}.npz",
               out / "sheets" / f"{DEVICE}.png", out / "saliency_faithfulness.csv",
               out / "faithfulness" / f"{DEVICE}.png", out / "faithfulness" / f"{DEVICE}.svg",
               out / "saliency_adversarial.csv", out / "adversarial" / f"{DEVICE}.png",
               out / "adversarial" / f"{DEVICE}.svg"]
    for path in written:
        assert path.is_file() and path.stat().st_size > 0
        assert str(path) in printed
    assert report["settings"]["methods"] == ["cam", "gradcam"]
    assert report["srnet"]["patch"] == 64 and report["versions"]["numpy"]
    assert report["settings"]["defect_source"].startswith("ground truth")  # found beside the manifest
    cam = figures(report, "cam")
    assert cam["layer"] == "layer12" and cam["map_shape"] == [4, 4]
    assert report["devices"][DEVICE]["verdict_methods"] == ["gradcam"]  # 4x4 maps do not vote
    assert cam["consistency"]["across_runs"] is None and cam["consistency"]["across_runs_note"] == "n/a: one run"
    with np.load(out / "maps" / f"{DEVICE}.npz") as maps:
        assert maps["maps_cam"].shape == (1, 24, 1, 4, 4) and maps["maps_gradcam"].shape == (1, 24, 1, 16, 16)
        assert maps["held_out"].all()
    markdown = (out / "saliency.md").read_text()
    assert "n/a: one run" in markdown and "do not vote" in markdown
    assert printed.index("# Where does SRNet look?") < printed.index("Wrote:")
    # faithfulness: settings recorded, one record per method, the per-crop CSV, the table in the verdict
    settings = report["settings"]["faithfulness"]
    assert settings["crops_per_device"] == 16 and settings["steps"] == 8 and settings["baseline"] == "blur"
    assert settings["thresholds"] == {"randomisation_median_abs_rho_below": 0.5, "gain_test_alpha": 0.05,
                                      "informative_span": 0.1}
    for method in ("cam", "gradcam"):
        record = figures(report, method)["faithfulness"]
        assert record["label"] in ("faithful", "inconclusive", "unfaithful — its verdicts are not used")
        assert record["n_randomised"] == 16 and record["n_scanned"] >= 16 and record["run"] == 0
        assert 0 <= record["randomisation_median_abs_rho"] <= 1
        assert figures(report, method)["verdict_used"] is (record["faithful"] is not False)
    with open(out / "saliency_faithfulness.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == FAITHFULNESS_COLUMNS
    assert {row["method"] for row in rows} == {"cam", "gradcam"} and {row["device"] for row in rows} == {DEVICE}
    assert sum(row["randomisation_rho"] != "" for row in rows) == 2 * 16
    assert "## Are the maps faithful?" in markdown and "randomisation median" in markdown
    # adversarial perturbations of the run's own networks: settings, record, per-crop CSV, table
    assert report["settings"]["adversarial"]["max_steps"] == 50
    adversarial = report["devices"][DEVICE]["adversarial"]
    assert adversarial["n_crops"] == 16 and adversarial["run"] == 0
    with open(out / "saliency_adversarial.csv", newline="") as fh:
        crops = list(csv.DictReader(fh))
    assert list(crops[0]) == ADVERSARIAL_COLUMNS and len(crops) == 16
    assert len({row["image"] for row in crops}) == 16                      # distinct images
    assert sum(row["flipped"] == "True" for row in crops) == adversarial["flipped"]
    assert "## Where must a crop change for its class to flip?" in markdown
    # a method that fails the faithfulness checks does not vote, and the verdict says so
    edited = copy.deepcopy(report)
    methods = edited["devices"][DEVICE]["methods"]
    methods["gradcam"]["faithfulness"].update(faithful=False, label="unfaithful — its verdicts are not used",
                                              reasons=["its pixel order is no better than a random one"])
    methods["gradcam"]["verdict_used"] = False
    verdict, voting = device_verdict(methods)
    assert voting == ["cam"] and verdict == methods["cam"]["verdict"]  # gradcam, the only fine map, left out
    edited["devices"][DEVICE].update(verdict=verdict, verdict_methods=voting, unfaithful_methods=["gradcam"])
    text = verdict_markdown(edited)
    assert "— not used: unfaithful" in text and "**unfaithful — its verdicts are not used**" in text
    assert "(gradcam: unfaithful, not used)" in text
    methods["cam"]["verdict_used"] = False
    assert device_verdict(methods) == (NO_FAITHFUL_METHOD, [])


@pytest.mark.slow
@pytest.mark.cnn
def test_no_run_explains_the_default_folder_when_it_holds_srnet(content_run, tmp_path, capsys, monkeypatch):
    from pipeline import saliency
    from pipeline.saliency import main

    monkeypatch.setattr(saliency, "MAIN_RUN", content_run["run"])
    assert has_srnet(content_run["run"])
    assert main(["--out", str(tmp_path / "default"), "--no-progress", "--methods", "cam", "--adversarial-crops", "0"]) == 0
    printed = capsys.readouterr().err
    assert f"No --run: explaining {content_run['run']}" in printed
    assert (tmp_path / "default" / "saliency.md").is_file()


def test_clear_errors_for_folders_that_cannot_be_explained(tmp_path, capsys):
    from pipeline.saliency import main

    assert main(["--run", str(tmp_path), "--no-progress"]) == 2
    assert "not an ml_age output folder" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"tool": "pipeline.ml_age", "status": "complete"}))
    assert main(["--run", str(tmp_path), "--no-progress"]) == 2
    assert "did not train SRNet" in capsys.readouterr().err
    assert not has_srnet(tmp_path)
    assert main(["--run", str(tmp_path), "--methods", "cam", "--layer", "layer9"]) == 2
    assert "CAM is defined only at layer12" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--methods", "lime"])
# ---------------------------------------------------------------------- the figures, on made-up maps

def test_shift_null_is_the_share_under_every_circular_shift():
    rng = np.random.default_rng(0)
    mass = rng.random((12, 12))
    mask = defect_mask(np.array([[2, 3], [9, 10]]), (12, 12), 1)
    null = shift_null(mass, mask)
    assert null.shape == (12, 12)
    for dy, dx in [(0, 0), (1, 0), (0, 5), (7, 11)]:
        expected = (mass * np.roll(mask, (dy, dx), axis=(0, 1))).sum() / mass.sum()
        assert null[dy, dx] == pytest.approx(expected, rel=1e-9)
    assert null.mean() == pytest.approx(mask.mean(), rel=1e-9)  # the null's mean is the area share


def test_defect_mask_is_a_clipped_box_around_each_point():
    mask = defect_mask(np.array([[0, 0], [5, 5]]), (8, 9), 2)
    expected = np.zeros((8, 9), bool)
    expected[0:3, 0:3] = True
    expected[3:8, 3:8] = True
    np.testing.assert_array_equal(mask, expected)
    assert not defect_mask(np.zeros((0, 2), int), (4, 4), 2).any()


def test_saliency_on_the_defects_is_detected_and_uniform_saliency_is_not():
    size, points = (64, 64), np.array([[8, 8], [40, 24]])
    peaked = np.zeros((4, 4), np.float32)
    peaked[0, 0] = peaked[2, 1] = 1.0  # the cells holding the two defects
    flat = np.ones((4, 4), np.float32)
    on = summarise_defects([defect_shares(peaked, points, size, 2)] * 3)
    off = summarise_defects([defect_shares(flat, points, size, 2)] * 3)
    assert on["lift"] > 3 and on["p_value"] < 0.05
    assert off["lift"] == pytest.approx(1.0, abs=1e-6) and off["p_value"] > 0.5
    assert defect_shares(flat, np.zeros((0, 2), int), size, 2) is None
    assert defect_shares(-flat, points, size, 2) is None  # no positive mass
    assert summarise_defects([])["n_maps"] == 0


def test_cells_structure_features_and_correlations():
    values = np.arange(48, dtype=float).reshape(6, 8)
    np.testing.assert_allclose(pool_cells(values, (2, 2)),
                               [[np.median(values[:3, :4]), np.median(values[:3, 4:])],
                                [np.median(values[3:, :4]), np.median(values[3:, 4:])]])
    odd = pool_cells(values, (4, 3))  # rounded equal partitions when the sizes do not divide
    assert odd.shape == (4, 3) and odd[0, 0] == np.median(values[0:2, 0:3])
    # an isolated hot pixel changes neither feature: both are medians over filtered cells
    rng = np.random.default_rng(1)
    crop = np.repeat(np.linspace(0.2, 0.8, 32, dtype=np.float32)[None, None, :], 32, axis=1)
    crop = np.repeat(crop, 3, axis=0) + 0.01 * rng.random((3, 32, 32), dtype=np.float32)
    hot = crop.copy()
    hot[:, 10, 12] = 1.0
    clean, with_hot = structure_features(crop, (2, 2)), structure_features(hot, (2, 2))
    for name in ("luminance", "texture"):
        np.testing.assert_allclose(with_hot[name], clean[name], rtol=0.05, atol=1e-6)
    saliency = clean["luminance"].copy()
    assert content_correlations(saliency, crop)["luminance"] == pytest.approx(1.0)


def test_points_in_crop_for_rgb_and_cfa_plane_inputs():
    points = np.array([[10, 20], [11, 20], [100, 100], [40, 40]])
    np.testing.assert_array_equal(_points_in_crop(points, (8, 16, 72, 80, 1)), [[2, 4], [3, 4], [32, 24]])
    # CFA plane (0, 0): only even rows and columns are on it; plane pixel (i, j) = sensor (2i, 2j)
    np.testing.assert_array_equal(_points_in_crop(points, (4, 8, 36, 40, 2)), [[1, 2], [16, 12]])


def test_own_and_other_correlations_and_the_systematic_content_figure():
    rng = np.random.default_rng(2)
    features = rng.random((6, 8, 8))
    # maps that follow their own image's feature (plus noise), and maps that do not
    following = features + 0.1 * rng.random((6, 8, 8))
    unrelated = rng.random((6, 8, 8))
    own, other, other_abs = own_and_other_correlations(following, features)
    assert own.min() > 0.9 and np.abs(other).max() < 0.6 and (other_abs >= np.abs(other) - 1e-12).all()
    manual = np.mean([content_correlations(following[0], np.repeat(features[j][None], 3, axis=0))["luminance"]
                      for j in range(1, 6)])
    assert other[0] == pytest.approx(manual)
    tally = ContentTally()
    tally.add("luminance", *own_and_other_correlations(following, features), groups=np.zeros(6, int))
    tally.add("texture", *own_and_other_correlations(unrelated, features), groups=np.zeros(6, int))
    summary = tally.summary()
    assert summary["feature"] == "luminance" and summary["figure"] > 0.5
    assert summary["texture"]["systematic"] < summary["figure"]
    # opposite directions in two target classes still count: |mean| per class
    flipped = following.copy()
    flipped[3:] *= -1
    tally = ContentTally()
    tally.add("luminance", *own_and_other_correlations(flipped, features), groups=np.array([0, 0, 0, 1, 1, 1]))
    assert tally.summary()["figure"] > 0.5
    # restricted to chosen cells; too few cells give NaN
    keep = np.ones((6, 8, 8), bool)
    keep[0] = False
    own_kept, _, _ = own_and_other_correlations(following, features, keep)
    assert np.isnan(own_kept[0]) and own_kept[1] == pytest.approx(own[1])


def test_cells_away_from_defects_and_the_null_without_near_shifts():
    keep = cells_away_from_defects(np.array([[5, 5]]), (16, 16), 1, (4, 4))
    assert keep.sum() == 15 and not keep[1, 1]
    assert cells_away_from_defects(np.zeros((0, 2), int), (16, 16), 1, (4, 4)).all()
    peaked = np.zeros((4, 4), np.float32)
    peaked[0, 0] = 1.0
    record = defect_shares(peaked, np.array([[8, 8]]), (64, 64), 2)
    every = summarise_defects([record])
    far = summarise_defects([record], min_shift=18)
    assert every["null_shifts"] == 64 * 64 and far["null_shifts"] == 64 * 64 - 35 * 35
    assert far["p_value"] == pytest.approx(1 / (1 + far["null_shifts"]))
    assert far["null_p95"] <= every["null_p95"]


def test_defect_positions_of_real_data_come_from_the_run_tables(tmp_path):
    from pipeline.analysis.saliency.inputs import DefectPositions as _DefectPositions

    (tmp_path / "defects" / "cam-01").mkdir(parents=True)
    (tmp_path / "defects" / "cam-01" / "run_00.csv").write_text(
        "row,col,channel,onset_index,onset_path,dark_current,offset,llr,spread\n"
        "10,20,1,3,a.jpg,5.0,0.0,9.1,0.2\n40,7,0,5,b.jpg,1.0,2.0,4.0,0.1\n")
    manifest = tmp_path / "photos" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,device,captured_at\n")
    (manifest.parent / "defects.csv").write_text("device,row,col,onset\ncam-01,1,1,2020-01-01T00:00:00\n")
    positions = _DefectPositions(tmp_path, {"manifest": {"path": str(manifest)}})
    # a defects.csv beside a manifest that is not a simulator output is not ground truth
    assert "identified" in positions.source
    np.testing.assert_array_equal(positions.for_image("cam-01", 0, "x.jpg"), [[10, 20], [40, 7]])
    assert positions.for_image("cam-01", 1, "x.jpg").shape == (0, 2)


def test_adversarial_figures_read_where_the_energy_concentrates():
    rng = np.random.default_rng(0)
    area = np.full(30, 0.25)
    flipped, steps = np.ones(30, bool), np.full(30, 5)
    none = np.full(30, np.nan)
    on_edges = summarise_shares(np.full(30, 0.6), area, none, none, flipped, steps)
    assert on_edges["reading"] == "content edges" and on_edges["edges"]["above_area"] == 30
    assert on_edges["defects"]["n"] == 0 and on_edges["defects"]["share"] is None
    spread = summarise_shares(area + rng.normal(0, 0.02, 30), area, none, none, flipped, steps)
    assert spread["reading"] == "no concentration shown"
    assert spread["edges"]["ci"][0] < 0.5 < spread["edges"]["ci"][1]
    at_defects = summarise_shares(np.full(30, 0.1), area, np.full(30, 0.5), np.full(30, 0.05), flipped, steps)
    assert at_defects["reading"] == "defects" and at_defects["defects"]["ci"][0] > 0.5
    # crops: distinct images, alternating classes, the crop networks in turn
    held_out = np.array([True, True, False, True, True, True])
    truth = np.array([0, 0, 1, 1, 0, 1])
    pairs = adversarial_crops(held_out, truth, 5, 4)
    assert pairs == [(0, 0), (3, 1), (1, 2), (5, 3)]
    assert adversarial_crops(held_out, truth, 5, 0) == []


def test_defect_cnn_centre_share_against_boxes_away_from_the_centre():
    rng = np.random.default_rng(0)
    side, n = 32, 40
    # independent reference: the share in the 5x5 box at the centre, by direct summation
    maps = rng.random((n, side, side))
    centre, away, area = centre_shares(maps, 2)
    expected = maps[:, 14:19, 14:19].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    np.testing.assert_allclose(centre, expected)
    assert area == 25 / 1024 and away.shape[1] == 28 * 28 - 9 * 9       # box tops 0..27, 9x9 of them too near
    np.testing.assert_allclose(away[:, 0], maps[:, :5, :5].sum(axis=(1, 2)) / maps.sum(axis=(1, 2)))
    peaked = rng.random((n, side, side)) * 0.1
    peaked[:, 15:18, 15:18] += 3.0                                        # saliency on the defect
    assert centre_statistics(peaked, 2)["verdict"] == "centred on the defects"
    assert centre_statistics(peaked, 2)["p_value"] <= 1 / 700
    assert centre_statistics(maps, 2)["verdict"] == "not centred on the defects"     # spread over the patch
    assert centre_statistics(np.ones((n, side, side)), 2)["lift"] == pytest.approx(1.0)
    off = rng.random((n, side, side)) * 0.1
    off[:, 2:5, 2:5] += 3.0                                               # saliency in a corner, not at the defect
    assert centre_statistics(off, 2)["verdict"] == "not centred on the defects"
    assert centre_statistics(np.zeros((3, side, side)), 2)["n_maps"] == 0


def test_unfaithful_methods_do_not_vote():
    def summary(verdict, cells, used=True):
        return {"verdict": verdict, "map_shape": [cells, cells], "verdict_used": used}

    methods = {"cam": summary("neither content nor defects", 4), "gradcam": summary("content", 16),
               "gradcam++": summary("defects", 16)}
    assert device_verdict(methods) == ("content", ["gradcam", "gradcam++"])  # a tie goes to the first
    methods["gradcam"]["verdict_used"] = False
    assert device_verdict(methods) == ("defects", ["gradcam++"])
    methods["gradcam++"]["verdict_used"] = False
    assert device_verdict(methods) == ("neither content nor defects", ["cam"])  # only the coarse one is left
    methods["cam"]["verdict_used"] = False
    assert device_verdict(methods) == (NO_FAITHFUL_METHOD, [])
