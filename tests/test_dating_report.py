"""The evidence report of ``python -m pipeline.date --report`` and the model data behind it
(issue 14, point 3).

The session's dating camera (tests/dating_camera.py) ran the command once with ``--trusted
--save-model --report``: three questioned images, three reports from the freshly fitted model.
References here do not share the code under test: the HTML is read back with a strict HTML5
parser (html5lib), residual crops are recomputed with scipy's median filter on the decoded
pixels, defect positions and onsets come from the simulator's ``defects.csv``, capture dates and
exposures from the simulator's manifest, hashes from hashlib, and Cllr from its formula.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import shutil
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import html5lib
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import median_filter

from csv_rows import read_csv
from dating_camera import BEFORE_AFTER
from pipeline.data.imageio import read_image
from pipeline.date import main
from pipeline.dating.crops import crop_positions
from pipeline.dating.model import DeviceModel, ModelFormatError, days
from pipeline.dating.report import report_stems
from pipeline.dating.report_html import SECTIONS

NS = "{http://www.w3.org/1999/xhtml}"
FIGURE_SECTIONS = ("crops", "timelines", "posterior", "defect-map", "calibration")
#: the columns of the defect table, in order
TABLE_KEYS = ("rank", "row", "col", "channel_name", "type", "onset_from", "onset_to", "dark_current", "offset",
              "expected_if_present", "measured", "noise_sigma", "log_likelihood_ratio")
#: a strong hot defect of the simulator: its 8-bit jump at reference conditions (defects.csv amp8_ref)
STRONG_DN = 10.0
#: the onset range of a strong defect must reach within this many days of the simulator's onset
ONSET_SLACK_DAYS = 30.0


@pytest.fixture(scope="module")
def camera(dating_camera):
    return dating_camera


def _reports(camera) -> list[tuple[dict, str, dict]]:
    """(questioned row, HTML text, JSON content) of each report the fixture's run wrote."""
    out = []
    for row in camera["questioned"][:camera["dated"]]:
        stem = report_stems([row["path"]])[0]
        out.append((row, (camera["report"] / f"{stem}.html").read_text(encoding="utf-8"),
                    json.loads((camera["report"] / f"{stem}.json").read_text(encoding="utf-8"))))
    return out


def _parse(text: str):
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=True).parse(text)


def _text(element) -> str:
    return "".join(element.itertext()).strip()


def _table(doc, table_id: str) -> tuple[list[str], list[list[str]]]:
    table = next(t for t in doc.iter(f"{NS}table") if t.get("id") == table_id)
    head = [_text(th) for th in table.find(f"{NS}thead").iter(f"{NS}th")]
    body = [[_text(td) for td in tr.iter(f"{NS}td")] for tr in table.find(f"{NS}tbody").iter(f"{NS}tr")]
    return head, body


def _truth(camera, model) -> list[dict]:
    """The simulator's defects whose onset lies inside the trusted period, by more than the slack."""
    start, end = model.period
    rows = []
    for row in read_csv(camera["defects_csv"]):
        onset = days(datetime.fromisoformat(row["onset"]))
        if row["device"] == "SIM-alpha01" and start + ONSET_SLACK_DAYS < onset < end - ONSET_SLACK_DAYS:
            rows.append({**row, "onset_days": onset, "row": int(row["row"]), "col": int(row["col"]),
                         "amp8_ref": float(row["amp8_ref"])})
    return rows


def _match(truth: dict, rows, cols) -> int | None:
    """The model defect at the simulated one's position, or one pixel off (demosaicing spreads it)."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    near = np.flatnonzero((np.abs(rows - truth["row"]) <= 1) & (np.abs(cols - truth["col"]) <= 1))
    return int(near[0]) if near.size else None


def _residual(pixels: np.ndarray) -> np.ndarray:
    """W = Y − median3x3(Y) per channel, reflecting at the borders (scipy)."""
    y = pixels.astype(np.float64)
    return y - median_filter(y, size=(3, 3, 1), mode="reflect")


def _clipped(pixels: np.ndarray, level: float) -> np.ndarray:
    """Whether any of the 8 neighbours (same channel; outside the frame, the edge pixel) is saturated."""
    padded = np.pad(pixels >= level, ((1, 1), (1, 1), (0, 0)), mode="symmetric")
    h, w = pixels.shape[:2]
    out = np.zeros(pixels.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                out |= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return out


def _crop(values: np.ndarray, row: int, col: int, channel: int, radius: int) -> np.ndarray:
    out = np.full((2 * radius + 1, 2 * radius + 1), np.nan)
    for i, dy in enumerate(range(-radius, radius + 1)):
        for j, dx in enumerate(range(-radius, radius + 1)):
            r, c = row + dy, col + dx
            if 0 <= r < values.shape[0] and 0 <= c < values.shape[1]:
                out[i, j] = values[r, c, channel]
    return out


def _cllr(log10_lr, is_h1) -> float:
    lr = 10.0 ** np.asarray(log10_lr, dtype=float)
    h1 = np.asarray(is_h1, dtype=bool)
    return 0.5 * (np.mean(np.log2(1 + 1 / lr[h1])) + np.mean(np.log2(1 + lr[~h1])))


# ------------------------------------------------------------------------------------ fast tests

def test_report_stems_are_unique_and_safe():
    stems = report_stems(["a/img.jpg", "b/img.jpg", "c/IMG.png", "d/img-2.jpg", "e/we ird (1).jpg", "f/.jpg",
                          "g/..."])
    assert stems == ["img", "img-2", "IMG-3", "img-2-2", "we_ird_1", "jpg", "image"]


def test_crop_positions_step_over_the_colour_plane_and_flag_the_frame():
    rows, cols, chans, inside = crop_positions([0, 10], [1, 10], [2, 0], (12, 20), cfa=True, radius=2)
    assert inside.shape == (2, 5, 5)
    first_r, first_c = rows.reshape(2, 5, 5)[0], cols.reshape(2, 5, 5)[0]
    # the defect at (0, 1) on a CFA mosaic: same-colour neighbours two pixels apart, rows -4, -2 outside
    assert first_c[2].tolist() == [0, 0, 1, 3, 5] and inside[0, 2].tolist() == [False, False, True, True, True]
    assert inside[0, :, 2].tolist() == [False, False, True, True, True] and first_r[4, 2] == 4
    # the defect at (10, 10): rows 12 and 14 fall outside the 12-row frame (clamped to its last row)
    assert rows.reshape(2, 5, 5)[1, :, 0].tolist() == [6, 8, 10, 11, 11]
    assert inside[1, :, 0].tolist() == [True, True, True, False, False] and inside[1, 2].all()
    assert chans.reshape(2, 5, 5)[0].min() == 2 and chans.reshape(2, 5, 5)[1].max() == 0
    _, _, _, inside_rgb = crop_positions([0], [19], [1], (12, 20), cfa=False, radius=1)
    assert inside_rgb[0].tolist() == [[False, False, False], [True, True, False], [True, True, False]]


# ------------------------------------------------------------------------------------ slow tests

@pytest.mark.slow
def test_the_report_is_strict_html_with_every_section_and_only_embedded_figures(camera):
    assert camera["code"] == 0
    written = sorted(p.name for p in camera["report"].iterdir())
    stems = report_stems([r["path"] for r in camera["questioned"][:camera["dated"]]])
    assert written == sorted([f"{s}.html" for s in stems] + [f"{s}.json" for s in stems])
    for _, text, _ in _reports(camera):
        doc = _parse(text)  # raises on any parse error
        sections = {s.get("id"): s for s in doc.iter(f"{NS}section")}
        assert list(sections) == list(SECTIONS)
        for key, heading in SECTIONS.items():
            section = sections[key]
            assert _text(section.find(f"{NS}h2")) == heading
            captions = [_text(c) for c in section.iter() if c.tag == f"{NS}figcaption" or c.get("class") == "caption"]
            assert captions and min(len(c) for c in captions) > 150, key
        for key in FIGURE_SECTIONS:
            images = list(sections[key].iter(f"{NS}img"))
            assert len(images) == 1, key
            src = images[0].get("src")
            mime, data = src.split(",", 1)
            payload = base64.b64decode(data, validate=True)
            if mime == "data:image/png;base64":
                picture = Image.open(io.BytesIO(payload))
                assert picture.format == "PNG" and round(picture.info["dpi"][0]) == 300
                assert picture.size[0] >= 300 * 7  # the page width at 300 dpi
            else:
                assert mime == "data:image/svg+xml;base64", key
                assert ET.fromstring(payload).tag == "{http://www.w3.org/2000/svg}svg"
        # nothing outside the file: no external source, link, script or stylesheet
        for element in doc.iter():
            for attribute in ("src", "href", "srcset", "data", "action"):
                value = element.get(attribute)
                assert value is None or value.startswith("data:"), (element.tag, attribute, value[:80])
            assert element.tag not in {f"{NS}{t}" for t in ("script", "link", "iframe", "object", "embed", "base")}
        style = "".join(_text(s) for s in doc.iter(f"{NS}style"))
        assert "url(" not in style and "@import" not in style


@pytest.mark.slow
def test_the_table_holds_the_json_numbers_and_the_dating(camera):
    model = camera["model"]
    for row, text, content in _reports(camera):
        head, body = _table(_parse(text), "defect-table")
        defects = content["defects"]
        assert len(body) == len(defects) == len(model.defects["rows"])
        assert head[0] == "#" and len(head) == len(body[0])
        for cells, d in zip(body, defects):
            values = dict(zip(TABLE_KEYS, cells))
            assert [int(values[k]) for k in ("rank", "row", "col")] == [d["rank"], d["row"], d["col"]]
            assert values["channel_name"] == d["channel_name"] and values["type"] == d["type"]
            for key in ("onset_from", "onset_to"):
                assert values[key] == (d[key] or "—")
            for key in ("dark_current", "offset", "expected_if_present", "measured", "noise_sigma",
                        "log_likelihood_ratio"):
                if d[key] is None:
                    assert values[key] in ("—", "clipped"), (key, values[key])
                else:
                    assert math.isclose(float(values[key]), d[key], rel_tol=6e-4, abs_tol=1e-12), (key, values, d)
        # informative defects first, by |LLR|, exactly as the command's own dating lists them
        dating = model.date(row["path"], before_after=[datetime.fromisoformat(BEFORE_AFTER)])
        assert json.loads(json.dumps(dating)) == content["dating"]
        informative = [d for d in defects if d["informative"]]
        assert [d["informative"] for d in defects] == sorted((d["informative"] for d in defects), reverse=True)
        assert len(informative) == len(dating["contributions"])
        for d, c in zip(informative, dating["contributions"]):
            assert (d["row"], d["col"], d["channel"]) == (c["row"], c["col"], c["channel"])
            assert f"{d['onset_from']} to {d['onset_to']}" == c["onset"]
            assert d["measured"] == c["measured"] and d["log_likelihood_ratio"] == c["log_likelihood_ratio"]
        # the summary's likelihood-ratio table is the dating's
        _, lr_rows = _table(_parse(text), "lr-table")
        assert [r[0] for r in lr_rows] == [e["date"] for e in dating["before_after"]]
        assert [float(r[1]) for r in lr_rows] == pytest.approx([e["log10_lr"] for e in dating["before_after"]],
                                                                abs=0.006)


@pytest.mark.slow
def test_the_questioned_crops_are_the_images_own_residuals(camera):
    """Every shown crop of the questioned image against scipy's median residual of its pixels."""
    checked = 0
    for row, _, content in _reports(camera):
        image = read_image(row["path"])
        residual = _residual(image.pixels)
        clipped = _clipped(image.pixels, image.white_level)
        assert image.kind == "rgb" and content["crops"]
        for crop in content["crops"]:
            d = next(x for x in content["defects"] if x["rank"] == crop["rank"])
            want = _crop(residual, crop["row"], crop["col"], d["channel"], crop["radius"])
            cut = _crop(clipped.astype(float), crop["row"], crop["col"], d["channel"], crop["radius"]) > 0
            got = np.array([[np.nan if v is None else v for v in r] for r in crop["questioned"]])
            assert np.array_equal(np.isnan(got), np.isnan(want) | cut)
            ok = ~np.isnan(got)
            np.testing.assert_allclose(got[ok], want[ok], atol=1e-4)
            centre = got[crop["radius"], crop["radius"]]
            assert (d["measured"] is None and np.isnan(centre)) or centre == pytest.approx(d["measured"], abs=1e-4)
            checked += 1
    assert checked >= 3 * 6


@pytest.mark.slow
def test_the_mean_crops_and_timelines_show_the_simulated_defects(camera):
    """Strong hot defects of the simulator (defects.csv): found where it put them, the onset range
    near its onset, the trusted mean crop brighter after the onset than before at the defect
    pixel, and the timeline brighter after the simulator's onset than before."""
    model = camera["model"]
    arrays, rows, cols = model.arrays, model.defects["rows"], model.defects["cols"]
    radius = (arrays["crop_before_mean"].shape[-1] - 1) // 2
    strong = [t for t in _truth(camera, model) if t["kind"] == "hot" and t["amp8_ref"] >= STRONG_DN]
    assert len(strong) >= 6
    found = {id(t): _match(t, rows, cols) for t in strong}
    assert sum(i is not None for i in found.values()) >= 0.6 * len(strong)
    days_trusted = arrays["trusted_days"]
    for t in strong:
        i = found[id(t)]
        if i is None:
            continue
        lo, hi = model.fg.onset_bounds_[i]
        assert lo - ONSET_SLACK_DAYS <= t["onset_days"] <= hi + ONSET_SLACK_DAYS, (t, lo, hi)
        before = arrays["crop_before_mean"][i, radius, radius]
        after = arrays["crop_after_mean"][i, radius, radius]
        assert after > before + 5.0 and after > 3 * abs(before), (t, before, after)
        w = arrays["trusted_residuals"][:, i]
        assert np.nanmean(w[days_trusted >= t["onset_days"]]) > np.nanmean(w[days_trusted < t["onset_days"]]) + 5.0
    # what the reports show of them: the same, read from their JSON
    shown = 0
    for _, _, content in _reports(camera):
        timelines = {d["rank"]: d for d in content["timelines"]["defects"]}
        x = np.asarray(content["timelines"]["trusted_days"], dtype=float)
        for crop in content["crops"]:
            t = next((t for t in strong if _match(t, [crop["row"]], [crop["col"]]) is not None), None)
            if t is None:
                continue
            shown += 1
            r = crop["radius"]
            assert crop["after_mean"][r][r] > crop["before_mean"][r][r] + 5.0
            assert crop["after_count"][r][r] + crop["before_count"][r][r] <= len(x)
            w = np.array([np.nan if v is None else v for v in timelines[crop["rank"]]["trusted_residuals"]])
            assert np.nanmean(w[x >= t["onset_days"]]) > np.nanmean(w[x < t["onset_days"]]) + 5.0
    assert shown >= 2
    # the timelines' dates are the trusted images' capture times (the simulator's manifest)
    trusted_days = sorted(days(datetime.fromisoformat(r["captured_at"])) for r in camera["trusted"])
    np.testing.assert_allclose(_reports(camera)[0][2]["timelines"]["trusted_days"], trusted_days, atol=1e-6)


@pytest.mark.slow
def test_the_mean_crops_are_the_trusted_images_mean_residuals(camera):
    """The model's before/after mean crops of two defects against scipy over the trusted images."""
    model = camera["model"]
    arrays, d = model.arrays, model.defects
    radius = (arrays["crop_before_mean"].shape[-1] - 1) // 2
    picks = [int(i) for i in np.argsort(-np.abs(np.nan_to_num(arrays["crop_after_mean"][:, radius, radius])))[:2]]
    sums = {i: {"before": [], "after": []} for i in picks}
    for row in sorted(camera["trusted"], key=lambda r: r["captured_at"]):
        image = read_image(row["path"])
        residual, clipped = _residual(image.pixels), _clipped(image.pixels, image.white_level)
        t = days(datetime.fromisoformat(row["captured_at"]))
        for i in picks:
            crop = _crop(residual, d["rows"][i], d["cols"][i], d["channels"][i], radius)
            crop[_crop(clipped.astype(float), d["rows"][i], d["cols"][i], d["channels"][i], radius) > 0] = np.nan
            sums[i]["after" if t >= model.fg.onset_time_[i] else "before"].append(crop)
    for i in picks:
        for side in ("before", "after"):
            stack = np.array(sums[i][side])
            counts = np.isfinite(stack).sum(0)
            np.testing.assert_array_equal(arrays[f"crop_{side}_count"][i], counts)
            with np.errstate(invalid="ignore"):
                want = np.nansum(stack, 0) / np.where(counts > 0, counts, np.nan)
            np.testing.assert_allclose(arrays[f"crop_{side}_mean"][i], want, atol=1e-4, equal_nan=True)


@pytest.mark.slow
def test_the_posterior_and_map_sections_hold_the_datings_numbers(camera):
    model = camera["model"]
    for row, _, content in _reports(camera):
        post = content["posterior"]
        grid, density = np.asarray(post["grid_days"]), np.asarray(post["density_per_day"])
        steps = 0.5 * (density[1:] + density[:-1]) * np.diff(grid)
        assert steps.sum() == pytest.approx(1.0, abs=1e-9)
        credible = content["dating"]["credible_range"]
        assert (post["credible_from_days"], post["credible_to_days"]) == (credible["from_days"], credible["to_days"])

        def mass(lo, hi):
            fine = np.union1d(grid, [lo, hi])
            values = np.interp(fine, grid, density)
            keep = (fine >= lo) & (fine <= hi)
            return float(np.sum(0.5 * (values[keep][1:] + values[keep][:-1]) * np.diff(fine[keep])))

        # the shaded range holds the posterior level, the hatched interval its stated probability
        assert mass(post["credible_from_days"], post["credible_to_days"]) == pytest.approx(credible["posterior_level"],
                                                                                          abs=2e-3)
        assert mass(post["interval_from_days"], post["interval_to_days"]) == pytest.approx(
            content["dating"]["interval"]["probability"], abs=5e-3)
        assert f"{datetime(1970, 1, 1) + timedelta(days=post['interval_from_days']):%Y-%m-%d}" \
            == content["dating"]["interval"]["from"]
        finite = model.fg.onset_time_[np.isfinite(model.fg.onset_time_)]
        assert post["onsets_days"] == sorted(set(finite.tolist()))
        m = content["defect_map"]
        assert m["frame"] == [192, 256]
        by_position = {(d["row"], d["col"]): d for d in content["defects"]}
        assert len(m["rows"]) == len(by_position)
        for r, c, onset, informative, rank in zip(m["rows"], m["cols"], m["onset_days"], m["informative"], m["rank"]):
            d = by_position[(r, c)]
            assert informative == d["informative"] and (onset is None) == (not informative)
            if informative:
                # the map's onset is the change point the intervals use, inside the table's 99 % range
                at = np.flatnonzero((np.asarray(model.defects["rows"]) == r) & (np.asarray(model.defects["cols"]) == c))
                assert onset in model.fg.onset_time_[at].tolist()
                assert d["onset_from_days"] <= onset <= d["onset_to_days"]
            assert rank is None or rank == d["rank"]
        assert sorted(x for x in m["rank"] if x is not None) == sorted(c["rank"] for c in content["crops"])


@pytest.mark.slow
def test_the_calibration_section_is_the_cross_fitted_pairs(camera):
    model = camera["model"]
    for _, text, content in _reports(camera):
        cal = content["calibration"]
        assert cal["available"] and cal["n_pairs"] == model.calibration["n_pairs"] == len(cal["raw_log10_lr"])
        probe, true = np.asarray(cal["probe_days"]), np.asarray(cal["true_days"])
        before = np.asarray(cal["before"])
        np.testing.assert_array_equal(before, true < probe)
        assert before.any() and (~before).any()
        calibrated = np.asarray(cal["calibrated_log10_lr"])
        lo, hi = cal["bounds"]
        assert calibrated.min() >= lo - 1e-9 and calibrated.max() <= hi + 1e-9
        assert cal["cllr"] == pytest.approx(_cllr(calibrated, before), rel=1e-9)
        assert cal["cllr"] == pytest.approx(model.calibration["cllr"], abs=0.01)
        assert cal["cllr_raw"] == pytest.approx(_cllr(np.clip(cal["raw_log10_lr"], -30, 30), before), rel=1e-9)
        assert cal["cllr"] < 0.5  # the held-out ratios carry evidence
        assert f"calibrated {cal['cllr']:.3f}" in text


@pytest.mark.slow
def test_the_configuration_records_hashes_versions_and_sources(camera):
    manifest_digest = hashlib.sha256(camera["manifest"].read_bytes()).hexdigest()
    model_digest = hashlib.sha256(camera["saved"].read_bytes()).hexdigest()
    arrays_digest = hashlib.sha256(camera["saved"].with_suffix(".npz").read_bytes()).hexdigest()
    for row, text, content in _reports(camera):
        config, run = content["configuration"], content["run"]
        assert config["model"]["format"] == "agetrace-device-model" and config["model"]["version"] == 2
        assert config["manifest"] == {"path": str(camera["manifest"]), "sha256": manifest_digest}
        digest = hashlib.sha256(open(row["path"], "rb").read()).hexdigest()
        assert config["questioned"]["sha256"] == content["image"]["sha256"] == digest
        assert config["questioned"]["exposure_source"] == "EXIF" and config["questioned"]["iso_source"] == "EXIF"
        assert config["questioned"]["exposure_s"] == pytest.approx(float(row["exposure_s"]), rel=1e-3)
        assert config["questioned"]["iso"] == pytest.approx(float(row["iso"]))
        assert config["versions"]["report"]["numpy"] == np.__version__ and config["versions"]["model_fit"]["numpy"]
        assert config["report"]["before_after"] == [f"{BEFORE_AFTER} 00:00"]
        assert run["model_sha256"] == model_digest and run["model_arrays_sha256"] == arrays_digest
        assert "--report" in run["command_line"] and "--save-model" in run["command_line"]
        assert datetime.fromisoformat(run["created"]).tzinfo is not None
        for value in (manifest_digest, digest, model_digest, arrays_digest, run["command_line"]):
            assert value in text.replace("&#x27;", "'").replace("&quot;", '"')


@pytest.mark.slow
def test_a_saved_and_loaded_model_gives_the_same_report(camera, tmp_path, capsys):
    """The fixture's reports came from the freshly fitted model; the saved one, loaded, writes the
    same report, number for number; only the record of the run itself differs."""
    row = camera["questioned"][0]
    folder = tmp_path / "again"
    assert main([row["path"], "--model", str(camera["saved"]), "--before-after", BEFORE_AFTER,
                 "--report", str(folder)]) == 0
    stem = report_stems([row["path"]])[0]
    assert f"evidence report: {folder / stem}.html" in capsys.readouterr().out
    fitted = json.loads((camera["report"] / f"{stem}.json").read_text())
    loaded = json.loads((folder / f"{stem}.json").read_text())
    run_fitted, run_loaded = fitted.pop("run"), loaded.pop("run")
    assert fitted == loaded
    assert run_fitted["model_source"].startswith("fitted in this run")
    assert run_loaded["model_source"].startswith("loaded")
    same = ("model_file", "model_sha256", "model_arrays_file", "model_arrays_sha256")
    assert {k: run_fitted[k] for k in same} == {k: run_loaded[k] for k in same}


@pytest.mark.slow
def test_a_model_whose_npz_is_missing_or_altered_is_refused(camera, tmp_path, capsys):
    model_path = tmp_path / "copy.json"
    shutil.copy(camera["saved"], model_path)
    # the JSON names its companion: the copy still points at model.npz
    shutil.copy(camera["saved"].with_suffix(".npz"), tmp_path / "model.npz")
    assert DeviceModel.load(model_path).arrays["trusted_days"].shape == camera["model"].arrays["trusted_days"].shape
    (tmp_path / "model.npz").unlink()
    with pytest.raises(ModelFormatError, match="model.npz beside it, which is missing"):
        DeviceModel.load(model_path)
    data = bytearray(camera["saved"].with_suffix(".npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "model.npz").write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="SHA-256"):
        DeviceModel.load(model_path)
    assert main([camera["questioned"][0]["path"], "--model", str(model_path)]) == 2
    assert "not the companion" in capsys.readouterr().err
    # a model saved under an .npz name would overwrite its own companion
    with pytest.raises(ValueError, match="not an .npz"):
        camera["model"].save(tmp_path / "model.npz")
    # saving writes both files and a load of them dates as the original
    camera["model"].save(tmp_path / "resaved.json")
    again = DeviceModel.load(tmp_path / "resaved.json")
    for name, value in camera["model"].arrays.items():
        np.testing.assert_array_equal(again.arrays[name], value)
        assert again.arrays[name].dtype == value.dtype
