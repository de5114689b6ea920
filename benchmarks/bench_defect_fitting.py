"""The defect-based methods' fits over the worker pool against one after another, in one interleaved run.

Run from the repository root (a script, not collected by ``pytest``)::

    .venv/bin/python benchmarks/bench_defect_fitting.py              # synthetic default, 10 runs, 3 rounds
    .venv/bin/python benchmarks/bench_defect_fitting.py --quick      # 2 runs, 1 round: does it run?

Each round runs ``ml_age``'s experiment (:func:`pipeline.analysis.experiment.run_experiment`, FG,
NB and SVM, ``--runs`` split runs, ``--workers`` processes) on the synthetic default twice, in a
rotated order (A/B alternating, so a change of load hits both sides alike), into fresh output
folders over one feature cache that a first, untimed run filled (so both sides read the same
cached features and differ only in where the fits run):

* ``serial``: every run's grid search and cross-fitted calibration in the calling process, one
  run after another (what the experiment did before; here by handing :func:`_complete_part` no
  pre-fitted result, its in-process path);
* ``pool``: a device's runs fitted side by side over the experiment's worker pool
  (:func:`pipeline.analysis.experiment._fit_defect_methods`).

The script checks that both sides wrote byte-identical ``predictions.csv``, ``metrics.csv`` and
``calibration.csv``, and prints each side's median time over rounds and the median of the
per-round ratio serial / pool.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import statistics
import tempfile
import time
from pathlib import Path

import os

from machine import commit, cpu

TABLES = ("predictions.csv", "metrics.csv", "calibration.csv")


def run_once(side: str, out: Path, cache: Path, runs: int, workers: int) -> float:
    import pipeline.analysis.experiment as experiment
    from pipeline.analysis.config import ExperimentConfig
    from pipeline.data.manifest import load_manifest
    from pipeline.sim import default_dataset

    manifest = load_manifest(default_dataset(progress=False).manifest_path)
    cfg = ExperimentConfig(methods=("fg", "nb", "svm"), runs=runs, seed=0, workers=workers, progress=False,
                           cache_dir=str(cache))
    pooled = experiment._fit_defect_methods
    if side == "serial":
        experiment._fit_defect_methods = lambda *args, **kwargs: {}
    try:
        start = time.perf_counter()
        experiment.run_experiment(manifest, out, cfg)
        return time.perf_counter() - start
    finally:
        experiment._fit_defect_methods = pooled


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="split runs per device (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--workers", type=int, default=None, help="pool processes (default: every core)")
    parser.add_argument("--quick", action="store_true", help="2 runs, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.rounds = 2, 1
    logging.basicConfig(level=logging.WARNING)
    from pipeline.features.executor import default_workers

    workers = args.workers or default_workers()
    print(f"commit {commit()}, {cpu()}, {os.cpu_count()} cores")
    print(f"synthetic default, FG/NB/SVM, {args.runs} runs, {workers} workers, {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_once("pool", root / "warm", root / "cache", args.runs, workers)
        times = {"serial": [], "pool": []}
        ratios = []
        for r in range(args.rounds):
            order = ("serial", "pool") if r % 2 == 0 else ("pool", "serial")
            got = {side: run_once(side, root / f"{side}-{r}", root / "cache", args.runs, workers) for side in order}
            for side in order:
                times[side].append(got[side])
            ratios.append(got["serial"] / got["pool"])
            for table in TABLES:
                if not filecmp.cmp(root / f"serial-{r}" / table, root / f"pool-{r}" / table, shallow=False):
                    raise SystemExit(f"round {r}: {table} differs between the serial and pooled fits")
            print(f"round {r}: serial {got['serial']:.1f} s, pool {got['pool']:.1f} s, "
                  f"ratio {ratios[-1]:.2f}", flush=True)
    print(f"median: serial {statistics.median(times['serial']):.1f} s, pool {statistics.median(times['pool']):.1f} s, "
          f"serial/pool {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}); "
          f"tables identical in every round")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
