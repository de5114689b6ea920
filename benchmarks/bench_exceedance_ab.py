"""The exceedance kernel against its version at an earlier commit, side by side in one process.

Run from the repository root (a script, not collected by ``pytest``)::

    .venv/bin/python benchmarks/bench_exceedance_ab.py --baseline fae4cd5

The baseline's ``kernels/exceedance.py`` (``git show REV:kernels/exceedance.py``) is loaded as a
temporary sibling module (removed at exit) so that both compile against the same helpers. On
four photo-like 12 MP JPEGs decoded to uint8, on one of them widened to uint16 and on one as
float32, both kernels' outputs are checked equal, then both are timed single-threaded in
``--rounds`` rounds alternating A/B and B/A; the figure is the median over rounds of
baseline time / current time (above 1: the current kernel is faster).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import numba  # noqa: E402
import numpy as np  # noqa: E402

import kernels  # noqa: E402
from kernels import exceedance as current  # noqa: E402
from machine import commit, cpu  # noqa: E402
from photo_jpegs import write_photo_jpegs  # noqa: E402

BASELINE_MODULE = "_exceedance_baseline"


def _load_baseline(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:kernels/exceedance.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    path = ROOT / "kernels" / f"{BASELINE_MODULE}.py"
    path.write_text(source)
    return path, importlib.import_module(f"kernels.{BASELINE_MODULE}")


def _cases(quick: bool):
    from pipeline.data.imageio import read_image

    height, width = (120, 160) if quick else (3000, 4000)
    paths = write_photo_jpegs(Path(tempfile.mkdtemp()), 2 if quick else 4, height, width)
    images = [read_image(p).pixels for p in paths]
    noise = np.random.default_rng(0).integers(0, 50, images[0].shape).astype(np.uint16)
    return [("uint8 JPEG, saturation 255", images, 255),
            ("uint16, saturation 65535", [images[0].astype(np.uint16) * 257 + noise], 65535),
            ("float32, saturation 255", [images[0].astype(np.float32)], 255.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="git revision of the kernel to compare against")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="tiny images, one round: check that it runs")
    args = parser.parse_args()
    numba.set_num_threads(1)
    path, baseline = _load_baseline(args.baseline)
    try:
        rounds = 1 if args.quick else args.rounds
        print(f"commit {commit()} against {args.baseline}, {cpu()}, numba threads 1, {rounds} A/B round(s)")
        for name, images, saturation in _cases(args.quick):
            sigmas = [np.maximum(kernels.image_sigma(im), 0.5) for im in images]
            for image, sigma in zip(images, sigmas):
                a = baseline.exceedances(image, sigma, 4.0, saturation=saturation)
                b = current.exceedances(image, sigma, 4.0, saturation=saturation)
                if not all(np.array_equal(x, y) for x, y in zip(a, b)):
                    raise SystemExit(f"{name}: the two kernels disagree")
            times = {"baseline": [], "current": []}
            for r in range(rounds):
                for label in (("baseline", "current") if r % 2 == 0 else ("current", "baseline")):
                    run = baseline.exceedances if label == "baseline" else current.exceedances
                    start = time.perf_counter()
                    for image, sigma in zip(images, sigmas):
                        run(image, sigma, 4.0, saturation=saturation)
                    times[label].append((time.perf_counter() - start) / len(images))
            ratio = statistics.median(b / c for b, c in zip(times["baseline"], times["current"]))
            print(f"{name}: baseline {1e3 * statistics.median(times['baseline']):.1f} ms, current "
                  f"{1e3 * statistics.median(times['current']):.1f} ms per image; baseline / current {ratio:.2f} "
                  f"(median of rounds; outputs equal)")
    finally:
        path.unlink(missing_ok=True)
        for cached in (ROOT / "kernels" / "__pycache__").glob(f"{BASELINE_MODULE}*"):
            cached.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
