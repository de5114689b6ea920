"""The run folder's contract (pipeline.analysis.runfolder) on a folder the current code wrote.

One device of the small synthetic dataset, fg only, one split run: every part and the record
parse into the documented dataclasses with the fields the readers use, a write/read round trip
keeps them, and a folder written with an older (or no) schema version is refused with a message
saying how to rerun.
"""

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from csv_rows import read_csv, write_rows
from pipeline.analysis.config import ConfigMismatchError, ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.analysis.runfolder import (SCHEMA_VERSION, STATUS_COMPLETE, ManifestRecord, Part, PartDefects,
                                         RunFolder, RunFolderSchemaError, RunRecord, read_part, read_record,
                                         write_part)
from pipeline.data.manifest import load_manifest
from pipeline.data.splits import Split

DEVICE = "SIM-alpha01"


@pytest.fixture(scope="module")
def folder(small_dataset, tmp_path_factory) -> RunFolder:
    root = tmp_path_factory.mktemp("runfolder")
    (root / "data" / "images").mkdir(parents=True)
    shutil.copytree(small_dataset.root / "images" / DEVICE, root / "data" / "images" / DEVICE)
    shutil.copy(small_dataset.root / "classes.toml", root / "data" / "classes.toml")
    write_rows(root / "data" / "alpha.csv",
               [r for r in read_csv(small_dataset.root / "manifest.csv") if r["device"] == DEVICE])
    out = root / "run"
    run_experiment(load_manifest(root / "data" / "alpha.csv"), out,
                   ExperimentConfig(methods=("fg",), runs=1, workers=1, progress=False))
    return RunFolder(out)


def _copy(folder: RunFolder, tmp_path: Path) -> RunFolder:
    shutil.copytree(folder.path, tmp_path / "copy")
    return RunFolder(tmp_path / "copy")


def test_the_record_parses_with_every_documented_field(folder):
    record = folder.record
    assert isinstance(record, RunRecord) and isinstance(record.manifest, ManifestRecord)
    assert record.schema_version == SCHEMA_VERSION and record.status == STATUS_COMPLETE
    assert record.tool == "pipeline.ml_age" and len(record.code) == 64
    assert record.config["methods"] == ["fg"] and record.result_config["runs"] == 1
    assert set(record.device_seeds) == {DEVICE} and record.versions["numpy"]
    assert record.reuse["parts_computed"] == 1 and record.feature_cache["folder"]
    assert record.n_failures == 0 and record.skipped_devices == [] and record.finished
    assert record.srnet is None and record.resumed is None  # fg only, first run: absent from the file
    raw = json.loads(folder.config_path.read_text())
    documented = {f.name for f in fields(RunRecord)} - {"extra"}
    assert set(raw) <= documented | set(record.extra)
    assert RunRecord.from_json(record.to_json()) == record


def test_every_part_parses_with_every_documented_field(folder):
    assert folder.devices() == [DEVICE]
    parts = folder.parts(DEVICE)
    assert list(parts) == [0]
    for run, part in parts.items():
        raw = json.loads(folder.part_path(DEVICE, run).read_text())
        assert set(raw) <= {f.name for f in fields(Part)}
        assert isinstance(part, Part) and (part.device, part.run) == (DEVICE, run)
        assert part.methods == ["fg"] and {m["method"] for m in part.metrics} == {"fg"}
        assert part.predictions and all(p["method"] == "fg" for p in part.predictions)
        assert isinstance(part.defects, PartDefects)
        assert set(raw["defects"]) == {f.name for f in fields(PartDefects)}
        n = len(part.defects)
        assert all(len(getattr(part.defects, f.name)) == n for f in fields(PartDefects))
        assert isinstance(part.frame, tuple) and part.kind in ("cfa", "rgb", "gray")
        assert part.n_candidates >= n
        assert set(part.calibration) <= {"fg"} and part.srnet_config is None
        if part.fg_model is not None:
            assert part.fg_classifier().classes_.size >= 2
        split = folder.split(DEVICE, run)
        assert isinstance(split, Split) and split.seed == part.seed
        assert folder.defects_path(DEVICE, run).is_file()
        assert Part.from_json(part.to_json()) == part


def test_a_part_survives_a_write_and_read(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    part = copy.part(DEVICE, 0)
    part.methods = ["fg", "nb"]
    write_part(copy.path, part)
    assert read_part(copy.part_path(DEVICE, 0)) == part


@pytest.mark.parametrize("schema", [None, 0])
def test_a_folder_of_an_older_schema_is_refused_with_how_to_rerun(folder, tmp_path, schema):
    copy = _copy(folder, tmp_path)
    raw = json.loads(copy.config_path.read_text())
    if schema is None:
        del raw["schema_version"]
    else:
        raw["schema_version"] = schema
    copy.config_path.write_text(json.dumps(raw))
    with pytest.raises(RunFolderSchemaError, match="made by an older version of agetrace") as caught:
        read_record(copy.path)
    message = str(caught.value)
    assert str(copy.path) in message and f"this version reads {SCHEMA_VERSION}" in message
    assert "python -m pipeline.ml_age" in message and "--out <new folder>" in message
    assert isinstance(caught.value, ConfigMismatchError)  # the command lines report it as a clear error
    # resuming into it is refused the same way, before anything is written
    before = copy.config_path.read_text()
    with pytest.raises(RunFolderSchemaError, match="older version"):
        run_experiment(load_manifest(Path(raw["manifest"]["path"])), copy.path,
                       ExperimentConfig(methods=("fg",), runs=1, workers=1, progress=False))
    assert copy.config_path.read_text() == before


def test_a_folder_without_a_record_is_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an ml_age output folder"):
        RunFolder(tmp_path).record
