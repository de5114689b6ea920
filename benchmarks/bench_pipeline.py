"""Whole-pipeline feature extraction on 12 MP JPEGs, against decoding alone.

Run (not collected by the normal ``pytest`` run)::

    .venv/bin/pytest benchmarks/bench_pipeline.py --benchmark-only \
        --benchmark-columns=median,min,max,rounds --benchmark-sort=name

Group ``extract-12MP`` (per batch of ``N_IMAGES`` 4000×3000 JPEGs, quality 92, 4:4:4, one
process, Numba's default threads):

* ``decode_only`` — :func:`pipeline.data.imageio.read_image` of every file: the ceiling;
* ``statistics_pass`` — :func:`pipeline.features.extract.accumulate_batch`: decode, full
  residual fused into the block accumulator (the trusted images' pass);
* ``sparse_pass`` — :func:`pipeline.features.extract.sparse_batch` at 2,000 candidate
  positions: decode, residual, local σ and clipping at those positions only;
* ``both_passes`` — what one run of ``ml_age`` costs per trusted image today (the two passes
  each decode the image).
"""

import numpy as np
import pytest
from PIL import Image

from pipeline.data.imageio import read_image
from pipeline.features.extract import AccumulateTask, SparseTask, accumulate_batch, sparse_batch

HEIGHT, WIDTH = 3000, 4000
N_IMAGES = 4
N_POSITIONS = 2000


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """Photo-like 12 MP JPEGs: a smooth scene with texture and sensor-like noise."""
    from skimage import data, transform

    folder = tmp_path_factory.mktemp("jpeg12mp")
    rng = np.random.default_rng(0)
    base = transform.resize(data.astronaut(), (HEIGHT, WIDTH), order=1, preserve_range=True)
    paths = []
    for i in range(N_IMAGES):
        noisy = np.clip(np.roll(base, 37 * i, axis=1) + rng.normal(0, 2.0, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"img_{i}.jpg"
        Image.fromarray(noisy).save(path, quality=92, subsampling=0)
        paths.append(str(path))
    # warm the kernels' compilation and the page cache outside the timings
    accumulate_batch(AccumulateTask(tuple(paths[:1]), 0, None))
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
def test_statistics_pass(benchmark, jpegs):
    result = benchmark(accumulate_batch, AccumulateTask(jpegs, 0, None))
    assert result.n_images == N_IMAGES and not result.failures


@pytest.mark.benchmark(group="extract-12MP")
def test_sparse_pass(benchmark, jpegs, positions):
    rows, cols, chans = positions
    result = benchmark(sparse_batch, SparseTask(jpegs, rows, cols, chans, None))
    assert result.residuals.shape == (N_IMAGES, N_POSITIONS) and not result.failures


@pytest.mark.benchmark(group="extract-12MP")
def test_both_passes(benchmark, jpegs, positions):
    rows, cols, chans = positions

    def both():
        accumulate_batch(AccumulateTask(jpegs, 0, None))
        sparse_batch(SparseTask(jpegs, rows, cols, chans, None))

    benchmark(both)
