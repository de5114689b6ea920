"""The synthetic camera of the dating tests (issue 14), fitted once per test session.

One synthetic camera whose images are spread over the whole period (every acquisition slot of
two years, not two classes), 256×192. Every 6th image (in time) is kept out of the trusted
manifest and dated as a questioned image; its true capture time is known from the simulator's
manifest, and every defect's position and onset from its ``defects.csv``.

The one fit: ``python -m pipeline.date`` on the first three questioned images with
``--trusted --save-model --json --report``, so that both ``test_dating_model.py`` and
``test_dating_report.py`` test the command, the saved model and the reports of that one run
(the ``dating_camera`` fixture of ``conftest.py``).
"""

from __future__ import annotations

from csv_rows import read_csv, write_rows

DATASET = {
    "seed": 20141006,
    "devices": [{"name": "SIM-alpha01", "model": "alpha", "serial": "SA1-00417"}],
    "models.alpha.width": 256,
    "models.alpha.height": 192,
    "classes": [{"label": 0, "slots": [1, 12]}, {"label": 1, "slots": [13, 25]}],
    "capture.images_per_class": 60,
    "defects.rate_per_year": 30.0,
}
#: the --before-after date of the fixture's run
BEFORE_AFTER = "2015-11-01"


def build_dating_camera(tmp_path_factory) -> dict:
    """Simulate the camera, run the command once, and return what the tests need.

    Returns
    -------
    dict
        ``model`` (the saved model, loaded), ``manifest`` (trusted CSV), ``questioned`` and
        ``trusted`` (manifest rows with absolute paths), ``folder``, ``saved`` (model JSON),
        ``first`` (the run's --json), ``report`` (the run's --report folder), ``code`` (its exit
        status), ``defects_csv`` (the simulator's ground truth) and ``dated`` (how many
        questioned images the run was given).
    """
    from pipeline.sim import default_dataset
    from pipeline.date import main
    from pipeline.dating.model import DeviceModel

    dataset = default_dataset(tmp_path_factory.mktemp("continuous"), workers=1, progress=False, **DATASET)
    rows = sorted(read_csv(dataset.manifest_path), key=lambda r: r["captured_at"])
    for row in rows:
        row["path"] = str(dataset.root / row["path"])
    questioned = rows[3::6]
    trusted = [r for r in rows if r not in questioned]
    folder = tmp_path_factory.mktemp("dating")
    manifest = write_rows(folder / "trusted.csv", trusted)
    saved, first, report = folder / "model.json", folder / "first.json", folder / "report"
    code = main([r["path"] for r in questioned[:3]] + ["--trusted", str(manifest), "--save-model", str(saved),
                                                        "--before-after", BEFORE_AFTER, "--json", str(first),
                                                        "--report", str(report), "--no-progress", "--workers", "1"])
    return {"model": DeviceModel.load(saved), "manifest": manifest, "questioned": questioned, "trusted": trusted,
            "folder": folder, "saved": saved, "first": first, "report": report, "code": code,
            "defects_csv": dataset.defects_path, "dated": 3}
