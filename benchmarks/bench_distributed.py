"""Feature-extraction throughput over worker processes: 1 and 2 local workers, 2 Dask workers.

Run (not collected by the normal ``pytest`` run)::

    .venv/bin/pytest benchmarks/bench_distributed.py --benchmark-only \
        --benchmark-columns=median,min,max,rounds --benchmark-sort=name -s

Group ``pool-12MP``: ``N_IMAGES`` 4000×3000 JPEGs (quality 92, 4:4:4), batches of 2 images per
task, through :func:`pipeline.features.executor.map_batches` exactly as ``ml_age`` sends them.
Pools are started outside the timings (a run keeps one pool for the whole experiment). Per
executor: decoding only (the ceiling), pass 1 (:func:`screen_batch`: decode, full residual
reduced to the screening record) and pass 2 (:func:`sparse_batch` at 5,000 positions). The
feature cache is off, so every image is computed.
"""

import numpy as np
import pytest
from photo_jpegs import write_photo_jpegs

from pipeline.data.imageio import read_image
from pipeline.features.executor import DaskPool, WorkerPool, batched, map_batches
from pipeline.features.extract import ScreenTask, SparseTask, screen_batch, sparse_batch

HEIGHT, WIDTH = 3000, 4000
N_IMAGES = 8
N_POSITIONS = 5000
BATCH = 2


def decode_batch(paths):
    return [read_image(p).pixels.shape for p in paths]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    paths = write_photo_jpegs(tmp_path_factory.mktemp("jpeg12mp"), N_IMAGES, HEIGHT, WIDTH)
    return tuple(paths)


@pytest.fixture(scope="module", params=["local-1", "local-2", "dask-2"])
def pool(request, jpegs):
    kind, n = request.param.split("-")
    pool = WorkerPool(int(n)) if kind == "local" else DaskPool(workers=int(n))
    with pool:
        # warm every worker: imports and the kernels' compiled code (cached on disk)
        map_batches(screen_batch, [ScreenTask((jpegs[0],), None)] * int(n) * 2, pool=pool, progress=False)
        yield request.param, pool


def _run(benchmark, pool, func, tasks):
    name, executor = pool
    benchmark.extra_info["executor"] = name
    benchmark.extra_info["images"] = N_IMAGES
    result = benchmark.pedantic(map_batches, args=(func, tasks), kwargs={"pool": executor, "progress": False},
                                rounds=3, iterations=1)
    return result


@pytest.mark.benchmark(group="pool-12MP")
def test_decode_only(benchmark, pool, jpegs):
    _run(benchmark, pool, decode_batch, batched(list(jpegs), BATCH))


@pytest.mark.benchmark(group="pool-12MP")
def test_pass1_screening(benchmark, pool, jpegs):
    results = _run(benchmark, pool, screen_batch, [ScreenTask(tuple(b), None) for b in batched(list(jpegs), BATCH)])
    assert sum(len(r.records) for r in results) == N_IMAGES


@pytest.mark.benchmark(group="pool-12MP")
def test_pass2_residuals_at_candidates(benchmark, pool, jpegs):
    rng = np.random.default_rng(1)
    rows, cols, chans = (rng.integers(0, HEIGHT, N_POSITIONS), rng.integers(0, WIDTH, N_POSITIONS),
                         rng.integers(0, 3, N_POSITIONS))
    tasks = [SparseTask(tuple(b), rows, cols, chans, None) for b in batched(list(jpegs), BATCH)]
    results = _run(benchmark, pool, sparse_batch, tasks)
    assert sum(len(r.exposures) for r in results) == N_IMAGES
