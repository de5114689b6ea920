"""Peak memory of one worker processing one large JPEG through both feature passes.

Run (not collected by the normal ``pytest`` run)::

    .venv/bin/pytest benchmarks/bench_memory.py -s

For each size (20 MP and 50 MP RGB JPEGs), a fresh worker process runs both passes on one large
image after a small one (``worker_memory.py`` says how). The difference of its peaks is what one
image costs a worker; the absolute peak is what a worker needs. Figures go to ``benchmarks/RESULTS.md``.
"""

import pytest
from worker_memory import describe, worker_peak_memory, write_jpeg

SIZES = {"20MP": (3648, 5472), "50MP": (5792, 8688)}


@pytest.mark.parametrize("size", list(SIZES))
def test_peak_memory_per_worker(size, tmp_path):
    height, width = SIZES[size]
    small = write_jpeg(tmp_path / "small.jpg", (300, 400), 1)
    large = write_jpeg(tmp_path / "large.jpg", (height, width), 2)
    figures = worker_peak_memory(small, large, height, width)
    print("\n" + describe(size, height, width, figures))
    # one image at a time: the worker's growth stays a small multiple of the decoded image
    decoded_mib = height * width * 3 / 2 ** 20
    assert figures["after_pass2_mib"] - figures["baseline_mib"] < 4 * decoded_mib
