"""Peak memory of one worker processing one large JPEG through both feature passes.

Run (not collected by the normal ``pytest`` run)::

    .venv/bin/pytest benchmarks/bench_memory.py -s

For each size (20 MP and 50 MP RGB JPEGs), a fresh worker process (the way ``ml_age``'s pool
starts one: imports, Numba single-threaded) first processes a small image, so that imports and
compiled kernels are loaded, records its peak resident set size (``ru_maxrss``), then runs
pass 1 (:func:`screen_batch`) and pass 2 (:func:`sparse_batch` at 5,000 positions) on the large
image and records the peak again (``VmHWM`` of ``/proc/self/status``, which, unlike
``ru_maxrss``, is not inherited from the process that started the worker). The difference is what one image costs a worker; the
absolute peak is what a worker needs. Figures go to ``benchmarks/RESULTS.md``.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

SIZES = {"20MP": (3648, 5472), "50MP": (5792, 8688)}

WORKER = r"""
import json, sys
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


def _jpeg(path, shape, seed):
    from skimage import data, transform

    base = transform.resize(data.astronaut(), shape, order=1, preserve_range=True)
    noisy = np.clip(base + np.random.default_rng(seed).normal(0, 2.0, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, quality=92, subsampling=0)
    return str(path)


@pytest.mark.parametrize("size", list(SIZES))
def test_peak_memory_per_worker(size, tmp_path):
    height, width = SIZES[size]
    small = _jpeg(tmp_path / "small.jpg", (300, 400), 1)
    large = _jpeg(tmp_path / "large.jpg", (height, width), 2)
    done = subprocess.run([sys.executable, "-c", WORKER, small, large, str(height), str(width)],
                          capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    decoded_mib = height * width * 3 / 2 ** 20
    print(f"\n{size} ({width}×{height} RGB, decoded uint8 {decoded_mib:.0f} MiB): worker baseline "
          f"{figures['baseline_mib']:.0f} MiB, peak after pass 1 {figures['after_pass1_mib']:.0f} MiB, "
          f"after pass 2 {figures['after_pass2_mib']:.0f} MiB; one image adds "
          f"{figures['after_pass2_mib'] - figures['baseline_mib']:.0f} MiB "
          f"({(figures['after_pass2_mib'] - figures['baseline_mib']) / decoded_mib:.2f} × the decoded image); "
          f"record entries {figures['record_entries']}")
    # one image at a time: the worker's growth stays a small multiple of the decoded image
    assert figures["after_pass2_mib"] - figures["baseline_mib"] < 4 * decoded_mib
