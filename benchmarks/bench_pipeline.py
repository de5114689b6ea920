"""Whole-pipeline feature extraction on 12 MP JPEGs, against decoding alone.

Run (not collected by the normal ``pytest`` run)::

    .venv/bin/pytest benchmarks/bench_pipeline.py --benchmark-only \
        --benchmark-columns=median,min,max,rounds --benchmark-sort=name

Group ``extract-12MP`` (per batch of ``N_IMAGES`` 4000×3000 JPEGs, quality 92, 4:4:4, one
process, Numba's default threads):

* ``decode_only`` — :func:`pipeline.data.imageio.read_image` of every file: the ceiling;
* ``screening_pass`` — :func:`pipeline.features.extract.screen_batch`: decode, full
  residual reduced to the image's screening record (pass 1, once per image per experiment);
* ``sparse_pass`` — :func:`pipeline.features.extract.sparse_batch` at 2,000 candidate
  positions: decode, residual, local σ and clipping at those positions only;
* ``both_passes`` — what a whole ``ml_age`` experiment costs per image, whatever its number
  of split runs (each pass decodes the image once).
"""

import numpy as np
import pytest
from photo_jpegs import write_photo_jpegs

from pipeline.data.imageio import read_image
from pipeline.features.extract import ScreenTask, SparseTask, screen_batch, sparse_batch

HEIGHT, WIDTH = 3000, 4000
N_IMAGES = 4
N_POSITIONS = 2000


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Photo-like 12 MP JPEGs: a smooth scene with texture and sensor-like noise."""
    paths = write_photo_jpegs(tmp_path_factory.mktemp("jpeg12mp"), N_IMAGES, HEIGHT, WIDTH)
    # warm the kernels' compilation and the page cache outside the timings
    screen_batch(ScreenTask(tuple(paths[:1]), None))
    return tuple(paths)


@pytest.fixture(scope="module")
def positions():
    rng = np.random.default_rng(1)
    return (rng.integers(0, HEIGHT, N_POSITIONS), rng.integers(0, WIDTH, N_POSITIONS),
            rng.integers(0, 3, N_POSITIONS))


@pytest.mark.benchmark(group="extract-12MP")
def test_decode_only(benchmark, jpegs):
    benchmark(lambda: [read_image(p) for p in jpegs])


@pytest.mark.benchmark(group="extract-12MP")
def test_screening_pass(benchmark, jpegs):
    result = benchmark(screen_batch, ScreenTask(jpegs, None))
    assert len(result.records) == N_IMAGES and not result.failures


@pytest.mark.benchmark(group="extract-12MP")
def test_sparse_pass(benchmark, jpegs, positions):
    rows, cols, chans = positions
    result = benchmark(sparse_batch, SparseTask(jpegs, rows, cols, chans, None))
    assert result.residuals.shape == (N_IMAGES, N_POSITIONS) and not result.failures


@pytest.mark.benchmark(group="extract-12MP")
def test_both_passes(benchmark, jpegs, positions):
    rows, cols, chans = positions

    def both():
        screen_batch(ScreenTask(jpegs, None))
        sparse_batch(SparseTask(jpegs, rows, cols, chans, None))

    benchmark(both)
