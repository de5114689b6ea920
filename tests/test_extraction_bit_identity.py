"""Issue 19's changes to feature extraction leave every extracted feature and figure bit-identical.

The oracle is ``tests/data/extraction_reference.json``: hashes of a small default-like run (two
devices of the shared small synthetic dataset, the default methods, two split runs) computed by the
code at ``main`` before issue 19 (commit 94d1f29), with ``tests/extraction_reference.py``, which
documents the command. The cache entries compare the screening records and the residuals at the
candidates (and, through their file names, the content-addressed cache keys); the CSVs compare
every downstream figure (metrics, predictions, calibration, defects, splits).
"""

import json
import shutil
from pathlib import Path

import pytest
from extraction_reference import DATASET, summarise

REFERENCE = Path(__file__).parent / "data" / "extraction_reference.json"


@pytest.fixture(scope="module")
def summary(small_dataset, tmp_path_factory):
    from conftest import SMALL_DATASET

    assert DATASET == SMALL_DATASET, "the reference was made on the shared small dataset's parameters"
    work = tmp_path_factory.mktemp("bit-identity")
    shutil.copytree(small_dataset.root, work / "sim" / Path(small_dataset.root).name)
    return summarise(work, dataset_root=work / "sim" / Path(small_dataset.root).name)


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())


def test_the_images_are_those_the_reference_was_made_from(summary, reference):
    assert summary["images"] == reference["images"], (
        "the synthetic images differ from those of the reference (simulator or JPEG encoder changed): "
        "regenerate the reference with the code at main, as tests/extraction_reference.py says")


def test_cached_features_and_their_keys_are_bit_identical(summary, reference):
    assert sorted(summary["cache"]) == sorted(reference["cache"]), "cache keys (content and parameters) changed"
    changed = [key for key in reference["cache"] if summary["cache"][key] != reference["cache"][key]]
    assert changed == []


def test_every_csv_of_the_run_is_bit_identical(summary, reference):
    assert sorted(summary["outputs"]) == sorted(reference["outputs"])
    changed = [name for name in reference["outputs"] if summary["outputs"][name] != reference["outputs"][name]]
    assert changed == []
    assert "metrics.csv" in summary["outputs"]
