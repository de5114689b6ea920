"""A small default-like run whose every extracted feature and figure is summarised by hashes.

``tests/data/extraction_reference.json`` holds the summary of this run as the code at ``main``
(94d1f29, before issue 19) computed it; ``tests/test_extraction_bit_identity.py`` runs the same
run with the code under test and compares. Regenerate (only when a change is *meant* to alter
results, and say so in the commit) with::

    .venv/bin/python tests/extraction_reference.py tests/data/extraction_reference.json

The committed reference was made from a plain export of main at 94d1f29 (``git archive 94d1f29 |
tar -x -C /tmp/t19main``), with this file copied in, by
``cd /tmp/t19main && /work/wt19/.venv/bin/python tests/extraction_reference.py OUT.json``.

What is summarised:

* ``images``: SHA-256 of every image file of the two devices (if these differ, the
  simulator or the JPEG encoder changed, and the comparison below means nothing);
* ``cache``: for every entry of the per-image feature cache (screening records and residuals at
  the candidates), its file name (content hash and parameter fingerprint: the cache keys) and the
  SHA-256 of each stored array's dtype, shape and bytes;
* ``outputs``: SHA-256 of ``metrics.csv`` and of every other CSV of the run folder (the dataset's
  folder, which split files name, replaced by ``<dataset>``).

This module imports only the run's entry point (``run_experiment``); it is the oracle's harness,
not a reimplementation, so that the comparison is between two versions of the code.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

#: 3 devices of 256×192 JPEGs, 16 images per class (as the whole-run tests use)
DATASET = {f"models.{m}.{k}": v for m in ("alpha", "beta", "gamma") for k, v in (("width", 256), ("height", 192))}
DATASET["capture.images_per_class"] = 16
#: two of its devices (two JPEG qualities), the default methods and blocks, two split runs
DEVICES = ("SIM-alpha01", "SIM-gamma01")
RUNS = 2


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_hash(array: np.ndarray) -> str:
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def summarise(work: Path, dataset_root: Path | None = None) -> dict:
    """Run the experiment under ``work`` and return the summary.

    ``dataset_root``: a writable copy of the synthetic dataset of :data:`DATASET`; generated under
    ``work`` when None.
    """
    from pipeline.analysis.config import ExperimentConfig
    from pipeline.analysis.experiment import run_experiment
    from pipeline.data.manifest import load_manifest

    if dataset_root is None:
        from pipeline.sim import default_dataset

        dataset_root = default_dataset(work / "sim", progress=False, workers=1, **DATASET).root
    root = Path(dataset_root)
    images = {p.relative_to(root).as_posix(): _sha(p.read_bytes())
              for device in DEVICES for p in sorted((root / "images" / device).rglob("*")) if p.is_file()}
    with open(root / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(root / "two_devices.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["device"] in DEVICES)
    out = work / "run"
    result = run_experiment(load_manifest(root / "two_devices.csv"), out,
                            ExperimentConfig(runs=RUNS, workers=1, progress=False, cache_dir=str(work / "cache")))
    if result["status"] != "complete":
        raise RuntimeError(f"the reference run did not complete: {result['status']}")
    cache = {}
    for entry in sorted((work / "cache").rglob("*.npz")):
        with np.load(entry, allow_pickle=False) as data:
            cache[f"{entry.parent.parent.name}/{entry.name}"] = {name: _array_hash(data[name])
                                                                 for name in sorted(data.files)}
    # the split files name images by absolute path: the dataset's folder is replaced by a placeholder
    outputs = {p.relative_to(out).as_posix(): _sha(p.read_bytes().replace(str(root).encode(), b"<dataset>"))
               for p in sorted(out.rglob("*.csv"))}
    return {"images": images, "cache": cache, "outputs": outputs}


def main(argv: list[str]) -> None:
    import tempfile

    if len(argv) != 1:
        raise SystemExit("usage: python tests/extraction_reference.py OUTPUT.json")
    with tempfile.TemporaryDirectory() as work:
        summary = summarise(Path(work))
    Path(argv[0]).parent.mkdir(parents=True, exist_ok=True)
    Path(argv[0]).write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(sys.argv[1:])
