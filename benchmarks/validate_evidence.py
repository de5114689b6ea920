"""The validation table of the defect-based methods: accuracy against the independent reference
and calibration, on the synthetic default, its scene_bias = 1 variant and the real-mosaic DNG and
JPEG sets (two data seeds for the real sets), 10 repeated splits each.

    python benchmarks/validate_evidence.py [--runs 10] [--work /tmp/agetrace-validation] [--out benchmarks/VALIDATION.md]

Writes a markdown table (printed too). The sets and the reference are those of
``tests/test_defect_age_acceptance.py`` (``tests/evidence_validation.py``, ``tests/age_reference.py``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

from machine import commit, cpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from evidence_validation import evaluate_set  # noqa: E402

HEADER = """# Validation of the defect-based methods (issue 13)

Commit {commit}, {date}. Machine: {cpu}, {cores} cores, {machine}, Python {python}.
Command: `python benchmarks/validate_evidence.py --runs {runs} --out benchmarks/VALIDATION.md`.

Each row: {runs} repeated stratified splits of one set, defects identified from each run's training
images, every method's accuracy (its own decision), and the calibrated evidence pooled over the
runs' test images (`n`). The reference (`tests/age_reference.py`) knows the true defects and
imports nothing of the project: the exact generative likelihood on RAW, per-defect densities
learned on the training split on JPEG. The real sets are three real Bayer raws (libraw-cffi,
tinydng and rawpipe sdists, pinned by SHA-256; `tests/real_mosaics.py`) with defects injected
into the mosaic, 40 images per class, exposures 1/1000–1/15 s, ISO 100–1600, as CFA DNG and as
LibRaw-developed JPEG; data seed 0 and 1 are two independent draws of scenes, defects and
exposures. Cllr is in bits (1 = no information); ECE over 10 bins of the top-label probability;
the last columns count test images wrong with a calibrated probability ≥ 0.99. The seconds are
wall time with data generation, not a benchmark.

The reference's JPEG densities are learned from each split's few training images per defect,
so FG can do better than it on JPEG; the reference is an upper bound only on RAW, where its
likelihood is exact.
"""

ROWS = [("synthetic", 0), ("synthetic-scene-bias", 0), ("real-dng", 0), ("real-dng", 1), ("real-jpeg", 0),
        ("real-jpeg", 1)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--work", type=Path, default=Path("/tmp/agetrace-validation"))
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = p.parse_args(argv)
    lines = ["| set | data seed | FG % | reference % | NB % | SVM % | FG Cllr | NB Cllr | SVM Cllr | "
             "FG ECE % | NB ECE % | SVM ECE % | wrong at p ≥ 0.99 (FG/NB/SVM) | n | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, seed in ROWS:
        start = time.perf_counter()
        r = evaluate_set(name, args.work / "data", args.work / "runs" / f"data{seed}", runs=args.runs,
                         data_seed=seed, cache_dir=args.work / "cache" / f"{name}-{seed}")
        e = r.evidence
        line = (f"| {name} | {seed} | {100 * r.mean('fg'):.1f} | {100 * r.mean('reference'):.1f} | "
                f"{100 * r.mean('nb'):.1f} | {100 * r.mean('svm'):.1f} | "
                + " | ".join(f"{e[m]['cllr']:.3f}" for m in ("fg", "nb", "svm")) + " | "
                + " | ".join(f"{100 * e[m]['ece']:.1f}" for m in ("fg", "nb", "svm")) + " | "
                + "/".join(f"{100 * e[m]['confident_wrong']:.1f}" for m in ("fg", "nb", "svm"))
                + f" | {e['fg']['n']} | {time.perf_counter() - start:.0f} |")
        print(line, flush=True)
        lines.append(line)
    text = HEADER.format(commit=commit(), date=datetime.date.today().isoformat(), cpu=cpu(),
                         cores=os.cpu_count(), machine=f"{platform.machine()} {platform.system()}",
                         python=platform.python_version(), runs=args.runs) + "\n" + "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
