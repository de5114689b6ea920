"""Per-image exceedance records against a scipy reference (residual, threshold, clipping)."""

import numpy as np
import pytest
from kernel_reference import (
    LARGE_SHAPES_2D,
    LARGE_SHAPES_3D,
    SMALL_SHAPES_2D,
    SMALL_SHAPES_3D,
    exceedances_reference,
    random_image,
)

import kernels

DTYPES = [np.uint8, np.uint16, np.float32]


def _sigma_for(image, cfa):
    rng = np.random.default_rng(image.size)
    if cfa:
        return rng.uniform(5, 40, (2, 2))
    channels = image.shape[2] if image.ndim == 3 else 1
    return rng.uniform(5, 40, channels)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SMALL_SHAPES_2D + LARGE_SHAPES_2D + SMALL_SHAPES_3D + LARGE_SHAPES_3D)
@pytest.mark.parametrize("saturation", [None, 200])
def test_exceedances_match_reference(shape, dtype, saturation):
    image = random_image(np.random.default_rng(sum(shape) + 7), shape, dtype, high=255)
    sigma = _sigma_for(image, False)
    exceed, clipped = kernels.exceedances(image, sigma, 2.5, saturation=saturation)
    ref_exceed, ref_clipped = exceedances_reference(image, sigma, 2.5, saturation)
    np.testing.assert_array_equal(exceed, ref_exceed)
    np.testing.assert_array_equal(clipped, ref_clipped)
    assert exceed.dtype == np.int64 and clipped.dtype == np.int64
    assert not np.intersect1d(exceed, clipped).size


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SMALL_SHAPES_2D + [(6, 7), (7, 6)] + LARGE_SHAPES_2D)
@pytest.mark.parametrize("saturation", [None, 3000])
def test_cfa_exceedances_match_reference(shape, dtype, saturation):
    image = random_image(np.random.default_rng(sum(shape) + 8), shape, dtype)
    sigma = _sigma_for(image, True) * 10
    exceed, clipped = kernels.exceedances(image, sigma, 1.5, saturation=saturation, cfa=True)
    ref_exceed, ref_clipped = exceedances_reference(image, sigma, 1.5, saturation, cfa=True)
    np.testing.assert_array_equal(exceed, ref_exceed)
    np.testing.assert_array_equal(clipped, ref_clipped)


def test_scalar_sigma_and_threshold_is_strict():
    image = np.zeros((5, 5), np.uint8)
    image[2, 2] = 10  # residual exactly 10
    exceed, _ = kernels.exceedances(image, 5.0, 2.0)
    assert exceed.size == 0  # 10 > 10 is false
    exceed, _ = kernels.exceedances(image, 4.9, 2.0)
    np.testing.assert_array_equal(exceed, [12])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("threshold", [3.0, np.nextafter(np.float32(3), np.float32(0)), np.nextafter(np.float32(3), np.float32(9)),
                                       2.5, 0.0, -0.5, -1.0, 254.5, 255.0, 256.0, 1e6, -1e6, 65535.0, -65536.0])
def test_integer_images_compare_exactly_at_every_threshold(dtype, threshold):
    """Integer pixels are compared with whole-number thresholds inside the kernel; at, just off,
    below zero and beyond the dtype's range every element must still be what the float reference says."""
    rng = np.random.default_rng(7)
    top = np.iinfo(dtype).max
    image = rng.integers(0, 8, (23, 41, 3)).astype(dtype)  # residuals of a few levels, many exactly 3
    image[5, 7] = top
    image[11, 20] = 0
    image[17, 30, 1] = top // 2
    sigma = np.float32(threshold) / np.float32(2.0)  # k = 2 doubles sigma exactly back to the threshold
    exceed, clipped = kernels.exceedances(image, [sigma] * 3, 2.0, saturation=top)
    ref_exceed, ref_clipped = exceedances_reference(image, np.full(3, sigma, np.float64), 2.0, top)
    np.testing.assert_array_equal(exceed, ref_exceed)
    np.testing.assert_array_equal(clipped, ref_clipped)


def test_saturated_hot_pixel_is_not_clipped_by_itself():
    image = np.full((5, 5), 10, np.uint8)
    image[2, 2] = 255
    exceed, clipped = kernels.exceedances(image, 1.0, 3.0, saturation=255)
    np.testing.assert_array_equal(exceed, [12])
    assert 12 not in clipped and clipped.size == 8


def test_agrees_with_pixelstats_exceedance_counts():
    rng = np.random.default_rng(3)
    image = random_image(rng, (40, 60, 3), np.uint8)
    sigma = kernels.image_sigma(image)
    stats = kernels.PixelStats(image.shape, exceed_k=3.0)
    stats.update_from_image(image, sigma=sigma, saturation=250)
    exceed, clipped = kernels.exceedances(image, sigma, 3.0, saturation=250)
    np.testing.assert_array_equal(np.flatnonzero(stats.exceed), exceed)
    np.testing.assert_array_equal(np.flatnonzero(stats.count == 0), clipped)


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((4, 4), np.int32), TypeError, "uint8"),
    (np.zeros((0, 4), np.uint8), ValueError, "empty"),
    (np.zeros((4,), np.uint8), ValueError, "dimension|ndim|2-D|rank|shape"),
])
def test_bad_images(bad, error, match):
    with pytest.raises(error, match=match):
        kernels.exceedances(bad, 1.0, 3.0)


def test_non_finite_and_bad_sigma():
    image = np.ones((6, 6), np.float32)
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kernels.exceedances(image, 1.0, 3.0)
    with pytest.raises(ValueError, match="per channel"):
        kernels.exceedances(np.zeros((4, 4, 3), np.uint8), [1.0, 2.0], 3.0)
    with pytest.raises(ValueError, match="CFA"):
        kernels.exceedances(np.zeros((4, 4), np.uint16), [1.0, 2.0], 3.0, cfa=True)
    with pytest.raises(ValueError, match="finite"):
        kernels.exceedances(np.zeros((4, 4), np.uint8), np.inf, 3.0)


# --- the fused kernel's room per row chunk: a first guess, and a rerun of chunks that need more ---------

def _pattern(shape, dtype, rng):
    """Every other element far above its neighbours: about half the elements exceed."""
    image = random_image(rng, shape, dtype, high=50)
    hot = (np.indices(shape).sum(axis=0) % 2).astype(bool) if len(shape) == 2 else \
        (np.indices(shape[:2]).sum(axis=0) % 2).astype(bool)[..., None].repeat(shape[2], axis=2)
    image[hot] = np.asarray(150, dtype)
    return image


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, cfa", [((37, 1031), False), ((33, 515, 3), False), ((64, 2050), True),
                                        ((7, 9), True), ((1, 40, 3), False)])
@pytest.mark.parametrize("case", ["all saturated", "half exceed", "half saturated rows"])
def test_chunks_that_outgrow_their_room_are_rerun_exactly(shape, cfa, dtype, case):
    rng = np.random.default_rng(len(shape) * 31 + shape[0])
    if case == "all saturated":
        image = np.full(shape, 200, dtype)
    elif case == "half exceed":
        image = _pattern(shape, dtype, rng)
    else:  # some chunks overflow their clipped room, others do not
        image = random_image(rng, shape, dtype, high=150)
        image[: shape[0] // 2] = 200
    sigma = np.ones((2, 2)) if cfa else np.ones(shape[2] if len(shape) == 3 else 1)
    exceed, clipped = kernels.exceedances(image, sigma, 3.0, saturation=200, cfa=cfa)
    ref_exceed, ref_clipped = exceedances_reference(image, sigma, 3.0, 200, cfa=cfa)
    np.testing.assert_array_equal(exceed, ref_exceed)
    np.testing.assert_array_equal(clipped, ref_clipped)
    if case == "all saturated":  # far more than the room first given (a quarter of the elements)
        assert clipped.size == image.size and exceed.size == 0


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_any_number_of_threads_gives_the_same_record(threads):
    import numba

    rng = np.random.default_rng(11)
    image = random_image(rng, (257, 301, 3), np.uint8)
    image[100:140] = 255
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        exceed, clipped = kernels.exceedances(image, [9.0, 11.0, 13.0], 2.0, saturation=255)
    finally:
        numba.set_num_threads(before)
    ref_exceed, ref_clipped = exceedances_reference(image, [9.0, 11.0, 13.0], 2.0, 255)
    np.testing.assert_array_equal(exceed, ref_exceed)
    np.testing.assert_array_equal(clipped, ref_clipped)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, cfa", [((2, 2 * 16384 + 300), False), ((2, 5600, 3), False), ((4, 16384 + 9), True)])
def test_long_rows_are_flagged_everywhere(shape, cfa, dtype):
    # rows of more than 16 Ki elements, with isolated hot elements at every position where a row
    # could plausibly be cut or summarised (powers of two and their neighbours: word and block
    # edges of the flags, the row's end)
    rng = np.random.default_rng(sum(shape))
    image = random_image(rng, shape, dtype, high=60)
    flat = image.reshape(shape[0], -1)
    length = flat.shape[1]
    cuts = [c + d for c in (8, 64, 256, 1024, 4096, 8192, 16384, 32768) for d in (-2, -1, 0, 1, 2)]
    columns = sorted({c for c in cuts + [length - 1, length - 2, length - 3] if 0 <= c < length})
    flat[1, columns] = np.asarray(200, dtype)
    flat[0, -5:] = np.asarray(250, dtype)  # a clipped run at the end of the first row
    sigma = np.full((2, 2), 4.0) if cfa else np.full(shape[2] if len(shape) == 3 else 1, 4.0)
    exceed, clipped = kernels.exceedances(image, sigma, 3.0, saturation=250, cfa=cfa)
    ref_exceed, ref_clipped = exceedances_reference(image, sigma, 3.0, 250, cfa=cfa)
    np.testing.assert_array_equal(exceed, ref_exceed)
    np.testing.assert_array_equal(clipped, ref_clipped)
    assert ref_exceed.size and ref_clipped.size
