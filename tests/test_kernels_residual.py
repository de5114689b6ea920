"""Full, CFA and sparse median residuals against scipy references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kernel_reference import (
    LARGE_SHAPES_2D,
    LARGE_SHAPES_3D,
    PURE_PYTHON,
    SMALL_SHAPES_2D,
    SMALL_SHAPES_3D,
    cfa_residual_reference,
    random_image,
    residual_reference,
)

import kernels

DTYPES = [np.uint8, np.uint16, np.float32]
MAX_EXAMPLES = 10 if PURE_PYTHON else 40


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SMALL_SHAPES_2D + LARGE_SHAPES_2D + SMALL_SHAPES_3D + LARGE_SHAPES_3D)
def test_median_residual_matches_scipy(shape, dtype):
    image = random_image(np.random.default_rng(sum(shape)), shape, dtype)
    got = kernels.median_residual(image)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, residual_reference(image))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SMALL_SHAPES_2D + [(6, 7), (7, 6)] + LARGE_SHAPES_2D)
def test_cfa_residual_matches_per_plane_scipy(shape, dtype):
    mosaic = random_image(np.random.default_rng(sum(shape) + 1), shape, dtype)
    got = kernels.cfa_residual(mosaic)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, cfa_residual_reference(mosaic))


def test_cfa_residual_ignores_other_colour_planes():
    mosaic = np.zeros((8, 8), np.uint16)
    mosaic[1::2, :] = 1000  # every other plane is bright
    mosaic[0::2, 1::2] = 500
    np.testing.assert_array_equal(kernels.cfa_residual(mosaic), np.zeros((8, 8), np.float32))


def test_border_rule_replaces_missing_neighbours_by_the_pixel_itself():
    image = np.array([[9, 1, 1], [1, 1, 1], [1, 1, 1]], np.uint8)
    # window of the corner: 9 appears 4 times (itself and three reflections), 1 five times
    assert kernels.median_residual(image)[0, 0] == 8.0
    image[0, 0], image[0, 1] = 9, 9  # now six of nine corner-window values are 9
    assert kernels.median_residual(image)[0, 0] == 0.0


def test_out_buffer_is_filled_and_returned():
    image = random_image(np.random.default_rng(0), (5, 6, 3), np.uint8)
    out = np.full(image.shape, np.nan, np.float32)
    assert kernels.median_residual(image, out=out) is out
    np.testing.assert_array_equal(out, residual_reference(image))
    mosaic = image[..., 0].copy()
    out2 = np.empty(mosaic.shape, np.float32)
    assert kernels.cfa_residual(mosaic, out=out2) is out2


def test_non_contiguous_input_is_accepted():
    image = random_image(np.random.default_rng(1), (12, 14, 3), np.uint16)
    view = image[::2, 1::2]
    np.testing.assert_array_equal(kernels.median_residual(view), residual_reference(view))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (9, 1)] + LARGE_SHAPES_2D[:1])
def test_sparse_residual_equals_full_residual_everywhere(shape, dtype):
    image = random_image(np.random.default_rng(7), shape, dtype)
    rows, cols = np.indices(shape).reshape(2, -1)
    np.testing.assert_array_equal(kernels.sparse_residual(image, rows, cols),
                                  kernels.median_residual(image).ravel())
    np.testing.assert_array_equal(kernels.sparse_cfa_residual(image, rows, cols),
                                  kernels.cfa_residual(image).ravel())


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 4, 2)] + LARGE_SHAPES_3D[:1])
def test_sparse_residual_with_channels(shape):
    image = random_image(np.random.default_rng(8), shape, np.uint8)
    rows, cols, channels = np.indices(shape).reshape(3, -1)
    got = kernels.sparse_residual(image, rows, cols, channels)
    np.testing.assert_array_equal(got, kernels.median_residual(image).ravel())


def test_sparse_residual_of_no_positions_is_empty():
    image = np.zeros((4, 4), np.uint8)
    assert kernels.sparse_residual(image, [], []).shape == (0,)


# ---------------------------------------------------------------- properties

image_strategy = hnp.arrays(
    dtype=np.uint8,
    shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6),
    elements=st.integers(0, 200),
)


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=7),
       value=st.integers(0, 65535))
def test_residual_of_constant_image_is_zero(shape, value):
    image = np.full(shape, value, np.uint16)
    assert not kernels.median_residual(image).any()
    if len(shape) == 2:
        assert not kernels.cfa_residual(image).any()


@settings(max_examples=MAX_EXAMPLES, deadline=None)
@given(image=image_strategy, offset=st.integers(0, 55))
def test_adding_a_constant_leaves_the_residual_unchanged(image, offset):
    shifted = image + np.uint8(offset)  # values stay <= 255: exact
    np.testing.assert_array_equal(kernels.median_residual(shifted), kernels.median_residual(image))
    as_float = image.astype(np.float32)
    np.testing.assert_array_equal(kernels.median_residual(as_float + offset),
                                  kernels.median_residual(image))
    if image.ndim == 2:
        np.testing.assert_array_equal(kernels.cfa_residual(shifted), kernels.cfa_residual(image))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_with_their_position(bad):
    image = np.ones((6, 7, 3), np.float32)
    image[4, 2, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or inf \(first at index \(4, 2, 1\)\)"):
        kernels.median_residual(image)
    with pytest.raises(ValueError, match="NaN or inf"):
        kernels.cfa_residual(image[..., 1])
    with pytest.raises(ValueError, match="NaN or inf"):
        kernels.sparse_residual(image, [3], [3], [1])  # the window reaches (4, 2, 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        kernels.sparse_cfa_residual(image[..., 1], [2], [2])


@pytest.mark.parametrize("dtype", [np.float64, np.int16, np.int32, np.bool_])
def test_unsupported_dtypes_raise_type_error_with_a_fix(dtype):
    with pytest.raises(TypeError, match="astype"):
        kernels.median_residual(np.zeros((3, 3), dtype))


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 2, 0)])
def test_empty_images_are_rejected(shape):
    with pytest.raises(ValueError, match="empty"):
        kernels.median_residual(np.zeros(shape, np.uint8))


def test_wrong_ranks_are_rejected():
    with pytest.raises(ValueError, match="H×W"):
        kernels.median_residual(np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="H×W"):
        kernels.cfa_residual(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        kernels.median_residual([[1, 2], [3, 4]])


def test_bad_out_buffers_are_rejected():
    image = np.zeros((4, 5), np.uint8)
    with pytest.raises(TypeError, match="float32"):
        kernels.median_residual(image, out=np.empty((4, 5), np.float64))
    with pytest.raises(ValueError, match="shape"):
        kernels.median_residual(image, out=np.empty((5, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.median_residual(image, out=np.empty((4, 10), np.float32)[:, ::2])


def test_bad_positions_are_rejected_with_the_offending_entry():
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match=r"cols\[1\] = 5 is outside 0..4"):
        kernels.sparse_residual(image, [0, 1], [0, 5], [0, 0])
    with pytest.raises(ValueError, match="give channels"):
        kernels.sparse_residual(image, [0], [0])
    with pytest.raises(ValueError, match="leave channels=None"):
        kernels.sparse_residual(image[..., 0], [0], [0], [0])
    with pytest.raises(ValueError, match="one per position"):
        kernels.sparse_residual(image[..., 0], [0, 1], [0])
    with pytest.raises(TypeError, match="integers"):
        kernels.sparse_residual(image[..., 0], [0.5], [0])
    with pytest.raises(ValueError, match=r"rows\[0\] = -1"):
        kernels.sparse_cfa_residual(image[..., 0], [-1], [0])
