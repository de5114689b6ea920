"""``python -m pipeline.date`` and its device model (issue 14, points 1 and 2).

One synthetic camera whose images are spread over the whole period (every acquisition slot of
two years, not two classes), 256×192, fitted once per session (tests/dating_camera.py). Every 6th
image (in time) is kept out of the trusted manifest and dated as a questioned image; its true
capture time is known from the simulator's manifest. A constant answer (the whole trusted period)
would cover every date but be as wide as the period: the tests ask for coverage *and* ranges far
narrower than the period.
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from csv_rows import write_rows
from pipeline.date import main
from pipeline.dating.model import FORMAT_VERSION, DeviceModel, ModelFormatError, days
from pipeline.data.manifest import load_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def camera(dating_camera):
    """The session's dating camera (tests/dating_camera.py): one fit for both dating test files."""
    return dating_camera


def test_questioned_images_are_dated_within_narrow_ranges(camera):
    model = camera["model"]
    start, end = model.period
    results = [(model.date(r["path"]), days(datetime.fromisoformat(r["captured_at"]))) for r in camera["questioned"]]
    inside = [(res, t) for res, t in results if start <= t <= end]
    assert all(res["status"] == "dated" for res, _ in inside)
    covered = [res["credible_range"]["from_days"] <= t <= res["credible_range"]["to_days"] for res, t in inside]
    widths = [res["credible_range"]["to_days"] - res["credible_range"]["from_days"] for res, _ in inside]
    assert len(inside) >= 15 and np.mean(covered) >= 0.85, (np.mean(covered), len(inside))
    assert np.median(widths) < 0.5 * (end - start)  # a constant answer spans 0.95 of it
    # the most probable interval holds the true date for most images
    hits = [res["interval"]["from_days"] <= t <= res["interval"]["to_days"] for res, t in inside]
    assert np.mean(hits) >= 0.6
    # the held-out figures of the model itself are reported
    assert model.calibration is not None and len(model.calibration["needed_levels"]) >= 80


def test_before_after_ratios_point_the_right_way(camera):
    model = camera["model"]
    middle = datetime(2015, 11, 1)
    early = [r for r in camera["questioned"] if datetime.fromisoformat(r["captured_at"]) < datetime(2015, 6, 1)]
    late = [r for r in camera["questioned"] if datetime.fromisoformat(r["captured_at"]) > datetime(2016, 4, 1)]
    lr = {name: [next(e for e in model.date(r["path"], before_after=[middle])["before_after"]
                      if e["date"] == "2015-11-01 00:00")["log10_lr"] for r in group]
          for name, group in (("early", early), ("late", late))}
    assert np.median(lr["early"]) > 1 and np.median(lr["late"]) < -1, lr
    bounds = model.calibration["table"]["bounds"][1]
    assert all(bounds[0] - 1e-9 <= v <= bounds[1] + 1e-9 for v in lr["early"] + lr["late"])
    # a D outside the trusted period gets no LR: 'after D' (or 'before D') would be empty there, and
    # the prior's edge would show as the strongest support the calibration allows
    outside = model.date(early[0]["path"], before_after=[datetime(2030, 1, 1), datetime(2010, 1, 1)])["before_after"]
    entries = [e for e in outside if e["date"][:4] in ("2030", "2010")]
    assert len(entries) == 2
    for entry in entries:
        assert entry["log10_lr"] is None and entry["raw_log10_lr"] is None
        assert "outside the trusted period" in entry["note"]


def test_a_trusted_image_is_refused_unless_allowed(camera):
    model = camera["model"]
    path = camera["trusted"][10]["path"]
    refused = model.date(path)
    assert refused["status"] == "refused" and "SHA-256" in refused["reason"] and "--allow-trusted" in refused["reason"]
    assert model.date(path, allow_trusted=True)["status"] == "dated"


def test_an_image_of_another_frame_is_excluded_with_the_reason(camera, tmp_path):
    source = camera["questioned"][0]["path"]
    rotated = tmp_path / "rotated.png"
    Image.open(source).transpose(Image.Transpose.ROTATE_90).save(rotated)
    result = camera["model"].date(rotated)
    assert result["status"] == "excluded" and "192" in result["reason"] and "256" in result["reason"]


def test_a_saved_model_dates_exactly_as_the_fitted_one(camera, tmp_path):
    model = camera["model"]
    path = tmp_path / "model.json"
    model.save(path)
    again = DeviceModel.load(path, device="SIM-alpha01")
    for row in camera["questioned"][:4]:
        assert json.dumps(again.date(row["path"], before_after=[datetime(2015, 11, 1)])) == \
            json.dumps(model.date(row["path"], before_after=[datetime(2015, 11, 1)]))
    with pytest.raises(ModelFormatError, match="not of 'SIM-beta01'"):
        DeviceModel.load(path, device="SIM-beta01")
    body = json.loads(path.read_text())
    body["version"] = FORMAT_VERSION + 1
    (tmp_path / "newer.json").write_text(json.dumps(body))
    with pytest.raises(ModelFormatError, match="format version"):
        DeviceModel.load(tmp_path / "newer.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelFormatError, match="not an agetrace device model"):
        DeviceModel.load(tmp_path / "other.json")


def test_the_command_with_trusted_images_and_with_the_saved_model(camera, tmp_path, capsys):
    """The fixture fitted through the command (--trusted --save-model); the saved model gives
    exactly the same output, and a trusted image is refused with exit status 1."""
    assert camera["code"] == 0
    questioned = [r["path"] for r in camera["questioned"][:3]]
    second = tmp_path / "b.json"
    assert main([*questioned, "--model", str(camera["saved"]), "--before-after", "2015-11-01",
                 "--json", str(second)]) == 0
    text = capsys.readouterr().out
    assert "most probable interval between onsets" in text and "95 % range" in text
    assert "D = 2015-11-01 00:00: log10 LR" in text
    assert json.loads(camera["first"].read_text())["results"] == json.loads(second.read_text())["results"]
    assert main([camera["trusted"][0]["path"], "--model", str(camera["saved"])]) == 1
    assert "not dated (refused)" in capsys.readouterr().out


def test_a_manifest_built_from_exif_without_labels_is_enough(camera, tmp_path, capsys):
    """The README's workflow: `manifest build` writes no label column; dating needs none."""
    columns = ("path", "device", "captured_at", "exposure_s", "iso")
    unlabelled = write_rows(tmp_path / "built.csv", [{k: r[k] for k in columns} for r in camera["trusted"]])
    from pipeline.data.errors import ManifestError

    with pytest.raises(ManifestError, match="no label column"):
        load_manifest(unlabelled)
    manifest = load_manifest(unlabelled, needs_labels=False)
    assert len(manifest.rows) == len(camera["trusted"]) and {r.label for r in manifest.rows} == {None}
    assert main([camera["questioned"][0]["path"], "--trusted", str(unlabelled), "--no-progress", "--workers", "1"]) == 0
    assert "most probable interval between onsets" in capsys.readouterr().out


def test_too_few_trusted_images_or_no_capture_times_fail_clearly(camera, tmp_path, capsys):
    few = write_rows(tmp_path / "few.csv", camera["trusted"][:12])
    assert main([camera["questioned"][0]["path"], "--trusted", str(few), "--no-progress"]) == 2
    assert "needs at least 20" in capsys.readouterr().err
    undated = write_rows(tmp_path / "undated.csv", [{**r, "captured_at": "", "timeslot": "1"} for r in camera["trusted"]])
    with pytest.raises(ValueError, match="capture time"):
        DeviceModel.fit(load_manifest(undated), "SIM-alpha01")
