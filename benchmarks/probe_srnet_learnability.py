"""Probe for tests/test_srnet_learnability.py: SRNet vs the defect-based methods on small synthetic data.

    python benchmarks/probe_srnet_learnability.py --scene-bias 1 --methods srnet
    python benchmarks/probe_srnet_learnability.py --scene-bias 0 --methods fg,srnet --sim-seed 7

Prints the wall time of generation and of the experiment, and every method's correct count.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scene-bias", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--size", default="256x192")
    parser.add_argument("--images-per-class", type=int, default=40)
    parser.add_argument("--test-size", type=float, default=0.3)
    parser.add_argument("--methods", default="fg,srnet")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sim-seed", type=int, default=20141006)
    parser.add_argument("--split-seed", type=int, default=0, help="ExperimentConfig.seed (splits and SRNet)")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = parser.parse_args()

    from pipeline.analysis.config import ExperimentConfig
    from pipeline.analysis.experiment import run_experiment
    from pipeline.data.manifest import load_manifest
    from pipeline.sim import default_dataset

    width, height = (int(v) for v in args.size.split("x"))
    overrides = {"seed": args.sim_seed, "scenes.scene_bias": args.scene_bias, "defects.rate_per_year": args.rate,
                 "capture.images_per_class": args.images_per_class,
                 "devices": [{"name": "SIM-alpha01", "model": "alpha", "serial": "SA1-00417"}],
                 "models.alpha.width": width, "models.alpha.height": height}
    t0 = time.perf_counter()
    dataset = default_dataset(args.cache or tempfile.mkdtemp(), workers=1, progress=False, **overrides)
    t1 = time.perf_counter()
    cfg = ExperimentConfig(methods=tuple(args.methods.split(",")), runs=1, test_size=args.test_size,
                           seed=args.split_seed, workers=1, progress=False, srnet_preset="cpu",
                           srnet_overrides={"epochs": args.epochs, "lr_drop_epoch": max(1, args.epochs * 3 // 4),
                                            "patch": args.patch, "batch_size": args.batch, "num_threads": args.threads})
    out = Path(tempfile.mkdtemp()) / "run"
    run_experiment(load_manifest(dataset.manifest_path), out, cfg)
    t2 = time.perf_counter()
    with open(out / "metrics.csv", newline="") as fh:
        metrics = list(csv.DictReader(fh))
    print(f"generate {t1 - t0:.1f} s, experiment {t2 - t1:.1f} s  ({vars(args)})")
    for m in metrics:
        n = int(m["n_test"])
        print(f"  {m['method']:6s} {float(m['accuracy']):.3f} = {round(float(m['accuracy']) * n)}/{n} "
              f"(n_train {m['n_train']}, defects {m['n_defects']})")


if __name__ == "__main__":
    main()
