"""Smoke test of tests/real_mosaics.py: real raw files, injected defects, DNG and JPEG sets.

The oracle here is independent of the module's injection code: the expected mosaic is the
source crop plus ``(iso / base_iso) * (exposure * D + c)`` recomputed from the truth CSVs.
Fails (never skips) when the raw files cannot be fetched, unless AGETRACE_OFFLINE=1.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from datetime import datetime

import numpy as np
import pytest
import rawpy

import real_mosaics as rm
from pipeline.data.exif import read_exif
from pipeline.data.imageio import read_image
from pipeline.data.manifest import load_manifest

pytestmark = pytest.mark.slow  # fetches 35 MB on first use; a few seconds once cached

PER_CLASS = 2
HEIGHT, WIDTH = rm.FRAME_SHAPE


def _fetch_or_skip(**kwargs):
    try:
        return rm.fetch_sources(**kwargs)
    except rm.OfflineError as exc:
        pytest.skip(str(exc))
    except rm.FetchError as exc:
        pytest.fail(f"real raw files unavailable: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def sources():
    _fetch_or_skip()
    return {d.device: rm.load_source(d.device) for d in rm.DEVICES}


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    root = tmp_path_factory.mktemp("real-mosaics")
    return {kind: rm.build(root / kind, seed=0, kind=kind, images_per_class=PER_CLASS) for kind in ("dng", "jpeg")}


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_mosaic(source, capture, defects):
    """The source crop with every defect active at the capture's time added and clipped."""
    row, col = int(capture["crop_row"]), int(capture["crop_col"])
    crop = source.mosaic[row:row + HEIGHT, col:col + WIDTH].astype(np.int64)
    expected, active = crop.copy(), []
    when = datetime.fromisoformat(capture["captured_at"])
    for defect in defects:
        if defect["device"] != capture["device"] or datetime.fromisoformat(defect["onset"]) > when:
            continue
        gain = float(capture["iso"]) / float(defect["base_iso"])
        amount = gain * (float(capture["exposure_s"]) * float(defect["D"]) + float(defect["c"]))
        y, x = int(defect["row"]), int(defect["col"])
        added = int(np.rint(amount / source.step) * source.step)
        expected[y, x] = min(crop[y, x] + added, max(source.white, crop[y, x]))
        active.append((y, x, int(defect["cfa_color"]), min(amount, source.white - crop[y, x])))
    return crop, expected, active


def test_sources_are_pinned_real_cfa_mosaics(sources):
    paths = rm.fetch_sources()
    for device in rm.DEVICES:
        archive = rm._ARCHIVES[device.archive]
        assert _sha256(paths[device.device]) == archive.members[device.source_file][1]
        source = sources[device.device]
        assert source.mosaic.dtype == np.uint16 and min(source.mosaic.shape) > HEIGHT + 2 * rm.DEVELOP_MARGIN
        assert sorted(source.cfa.ravel().tolist()) == [0, 1, 1, 2]  # Bayer
        assert source.black.max() < source.white
    assert len({(s.make, s.model) for s in sources.values()}) == 3


def test_a_damaged_cache_is_repaired_from_the_archive_and_a_bad_archive_refused(sources, tmp_path, monkeypatch):
    archive = rm._ARCHIVES["tinydng"]
    shutil.copy(rm.cache_dir() / archive.filename, tmp_path / archive.filename)
    monkeypatch.setenv(rm.OFFLINE_VARIABLE, "1")
    path = rm.fetch_sources(["real-canon-550d"], cache=tmp_path)["real-canon-550d"]
    with open(path, "ab") as fh:
        fh.write(b"\0")
    assert _sha256(rm.fetch_sources(["real-canon-550d"], cache=tmp_path)["real-canon-550d"]) == \
        archive.members["colorchart.dng"][1]
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with open(tmp_path / archive.filename, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"tampered")
    with pytest.raises(rm.OfflineError):  # neither file matches and downloading is forbidden
        rm.fetch_sources(["real-canon-550d"], cache=tmp_path)


def test_dng_mosaic_differs_from_the_source_exactly_at_active_defects(built, sources):
    result = built["dng"]
    captures, defects = _rows(result.captures_truth), _rows(result.defects_truth)
    assert len(captures) == 2 * PER_CLASS * len(rm.DEVICES)
    changed_total = 0
    for capture in captures:
        source = sources[capture["device"]]
        crop, expected, active = _expected_mosaic(source, capture, defects)
        path = result.out_dir / capture["path"]
        image = read_image(path)
        assert image.kind == "cfa" and image.shape == (HEIGHT, WIDTH)
        np.testing.assert_array_equal(image.pixels, expected, err_msg=capture["path"])
        with rawpy.imread(str(path)) as raw:  # bit-identical through rawpy itself
            np.testing.assert_array_equal(raw.raw_image_visible, expected)
        changed = set(zip(*np.nonzero(image.pixels.astype(np.int64) != crop)))
        assert changed <= {(y, x) for y, x, _, _ in active}
        changed_total += len(changed)
        np.testing.assert_array_equal(image.cfa_pattern, source.cfa)
        np.testing.assert_allclose(image.black_level, source.black)
        assert image.white_level == source.white
        meta = image.metadata
        assert meta.captured_at == datetime.fromisoformat(capture["captured_at"])
        assert meta.exposure_s == pytest.approx(float(capture["exposure_s"]), rel=1e-12)
        assert meta.iso == float(capture["iso"])
        assert (meta.make, meta.model) == (source.make, source.model)
    assert changed_total > 0


def test_jpeg_exif_and_visible_defects(built, sources):
    result = built["jpeg"]
    captures, defects = _rows(result.captures_truth), _rows(result.defects_truth)
    traces = []
    for capture in captures:
        source = sources[capture["device"]]
        path = result.out_dir / capture["path"]
        meta = read_exif(path)
        assert meta.captured_at == datetime.fromisoformat(capture["captured_at"])
        assert meta.exposure_s == pytest.approx(float(capture["exposure_s"]), rel=1e-12)
        assert meta.iso == float(capture["iso"])
        assert (meta.make, meta.model, meta.orientation) == (source.make, source.model, 1)
        pixels = read_image(path).pixels
        assert pixels.shape == (HEIGHT, WIDTH, 3)
        _, _, active = _expected_mosaic(source, capture, defects)
        for y, x, colour, effective in active:
            if effective >= 0.1 * source.raw_range:  # strong: at least a tenth of the raw range
                window = pixels[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4, colour].astype(int)
                traces.append(int(pixels[y, x, colour]) - np.median(window))
    # Demosaicing, 4:2:0 chroma and the tone curve spread and squash a defect, and a bright or
    # textured background can hide a red or blue one; nearly every strong one still shows.
    assert len(traces) >= 5 and np.mean(np.array(traces) >= 5) >= 0.8, traces


@pytest.mark.parametrize("kind", ["dng", "jpeg"])
def test_manifests_load_and_agree_with_the_truth(built, kind):
    result = built[kind]
    full = load_manifest(result.manifest)
    exif_only = load_manifest(result.manifest_exif_only)
    assert "exposure_s" not in exif_only.columns and "iso" not in exif_only.columns
    assert len(full.rows) == len(exif_only.rows) == result.images
    assert full.devices == [d.device for d in rm.DEVICES]
    truth = {row["path"]: row for row in _rows(result.captures_truth)}
    for row in full.rows:
        capture = truth[row.path.relative_to(result.out_dir).as_posix()]
        assert row.label == int(capture["label"]) and row.iso == float(capture["iso"])
        assert row.captured_at == datetime.fromisoformat(capture["captured_at"])
    for device in full.devices:
        labels = [r.label for r in full.for_device(device)]
        assert labels == sorted(labels) and labels.count(0) == labels.count(1) == PER_CLASS


def test_seed_decides_the_defects_and_a_subset_of_devices_draws_the_same(sources, tmp_path):
    a = rm.build(tmp_path / "a", seed=1, kind="dng", images_per_class=1)
    b = rm.build(tmp_path / "b", seed=1, kind="dng", images_per_class=1, devices=["real-canon-550d"])
    c = rm.build(tmp_path / "c", seed=2, kind="dng", images_per_class=1, devices=["real-canon-550d"])
    canon = [r for r in _rows(a.defects_truth) if r["device"] == "real-canon-550d"]
    assert canon == _rows(b.defects_truth) != _rows(c.defects_truth)
    onsets = [datetime.fromisoformat(r["onset"]) for r in _rows(a.defects_truth)]
    assert min(onsets) < rm.CLASS_PERIODS[0][0] and any(rm.CLASS_PERIODS[0][1] < t < rm.CLASS_PERIODS[1][0]
                                                         for t in onsets)
    with pytest.raises(FileExistsError):
        rm.build(tmp_path / "a", seed=1, kind="dng", images_per_class=1)


def test_continuous_capture_times_span_the_whole_period(sources, tmp_path):
    # the dating benchmark's sets: captures uniform from the first class's start to the last
    # class's end (the gap between the classes included), labelled by the midpoint; the
    # defects are those of the class-based build with the same seed
    built = rm.build(tmp_path / "c", seed=3, kind="dng", images_per_class=20, devices=["real-canon-550d"],
                     capture_times="continuous")
    rows = _rows(built.manifest)
    times = [datetime.fromisoformat(r["captured_at"]) for r in rows]
    start, end = rm.CLASS_PERIODS[0][0], rm.CLASS_PERIODS[-1][1]
    middle = start + (end - start) / 2
    assert len(rows) == 40 and all(start <= t <= end for t in times)
    assert sum(rm.CLASS_PERIODS[0][1] < t < rm.CLASS_PERIODS[1][0] for t in times) >= 20  # the gap is 15 of 21 months
    assert all(int(r["label"]) == int(t >= middle) for r, t in zip(rows, times))
    classes = rm.build(tmp_path / "k", seed=3, kind="dng", images_per_class=1, devices=["real-canon-550d"])
    assert _rows(classes.defects_truth) == _rows(built.defects_truth)
    with pytest.raises(ValueError, match="capture_times"):
        rm.build(tmp_path / "x", seed=3, kind="dng", images_per_class=1, capture_times="weekly")
