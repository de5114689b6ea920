"""Compare image-age estimators on identical repeated splits, per device.

    python -m pipeline.ml_age [--manifest M] [--classes SPEC] [--methods fg,nb,svm,srnet]
                              [--runs 10] [--test-size 0.1] [--seed S] [--out DIR] [--strict] [-q | -v]
    python -m pipeline.ml_age explain IMAGE --run DIR [--device D] [--split-run R]

With no manifest it runs on the embedded synthetic default (generated once and cached).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.analysis.config import ALL_METHODS, CONSTRAINED_METHODS, ConfigMismatchError, ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.analysis.explain_image import explain_image, format_evidence
from pipeline.analysis.runfolder import STATUS_NOTHING_ANALYSED
from pipeline.cli import (add_dataset_options, add_run_options, add_split_options, add_subcommand, comma_list,
                          default_manifest, new_parser, run_command)
from pipeline.data.errors import ImageReadError, ManifestError
from pipeline.data.manifest import load_manifest
from pipeline.logs import get_logger

logger = get_logger(__name__)

DEFAULT_METHODS = "fg,nb,svm"

#: exit statuses of the command
EXIT_OK, EXIT_ERROR, EXIT_NOTHING_ANALYSED = 0, 2, 3

#: the errors of a run that are the user's to fix, and those of ``explain``
RUN_ERRORS = (ManifestError, ConfigMismatchError, ImageReadError, ValueError, OSError, ImportError)
EXPLAIN_ERRORS = (FileNotFoundError, ValueError, ImageReadError, ConfigMismatchError)

_parse_methods = comma_list(ALL_METHODS, "method")

USAGE = "%(prog)s [options]\n       %(prog)s explain IMAGE --run DIR [options]"

EPILOG = f"""\
An unreadable or missing image is recorded in OUT/failures.csv with its manifest line and the run
goes on; with --strict the run stops at it (a missing file is then a manifest problem, reported
before the run with the others).

Exit status:
  {EXIT_OK}  the run is complete (config.json status "complete")
  {EXIT_ERROR}  error: invalid manifest, output folder holding another run or not writable, an
     unreadable image with --strict, ... (one line on stderr naming the file, line or folder;
     the only line with -q)
  {EXIT_NOTHING_ANALYSED}  no device could be analysed (too few readable images, or all in one class):
     each device's reason is printed and kept in OUT/summary.md and OUT/excluded.csv
     (config.json status "{STATUS_NOTHING_ANALYSED}")
"""

EXPLAIN_DESCRIPTION = """\
The evidence behind one image's estimated age, defect by defect, as an examiner reports it: for
the device's defects identified in split run R of a finished ml_age output folder, each defect's
position, onset, expected and measured residual and log-likelihood ratio "present" vs "absent";
then the log-likelihood and posterior of every age class under the Fridrich–Goljan model."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser: the experiment's options, and the ``explain`` subcommand."""
    p = new_parser("python -m pipeline.ml_age", __doc__.split("\n\n")[0], EPILOG, usage=USAGE)
    add_dataset_options(p)
    add_split_options(p)
    p.add_argument("--methods", type=_parse_methods, default=_parse_methods(DEFAULT_METHODS),
                   help=f"comma-separated, from {','.join(ALL_METHODS)}")
    p.add_argument("--out", type=Path, default=Path("agetrace-out/ml_age"), help="output folder")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes, local or of the Dask LocalCluster (default: all cores)")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="where per-image work runs: local processes, or Dask (needs the dask extra)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (tcp://host:8786); default with --executor dask: a LocalCluster")
    p.add_argument("--cache", type=Path, default=None,
                   help="per-image feature cache folder (default OUT/cache; safe to share between runs)")
    p.add_argument("--pooled", action="store_true", help="also report accuracy pooled over all devices")
    p.add_argument("--constrained-cnns", action="store_true",
                   help=f"add the learned models constrained to age traces ({', '.join(CONSTRAINED_METHODS)}) to "
                        "--methods, so that they stand in the side-by-side table with SRNet (several minutes "
                        "more on CPU; the default run does not train them)")
    p.add_argument("--srnet-preset", default="cpu", choices=["cpu", "paper"], help="SRNet training preset")
    p.add_argument("--srnet-runs", type=int, default=None,
                   help="train SRNet on the first k splits only (default: the preset's choice)")
    add_run_options(p, strict_help="stop at the first unreadable or missing image (naming it and its manifest line)")
    p.set_defaults(work=_run, errors=RUN_ERRORS)

    sub = p.add_subparsers(title="subcommand", dest="command", metavar="COMMAND", prog="python -m pipeline.ml_age")
    e = add_subcommand(sub, "explain", help="print the defect evidence behind one image's estimated age",
                       description=EXPLAIN_DESCRIPTION)
    e.add_argument("image", type=Path, help="the image")
    e.add_argument("--run", type=Path, required=True, help="an ml_age output folder")
    e.add_argument("--device", help="device id (default: from the run's manifest)")
    e.add_argument("--split-run", type=int, default=0, help="which repeated split's defects and model")
    e.set_defaults(work=_explain, errors=EXPLAIN_ERRORS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the epilog of ``--help``)."""
    args = build_parser().parse_args(argv)
    return run_command(args.work, args, args.errors, status=EXIT_ERROR)


def _run(args: argparse.Namespace) -> int:
    """The age experiment: run it, print its summary."""
    if args.manifest is None:
        manifest_path, extra = default_manifest(progress=not args.no_progress)
    else:
        manifest_path, extra = args.manifest, {}
    manifest = _load(manifest_path, args.classes, args.strict)
    methods = tuple(args.methods) + tuple(m for m in CONSTRAINED_METHODS if args.constrained_cnns
                                          and m not in args.methods)
    cfg = ExperimentConfig(methods=methods, runs=args.runs, test_size=args.test_size, seed=args.seed,
                           strict=args.strict, workers=args.workers, progress=not args.no_progress,
                           pooled=args.pooled, srnet_preset=args.srnet_preset, srnet_runs=args.srnet_runs,
                           executor=args.executor, scheduler=args.scheduler,
                           cache_dir=None if args.cache is None else str(args.cache))
    logger.info(f"Manifest {manifest.source} ({len(manifest.rows)} images, {len(manifest.devices)} devices, "
                f"sha256 {manifest.sha256[:12]}…); methods {','.join(cfg.methods)}; {cfg.runs} runs; out {args.out}")
    result = run_experiment(manifest, args.out, cfg, extra_record=extra)
    print()
    print(result["summary_text"])
    print(f"\nWrote {result['out']}/: {', '.join(result['written'])}")
    if result["status"] == STATUS_NOTHING_ANALYSED:
        reasons = "; ".join(f"{s['device']}: {s['reason']}" for s in result["skipped"])
        print(f"error: no device could be analysed ({reasons}); see {result['out'] / 'summary.md'} and "
              f"{result['out'] / 'excluded.csv'}", file=sys.stderr)
        return EXIT_NOTHING_ANALYSED
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    """The ``explain`` subcommand: print one image's defect evidence."""
    print(format_evidence(explain_image(args.image, args.run, device=args.device, split_run=args.split_run)))
    return EXIT_OK


def _load(path: Path, classes: str | None, strict: bool):
    """The manifest; a missing image file is a problem of the manifest only with --strict.

    Without --strict, a file that is missing is recorded by the run (failures.csv, with its line)
    like any unreadable image. When the manifest has other problems, every problem is reported,
    missing files included.
    """
    if strict:
        return load_manifest(path, class_spec=classes)
    try:
        return load_manifest(path, class_spec=classes, check_files=False)
    except ManifestError:
        return load_manifest(path, class_spec=classes)  # raises, listing the file problems too


if __name__ == "__main__":
    sys.exit(main())
