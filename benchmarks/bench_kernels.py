"""Kernel speed side by side with the alternatives a user would otherwise pick.

Run (not collected by the normal ``pytest`` run, whose testpaths are ``tests/``)::

    .venv/bin/pytest benchmarks/bench_kernels.py --benchmark-only \
        --benchmark-columns=median,min,max,rounds --benchmark-sort=name

Groups (compare medians within a group):

* ``residual-rgb-12MP``: 4000×3000 RGB uint8 → float32 residual. The memory floor is filling
  the 144 MB float32 output with the same two threads; the alternatives are
  ``scipy.ndimage.median_filter(size=(3, 3, 1))`` and ``cv2.medianBlur`` followed by the
  subtraction into a reused float32 array.
* ``cfa-24MP``: 6000×4000 uint16 mosaic → float32 CFA residual, against its output floor.
* ``sparse-vs-decode``: residuals at 1,000 positions against decoding the same 12 MP JPEG
  with ``simplejpeg.decode_jpeg``.
* ``fused-12MP``: residual folded into :class:`kernels.PixelStats`, per image or per stack
  of 8 images (divide that figure by 8), against the residual alone.
* ``noise-12MP``: the local noise map (informational).
* ``interleaved``: the target ratios again, with the calls of each comparison alternated
  call by call, so that a change in the machine's load hits both sides alike (medians and
  ratios in ``extra_info``, printed with ``-s``).
* ``compile-cache`` and ``memory``: one-off measurements in fresh subprocesses, reported in
  ``extra_info`` (``--benchmark-json`` keeps them) and printed with ``-s``.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
from numba import njit, prange

import kernels

HEIGHT, WIDTH = 3000, 4000
STACK = 8


@njit(parallel=True, cache=True)
def _fill(out2d, value):
    """The memory floor: write every element of a float32 array once, on all threads."""
    for y in prange(out2d.shape[0]):
        row = out2d[y]
        for i in range(row.size):
            row[i] = value


def _natural_image(rng, shape):
    """Smooth scene with edges and texture plus sensor-like noise, as uint8 (JPEG-realistic)."""
    coarse = rng.random((shape[0] // 50 + 2, shape[1] // 50 + 2, shape[2]), dtype=np.float32)
    ys = np.linspace(0, coarse.shape[0] - 1.001, shape[0])
    xs = np.linspace(0, coarse.shape[1] - 1.001, shape[1])
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    scene = ((1 - fy) * ((1 - fx) * coarse[y0][:, x0] + fx * coarse[y0][:, x0 + 1])
             + fy * ((1 - fx) * coarse[y0 + 1][:, x0] + fx * coarse[y0 + 1][:, x0 + 1]))
    scene = 200 * scene + 30 * (scene > 0.5)
    scene += rng.normal(0, 3, shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(scene, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def rgb():
    return _natural_image(np.random.default_rng(0), (HEIGHT, WIDTH, 3))


@pytest.fixture(scope="module")
def rgb_out():
    out = np.empty((HEIGHT, WIDTH, 3), np.float32)
    _fill(out.reshape(HEIGHT, -1), 0.0)
    return out


@pytest.fixture(scope="module")
def mosaic():
    rng = np.random.default_rng(1)
    return (rng.integers(0, 256, (4000, 6000)) * 16 + rng.integers(0, 16, (4000, 6000))).astype(np.uint16)


# ---------------------------------------------------------------- full residual, RGB 12 MP

@pytest.mark.benchmark(group="residual-rgb-12MP")
def test_floor_fill_float32_output(benchmark, rgb_out):
    benchmark(_fill, rgb_out.reshape(HEIGHT, -1), 1.0)


@pytest.mark.benchmark(group="residual-rgb-12MP")
def test_median_residual_into_reused_output(benchmark, rgb, rgb_out):
    kernels.median_residual(rgb, out=rgb_out)
    benchmark(kernels.median_residual, rgb, out=rgb_out)


@pytest.mark.benchmark(group="residual-rgb-12MP")
def test_median_residual_fresh_output(benchmark, rgb):
    benchmark(kernels.median_residual, rgb)


@pytest.mark.benchmark(group="residual-rgb-12MP")
def test_cv2_median_blur_then_subtract(benchmark, rgb, rgb_out):
    cv2 = pytest.importorskip("cv2")

    def residual():
        median = cv2.medianBlur(rgb, 3)
        return cv2.subtract(rgb, median, dst=rgb_out, dtype=cv2.CV_32F)

    np.testing.assert_array_equal(residual(), kernels.median_residual(rgb))
    benchmark(residual)


@pytest.mark.benchmark(group="residual-rgb-12MP")
def test_cv2_median_blur_only(benchmark, rgb):
    cv2 = pytest.importorskip("cv2")
    benchmark(cv2.medianBlur, rgb, 3)


@pytest.mark.benchmark(group="residual-rgb-12MP")
def test_scipy_median_filter_then_subtract(benchmark, rgb, rgb_out):
    from scipy.ndimage import median_filter

    def residual():
        return np.subtract(rgb, median_filter(rgb, size=(3, 3, 1), mode="reflect"), out=rgb_out,
                           dtype=np.float32)

    benchmark.pedantic(residual, rounds=3, iterations=1)


# ---------------------------------------------------------------- CFA residual, 24 MP mosaic

@pytest.mark.benchmark(group="cfa-24MP")
def test_floor_fill_cfa_output(benchmark, mosaic):
    out = np.empty(mosaic.shape, np.float32)
    benchmark(_fill, out, 1.0)


@pytest.mark.benchmark(group="cfa-24MP")
def test_cfa_residual_into_reused_output(benchmark, mosaic):
    out = np.empty(mosaic.shape, np.float32)
    kernels.cfa_residual(mosaic, out=out)
    benchmark(kernels.cfa_residual, mosaic, out=out)


# ---------------------------------------------------------------- sparse residual vs JPEG decode

@pytest.fixture(scope="module")
def positions():
    rng = np.random.default_rng(2)
    return rng.integers(0, HEIGHT, 1000), rng.integers(0, WIDTH, 1000), rng.integers(0, 3, 1000)


@pytest.mark.benchmark(group="sparse-vs-decode")
def test_simplejpeg_decode_12MP(benchmark, rgb):
    simplejpeg = pytest.importorskip("simplejpeg")
    encoded = simplejpeg.encode_jpeg(rgb, quality=90, colorsubsampling="420")  # as cameras write
    buffer = bytearray(rgb.nbytes)
    benchmark(simplejpeg.decode_jpeg, encoded, buffer=buffer)


@pytest.mark.benchmark(group="sparse-vs-decode")
def test_sparse_residual_1000_positions(benchmark, rgb, positions):
    rows, cols, channels = positions
    np.testing.assert_array_equal(kernels.sparse_residual(rgb, rows, cols, channels),
                                  kernels.median_residual(rgb)[rows, cols, channels])
    benchmark(kernels.sparse_residual, rgb, rows, cols, channels)


@pytest.mark.benchmark(group="sparse-vs-decode")
def test_local_sigma_at_1000_positions(benchmark, rgb, positions):
    benchmark(kernels.local_sigma_at, rgb, *positions)


# ---------------------------------------------------------------- fused residual + statistics

@pytest.mark.benchmark(group="fused-12MP")
def test_residual_alone(benchmark, rgb, rgb_out):
    benchmark(kernels.median_residual, rgb, out=rgb_out)


@pytest.mark.benchmark(group="fused-12MP")
def test_fused_update_per_image(benchmark, rgb):
    stats = kernels.PixelStats(rgb.shape)
    benchmark(stats.update_from_image, rgb)


@pytest.mark.benchmark(group="fused-12MP")
def test_fused_update_per_image_float64_state(benchmark, rgb):
    stats = kernels.PixelStats(rgb.shape, dtype=np.float64)
    benchmark(stats.update_from_image, rgb)


@pytest.mark.benchmark(group="fused-12MP")
def test_fused_update_per_image_with_exceed_counts(benchmark, rgb):
    stats = kernels.PixelStats(rgb.shape, exceed_k=3.0)
    sigma = kernels.image_sigma(rgb)
    benchmark(stats.update_from_image, rgb, sigma=sigma)


@pytest.mark.benchmark(group="fused-12MP")
def test_fused_update_per_image_with_saturation(benchmark, rgb):
    stats = kernels.PixelStats(rgb.shape)
    benchmark(stats.update_from_image, rgb, saturation=250)


@pytest.mark.benchmark(group="fused-12MP")
def test_fused_update_stack_of_8_images(benchmark, rgb):
    stack = np.stack([np.roll(rgb, shift, axis=1) for shift in range(STACK)])
    stats = kernels.PixelStats(rgb.shape)
    benchmark.extra_info["images_per_call"] = STACK
    benchmark(stats.update_from_stack, stack)


@pytest.mark.benchmark(group="fused-12MP")
def test_image_sigma_stride_16(benchmark, rgb):
    benchmark(kernels.image_sigma, rgb)


@pytest.mark.benchmark(group="fused-12MP")
def test_merge_accumulators(benchmark, rgb):
    stats = kernels.PixelStats(rgb.shape).update_from_image(rgb)
    other = kernels.PixelStats(rgb.shape).update_from_image(rgb)
    benchmark(stats.merge, other)


# ---------------------------------------------------------------- noise map

@pytest.mark.benchmark(group="noise-12MP")
def test_local_sigma_radius_2(benchmark, rgb, rgb_out):
    residual = kernels.median_residual(rgb)
    kernels.local_sigma(residual, out=rgb_out)
    benchmark(kernels.local_sigma, residual, out=rgb_out)


# ---------------------------------------------------------------- interleaved ratios

def _interleaved_medians(calls, repeats):
    """Median seconds of each call when the calls are alternated, one of each per repeat."""
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _report_ratios(benchmark, medians, reference):
    benchmark.extra_info.update({f"{name}_ms": 1e3 * value for name, value in medians.items()})
    ratios = {name: value / medians[reference] for name, value in medians.items() if name != reference}
    benchmark.extra_info.update({f"{name}/{reference}": ratio for name, ratio in ratios.items()})
    print(f"\n{reference}: {1e3 * medians[reference]:.2f} ms; "
          + "  ".join(f"{name}: {1e3 * medians[name]:.2f} ms = {ratio:.2f} x" for name, ratio in ratios.items()))


@pytest.mark.benchmark(group="interleaved")
def test_interleaved_rgb_residual_floor_and_cv2(benchmark, rgb, rgb_out):
    cv2 = pytest.importorskip("cv2")
    floor_out = np.empty_like(rgb_out)
    calls = {
        "fill_floor": lambda: _fill(floor_out.reshape(HEIGHT, -1), 1.0),
        "median_residual": lambda: kernels.median_residual(rgb, out=rgb_out),
        "cv2_blur_subtract": lambda: cv2.subtract(rgb, cv2.medianBlur(rgb, 3), dst=rgb_out, dtype=cv2.CV_32F),
    }
    medians = benchmark.pedantic(_interleaved_medians, args=(calls, 41), rounds=1, iterations=1)
    _report_ratios(benchmark, medians, "fill_floor")


@pytest.mark.benchmark(group="interleaved")
def test_interleaved_cfa_residual_and_floor(benchmark, mosaic):
    out = np.empty(mosaic.shape, np.float32)
    floor_out = np.empty(mosaic.shape, np.float32)
    calls = {
        "fill_floor": lambda: _fill(floor_out, 1.0),
        "cfa_residual": lambda: kernels.cfa_residual(mosaic, out=out),
    }
    medians = benchmark.pedantic(_interleaved_medians, args=(calls, 41), rounds=1, iterations=1)
    _report_ratios(benchmark, medians, "fill_floor")


@pytest.mark.benchmark(group="interleaved")
def test_interleaved_fused_update_and_residual(benchmark, rgb, rgb_out):
    stack = np.stack([np.roll(rgb, shift, axis=1) for shift in range(STACK)])
    single, stacked = kernels.PixelStats(rgb.shape), kernels.PixelStats(rgb.shape)
    calls = {
        "median_residual": lambda: kernels.median_residual(rgb, out=rgb_out),
        "update_from_image": lambda: single.update_from_image(rgb),
        "update_from_stack_of_8": lambda: stacked.update_from_stack(stack),
    }
    medians = benchmark.pedantic(_interleaved_medians, args=(calls, 15), rounds=1, iterations=1)
    medians["update_from_stack_per_image"] = medians.pop("update_from_stack_of_8") / STACK
    _report_ratios(benchmark, medians, "median_residual")


# ---------------------------------------------------------------- one-off measurements

_COMPILE_PROBE = textwrap.dedent("""
    import json, time
    import numpy as np
    timings = {}
    start = time.perf_counter()
    import kernels
    timings["import"] = time.perf_counter() - start
    rgb = np.zeros((32, 48, 3), np.uint8)
    mosaic = np.zeros((32, 48), np.uint16)
    calls = {
        "median_residual(uint8 RGB)": lambda: kernels.median_residual(rgb),
        "cfa_residual(uint16)": lambda: kernels.cfa_residual(mosaic),
        "sparse_residual": lambda: kernels.sparse_residual(rgb, [1], [2], [0]),
        "local_sigma": lambda: kernels.local_sigma(np.zeros((32, 48, 3), np.float32)),
        "local_sigma_at": lambda: kernels.local_sigma_at(rgb, [1], [2], [0]),
        "PixelStats.update_from_image(uint8)": lambda: kernels.PixelStats(rgb.shape).update_from_image(rgb),
        "onset_changepoints": lambda: kernels.onset_changepoints(np.zeros((2, 5)), np.ones(5)),
    }
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        timings[name] = time.perf_counter() - start
    print(json.dumps(timings))
""")


@pytest.mark.benchmark(group="compile-cache")
def test_first_call_compile_then_cache_in_a_second_process(benchmark):
    """Two fresh processes sharing a fresh NUMBA_CACHE_DIR: the first compiles, the second loads."""
    with tempfile.TemporaryDirectory() as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        env.pop("NUMBA_DISABLE_JIT", None)

        def run_twice():
            return [json.loads(subprocess.run([sys.executable, "-c", _COMPILE_PROBE], env=env, check=True,
                                              capture_output=True, text=True).stdout) for _ in range(2)]

        cold, warm = benchmark.pedantic(run_twice, rounds=1, iterations=1)
    benchmark.extra_info["first_process_s"] = cold
    benchmark.extra_info["second_process_s"] = warm
    print("\nfirst call, s:  " + "  ".join(f"{k}: {cold[k]:.2f} / {warm[k]:.3f}" for k in cold))


_MEMORY_PROBE = textwrap.dedent("""
    import json
    import numpy as np
    import kernels

    def status(field):
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(field))

    def peak_extra(call):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak resident set size to the current one
        before = status("VmRSS:")
        result = call()
        return status("VmHWM:") - before, result

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    out = np.empty(rgb.shape, np.float32)
    out.fill(0)
    kernels.median_residual(rgb[:64])  # compile or load before measuring
    import cv2
    from scipy.ndimage import median_filter
    cv2.medianBlur(rgb[:64], 3)
    report = {"output_bytes": out.nbytes}
    report["median_residual_fresh_output"] = peak_extra(lambda: kernels.median_residual(rgb))[0]
    report["median_residual_reused_output"] = peak_extra(lambda: kernels.median_residual(rgb, out=out))[0]
    report["cv2_median_then_subtract_reused_output"] = peak_extra(
        lambda: cv2.subtract(rgb, cv2.medianBlur(rgb, 3), dst=out, dtype=cv2.CV_32F))[0]
    report["scipy_median_then_subtract_reused_output"] = peak_extra(
        lambda: np.subtract(rgb, median_filter(rgb, size=(3, 3, 1)), out=out, dtype=np.float32))[0]
    print(json.dumps(report))
""")


@pytest.mark.benchmark(group="memory")
def test_peak_extra_memory_of_the_full_residual(benchmark):
    """Peak resident memory added by one call (Linux VmHWM after resetting it), 12 MP RGB."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"}

    def probe():
        return json.loads(subprocess.run([sys.executable, "-c", _MEMORY_PROBE], env=env, check=True,
                                         capture_output=True, text=True).stdout)

    report = benchmark.pedantic(probe, rounds=1, iterations=1)
    benchmark.extra_info.update(report)
    print("\npeak extra memory, MB: " + "  ".join(f"{k}: {v / 2**20:.1f}" for k, v in report.items()))
