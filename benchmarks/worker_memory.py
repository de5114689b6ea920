"""Peak memory of one fresh worker running both feature passes on one large JPEG.

Shared by ``bench_memory.py`` (the issue-8 figures, under pytest) and
``bench_extraction_ratios.py --memory`` (the issue-19 figures). A fresh process (the way the pool
starts a worker: imports, Numba single-threaded) first processes a small image, so that imports
and compiled kernels are loaded, records its peak resident set, then runs pass 1
(:func:`screen_batch`) and pass 2 (:func:`sparse_batch` at 5,000 positions) on the large image and
records the peak again. The peak is ``VmHWM`` of ``/proc/self/status``, which, unlike
``ru_maxrss``, is not inherited from the process that started the worker.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[5])
import numpy as np

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

import numba
numba.set_num_threads(1)
from pipeline.features.extract import ScreenTask, SparseTask, screen_batch, sparse_batch
small, large, height, width = sys.argv[1:5]
height, width = int(height), int(width)
rng = np.random.default_rng(0)
screen_batch(ScreenTask((small,), None))
sparse_batch(SparseTask((small,), np.array([1]), np.array([1]), np.array([0]), None))
before = peak_mib()
record = screen_batch(ScreenTask((large,), None)).records[large]
after1 = peak_mib()
rows, cols, chans = rng.integers(0, height, 5000), rng.integers(0, width, 5000), rng.integers(0, 3, 5000)
sparse_batch(SparseTask((large,), rows, cols, chans, None))
after2 = peak_mib()
print(json.dumps({"baseline_mib": before, "after_pass1_mib": after1, "after_pass2_mib": after2,
                  "record_entries": int(record.exceed.size + record.clipped.size)}))
"""


def write_jpeg(path, shape, seed) -> str:
    """Write a photo-like RGB JPEG (quality 92, 4:4:4) of ``shape`` (height, width) to ``path``."""
    from skimage import data, transform

    base = transform.resize(data.astronaut(), shape, order=1, preserve_range=True)
    noisy = np.clip(base + np.random.default_rng(seed).normal(0, 2.0, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, quality=92, subsampling=0)
    return str(path)


def worker_peak_memory(small: str, large: str, height: int, width: int) -> dict:
    """Peaks (MiB) of a fresh worker before and after each pass on ``large``, and its record's size."""
    done = subprocess.run([sys.executable, "-c", _PROBE, small, large, str(height), str(width), str(ROOT)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(size: str, height: int, width: int, figures: dict) -> str:
    """One line of figures for the printout."""
    decoded = height * width * 3 / 2 ** 20
    grown = figures["after_pass2_mib"] - figures["baseline_mib"]
    return (f"{size} ({width}×{height} RGB, decoded uint8 {decoded:.1f} MiB): worker baseline "
            f"{figures['baseline_mib']:.0f} MiB, peak after pass 1 {figures['after_pass1_mib']:.0f} MiB, "
            f"after pass 2 {figures['after_pass2_mib']:.0f} MiB; one image adds {grown:.0f} MiB "
            f"({grown / decoded:.2f} × decoded); record entries {figures['record_entries']}")
