"""Train each age estimator on one device and test it on every device (cross-device matrix).

    python -m pipeline.cross_device [--manifest M] [--methods fg,nb,svm,srnet] [--runs N]
                                    [--out DIR] [--experiment DIR] [--seed S] [--workers N] [-q | -v]

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

from pipeline.analysis.config import ALL_METHODS, ConfigMismatchError
from pipeline.analysis.cross_device import (ExperimentIncompleteError, experiment_config_from, experiment_run_config,
                                            prepare_output, run_cross_device)
from pipeline.analysis.experiment import run_experiment
from pipeline.analysis.runfolder import RunFolder
from pipeline.cli import (add_dataset_options, add_run_options, add_split_options, comma_list, default_manifest,
                          new_parser, run_command)
from pipeline.data.errors import ImageReadError, ManifestError
from pipeline.data.manifest import load_manifest
from pipeline.logs import get_logger

logger = get_logger(__name__)

DEFAULT_METHODS = "fg,nb,svm"

#: exit statuses of the command
EXIT_OK, EXIT_ERROR = 0, 2

#: the errors that are the user's to fix
ERRORS = (ManifestError, ConfigMismatchError, ExperimentIncompleteError, ImageReadError, ValueError,
          FileNotFoundError)

_parse_methods = comma_list(ALL_METHODS, "method")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = new_parser("python -m pipeline.cross_device", __doc__.split("\n\n")[0],
                   f"Exit status: {EXIT_OK} done; {EXIT_ERROR} error (one line on stderr naming the problem).")
    add_dataset_options(p, manifest_help="CSV manifest of dated images (default: the experiment's manifest with "
                                         "--experiment, else the synthetic dataset)")
    add_split_options(p, runs=None, test_size=None, seed=None,
                      runs_help="repeated stratified splits (default 10, or the --experiment folder's)",
                      test_size_help="test fraction per class (default 0.1, or the --experiment folder's)",
                      seed_help="root seed of the splits (default 0, or the --experiment folder's)")
    p.add_argument("--methods", type=_parse_methods, default=_parse_methods(DEFAULT_METHODS),
                   help=f"comma-separated, from {','.join(ALL_METHODS)}")
    p.add_argument("--out", type=Path, default=Path("agetrace-out/cross_device"), help="output folder")
    p.add_argument("--experiment", type=Path, default=None,
                   help="age-experiment folder to build on, e.g. a `python -m pipeline.ml_age` output (its finished "
                        "parts are reused; default OUT/experiment)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--srnet-preset", default=None, choices=["cpu", "paper"], help="SRNet training preset (default cpu)")
    p.add_argument("--srnet-runs", type=int, default=None,
                   help="train SRNet on the first k splits only (default: the preset's choice)")
    add_run_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 bad input)."""
    return run_command(_run, build_parser().parse_args(argv), ERRORS, status=EXIT_ERROR)


def _run(args: argparse.Namespace) -> int:
    experiment_dir = args.experiment if args.experiment is not None else args.out / "experiment"
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
        recorded = RunFolder(args.experiment).record
        manifest_path = Path(recorded.manifest.path)
        extra = {k: recorded.extra[k] for k in ("synthetic",) if k in recorded.extra}
        logger.info(f"No --manifest: using the manifest of {args.experiment}: {manifest_path}")
    if manifest_path is None:
        manifest_path, extra = default_manifest(progress=not args.no_progress)
    manifest = load_manifest(manifest_path, class_spec=args.classes)
    cfg = experiment_config_from(experiment_dir, methods=args.methods, runs=args.runs, test_size=args.test_size,
                                 seed=args.seed, srnet_preset=args.srnet_preset, srnet_runs=args.srnet_runs,
                                 strict=args.strict, workers=args.workers, progress=not args.no_progress)
    logger.info(f"Manifest {manifest.source} ({len(manifest.rows)} images, {len(manifest.devices)} devices, "
                f"sha256 {manifest.sha256[:12]}…); methods {','.join(cfg.methods)}; {cfg.runs} runs; out {args.out}")
    prepare_output(args.out)  # refuse another program's folder before the experiment runs
    logger.info(f"Age experiment (own-device training and testing) in {experiment_dir}")
    run_experiment(manifest, experiment_dir, experiment_run_config(cfg, experiment_dir), extra_record=extra)
    result = run_cross_device(manifest, args.out, cfg, experiment_dir=experiment_dir, extra_record=extra)
    print()
    print(result["report"])
    print(f"\nWrote {result['out']}/: {', '.join(result['files'])}; the age experiment it builds on is in "
          f"{experiment_dir}/")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
