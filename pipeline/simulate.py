"""Generate the synthetic aging-camera dataset.

    python -m pipeline.simulate                         # the shipped default, into the cache
    python -m pipeline.simulate --out DIR               # ... into DIR (replacing an earlier output)
    python -m pipeline.simulate --config my.toml --seed 7 --set scenes.scene_bias=1 --workers 2

Without ``--out`` the dataset goes to ``$AGETRACE_CACHE/synthetic/<hash>`` (without
``AGETRACE_CACHE``: the platform's user cache folder, ``$XDG_CACHE_HOME/agetrace/synthetic/<hash>``
or ``~/.cache/agetrace/synthetic/<hash>`` on Linux) and an existing complete copy is reused. The
folder is printed on the last line of standard output.

Exit status: 0 done; 2 error (one line on stderr naming the problem).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from pipeline.cli import add_run_options, new_parser, run_command
from pipeline.sim import cached_dataset, load_config, simulate

#: exit statuses of the command
EXIT_OK, EXIT_ERROR = 0, 2

#: the errors that are the user's to fix
ERRORS = (FileNotFoundError, FileExistsError, ValueError)


def _parse_set(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--set {item!r}: use key=value, e.g. --set scenes.scene_bias=1.0")
        overrides[key.strip()] = value.strip()
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("python -m pipeline.simulate", "Generate the synthetic aging-camera dataset "
                                                       "(images, manifest.csv, defects.csv, config.json).",
                        __doc__.split("\n\n", 1)[1])
    parser.add_argument("--config", help="simulation TOML (default: data_manifests/synthetic_default.toml)")
    parser.add_argument("--out", help="output folder (default: the cache, reused when complete)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the configuration's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration value by dotted key, e.g. defects.rate_per_year=30 "
                             "(repeatable; values are TOML: 1.0, \"text\", [1, 5])")
    parser.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    add_run_options(parser, strict=False, progress_help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 error)."""
    return run_command(_run, build_parser().parse_args(argv), ERRORS, status=EXIT_ERROR)


def _run(args: argparse.Namespace) -> int:
    overrides = _parse_set(args.overrides)
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = load_config(args.config, overrides)
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be >= 1")
    start = time.perf_counter()
    if args.out:
        dataset = simulate(config, args.out, workers=args.workers, progress=not args.no_progress)
    else:
        dataset = cached_dataset(config, workers=args.workers, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    images = Counter(row["device"] for row in dataset.manifest_rows())
    defects = Counter(row["device"] for row in dataset.defect_rows())
    for device in images:
        print(f"{device}: {images[device]} images, {defects.get(device, 0)} defects")
    print(f"{sum(images.values())} images in {elapsed:.1f} s")
    print(dataset.root)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
