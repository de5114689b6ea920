"""Feature extraction as ratios to decoding, measured in one interleaved run (issue 19).

Run from the repository root (a script, not collected by ``pytest``)::

    .venv/bin/python benchmarks/bench_extraction_ratios.py               # 12 MP timing, 7 rounds
    .venv/bin/python benchmarks/bench_extraction_ratios.py --memory      # 20 MP and 50 MP peak memory per worker
    .venv/bin/python benchmarks/bench_extraction_ratios.py --quick       # tiny images, 1 round: does it run?
    .venv/bin/python benchmarks/bench_extraction_ratios.py --quick --memory
    .venv/bin/python benchmarks/bench_extraction_ratios.py --overlap     # decode thread feeding the kernel, 1 and all cores busy

Timing: ``--images`` photo-like 4000×3000 JPEGs (quality 92, 4:4:4; ``benchmarks/photo_jpegs.py``),
one process, Numba's threads as configured (``--threads 1`` is a pool worker's setting). Each round
times, in a rotated order (A/B alternating, so that a change of load hits every side alike):

* ``decode``: :func:`pipeline.data.imageio.read_image` of every file, as a user would call it,
  one image at a time;
* ``screening``: pass 1, :func:`pipeline.features.extract.screen_batch`;
* ``sparse``: pass 2, :func:`pipeline.features.extract.sparse_batch` at ``--positions`` positions;
* ``both``: pass 1 then pass 2 on the same images (the issue's "whole extraction": the two
  decodes and their kernels);
* ``whole``: what :func:`pipeline.features.device.device_features` does with ``--runs``
  stratified split runs of two classes (probe, pass 1, each run's candidate screening, pass 2,
  each run's defect identification), no cache. Its excess over ``both`` is a cost per split
  run, not per image, so the script prints it per run and what it adds per image to a device
  of 120 images (the synthetic default's).

It prints, per part, the median time per image and the median over rounds of the part's time
divided by that round's decode time (the ratio the issue's targets are stated in: the floor of
"both" is 2.0), the extra of ``both`` over ``screening + sparse``, and the per-run cost.

Memory: for each size, a fresh single-threaded worker process (as the pool starts them) runs
both passes on one large JPEG after a small one; its peak resident set (``VmHWM``) before and
after (``benchmarks/worker_memory.py``, shared with ``bench_memory.py``).

Overlap (``--overlap``): does a decode thread feeding the screening kernel inside a worker raise
throughput? ``P`` persistent single-threaded worker processes (as the pool starts them), for
``P = 1`` (a core left idle) and ``P`` = every core (all cores busy, how the pipeline runs), each
screen the same ``--images`` JPEGs: ``plain`` is :func:`pipeline.features.extract.screen_batch`;
``overlap`` is the same work with a thread reading, hashing and decoding the next image (into one
of three rotating buffers) while the kernel runs on the current one (both release the GIL). The
two alternate, A/B then B/A, for ``--rounds`` rounds; each round's wall time is from the command
sent to every worker to the last reply. The overlapped records are checked equal to
``screen_batch``'s before anything is timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from machine import commit, cpu  # noqa: E402
from photo_jpegs import write_photo_jpegs  # noqa: E402
from worker_memory import describe, worker_peak_memory, write_jpeg  # noqa: E402

MEMORY_SIZES = {"20MP": (3648, 5472), "50MP": (5792, 8688)}
QUICK_MEMORY_SIZES = {"tiny": (240, 320)}

OVERLAP_WORKER = r"""
import hashlib, json, queue, sys, threading, time
sys.path.insert(0, sys.argv[1])
import numba
numba.set_num_threads(1)
import numpy as np
import kernels
from pipeline.data.imageio import read_image
from pipeline.features.extract import (EXCEED_K, SIGMA_FLOOR, ScreenTask, _file_bytes, analysis_view,
                                       pixel_fingerprint, screen_batch)
paths = json.loads(sys.argv[2])

def screen(image):
    pixels, is_cfa, saturation = analysis_view(image)
    sigma = np.maximum(kernels.image_sigma(pixels, cfa=is_cfa), SIGMA_FLOOR)
    exceed, clipped = kernels.exceedances(pixels, sigma, EXCEED_K, saturation=saturation, cfa=is_cfa)
    return exceed, clipped, pixel_fingerprint(pixels)

def overlapped():
    free, ready = queue.Queue(), queue.Queue(maxsize=1)
    for _ in range(3):  # decoding, waiting, in the kernel; allocated by the first decodes, then reused
        free.put(None)
    def decode():
        for path in paths:
            data = _file_bytes(path)
            digest = hashlib.sha256(data).hexdigest()
            ready.put((path, digest, read_image(path, data=data, decode_into=free.get())))
        ready.put(None)
    thread = threading.Thread(target=decode)
    thread.start()
    records = {}
    while (item := ready.get()) is not None:
        path, digest, image = item
        records[path] = (digest, *screen(image))
        free.put(image.pixels.reshape(-1))
    thread.join()
    return records

plain = lambda: screen_batch(ScreenTask(tuple(paths), None))
reference, mine = plain(), overlapped()
for path in paths:
    want, got = reference.records[path], mine[path]
    assert reference.digests[path] == got[0] and np.array_equal(want.exceed, got[1]) \
        and np.array_equal(want.clipped, got[2]) and want.pixel_fingerprint == got[3], path
print("ready", flush=True)
for command in sys.stdin:
    start = time.perf_counter()
    (plain if command.strip() == "plain" else overlapped)()
    print(time.perf_counter() - start, flush=True)
"""


def overlap(args) -> None:
    import os

    height, width = (120, 160) if args.quick else (3000, 4000)
    rounds = 1 if args.quick else args.rounds
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        paths = write_photo_jpegs(Path(folder), args.images, height, width)
        print(f"commit {commit()}, {cpu()}, {cores} cores; {len(paths)} JPEGs of {width}×{height} per worker, "
              f"single-threaded workers; {rounds} alternating round(s) per worker count")
        for processes in sorted({1, cores}):
            workers = [subprocess.Popen([sys.executable, "-c", OVERLAP_WORKER, str(HERE.parent), json.dumps(paths)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                       for _ in range(processes)]
            try:
                for worker in workers:
                    if worker.stdout.readline().strip() != "ready":
                        raise RuntimeError("an overlap worker failed to start (its records differ, or it crashed)")
                walls = {"plain": [], "overlap": []}
                for r in range(rounds):
                    for mode in (("plain", "overlap") if r % 2 == 0 else ("overlap", "plain")):
                        start = time.perf_counter()
                        for worker in workers:
                            worker.stdin.write(mode + "\n")
                            worker.stdin.flush()
                        for worker in workers:
                            worker.stdout.readline()
                        walls[mode].append(time.perf_counter() - start)
            finally:
                for worker in workers:
                    worker.stdin.close()
                    worker.wait()
            images = processes * len(paths)
            gain = statistics.median(p / o for p, o in zip(walls["plain"], walls["overlap"]))
            print(f"{processes} worker(s){' (all cores busy)' if processes == cores else ''}: plain "
                  f"{images / statistics.median(walls['plain']):.2f} images/s, overlapped "
                  f"{images / statistics.median(walls['overlap']):.2f} images/s; throughput overlapped / plain "
                  f"{gain:.3f} (median of rounds; per round {', '.join(f'{p / o:.3f}' for p, o in zip(walls['plain'], walls['overlap']))})")


def _rows_and_splits(paths, runs):
    from pipeline.data.manifest import ManifestRow
    from pipeline.data.splits import Split, stratified_splits

    labels = np.array([0] * (len(paths) // 2) + [1] * (len(paths) - len(paths) // 2))
    rows = [ManifestRow(line=i + 2, path=Path(p), device="bench", captured_at=None, timeslot=i + 1,
                        label=int(labels[i])) for i, p in enumerate(paths)]
    splits = []
    for run, (train, test, seed) in enumerate(stratified_splits(labels, n_runs=runs, test_size=0.25, seed=0)):
        splits.append(Split(run, seed, tuple(str(paths[i]) for i in train), tuple(int(labels[i]) for i in train),
                            tuple(str(paths[i]) for i in test), tuple(int(labels[i]) for i in test)))
    return rows, splits


def _decode_each(paths, read_image) -> None:
    """Decode every file, one at a time, each image dropped before the next (as a pass holds them).

    Holding all of them (a list of decoded images) made this part grow slower round after round
    on the 2-core VM measured here (0.8, 1.7, 3.4 s for the same 8 images): fresh memory for
    every image, which the passes, one image at a time, do not need.
    """
    for path in paths:
        read_image(path)


def timing(args) -> None:
    import numba

    from pipeline.analysis.config import ExperimentConfig
    from pipeline.data.imageio import read_image
    from pipeline.features.device import device_features
    from pipeline.features.executor import WorkerPool
    from pipeline.features.extract import ScreenTask, SparseTask, screen_batch, sparse_batch

    if args.threads:
        numba.set_num_threads(args.threads)
    height, width = (120, 160) if args.quick else (3000, 4000)
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as folder:
        paths = write_photo_jpegs(Path(folder), args.images, height, width)
        rng = np.random.default_rng(1)
        positions = (rng.integers(0, height, args.positions), rng.integers(0, width, args.positions),
                     rng.integers(0, 3, args.positions))
        rows, splits = _rows_and_splits(paths, args.runs)
        cfg = ExperimentConfig(runs=args.runs, workers=1, progress=False)
        with WorkerPool(1) as pool:
            parts = {
                "decode": lambda: _decode_each(paths, read_image),
                "screening": lambda: screen_batch(ScreenTask(paths, None)),
                "sparse": lambda: sparse_batch(SparseTask(paths, *positions, None)),
                "both": lambda: (screen_batch(ScreenTask(paths, None)), sparse_batch(SparseTask(paths, *positions, None))),
                "whole": lambda: device_features(rows, splits, cfg, pool=pool),
            }
            for run in parts.values():  # compile / load the kernels, warm the page cache
                run()
            names = list(parts)
            times = {name: [] for name in names}
            for r in range(rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                if r % 2:
                    order.reverse()
                for name in order:
                    start = time.perf_counter()
                    parts[name]()
                    times[name].append(time.perf_counter() - start)
    n = len(paths)
    print(f"commit {commit()}, {cpu()}, numba threads {numba.get_num_threads()}; {n} JPEGs of {width}×{height}, "
          f"{args.positions} sparse positions, whole = {args.runs} split runs; {rounds} interleaved round(s)")
    print(f"{'part':<10} {'median per image':>17} {'ratio to decode (median of rounds)':>36}")
    ratio = {name: statistics.median(t / d for t, d in zip(times[name], times["decode"])) for name in names}
    for name in names:
        print(f"{name:<10} {1e3 * statistics.median(times[name]) / n:>14.1f} ms {ratio[name]:>36.2f}")
    extra = statistics.median((b - s - p) / d for b, s, p, d in zip(times["both"], times["screening"],
                                                                     times["sparse"], times["decode"]))
    print(f"both - (screening + sparse): {extra:+.2f} decodes (median of rounds); floor of both: 2.00")
    per_run = statistics.median(w - b for w, b in zip(times["whole"], times["both"])) / args.runs
    print(f"whole - both: {1e3 * per_run:.0f} ms per split run (candidate screening and defect identification of "
          f"one run, whatever the number of images: {per_run / statistics.median(times['decode']) * n:.2f} decodes "
          f"per run, {per_run * args.runs / statistics.median(times['decode']) * n / 120:.2f} decodes per image for "
          f"a device of 120 images and {args.runs} runs)")


def memory(args) -> None:
    sizes = QUICK_MEMORY_SIZES if args.quick else MEMORY_SIZES
    with tempfile.TemporaryDirectory() as folder:
        small = write_jpeg(Path(folder) / "small.jpg", (60, 80) if args.quick else (300, 400), 1)
        for size, (height, width) in sizes.items():
            large = write_jpeg(Path(folder) / f"{size}.jpg", (height, width), 2)
            print(describe(size, height, width, worker_peak_memory(small, large, height, width)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny images and one round: check that it runs")
    parser.add_argument("--memory", action="store_true", help="peak memory per worker at 20 and 50 MP instead")
    parser.add_argument("--overlap", action="store_true",
                        help="a decode thread feeding the kernel against screen_batch, 1 and all workers busy")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--images", type=int, default=8, help="JPEGs (default 8; at least 4)")
    parser.add_argument("--positions", type=int, default=2000, help="positions of the sparse pass")
    parser.add_argument("--runs", type=int, default=10, help="split runs of the whole extraction (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="Numba threads (default: Numba's own)")
    args = parser.parse_args()
    if args.images < 4:
        parser.error("--images must be at least 4 (two classes of two for the split runs)")
    (memory if args.memory else overlap if args.overlap else timing)(args)


if __name__ == "__main__":
    main()
