"""Train each age estimator on one device and test it on every device (cross-device matrix).

    python -m pipeline.cross_device [--manifest M] [--methods fg,nb,svm,srnet] [--runs N]
                                    [--out DIR] [--experiment DIR] [--seed S] [--workers N]

With no manifest it runs on the embedded synthetic default (generated once and cached). It
first runs the age experiment of ``python -m pipeline.ml_age`` (into ``OUT/experiment``, or
reuses the finished parts of the folder given by ``--experiment``), then applies every trained
model to every device's test split of the same run. Defect-based methods carry their training
device's defect map to the other device (expect chance: a defect map belongs to one sensor);
SRNet transfers as far as what it learned is shared between the devices.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.analysis.experiment import ALL_METHODS, ConfigMismatchError, parse_methods

DEFAULT_METHODS = "fg,nb,svm"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="python -m pipeline.cross_device", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, help="CSV manifest of dated images (default: the experiment's manifest "
                                                 "with --experiment, else the synthetic dataset)")
    p.add_argument("--classes", help="class specification (shipped name such as ntif/plus, or a TOML path) "
                                     "deriving labels for rows without one")
    p.add_argument("--methods", type=parse_methods, default=parse_methods(DEFAULT_METHODS),
                   help=f"comma-separated, from {','.join(ALL_METHODS)} (default {DEFAULT_METHODS})")
    p.add_argument("--runs", type=int, default=None, help="repeated stratified splits (default 10, or the "
                                                          "--experiment folder's)")
    p.add_argument("--test-size", type=float, default=None, help="test fraction per class (default 0.1)")
    p.add_argument("--seed", type=int, default=None, help="root seed of the splits (default 0)")
    p.add_argument("--out", type=Path, default=Path("agetrace-out/cross_device"), help="output folder")
    p.add_argument("--experiment", type=Path, default=None,
                   help="age-experiment folder to build on, e.g. a `python -m pipeline.ml_age` output (its finished "
                        "parts are reused; default OUT/experiment)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--srnet-preset", default=None, choices=["cpu", "paper"], help="SRNet training preset (default cpu)")
    p.add_argument("--srnet-runs", type=int, default=None,
                   help="train SRNet on the first k splits only (default: the preset's choice)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 bad input)."""
    from pipeline.analysis.cross_device import ExperimentIncompleteError, experiment_config_from, run_cross_device
    from pipeline.analysis.provenance import read_json
    from pipeline.data.errors import ImageReadError, ManifestError
    from pipeline.data.manifest import load_manifest

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    log = print
    experiment_dir = args.experiment if args.experiment is not None else args.out / "experiment"
    try:
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        if args.runs is not None and args.runs < 1:
            raise ValueError(f"--runs must be >= 1, got {args.runs}")
        extra = {}
        manifest_path = args.manifest
        if manifest_path is not None and not manifest_path.is_file():
            raise FileNotFoundError(f"--manifest {manifest_path}: no such file; give the CSV manifest of your images "
                                    "(`python -m pipeline.manifest build` writes one) or leave --manifest out to "
                                    "use the synthetic dataset")
        if args.experiment is not None and not (args.experiment / "config.json").is_file() \
                and args.experiment.exists() and any(args.experiment.iterdir()):
            raise FileNotFoundError(f"--experiment {args.experiment}: not an age-experiment folder (no config.json); "
                                    "give a `python -m pipeline.ml_age` output folder or a new, empty one")
        if manifest_path is None and args.experiment is not None and (args.experiment / "config.json").is_file():
            recorded = read_json(args.experiment / "config.json")
            manifest_path = Path(recorded["manifest"]["path"])
            extra = {k: recorded[k] for k in ("synthetic",) if k in recorded}
            log(f"No --manifest: using the manifest of {args.experiment}: {manifest_path}")
        if manifest_path is None:
            from pipeline.data.simulator import default_dataset

            log("No --manifest: using the embedded synthetic aging camera (generated once, then cached).")
            dataset = default_dataset(progress=not args.no_progress)
            manifest_path = Path(dataset.manifest_path)
            extra = {"synthetic": {"root": str(dataset.root), "defects": str(dataset.defects_path)}}
        manifest = load_manifest(manifest_path, class_spec=args.classes)
        cfg = experiment_config_from(experiment_dir, methods=args.methods, runs=args.runs, test_size=args.test_size,
                                     seed=args.seed, srnet_preset=args.srnet_preset, srnet_runs=args.srnet_runs,
                                     strict=args.strict, workers=args.workers, progress=not args.no_progress)
        log(f"Manifest {manifest.source} ({len(manifest.rows)} images, {len(manifest.devices)} devices, "
            f"sha256 {manifest.sha256[:12]}…); methods {','.join(cfg.methods)}; {cfg.runs} runs; out {args.out}")
        result = run_cross_device(manifest, args.out, cfg, experiment_dir=experiment_dir, extra_record=extra, log=log)
    except (ManifestError, ConfigMismatchError, ExperimentIncompleteError, ImageReadError, ValueError,
            FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(result["report"])
    print(f"\nWrote {result['out']}/: {', '.join(result['files'])}; the age experiment it builds on is in "
          f"{experiment_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
