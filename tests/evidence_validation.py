"""Run the defect-based methods on the four validation sets and measure them against an oracle.

The sets (issue "Evidence that holds on real camera images"):

* ``synthetic``: the embedded synthetic default (simulated aging camera, JPEG);
* ``synthetic-scene-bias``: the same with ``scenes.scene_bias = 1`` (scene content and age class
  fully confounded);
* ``real-dng``: real Bayer mosaics of three camera bodies with injected defects, as CFA DNG
  (:mod:`real_mosaics`);
* ``real-jpeg``: the same mosaics developed to JPEG by LibRaw, exposure and ISO in EXIF.

For each set :func:`evaluate_set` runs ``ml_age``'s experiment (FG, NB, SVM on identical
repeated splits) and the independent reference of :mod:`age_reference` (which knows the true
defects and shares no code with the project) on the same split files, and returns per-method
accuracy per (device, run) and the calibration figures pooled over the set. Used by
``tests/test_defect_age_acceptance.py`` (thresholds) and ``benchmarks/validate_evidence.py``
(the table in ``benchmarks/VALIDATION.md``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from age_reference import reference_accuracy
from pipeline.analysis.metrics import evidence_metrics
from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.data.manifest import load_manifest

SETS = ("synthetic", "synthetic-scene-bias", "real-dng", "real-jpeg")
DEFECT_METHODS = ("fg", "nb", "svm")


@dataclass
class SetResult:
    """What one validation set gave."""

    name: str
    out: Path
    accuracy: dict = field(default_factory=dict)     # method -> {(device, run): accuracy}
    evidence: dict = field(default_factory=dict)     # method -> evidence_metrics pooled over the set
    uses: dict = field(default_factory=dict)         # what FG was fitted with: exposure / iso per device

    def mean(self, method: str) -> float:
        return float(np.mean(list(self.accuracy[method].values())))

    def paired(self, method: str, keys) -> np.ndarray:
        return np.array([self.accuracy[method][k] for k in keys])


def dataset_folder(name: str, data_root: Path, seed: int = 0) -> tuple[Path, str]:
    """Build (or reuse) one set; returns its folder and the reference's kind."""
    if name.startswith("synthetic"):
        from pipeline.sim import default_dataset

        overrides = {"scenes.scene_bias": 1.0} if name == "synthetic-scene-bias" else {}
        return Path(default_dataset(progress=False, **overrides).manifest_path).parent, "jpeg"
    import real_mosaics

    kind = name.split("-")[1]
    folder = Path(data_root) / f"{name}-seed{seed}"
    if not (folder / "manifest.csv").exists():
        real_mosaics.build(folder, seed=seed, kind=kind)
    return folder, "raw" if kind == "dng" else "jpeg"


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def evaluate_set(name: str, data_root: Path, out_root: Path, *, runs: int = 10, seed: int = 0, data_seed: int = 0,
                 manifest_name: str = "manifest.csv", cache_dir: Path | None = None,
                 with_reference: bool = True) -> SetResult:
    """Run the experiment (and the reference) on one set; see the module docstring."""
    folder, kind = dataset_folder(name, data_root, data_seed)
    manifest = load_manifest(folder / manifest_name)
    out = Path(out_root) / f"{name}-{Path(manifest_name).stem}-seed{seed}"
    cfg = ExperimentConfig(methods=DEFECT_METHODS, runs=runs, seed=seed, progress=False,
                           cache_dir=str(cache_dir) if cache_dir else None)
    run_experiment(manifest, out, cfg)
    result = SetResult(name, out)
    metrics = _read_csv(out / "metrics.csv")
    for method in DEFECT_METHODS:
        result.accuracy[method] = {(m["device"], int(m["run"])): float(m["accuracy"])
                                   for m in metrics if m["method"] == method}
    predictions = _read_csv(out / "predictions.csv")
    classes = sorted({int(p["true"]) for p in predictions})
    for method in DEFECT_METHODS:
        preds = [p for p in predictions if p["method"] == method]
        proba = np.array([[float(p[f"p_{c}"]) for c in classes] for p in preds])
        llr = np.array([[float(p[f"log10_lr_{c}"]) for c in classes] for p in preds])
        result.evidence[method] = evidence_metrics(proba, llr, np.array([int(p["true"]) for p in preds]), classes)
    from pipeline.analysis.provenance import read_json

    for part in sorted((out / "parts").glob("*/run_00.json")):
        fg = read_json(part).get("fg_model", {})
        result.uses[part.parent.name] = {"exposure": fg.get("uses_exposure_"), "iso": fg.get("uses_iso_")}
    if with_reference:
        ref = reference_accuracy(folder, out, kind)
        result.accuracy["reference"] = dict(ref.accuracy)
    return result
