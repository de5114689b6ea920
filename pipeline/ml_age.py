"""Compare image-age estimators on identical repeated splits, per device.

    python -m pipeline.ml_age [--manifest M] [--classes SPEC] [--methods fg,nb,svm,srnet]
                              [--runs 10] [--test-size 0.1] [--seed S] [--out DIR] [--strict]
    python -m pipeline.ml_age explain IMAGE --run DIR [--device D] [--split-run R]

With no manifest it runs on the embedded synthetic default (generated once and cached).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.analysis.experiment import (ALL_METHODS, STATUS_NOTHING_ANALYSED, ConfigMismatchError,
                                          ExperimentConfig, parse_methods, run_experiment)
from pipeline.data.errors import ImageReadError, ManifestError
from pipeline.data.manifest import load_manifest

DEFAULT_METHODS = "fg,nb,svm"

#: exit statuses of the command
EXIT_OK, EXIT_ERROR, EXIT_NOTHING_ANALYSED = 0, 2, 3

EPILOG = f"""\
Subcommand: `python -m pipeline.ml_age explain IMAGE --run DIR` prints the defect evidence behind one
image's estimated age.

An unreadable or missing image is recorded in OUT/failures.csv with its manifest line and the run
goes on; with --strict the run stops at it (a missing file is then a manifest problem, reported
before the run with the others).

Exit status:
  {EXIT_OK}  the run is complete (config.json status "complete")
  {EXIT_ERROR}  error: invalid manifest, output folder holding another run or not writable, an
     unreadable image with --strict, ... (one line on stderr naming the file, line or folder)
  {EXIT_NOTHING_ANALYSED}  no device could be analysed (too few readable images, or all in one class):
     each device's reason is printed and kept in OUT/summary.md and OUT/excluded.csv
     (config.json status "{STATUS_NOTHING_ANALYSED}")
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.ml_age", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--manifest", type=Path, help="CSV manifest of dated images (default: the synthetic dataset)")
    p.add_argument("--classes", help="class specification (shipped name such as ntif/plus, or a TOML path) "
                                     "deriving labels for rows without one")
    p.add_argument("--methods", type=parse_methods, default=parse_methods(DEFAULT_METHODS),
                   help=f"comma-separated, from {','.join(ALL_METHODS)} (default {DEFAULT_METHODS})")
    p.add_argument("--runs", type=int, default=10, help="repeated stratified splits (default 10, as the papers)")
    p.add_argument("--test-size", type=float, default=0.1, help="test fraction per class (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="root seed of the splits (default 0)")
    p.add_argument("--out", type=Path, default=Path("agetrace-out/ml_age"), help="output folder")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable or missing image (naming it and its manifest line)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes, local or of the Dask LocalCluster (default: all cores)")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="where per-image work runs: local processes, or Dask (needs the dask extra)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (tcp://host:8786); default with --executor dask: a LocalCluster")
    p.add_argument("--cache", type=Path, default=None,
                   help="per-image feature cache folder (default OUT/cache; safe to share between runs)")
    p.add_argument("--pooled", action="store_true", help="also report accuracy pooled over all devices")
    p.add_argument("--srnet-preset", default="cpu", choices=["cpu", "paper"], help="SRNet training preset")
    p.add_argument("--srnet-runs", type=int, default=None,
                   help="train SRNet on the first k splits only (default: the preset's choice)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _default_manifest(log, progress: bool) -> tuple[Path, dict]:
    from pipeline.data.simulator import default_dataset

    log("No --manifest: using the embedded synthetic aging camera (generated once, then cached).")
    dataset = default_dataset(progress=progress)
    return Path(dataset.manifest_path), {"synthetic": {"root": str(dataset.root),
                                                       "defects": str(dataset.defects_path)}}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "explain":
        from pipeline.analysis.explain_image import main as explain_main

        return explain_main(argv[1:])
    args = build_parser().parse_args(argv)
    log = print
    try:
        if args.manifest is None:
            manifest_path, extra = _default_manifest(log, not args.no_progress)
        else:
            manifest_path, extra = args.manifest, {}
        manifest = _load(manifest_path, args.classes, args.strict)
        cfg = ExperimentConfig(methods=args.methods, runs=args.runs, test_size=args.test_size, seed=args.seed,
                               strict=args.strict, workers=args.workers, progress=not args.no_progress,
                               pooled=args.pooled, srnet_preset=args.srnet_preset, srnet_runs=args.srnet_runs,
                               executor=args.executor, scheduler=args.scheduler,
                               cache_dir=None if args.cache is None else str(args.cache))
        log(f"Manifest {manifest.source} ({len(manifest.rows)} images, {len(manifest.devices)} devices, "
            f"sha256 {manifest.sha256[:12]}…); methods {','.join(cfg.methods)}; {cfg.runs} runs; out {args.out}")
        result = run_experiment(manifest, args.out, cfg, extra_record=extra, log=log)
    except (ManifestError, ConfigMismatchError, ImageReadError, ValueError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print()
    print(result["summary_text"])
    print(f"\nWrote {result['out']}/: {', '.join(result['written'])}")
    if result["status"] == STATUS_NOTHING_ANALYSED:
        reasons = "; ".join(f"{s['device']}: {s['reason']}" for s in result["skipped"])
        print(f"error: no device could be analysed ({reasons}); see {result['out'] / 'summary.md'} and "
              f"{result['out'] / 'excluded.csv'}", file=sys.stderr)
        return EXIT_NOTHING_ANALYSED
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
