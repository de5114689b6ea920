"""The bias audit's scikit-learn checks on small synthetic datasets, its helpers, and its command line.

Acceptance (issue 7): with ``scenes.scene_bias = 1`` the content check says ``bias found``;
with no bias (``scene_bias = 0``, ``processing_bias = 0``) every check that runs without the CNN
says ``no bias found`` for each of 5 seeds (dataset and audit seed both changed).
"""

import json

import numpy as np
import pytest

from pipeline.analysis.audit import FOUND, NO_BIAS, AuditConfig, run_audit
from pipeline.analysis.audit.cnn import CnnSettings, colour_jitter, disjoint_groups, protocol_sets, spread_sample
from pipeline.analysis.audit.data import (
    COLOUR_FEATURE_NAMES,
    block_mean,
    colour_statistics,
    load_bank,
    thumbnail,
)
from pipeline.analysis.audit.splits import cnn_split, content_splits
from pipeline.audit import main
from pipeline.data.manifest import load_manifest
from pipeline.data.splits import read_split, stratified_splits
from pipeline.sim import default_dataset

SIZE = {f"models.{m}.{k}": v for m in ("alpha", "beta", "gamma") for k, v in (("width", 96), ("height", 72))}


def tiny_dataset(root, *, scene_bias=0.0, processing_bias=0.0, seed=20141006, images_per_class=16):
    return default_dataset(root, progress=False, workers=1, **SIZE, seed=seed,
                           **{"capture.images_per_class": images_per_class, "scenes.scene_bias": scene_bias,
                              "processing.processing_bias": processing_bias})


@pytest.fixture(scope="module")
def scene_biased(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("sim"), scene_bias=1.0)


def cheap(seed=0, checks=("content", "camera")):
    return AuditConfig(checks=checks, seed=seed, cnn=None, progress=False)


# ---------------------------------------------------------------- helpers


def test_thumbnails_and_colour_statistics_carry_no_pixel_level_trace():
    image = np.full((96, 128, 3), 0.5, np.float32)
    hot = image.copy()
    hot[40, 70] = 1.0                                   # one saturated pixel
    assert block_mean(image, (12, 16)).shape == (12, 16, 3)
    diff = np.abs(thumbnail(hot) - thumbnail(image)).max()
    assert diff <= 0.5 / (8 * 8) + 1e-6                 # diluted over an 8 x 8 block
    assert colour_statistics(image).shape == (len(COLOUR_FEATURE_NAMES),)
    assert np.abs(colour_statistics(hot) - colour_statistics(image)).max() < 0.01
    assert thumbnail(np.zeros((128, 96, 3), np.float32)).size == 12 * 16 * 3   # portrait frames transpose
    with pytest.raises(ValueError, match="smaller than"):
        block_mean(np.zeros((8, 8, 3)), (12, 16))


def test_grey_and_raw_images_become_rgb_without_interpolation():
    from types import SimpleNamespace

    from pipeline.analysis.audit.data import _as_rgb

    grey = SimpleNamespace(kind="gray", pixels=np.arange(12, dtype=np.uint8).reshape(3, 4))
    rgb, scale = _as_rgb(grey)
    assert scale == 255.0 and rgb.shape == (3, 4, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    mosaic = np.zeros((4, 4), np.uint16)
    mosaic[0::2, 0::2] = 1064            # R sites of an RGGB mosaic
    mosaic[0::2, 1::2] = 564             # G
    mosaic[1::2, 0::2] = 364             # G
    mosaic[1::2, 1::2] = 164             # B
    raw = SimpleNamespace(kind="cfa", pixels=mosaic, cfa_pattern=np.array([[0, 1], [1, 2]]), black_level=64.0,
                          white_level=1064.0)
    rgb, scale = _as_rgb(raw)
    assert scale == 65535.0 and rgb.shape == (2, 2, 3)
    np.testing.assert_allclose(rgb[0, 0] / 65535.0, [1.0, 0.4, 0.1], atol=1e-4)   # greens averaged


def test_colour_jitter_randomises_colour_and_keeps_local_structure():
    rng = np.random.default_rng(0)
    crops = np.full((20, 3, 16, 16), 0.4, np.float32)
    crops[:, 0, 8, 8] = 0.9                              # a red hot pixel
    out = colour_jitter(crops, rng)
    assert out.shape == crops.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    means = out.mean(axis=(2, 3))
    assert means.std(axis=0).min() > 0.02               # global colour differs from crop to crop
    centre = out[:, :, 8, 8]
    around = out[:, :, 8, 9]
    assert (np.abs(centre - around).sum(axis=1) > 0.05).all()   # the outlier survives
    with pytest.raises(ValueError, match="RGB"):
        colour_jitter(np.zeros((2, 1, 8, 8), np.float32), rng)


class _Sample:
    def __init__(self, device, model):
        self.device, self.camera_model = device, model


class _Bank:
    def __init__(self, pairs):
        self.samples = [_Sample(d, m) for d, m in pairs]


class _Split:
    def __init__(self, devices, classes=(0, 1)):
        self.devices, self.classes = list(devices), list(classes)


def test_disjoint_groups_split_whole_camera_models():
    bank = _Bank([("a1", "A"), ("a2", "A"), ("b1", "B"), ("g1", "G")])
    groups, by_model = disjoint_groups(_Split(["a1", "a2", "b1", "g1"]), bank)
    assert by_model and groups == {0: ["a1", "a2"], 1: ["b1", "g1"]}
    # one model only: devices are dealt out, and the groups share a model
    bank = _Bank([("x1", "X"), ("x2", "X"), ("x3", "X")])
    groups, by_model = disjoint_groups(_Split(["x1", "x2", "x3"]), bank)
    assert not by_model and sorted(groups[0] + groups[1]) == ["x1", "x2", "x3"]
    assert disjoint_groups(_Split(["x1"]), _Bank([("x1", "X")])) == ({}, False)


def test_spread_sample_takes_evenly_from_every_device():
    rng = np.random.default_rng(1)
    parts = [np.arange(0, 10), np.arange(100, 130), np.arange(200, 203)]
    chosen = spread_sample(parts, 12, rng)
    assert chosen.size == 12 and np.unique(chosen).size == 12
    assert sum(c >= 200 for c in chosen) == 3 and sum(c < 10 for c in chosen) >= 4


def test_splits_are_the_experiments_and_the_cnn_test_is_balanced(scene_biased, tmp_path):
    from pipeline.data.splits import device_seed

    manifest = load_manifest(scene_biased.manifest_path)
    bank = load_bank(manifest, patch=32, progress=False)
    splits = content_splits(manifest, bank, runs=3, test_size=0.2, seed=5, out=tmp_path)
    for device in manifest.devices:
        rows = manifest.for_device(device)
        expected = stratified_splits([r.label for r in rows], n_runs=3, test_size=0.2, seed=device_seed(5, device))
        for run, (train, test, _) in enumerate(expected):
            written = read_split(tmp_path / "splits" / device / f"run_{run:02d}.csv")
            assert written.test_paths == tuple(str(rows[i].path) for i in test)
            got_train, got_test = splits[device][run]
            assert [bank.samples[i].path for i in got_test] == [str(rows[i].path) for i in test]
            assert got_train.size == train.size
    split = cnn_split(bank, test_size=0.3, seed=0, out=tmp_path)
    cells = {}
    for i in split.test:
        key = (bank.samples[i].device, bank.samples[i].label)
        cells[key] = cells.get(key, 0) + 1
    assert len(cells) == 8 and set(cells.values()) == {split.per_cell}
    assert not set(split.test) & set(split.pool_of())
    groups, _ = disjoint_groups(split, bank)
    sets = protocol_sets(split, groups, 0)
    assert groups == {0: ["SIM-alpha01", "SIM-alpha02"], 1: ["SIM-beta01", "SIM-gamma01"]}
    for name in ("balanced", "partial", "disjoint"):      # same size and class counts everywhere
        assert np.bincount(bank.labels[sets[name]]).tolist() == [sets["counts"][0], sets["counts"][1]]
    disjoint_devices = {(bank.samples[i].device, bank.samples[i].label) for i in sets["disjoint"]}
    assert all((d in groups[c]) for d, c in disjoint_devices)
    assert {bank.samples[i].device for i in sets["partial"]} == set(groups[0])
    assert len({bank.samples[i].device for i in sets["balanced"]}) == 4


# ---------------------------------------------------------------- acceptance: the cheap checks


def test_scene_bias_is_found_by_the_content_check(scene_biased):
    result = run_audit(load_manifest(scene_biased.manifest_path), None, cheap(checks=("content",)))
    (content,) = result["results"]
    assert content.verdict == FOUND
    for key in ("colour_accuracy", "thumbnail_accuracy"):
        fig = content.figure(key)
        assert fig.verdict == FOUND and fig.value > 0.85 and fig.ci_strict[0] > fig.chance


@pytest.mark.parametrize("seed", range(5))
def test_no_bias_means_no_bias_found(tmp_path, seed):
    data = tiny_dataset(tmp_path / "sim", seed=1000 + seed)
    result = run_audit(load_manifest(data.manifest_path), None, cheap(seed=seed))
    verdicts = {r.name: (r.verdict, r.susceptibility) for r in result["results"]}
    assert verdicts == {"content": (NO_BIAS, None), "camera": (NO_BIAS, NO_BIAS)}, [
        (f.key, f.value, f.ci) for r in result["results"] for f in r.figures if f.role != "context"]
    assert result["record"]["levels"]["family_size"] == 4


# ---------------------------------------------------------------- command line


def test_command_line_writes_a_complete_record(scene_biased, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["--manifest", str(scene_biased.manifest_path), "--out", str(out), "--no-cnn", "--runs", "3",
                 "--seed", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Content-only baselines: bias found" in printed and "Wrote" in printed and "audit.md" in printed
    record = json.loads((out / "audit.json").read_text())
    manifest = load_manifest(scene_biased.manifest_path)
    assert record["status"] == "complete" and record["tool"] == "pipeline.audit"
    assert record["manifest"]["sha256"] == manifest.sha256
    assert record["seed"] == 3 and record["config"]["runs"] == 3 and record["config"]["cnn"] is None
    assert record["versions"]["numpy"] and record["versions"]["scikit-learn"]
    assert record["verdicts"]["content"] == FOUND
    content = next(c for c in record["checks"] if c["name"] == "content")
    fig = next(f for f in content["figures"] if f["key"] == "thumbnail_accuracy")
    assert {"value", "chance", "ci", "ci_strict", "verdict", "n"} <= set(fig)
    for name in record["files"]:
        assert (out / name.rstrip("/")).exists(), name
    text = (out / "audit.md").read_text()
    assert "| check | verdict |" in text and "Verdict rule" in text and "overview.png" in text
    assert (out / "splits" / "SIM-alpha01" / "run_00.csv").is_file()
    assert (out / "splits_cnn" / "SIM-alpha01.csv").is_file()


def test_command_line_errors_name_the_problem(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    assert main(["--manifest", str(missing), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert str(missing) in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checks", "content,colour"])
    with pytest.raises(ValueError, match="patch"):
        CnnSettings(patch=4)
    with pytest.raises(ValueError, match="unknown check"):
        AuditConfig(checks=("position", "weather"))


@pytest.mark.parametrize("check", ["position", "patch_colour", "binary_mask", "location", "adversarial"])
def test_a_cnn_check_without_the_cnn_says_it_was_skipped_and_gives_no_verdict(check):
    import importlib
    from types import SimpleNamespace

    from pipeline.analysis.audit.common import AuditContext

    run = getattr(importlib.import_module(f"pipeline.analysis.audit.{check}"), f"{check}_check")
    result = run(AuditContext(bank=SimpleNamespace(grid_crops=None), levels=None))
    assert result.verdict is None and not result.figures
    assert len(result.notes) == 1 and result.notes[0].startswith("Skipped: ")
    assert "--no-cnn" in result.notes[0] and result.seconds >= 0
