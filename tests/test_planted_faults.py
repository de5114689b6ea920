"""Acceptance of issue 21: a run on a manifest with planted faults keeps every clean device's
metrics and predictions byte-identical to a clean run, and lists every fault with its manifest
line in failures.csv or excluded.csv.

The faults go into SIM-alpha01 (a truncated JPEG, an empty file, a text file named .jpg, a missing
file, a PNG copy of a JPEG's pixels, a row outside every class) and into a device that cannot be
analysed at all (one image); SIM-beta01 and SIM-gamma01 are clean and listed *after* the faulty
devices, so that any dependence of their results on the other devices would show.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.data.imageio import read_image
from pipeline.data.manifest import load_manifest
from csv_rows import read_csv, write_rows

CLEAN = ("SIM-beta01", "SIM-gamma01")
CFG = {"methods": ("fg", "nb"), "runs": 2, "workers": 1, "progress": False}


def device_lines(path: Path, devices) -> list[str]:
    """The lines of a CSV file that belong to the given devices, as bytes on disk."""
    return [line for line in path.read_text().splitlines() if any(f",{d}," in line or line.startswith(f"{d},")
                                                                  for d in devices)]


def test_planted_faults_change_no_clean_device_and_are_all_listed(small_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(small_dataset.root, root)
    root = root.resolve()
    every = read_csv(root / "manifest.csv")
    clean_rows = [r for r in every if r["device"] in CLEAN]
    spec = root / "classes.toml"
    clean_out = tmp_path / "clean"
    run_experiment(load_manifest(write_rows(root / "clean.csv", clean_rows), class_spec=spec), clean_out,
                   ExperimentConfig(**CFG))

    alpha = [dict(r) for r in every if r["device"] == "SIM-alpha01"]
    rows, faults = list(alpha), {}  # faults: path as written in the manifest -> (file, pattern of the reason)

    def fault(i, data: bytes, pattern: str, where: str = "failures"):
        (root / alpha[i]["path"]).write_bytes(data)
        faults[alpha[i]["path"]] = (where, pattern)

    fault(3, (root / alpha[3]["path"]).read_bytes()[:3000], "truncated|premature")
    fault(7, b"", "empty file")
    fault(11, b"<!DOCTYPE html><html><body>Service unavailable</body></html>\n", "text")
    (root / alpha[15]["path"]).unlink()
    faults[alpha[15]["path"]] = ("failures", "not found")
    png = str(Path(alpha[20]["path"]).with_name("SIM-alpha01_copy.png"))
    Image.fromarray(read_image(root / alpha[20]["path"]).pixels).save(root / png)
    rows.insert(rows.index(alpha[20]) + 1, {**alpha[20], "path": png})
    faults[png] = ("excluded", "same pixels as line")
    outside = str(Path(alpha[24]["path"]).with_name("SIM-alpha01_slot12.jpg"))
    shutil.copy(root / alpha[24]["path"], root / outside)
    rows.append({**alpha[24], "path": outside, "timeslot": "12", "label": ""})  # slot 12: in no class
    faults[outside] = ("excluded", "slot 12")
    lonely = [{**r, "device": "SIM-lonely"} for r in every if r["device"] == "SIM-alpha02"][:1]
    faulty_rows = rows + lonely + clean_rows
    faulty_out = tmp_path / "faulty"
    manifest = load_manifest(write_rows(root / "faulty.csv", faulty_rows), class_spec=spec, check_files=False)
    run_experiment(manifest, faulty_out, ExperimentConfig(**CFG))

    # every clean device's rows, byte for byte
    for name in ("metrics.csv", "predictions.csv"):
        clean_lines = device_lines(clean_out / name, CLEAN)
        assert clean_lines and device_lines(faulty_out / name, CLEAN) == clean_lines, name
        assert (faulty_out / name).read_text().splitlines()[0] == (clean_out / name).read_text().splitlines()[0]

    # every fault, with its manifest line (the header is line 1)
    line_of = {r["path"]: i + 2 for i, r in enumerate(faulty_rows)}
    listed = {"failures": {}, "excluded": {}}
    for f in read_csv(faulty_out / "failures.csv"):
        listed["failures"][f["image"]] = f  # relative to the manifest's folder, as every output
    for e in read_csv(faulty_out / "excluded.csv"):
        listed["excluded"][e["image"] or e["device"]] = e
    for path, (where, pattern) in faults.items():
        entry = listed[where].get(path)
        assert entry is not None, (path, where, listed[where].keys())
        assert entry["line"] == str(line_of[path]), (path, entry)
        assert any(p in entry["reason"].lower() for p in pattern.split("|")), (path, entry["reason"])
    assert set(listed["failures"]) == {p for p, (w, _) in faults.items() if w == "failures"}
    lonely_entry = listed["excluded"]["SIM-lonely"]
    assert lonely_entry["line"] == "" and f"manifest line(s) {line_of[lonely[0]['path']]}" in lonely_entry["reason"]
    assert set(listed["excluded"]) == {p for p, (w, _) in faults.items() if w == "excluded"} | {"SIM-lonely"}
    assert json.loads((faulty_out / "config.json").read_text())["status"] == "complete"
