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

from pipeline.analysis.experiment import (ALL_METHODS, ConfigMismatchError, ExperimentConfig, parse_methods,
                                          run_experiment)
from pipeline.data.errors import ImageReadError, ManifestError
from pipeline.data.manifest import load_manifest

DEFAULT_METHODS = "fg,nb,svm"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.ml_age", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Subcommand: `python -m pipeline.ml_age explain IMAGE --run DIR` prints the "
                                       "defect evidence behind one image's estimated age.")
    p.add_argument("--manifest", type=Path, help="CSV manifest of dated images (default: the synthetic dataset)")
    p.add_argument("--classes", help="class specification (shipped name such as ntif/plus, or a TOML path) "
                                     "deriving labels for rows without one")
    p.add_argument("--methods", type=parse_methods, default=parse_methods(DEFAULT_METHODS),
                   help=f"comma-separated, from {','.join(ALL_METHODS)} (default {DEFAULT_METHODS})")
    p.add_argument("--runs", type=int, default=10, help="repeated stratified splits (default 10, as the papers)")
    p.add_argument("--test-size", type=float, default=0.1, help="test fraction per class (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="root seed of the splits (default 0)")
    p.add_argument("--out", type=Path, default=Path("agetrace-out/ml_age"), help="output folder")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
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
        manifest = load_manifest(manifest_path, class_spec=args.classes)
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
        return 2
    print()
    print(result["summary_text"])
    print(f"\nWrote {result['out']}/: config.json, splits/, predictions.csv, metrics.csv, summary.csv, "
          "summary.md, accuracy_boxplot.png, defects/, failures.csv, excluded.csv"
          + ("" if args.cache else ", cache/ (per-image features, reused by a rerun)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
