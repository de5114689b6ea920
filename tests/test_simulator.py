"""Tests of the synthetic aging camera (the pipeline.sim package).

Statistical tests use fixed seeds and the significance level ALPHA = 0.001: with a correct
simulator they pass deterministically; a wrong rate, clustering in time or a class-dependent
scene draw makes their p-values collapse far below it.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats

import pipeline.sim as sim
from pipeline.sim import dataset as sim_dataset
from pipeline.sim.config import CFA_PATTERNS
from pipeline.sim.defects import SECONDS_PER_YEAR
from pipeline.sim.writers import ExifInfo, encode_jpeg
from pipeline.simulate import main as simulate_main

ALPHA = 0.001

TINY = {
    "capture.images_per_class": 3,
    "devices": [{"name": "SIM-a1", "model": "alpha", "serial": "A1"},
                {"name": "SIM-b1", "model": "beta", "serial": "B1"}],
    "models.alpha.width": 128, "models.alpha.height": 96,
    "models.beta.width": 128, "models.beta.height": 96,
}
MANIFEST_CONTRACT = ["path", "device", "captured_at", "timeslot", "label", "exposure_s", "iso", "make", "model",
                     "scene"]
DEFECTS_CONTRACT = ["device", "row", "col", "cfa_color", "onset", "first_slot", "D", "c", "kind"]


def tiny_config(**extra) -> sim.SimulationConfig:
    return sim.load_config(overrides={**TINY, **extra})


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_output(tmp_path_factory) -> sim.SimulatedDataset:
    return sim.simulate(tiny_config(), tmp_path_factory.mktemp("sim") / "out", workers=1, progress=False)


# ------------------------------------------------------------------ configuration

def test_default_config_meets_the_issue_constraints():
    config = sim.load_config()
    assert len(config.devices) >= 4
    bodies_per_model = {m: sum(d.model == m for d in config.devices) for m in config.models}
    assert max(bodies_per_model.values()) >= 2
    assert len({config.model_of(d).cfa for d in config.devices}) >= 2
    assert "RGGB" in {config.model_of(d).cfa for d in config.devices}
    assert sorted(c.label for c in config.classes) == [0, 1]
    assert config.scenes.scene_bias == 0.5 and config.processing.processing_bias == 0.0
    assert config.processing.output_format == "jpeg"
    for device_cfg in config.devices:
        model = config.model_of(device_cfg)
        assert model.width >= 1024 and model.height >= 768
        device = sim.SimulatedDevice(config, device_cfg.name)
        assert 90 <= device.isp.processing.jpeg_quality <= 95
        labels = [c.label for c in device.captures]
        assert labels.count(0) >= 60 and labels.count(1) >= 60
        last_old = max(c.captured_at for c in device.captures if c.label == 0)
        first_new = min(c.captured_at for c in device.captures if c.label == 1)
        assert first_new - last_old >= timedelta(days=365)
        span_years = (device.captures[-1].captured_at - device.manufactured).total_seconds() / SECONDS_PER_YEAR
        assert 20 <= config.defects.rate_per_year * span_years <= 60
        assert device.manufactured < device.captures[0].captured_at  # some defects predate the data


def test_overrides_by_dotted_key_and_errors_name_the_key():
    config = sim.load_config(overrides={"scenes.scene_bias": "1.0", "models__alpha__width": 256, "seed": 7,
                                        "devices.0.serial": "XYZ"})
    assert config.scenes.scene_bias == 1.0 and config.models["alpha"].width == 256 and config.seed == 7
    assert config.devices[0].serial == "XYZ"
    assert config.with_overrides({"defects.rate_per_year": 3}).defects.rate_per_year == 3.0
    with pytest.raises(ValueError, match="scene_biass"):
        sim.load_config(overrides={"scenes.scene_biass": 1})
    with pytest.raises(ValueError, match="scene_bias must lie in"):
        sim.load_config(overrides={"scenes.scene_bias": 2})
    with pytest.raises(ValueError, match="unknown model"):
        sim.load_config(overrides={"devices.0.model": "nosuch"})
    with pytest.raises(FileNotFoundError):
        sim.load_config("/nonexistent/sim.toml")


def test_config_round_trips_through_its_dict_and_hash_tracks_changes():
    config = tiny_config()
    assert sim.SimulationConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert sim.config_hash(config) == sim.config_hash(tiny_config())
    assert sim.config_hash(config) != sim.config_hash(tiny_config(seed=1))


# ------------------------------------------------------------------ defect process

def test_poisson_onsets_match_the_rate_and_are_uniform_in_time():
    rng = np.random.default_rng(12345)
    rate, start, end = 12.0, datetime(2014, 1, 1), datetime(2016, 1, 1)
    years = (end - start).total_seconds() / SECONDS_PER_YEAR
    runs = [sim.poisson_onsets(rate, start, end, rng) for _ in range(2000)]
    counts = np.array([len(r) for r in runs])
    lam = rate * years
    # Total count: Poisson(N * lam); dispersion index sum((n - lam)^2 / lam) ~ chi2(N).
    assert stats.poisson.cdf(counts.sum(), len(runs) * lam) > ALPHA / 2
    assert stats.poisson.sf(counts.sum() - 1, len(runs) * lam) > ALPHA / 2
    dispersion = np.sum((counts - lam) ** 2 / lam)
    assert ALPHA / 2 < stats.chi2.cdf(dispersion, len(runs)) < 1 - ALPHA / 2
    # Pooled onsets are uniform over the window (no clustering, no drift).
    fractions = np.concatenate([(r - np.datetime64(start, "s")).astype(np.int64) for r in runs]) / (
        (end - start).total_seconds())
    assert stats.kstest(fractions, "uniform").pvalue > ALPHA
    assert all(np.all(np.diff(r.astype(np.int64)) >= 0) for r in runs)


def test_poisson_test_rejects_a_wrong_rate():
    """The statistic above has power: onsets drawn at 1.2x the rate are rejected."""
    rng = np.random.default_rng(12345)
    start, end = datetime(2014, 1, 1), datetime(2016, 1, 1)
    counts = np.array([len(sim.poisson_onsets(14.4, start, end, rng)) for _ in range(2000)])
    assert stats.poisson.sf(counts.sum() - 1, 2000 * 12.0 * 2 * 365 / 365.25) < ALPHA


def test_device_defect_counts_over_time_are_consistent_with_the_poisson_rate():
    """Many simulated bodies: counts per device and per time window match the rate."""
    n_devices, width, height = 300, 64, 48
    devices = [{"name": f"SIM-d{i:03d}", "model": "alpha", "serial": str(i)} for i in range(n_devices)]
    config = sim.load_config(overrides={**TINY, "devices": devices, "defects.rate_per_year": 15.0,
                                        "models.alpha.width": width, "models.alpha.height": height})
    rate_per_s = config.defects.rate_per_year / SECONDS_PER_YEAR
    totals = np.zeros(2)  # observed, expected
    dispersion = 0.0
    window_counts, window_expected = np.zeros(3), np.zeros(3)
    fractions, positions = [], []
    jitter = np.random.default_rng(0)
    for cfg in config.devices:
        device = sim.SimulatedDevice(config, cfg.name)
        onset = device.defects.onset.astype(np.int64)  # seconds since 1970
        # windows: manufacture .. first capture .. last class-0 capture .. last capture
        last_old = max(c.captured_at for c in device.captures if c.label == 0)
        edges = np.array([np.datetime64(t, "s").astype(np.int64) for t in
                          (device.manufactured, device.captures[0].captured_at, last_old,
                           device.captures[-1].captured_at)])
        assert onset.min(initial=edges[0]) >= edges[0] and onset.max(initial=edges[-1]) <= edges[-1]
        lam = rate_per_s * (edges[-1] - edges[0])
        totals += (len(onset), lam)
        dispersion += (len(onset) - lam) ** 2 / lam
        window_counts += np.histogram(onset, bins=edges)[0]
        window_expected += rate_per_s * np.diff(edges)
        fractions.append((onset - edges[0]) / (edges[-1] - edges[0]))
        positions.append((device.defects.rows + jitter.random(len(onset))) / height)
        positions.append((device.defects.cols + jitter.random(len(onset))) / width)
    observed, expected = totals
    assert stats.poisson.cdf(observed, expected) > ALPHA / 2
    assert stats.poisson.sf(observed - 1, expected) > ALPHA / 2
    assert ALPHA / 2 < stats.chi2.cdf(dispersion, n_devices) < 1 - ALPHA / 2
    assert window_counts.min() > 100
    assert stats.chi2.sf(np.sum((window_counts - window_expected) ** 2 / window_expected), 3) > ALPHA
    assert stats.kstest(np.concatenate(fractions), "uniform").pvalue > ALPHA
    assert stats.kstest(np.concatenate(positions[0::2]), "uniform").pvalue > ALPHA
    assert stats.kstest(np.concatenate(positions[1::2]), "uniform").pvalue > ALPHA


def test_defect_population_mixture():
    config = tiny_config(**{"defects.rate_per_year": 2000.0})
    d = sim.SimulatedDevice(config, "SIM-a1").defects
    cfg = config.defects
    assert len(d) > 2000 and len(set(zip(d.rows.tolist(), d.cols.tolist()))) == len(d)
    tolerance = 4 * np.sqrt(0.25 / len(d))
    assert abs(d.stuck.mean() - cfg.stuck_fraction) < tolerance
    assert np.all(d.D[d.stuck] == 0) and np.all(d.c[d.stuck] > 0)
    amplitude = np.where(d.stuck, d.c, d.D * cfg.reference_exposure_s)
    assert np.all(d.D[~d.stuck] > 0)
    assert np.all(d.c[~d.stuck] <= cfg.hot_offset_max_fraction * amplitude[~d.stuck] + 1e-9)
    # two populations, well apart: the share above their geometric mid-point is strong_fraction
    strong = amplitude > np.sqrt(cfg.weak_median_dn * cfg.strong_median_dn)
    assert abs(strong.mean() - cfg.strong_fraction) < tolerance + 0.02
    assert np.median(amplitude[strong]) == pytest.approx(cfg.strong_median_dn, rel=0.1)
    assert np.median(amplitude[~strong]) == pytest.approx(cfg.weak_median_dn, rel=0.1)


# ------------------------------------------------------------------ raw model

def test_defect_raw_value_rises_by_tau_d_plus_c_after_onset_and_not_before():
    config = tiny_config(**{"defects.rate_per_year": 300.0})
    device = sim.SimulatedDevice(config, "SIM-a1")
    defects = device.defects
    assert len(defects) > 100 and defects.stuck.any() and (~defects.stuck).any()
    light = np.full(device.shape, 400.0, np.float32)
    for exposure, iso in ((1 / 60, 100), (1 / 8, 400)):
        gain = iso / device.model.base_iso
        clean = device.render_raw(light, exposure, iso, device.captures[-1].captured_at, noise=False,
                                  defects=False).astype(np.int64)
        for i in range(0, len(defects), 7):
            onset = defects.onset[i].astype(datetime)
            before = device.render_raw(light, exposure, iso, onset - timedelta(seconds=1), noise=False)
            after = device.render_raw(light, exposure, iso, onset, noise=False)
            r, c = defects.rows[i], defects.cols[i]
            expected = min(gain * (exposure * defects.D[i] + defects.c[i]),
                           device.model.white_level - clean[r, c])
            assert before[r, c] == clean[r, c]
            assert abs(int(after[r, c]) - clean[r, c] - expected) <= 1.0
            changed = np.argwhere(after.astype(np.int64) != before)
            assert [tuple(p) for p in changed] == [(r, c)] or expected < 0.5


def test_defect_rise_holds_in_the_noisy_mean_and_scales_with_exposure_only_for_hot_pixels():
    config = tiny_config(**{"defects.rate_per_year": 60.0})
    device = sim.SimulatedDevice(config, "SIM-a1")
    defects, model = device.defects, device.model
    at = device.captures[-1].captured_at
    light = np.full(device.shape, 300.0, np.float32)
    rng = np.random.default_rng(7)
    repeats, iso = 300, 200
    gain = iso / model.base_iso
    dn_per_e = gain * (model.white_level - model.black_level) / model.full_well_e
    rises = {}
    for exposure in (1 / 250, 1 / 30):
        with_defects = np.mean([device.render_raw(light, exposure, iso, at, rng).astype(np.float64)
                                for _ in range(repeats)], axis=0)
        without = np.mean([device.render_raw(light, exposure, iso, at, rng, defects=False).astype(np.float64)
                           for _ in range(repeats)], axis=0)
        expected = defects.amplitude_dn(exposure, gain)
        base = without[defects.rows, defects.cols]
        variance = dn_per_e * (300 + expected) + (model.read_noise_e * dn_per_e) ** 2 + model.adc_noise_dn ** 2 + 1
        sd = np.sqrt(2 * variance / repeats)
        safe = base + expected + 6 * np.sqrt(variance) < model.white_level  # far from clipping
        assert safe.sum() > 20
        rise = with_defects[defects.rows, defects.cols] - base
        assert np.all(np.abs(rise - expected)[safe] < 5 * sd[safe] + 0.5)
        rises[exposure] = np.where(safe, rise, np.nan)
    both = ~np.isnan(rises[1 / 250]) & ~np.isnan(rises[1 / 30])
    stuck, hot = both & defects.stuck, both & ~defects.stuck & (defects.D * 1 / 30 > 20)
    assert stuck.any() and hot.any()
    # a stuck pixel's rise does not depend on exposure; a hot pixel's grows with it
    np.testing.assert_allclose(rises[1 / 30][stuck], rises[1 / 250][stuck], atol=8)
    assert np.all(rises[1 / 30][hot] > rises[1 / 250][hot] + 10)


def test_prnu_multiplies_the_scene_light():
    config = tiny_config()
    device = sim.SimulatedDevice(config, "SIM-a1")
    light = np.full(device.shape, 1000.0, np.float32)
    raw = device.render_raw(light, 0.01, 100, device.manufactured, noise=False, defects=True)
    expected = np.rint(1000.0 * (1 + device.prnu) + device.model.black_level)
    np.testing.assert_array_equal(raw, expected.astype(np.uint16))
    other = sim.SimulatedDevice(tiny_config(), "SIM-b1")
    assert abs(np.corrcoef(device.prnu.ravel(), other.prnu.ravel())[0, 1]) < 0.05


def test_raw_clips_at_full_well_and_at_zero():
    device = sim.SimulatedDevice(tiny_config(), "SIM-a1")
    light = np.full(device.shape, 1e6, np.float32)
    raw = device.render_raw(light, 0.01, 800, device.captures[-1].captured_at, np.random.default_rng(0))
    assert raw.max() == device.model.white_level and raw.min() == device.model.white_level
    dark = device.render_raw(np.full(device.shape, -1e6, np.float32), 0.01, 100, device.manufactured, noise=False)
    assert dark.max() == 0


def test_bilinear_demosaic_keeps_sites_and_matches_a_naive_reference():
    rng = np.random.default_rng(3)
    mosaic = rng.random((10, 12)).astype(np.float32)
    for cfa in ("RGGB", "BGGR", "GRBG", "GBRG"):
        rgb = sim.demosaic_bilinear(mosaic, cfa)
        cmap = np.tile(np.array(CFA_PATTERNS[cfa]).reshape(2, 2), (5, 6))
        padded_m = np.pad(mosaic, 1, mode="reflect")  # numpy reflect == scipy mirror
        padded_c = np.pad(cmap, 1, mode="reflect")
        for y in range(10):
            for x in range(12):
                for colour in range(3):
                    if cmap[y, x] == colour:
                        expected = mosaic[y, x]
                    else:
                        window_m = padded_m[y:y + 3, x:x + 3]
                        window_c = padded_c[y:y + 3, x:x + 3]
                        if colour == 1:
                            mask = (window_c == 1) & np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)
                        else:
                            mask = window_c == colour
                        expected = window_m[mask].mean()
                    assert rgb[y, x, colour] == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------ end to end

def test_strong_defects_show_in_the_jpeg_after_onset_only():
    config = tiny_config(**{"defects.rate_per_year": 60.0, "defects.weak_median_dn": 600.0,
                            "defects.strong_median_dn": 600.0, "defects.amplitude_log_sigma": 0.0,
                            "defects.stuck_fraction": 1.0, "capture.images_per_class": 6})
    device = sim.SimulatedDevice(config, "SIM-a1")
    defects = device.defects
    before, after = [], []
    for capture in device.captures:
        rendered = device.render(capture)
        info = ExifInfo("m", "m", "s", capture.captured_at, capture.exposure_s, capture.iso)
        decoded = np.asarray(Image.open(io.BytesIO(encode_jpeg(rendered.image, info, 92)))).astype(np.float32)
        residual = decoded - ndimage.median_filter(decoded, size=(3, 3, 1), mode="mirror")
        values = residual[defects.rows, defects.cols, defects.cfa_color]
        unclipped = rendered.raw[defects.rows, defects.cols] < device.model.white_level
        present = defects.active(capture.captured_at)
        after += list(values[present & unclipped])
        before += list(values[~present & unclipped])
    assert len(before) > 10 and len(after) > 10
    assert np.mean(after) > np.mean(before) + 10
    assert abs(np.median(before)) < 3


def test_same_seed_gives_byte_identical_output_whatever_the_worker_count(tiny_output, tmp_path):
    again = sim.simulate(tiny_output.config, tmp_path / "two_workers", workers=2, progress=False)
    assert file_hashes(again.root) == file_hashes(tiny_output.root)
    other_seed = sim.simulate(tiny_config(seed=99), tmp_path / "seed99", workers=1, progress=False)
    theirs, ours = file_hashes(other_seed.root), file_hashes(tiny_output.root)
    assert theirs.keys() == ours.keys()
    assert sum(theirs[k] == ours[k] for k in ours if k.endswith(".jpg")) == 0


def test_output_layout_manifest_and_defects_follow_the_contract(tiny_output):
    root = tiny_output.root
    assert {p.name for p in root.iterdir()} == {"images", "manifest.csv", "defects.csv", "config.json",
                                                "classes.toml"}
    assert not list(root.parent.glob(f"{root.name}.tmp-*"))
    rows = tiny_output.manifest_rows()
    assert list(rows[0])[:len(MANIFEST_CONTRACT)] == MANIFEST_CONTRACT
    assert len(rows) == 2 * 2 * 3
    config = tiny_output.config
    for row in rows:
        device = row["device"]
        assert row["path"].startswith(f"images/{device}/{device}_") and row["path"].endswith(".jpg")
        assert (root / row["path"]).is_file()
        assert int(row["label"]) == (0 if int(row["timeslot"]) <= 5 else 1)
        datetime.fromisoformat(row["captured_at"])
    row = rows[4]
    with Image.open(root / row["path"]) as img:
        assert img.size == (128, 96)
        exif = img.getexif()
        sub = exif.get_ifd(0x8769)
    model = config.model_of(row["device"])
    assert exif[0x010F] == model.make == row["make"] and exif[0x0110] == model.model == row["model"]
    assert sub[0x9003] == datetime.fromisoformat(row["captured_at"]).strftime("%Y:%m:%d %H:%M:%S")
    assert float(sub[0x829A]) == pytest.approx(float(row["exposure_s"]))
    assert int(sub[0x8827]) == int(row["iso"])
    assert sub[0xA431] == config.device(row["device"]).serial

    defects = tiny_output.defect_rows()
    assert list(defects[0])[:5] == DEFECTS_CONTRACT[:5] and set(DEFECTS_CONTRACT) <= set(defects[0])
    record = json.loads((root / "config.json").read_text())
    assert record["seed"] == config.seed and record["config_hash"] == sim.config_hash(config)
    for name in ("SIM-a1", "SIM-b1"):
        device = sim.SimulatedDevice(config, name)
        mine = [d for d in defects if d["device"] == name]
        assert len(mine) == len(device.defects) == record["devices"][name]["defects"]
        first_capture = device.captures[0].captured_at
        for d, onset in zip(mine, device.defects.onset):
            assert d["onset"] == str(onset) and d["kind"] in ("hot", "stuck")
            assert int(d["cfa_color"]) == device.cfa_colors[int(d["row"]), int(d["col"])]
            at = datetime.fromisoformat(d["onset"])
            assert int(d["preexisting"]) == (at < first_capture)
            slot = min(c.slot for c in device.captures if c.captured_at >= at)
            assert int(d["first_slot"]) == slot
        assert sum(d["preexisting"] == "1" for d in mine) == int(
            np.sum(device.defects.onset < np.datetime64(first_capture, "s")))


def test_manifest_matches_what_the_device_renders(tiny_output):
    config = tiny_output.config
    device = sim.SimulatedDevice(config, "SIM-b1")
    capture = device.captures[2]
    rendered = device.render(capture)
    info = ExifInfo(device.model.make, device.model.model, device.serial, capture.captured_at,
                    capture.exposure_s, capture.iso)
    expected = encode_jpeg(rendered.image, info, device.isp.processing.jpeg_quality,
                           device.isp.processing.jpeg_subsampling)
    assert (tiny_output.root / "images/SIM-b1/SIM-b1_0002.jpg").read_bytes() == expected


def test_scene_bias_one_ties_scene_to_class_and_zero_makes_it_independent():
    def groups_by_label(bias):
        config = tiny_config(**{"scenes.scene_bias": bias, "capture.images_per_class": 400})
        plans = [c for d in config.devices for c in sim.plan_captures(config, d.name)]
        table = np.zeros((2, 2))
        for c in plans:
            table[c.label, ["indoor", "outdoor"].index(c.scene_group)] += 1
        return table, plans

    table, plans = groups_by_label(1.0)
    assert table[0, 1] == 0 and table[1, 0] == 0
    assert {c.scene for c in plans if c.label == 0}.isdisjoint({c.scene for c in plans if c.label == 1})
    table, plans = groups_by_label(0.0)
    assert stats.chi2_contingency(table).pvalue > ALPHA
    assert table.min() > 300
    table, _ = groups_by_label(0.5)
    assert stats.chi2_contingency(table).pvalue < ALPHA  # the shortcut is there at the default
    assert table[0, 0] / table[0].sum() == pytest.approx(0.75, abs=0.05)


def test_processing_bias_separates_models_but_not_bodies_of_one_model():
    flat = sim.load_config()
    assert len({sim.SimulatedDevice(flat, d.name).isp.processing for d in flat.devices}) == 1
    biased = sim.load_config(overrides={"processing.processing_bias": 1.0})
    processing = {d.name: sim.SimulatedDevice(biased, d.name).isp.processing for d in biased.devices}
    assert processing["SIM-alpha01"] == processing["SIM-alpha02"]
    assert len(set(processing.values())) == 3
    assert processing["SIM-alpha01"].jpeg_quality == 95 and processing["SIM-beta01"].gamma == 2.0


@pytest.mark.parametrize("fmt", ["dng", "tiff"])
def test_dng_and_tiff_outputs(tmp_path, fmt):
    config = tiny_config(**{"processing.output_format": fmt, "capture.images_per_class": 1,
                            "devices": [{"name": "SIM-a1", "model": "alpha", "serial": "A1"}]})
    out = sim.simulate(config, tmp_path / fmt, workers=1, progress=False)
    row = out.manifest_rows()[1]
    device = sim.SimulatedDevice(config, "SIM-a1")
    rendered = device.render(device.captures[1])
    path = out.root / row["path"]
    if fmt == "dng":
        rawpy = pytest.importorskip("rawpy")
        assert path.suffix == ".dng"
        with rawpy.imread(str(path)) as raw:
            np.testing.assert_array_equal(raw.raw_image_visible, rendered.raw)
            assert raw.raw_pattern.tolist() == [[0, 1], [3, 2]] and raw.color_desc == b"RGBG"
            assert raw.white_level == device.model.white_level
            assert list(raw.black_level_per_channel) == [device.model.black_level] * 4
    else:
        import tifffile
        assert path.suffix == ".tiff"
        image = tifffile.imread(path)
        assert image.dtype == np.uint16 and image.shape == (96, 128, 3)
        np.testing.assert_array_equal(image, rendered.image)


# ------------------------------------------------------------------ caching, folders, CLI

def test_default_dataset_is_cached_by_config_hash(tmp_path, monkeypatch):
    first = sim.default_dataset(cache_dir=tmp_path, progress=False, workers=1, **TINY)
    assert first.root.parent == tmp_path and first.root.name == sim.config_hash(first.config)[:16]
    calls = []
    monkeypatch.setattr(sim_dataset, "_generate", lambda *a, **k: calls.append(a))
    again = sim.default_dataset(cache_dir=tmp_path, progress=False, **TINY)
    assert again.root == first.root and calls == []
    monkeypatch.setenv("AGETRACE_CACHE", str(tmp_path / "env"))
    assert sim.cache_root() == tmp_path / "env" / "synthetic"


def test_incomplete_cache_is_regenerated(tmp_path):
    first = sim.default_dataset(cache_dir=tmp_path, progress=False, workers=1, **TINY)
    victim = first.root / first.manifest_rows()[0]["path"]
    victim.unlink()
    again = sim.default_dataset(cache_dir=tmp_path, progress=False, workers=1, **TINY)
    assert victim.is_file() and again.root == first.root


def test_simulate_replaces_its_own_output_but_not_a_foreign_folder(tmp_path):
    config = tiny_config(**{"capture.images_per_class": 1,
                            "devices": [{"name": "SIM-a1", "model": "alpha", "serial": "A1"}]})
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a simulator output"):
        sim.simulate(config, foreign, workers=1, progress=False)
    assert (foreign / "thesis.txt").read_text() == "precious"
    out = sim.simulate(config, tmp_path / "out", workers=1, progress=False)
    (out.root / "stale.txt").write_text("old")
    sim.simulate(config, tmp_path / "out", workers=1, progress=False)
    assert not (out.root / "stale.txt").exists() and out.manifest_path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out"]


def test_cli_generates_and_reports_bad_overrides(tmp_path, capsys):
    args = ["--out", str(tmp_path / "cli"), "--workers", "1", "--no-progress", "--seed", "5"]
    for key, value in TINY.items():
        if key != "devices":
            args += ["--set", f"{key}={value}"]
    args += ["--set", 'devices=[{name="SIM-c1", model="gamma", serial="C1"}]', "--set", "models.gamma.width=64",
             "--set", "models.gamma.height=48"]
    assert simulate_main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tmp_path / "cli") and out[0].startswith("SIM-c1: 6 images")
    record = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert record["seed"] == 5
    assert simulate_main(["--out", str(tmp_path / "x"), "--set", "scenes.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
