"""Local and global noise levels, and clipped neighbourhoods, against numpy/scipy references."""

import numpy as np
import pytest
from kernel_reference import (
    LARGE_SHAPES_2D,
    LARGE_SHAPES_3D,
    MAD_SCALE,
    cfa_residual_reference,
    clipped_reference,
    local_sigma_reference,
    random_image,
    residual_reference,
)

import kernels

SHAPES = [(1, 1), (1, 9), (2, 3), (3, 3), (6, 7), (1, 1, 3), (4, 5, 3), (5, 6, 2)] + LARGE_SHAPES_2D[:1] + LARGE_SHAPES_3D[:1]
CFA_SHAPES = [(1, 1), (1, 9), (2, 3), (3, 3), (6, 7), (9, 12)] + LARGE_SHAPES_2D[:1]


def _residual(rng, shape, dtype=np.float32):
    image = random_image(rng, shape, dtype)
    return image, kernels.median_residual(image)


@pytest.mark.parametrize("radius", [1, 2, 3])
@pytest.mark.parametrize("shape", SHAPES)
def test_local_sigma_matches_scipy(shape, radius):
    _, residual = _residual(np.random.default_rng(sum(shape) + radius), shape)
    got = kernels.local_sigma(residual, radius=radius)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, local_sigma_reference(residual, radius))


@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("shape", CFA_SHAPES)
def test_local_sigma_cfa_matches_per_plane_scipy(shape, radius):
    mosaic = random_image(np.random.default_rng(sum(shape)), shape, np.uint16)
    residual = kernels.cfa_residual(mosaic)
    got = kernels.local_sigma(residual, radius=radius, cfa=True)
    np.testing.assert_array_equal(got, local_sigma_reference(residual, radius, cfa=True))


@pytest.mark.parametrize("radius", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (9, 11), (2, 3, 3), (8, 9, 3)])
def test_local_sigma_at_equals_the_map_at_every_position(shape, dtype, radius):
    image = random_image(np.random.default_rng(3), shape, dtype)
    index = np.indices(shape).reshape(len(shape), -1)
    channels = index[2] if len(shape) == 3 else None
    expected = kernels.local_sigma(kernels.median_residual(image), radius).ravel()
    np.testing.assert_array_equal(kernels.local_sigma_at(image, index[0], index[1], channels, radius), expected)
    if len(shape) == 2:
        expected = kernels.local_sigma(kernels.cfa_residual(image), radius, cfa=True).ravel()
        got = kernels.local_sigma_at(image, index[0], index[1], radius=radius, cfa=True)
        np.testing.assert_array_equal(got, expected)


def test_local_sigma_estimates_gaussian_noise_and_ignores_a_hot_pixel():
    rng = np.random.default_rng(5)
    residual = rng.normal(0.0, 2.0, (60, 60)).astype(np.float32)
    residual[30, 30] = 500.0
    sigma = kernels.local_sigma(residual)
    assert abs(np.median(sigma) - 2.0) < 0.15
    assert sigma[30, 30] < 4.0


def test_out_buffer_and_bad_arguments():
    residual = np.zeros((4, 5), np.float32)
    out = np.empty_like(residual)
    assert kernels.local_sigma(residual, out=out) is out
    with pytest.raises(TypeError, match="float32"):
        kernels.local_sigma(residual.astype(np.float64))
    for radius in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="radius"):
            kernels.local_sigma(residual, radius=radius)
    with pytest.raises(ValueError, match="H×W"):
        kernels.local_sigma(np.zeros((4, 5, 3), np.float32), cfa=True)
    residual[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(first at index \(2, 3\)\)"):
        kernels.local_sigma(residual)
    image = np.ones((6, 6), np.float32)
    image[0, 5] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        kernels.local_sigma_at(image, [1], [3])  # the 5×5 window's residuals reach (0, 5)


@pytest.mark.parametrize("stride", [1, 3, 16])
@pytest.mark.parametrize("shape", [(1, 1), (7, 9), (40, 50), (7, 9, 3), (40, 50, 3)])
def test_image_sigma_matches_residual_sigma_and_reference(shape, stride):
    image, residual = _residual(np.random.default_rng(11), shape, np.uint8)
    got = kernels.image_sigma(image, stride=stride)
    np.testing.assert_array_equal(got, kernels.residual_sigma(residual, stride=stride))
    channels = residual.reshape(shape[0], shape[1], -1)[::stride, ::stride]
    expected = MAD_SCALE * np.median(np.abs(channels).reshape(-1, channels.shape[2]), axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.shape == ((shape[2],) if len(shape) == 3 else (1,))


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (7, 9), (40, 50)])
def test_image_sigma_cfa_is_per_plane(shape):
    mosaic = random_image(np.random.default_rng(12), shape, np.uint16)
    residual = kernels.cfa_residual(mosaic)
    got = kernels.image_sigma(mosaic, cfa=True, stride=2)
    np.testing.assert_array_equal(got, kernels.residual_sigma(residual, cfa=True, stride=2))
    assert got.shape == (2, 2)
    for py in range(2):
        for px in range(2):
            sample = residual[py::4, px::4]
            expected = MAD_SCALE * np.median(np.abs(sample)) if sample.size else 0.0
            np.testing.assert_allclose(got[py, px], expected, rtol=1e-6)


def test_image_sigma_bad_stride():
    with pytest.raises(ValueError, match="stride"):
        kernels.image_sigma(np.zeros((4, 4), np.uint8), stride=0)


def test_non_finite_values_are_rejected_by_sigma_and_clipping():
    image = np.ones((6, 7), np.float32)
    image[2, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(first at index \(2, 4\)\)"):
        kernels.residual_sigma(image, stride=2)
    with pytest.raises(ValueError, match="NaN or inf"):
        kernels.image_sigma(image, stride=2)
    with pytest.raises(ValueError, match="NaN or inf"):
        kernels.clipped_neighbourhood(image, 10.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        kernels.clipped_at(image, [1], [3], saturation=10.0)


CLIP_CASES = [(shape, False) for shape in [(1, 1), (2, 3), (9, 11), (8, 9, 3)] + LARGE_SHAPES_2D[:1]] + [
    (shape, True) for shape in [(1, 1), (2, 3), (9, 11)] + LARGE_SHAPES_2D[:1]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(("shape", "cfa"), CLIP_CASES)
def test_clipped_neighbourhood_matches_maximum_filter(shape, cfa, dtype):
    image = random_image(np.random.default_rng(13), shape, dtype, high=255)
    got = kernels.clipped_neighbourhood(image, 240, cfa=cfa)
    expected = clipped_reference(image, 240, cfa=cfa)
    np.testing.assert_array_equal(got, expected)
    index = np.indices(shape).reshape(len(shape), -1)
    channels = index[2] if len(shape) == 3 else None
    np.testing.assert_array_equal(
        kernels.clipped_at(image, index[0], index[1], channels, saturation=240, cfa=cfa), expected.ravel())


def test_saturation_levels_are_exact_in_the_image_dtype():
    image = np.array([[100, 101]], np.uint8)
    # each pixel is judged by its neighbour only: 101 >= 100.5 clips the left pixel
    assert kernels.clipped_neighbourhood(image, 100.5).tolist() == [[True, False]]
    assert not kernels.clipped_neighbourhood(image, 101.5).any()
    assert not kernels.clipped_neighbourhood(image, 1e9).any()  # above the dtype's range
    assert kernels.clipped_neighbourhood(image, -5).all()
    below_one = np.nextafter(np.float32(1.0), np.float32(0.0))
    floats = np.array([[0.0, below_one]], np.float32)
    assert not kernels.clipped_neighbourhood(floats, (float(below_one) + 1.0) / 2)[0, 0]
    assert kernels.clipped_neighbourhood(floats, float(below_one))[0, 0]
    with pytest.raises(ValueError, match="NaN"):
        kernels.clipped_neighbourhood(image, float("nan"))


def test_a_saturated_pixel_alone_is_not_clipped():
    image = np.full((5, 6), 10, np.uint8)
    image[2, 3] = 255  # a saturated hot pixel: its residual is still informative
    image[0, 0] = 255  # a saturated corner: clamped copies of itself are not neighbours
    clipped = kernels.clipped_neighbourhood(image, 255)
    assert not clipped[2, 3] and not clipped[0, 0]
    assert clipped[1:4, 2:5].sum() == 8 and clipped[0, 1] and clipped[1, 0] and clipped[1, 1]
    assert not kernels.clipped_at(image, [2, 0], [3, 0], saturation=255).any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape, cfa", [((1, 1), False), ((5, 3), True), ((37, 61), False), ((37, 61, 3), False),
                                        ((38, 62), True), ((33, 47, 4), False)])
@pytest.mark.parametrize("stride", [1, 5, 16])
def test_image_sigma_is_bit_identical_to_the_scipy_residual_at_its_grid(shape, cfa, dtype, stride):
    image = random_image(np.random.default_rng(sum(shape) + stride), shape, dtype)
    residual = cfa_residual_reference(image) if cfa else residual_reference(image)
    got = kernels.image_sigma(image, cfa=cfa, stride=stride)
    if cfa:
        for py in range(2):
            for px in range(2):
                sample = residual[py::2 * stride, px::2 * stride].ravel()
                expected = MAD_SCALE * np.median(np.abs(sample)) if sample.size else np.float32(0)
                assert got[py, px] == np.float32(expected)
    else:
        planes = residual.reshape(shape[0], shape[1], -1)[::stride, ::stride]
        for c in range(planes.shape[2]):
            assert got[c] == np.float32(MAD_SCALE * np.median(np.abs(planes[..., c].ravel())))


def test_image_sigma_rejects_a_non_finite_neighbour_of_a_sampled_element():
    image = np.ones((9, 9), np.float32)
    image[1, 4] = np.inf  # not sampled itself (stride 2 samples rows 0, 2, ...), but inside (2, 4)'s window
    with pytest.raises(ValueError, match="NaN or inf"):
        kernels.image_sigma(image, stride=2)


def test_image_sigma_of_uint8_takes_the_mean_of_the_two_middle_values_like_numpy():
    # every element of a 3x4 image sampled: 12 residuals, an even count whose two middle |W| are 1
    # and 2, so a median that took either middle value alone would be off by half a level
    image = np.array([[0, 2, 4, 4], [4, 0, 0, 1], [0, 6, 5, 6]], np.uint8)
    residual = residual_reference(image)
    middle = np.sort(np.abs(residual).ravel())[5:7]
    assert middle[0] != middle[1]
    assert kernels.image_sigma(image, stride=1)[0] == np.float32(MAD_SCALE * np.median(np.abs(residual)))
