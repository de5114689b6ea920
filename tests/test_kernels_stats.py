"""PixelStats: streaming per-pixel statistics against a numpy reference; merging; stability."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_reference import (
    LARGE_SHAPES_2D,
    LARGE_SHAPES_3D,
    PURE_PYTHON,
    clipped_reference,
    random_image,
    stats_reference,
)

import kernels

STATE_DTYPES = [np.float32, np.float64]
#: (image dtype, state dtype) pairs: every image and state dtype, without compiling all six pairs
DTYPE_PAIRS = [(np.uint8, np.float32), (np.uint16, np.float64), (np.float32, np.float32)]
N_IMAGES = 7
CASES = [((1, 1), False), ((5, 7), False), ((4, 6, 3), False), ((7, 9), True)] + [
    (LARGE_SHAPES_2D[0], True), (LARGE_SHAPES_3D[0], False)]


def _residuals(images, cfa):
    function = kernels.cfa_residual if cfa else kernels.median_residual
    return np.stack([function(image) for image in images])


def _tolerances(dtype):
    return {"rtol": 2e-5, "atol": 2e-3} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-9}


def _thresholds(k, sigma, shape, cfa):
    """exceed_k * sigma laid out per pixel, for an (N, 2, 2) (CFA) or (N, C) sigma."""
    n = sigma.shape[0]
    if cfa:
        tiled = np.tile(sigma, (1, (shape[0] + 1) // 2, (shape[1] + 1) // 2))[:, :shape[0], :shape[1]]
        return np.float32(k) * tiled.astype(np.float32)
    per_channel = sigma.reshape((n,) + (1,) * 2 + ((sigma.shape[1],) if len(shape) == 3 else ()))
    return (np.float32(k) * per_channel.astype(np.float32)) * np.ones((1,) + shape, np.float32)


def _assert_matches(stats, residuals, thresholds=None, valid=None):
    count, mean, m2, exceed = stats_reference(residuals, thresholds, valid)
    np.testing.assert_array_equal(stats.count, count)
    tol = _tolerances(stats.dtype)
    np.testing.assert_allclose(stats.mean, mean, **tol)
    np.testing.assert_allclose(stats.m2, m2, rtol=tol["rtol"] * 10, atol=tol["atol"] * 100)
    if exceed is not None:
        np.testing.assert_array_equal(stats.exceed, exceed)


@pytest.mark.parametrize(("image_dtype", "state_dtype"), DTYPE_PAIRS)
@pytest.mark.parametrize(("shape", "cfa"), CASES)
def test_fused_update_matches_reference(shape, cfa, image_dtype, state_dtype):
    rng = np.random.default_rng(sum(shape))
    images = random_image(rng, (N_IMAGES,) + shape, image_dtype)
    residuals = _residuals(images, cfa)
    sigma = np.stack([kernels.image_sigma(image, cfa=cfa, stride=2) for image in images])
    one_by_one = kernels.PixelStats(shape, exceed_k=1.5, dtype=state_dtype)
    for image, s in zip(images, sigma):
        one_by_one.update_from_image(image, sigma=s, cfa=cfa)
    stacked = kernels.PixelStats(shape, exceed_k=1.5, dtype=state_dtype)
    stacked.update_from_stack(images[:3], sigma=sigma[:3], cfa=cfa)
    stacked.update_from_stack(images[3:], sigma=sigma[3:], cfa=cfa)
    thresholds = _thresholds(1.5, sigma, shape, cfa)
    for stats in (one_by_one, stacked):
        assert stats.n_images == N_IMAGES and stats.skipped is None
        _assert_matches(stats, residuals, thresholds)


@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize(("shape", "cfa"), CASES)
def test_residual_update_matches_reference(shape, cfa, state_dtype):
    rng = np.random.default_rng(sum(shape) + 1)
    residuals = rng.normal(0.0, 3.0, (N_IMAGES,) + shape).astype(np.float32)
    sigma_map = rng.uniform(0.5, 4.0, (N_IMAGES,) + shape).astype(np.float32)
    stats = kernels.PixelStats(shape, exceed_k=2.0, dtype=state_dtype)
    for residual, sigma in zip(residuals, sigma_map):
        stats.update(residual, sigma=sigma)
    _assert_matches(stats, residuals, np.float32(2.0) * sigma_map)


def test_default_sigma_is_the_images_own_robust_sigma():
    rng = np.random.default_rng(2)
    images = random_image(rng, (4, 30, 40, 3), np.uint8)
    implicit = kernels.PixelStats(images.shape[1:], exceed_k=2.0)
    implicit.update_from_stack(images)
    explicit = kernels.PixelStats(images.shape[1:], exceed_k=2.0)
    for image in images:
        explicit.update_from_image(image, sigma=kernels.image_sigma(image))
    np.testing.assert_array_equal(implicit.exceed, explicit.exceed)
    from_residuals = kernels.PixelStats(images.shape[1:], exceed_k=2.0)
    for image in images:
        from_residuals.update(kernels.median_residual(image))
    np.testing.assert_array_equal(from_residuals.exceed, explicit.exceed)
    mosaics = random_image(rng, (3, 12, 14), np.uint8)
    cfa = kernels.PixelStats((12, 14), exceed_k=1.0).update_from_stack(mosaics, cfa=True)
    sigma = np.stack([kernels.image_sigma(m, cfa=True) for m in mosaics])
    _assert_matches(cfa, _residuals(mosaics, True), _thresholds(1.0, sigma, (12, 14), True))


@pytest.mark.parametrize(("image_dtype", "state_dtype"), DTYPE_PAIRS)
@pytest.mark.parametrize(("shape", "cfa"), CASES[1:])
def test_saturated_neighbourhoods_are_skipped(shape, cfa, image_dtype, state_dtype):
    rng = np.random.default_rng(sum(shape) + 2)
    images = random_image(rng, (N_IMAGES,) + shape, image_dtype, high=255)
    stats = kernels.PixelStats(shape, exceed_k=1.0, dtype=state_dtype)
    sigma = np.full((N_IMAGES, 2, 2) if cfa else (N_IMAGES, 1), 20.0)
    stats.update_from_image(images[0], sigma=sigma[0], saturation=230, cfa=cfa)
    stats.update_from_stack(images[1:], sigma=sigma[1:], saturation=230, cfa=cfa)
    valid = ~np.stack([clipped_reference(image, 230, cfa) for image in images])
    assert 0 < valid.mean() < 1
    _assert_matches(stats, _residuals(images, cfa), np.float32(20.0), valid)
    assert stats.skipped.sum() == (~valid).sum()


def test_valid_mask_skips_pixels():
    rng = np.random.default_rng(3)
    residuals = rng.normal(size=(5, 6, 7)).astype(np.float32)
    valid = rng.random(residuals.shape) < 0.6
    stats = kernels.PixelStats((6, 7), exceed_k=1.0)
    stats.update(residuals[0])  # uniform counts first, then skipping
    for residual, mask in zip(residuals[1:], valid[1:]):
        stats.update(residual, sigma=0.5, valid=mask)
    valid[0] = True
    sigma = np.array([kernels.residual_sigma(residuals[0])[0]] + [0.5] * 4, np.float32)
    _assert_matches(stats, residuals, np.float32(1.0) * sigma[:, None, None], valid)
    assert stats.variance()[stats.count <= 1].tolist() == [] or np.isnan(stats.variance()[stats.count <= 1]).all()


# ---------------------------------------------------------------- merging

@settings(max_examples=8 if PURE_PYTHON else 30, deadline=None)
@given(cuts=st.lists(st.integers(0, 9), max_size=3), seed=st.integers(0, 2**16),
       skipping=st.booleans(), dtypes=st.sampled_from(DTYPE_PAIRS[:2]))
def test_merging_accumulators_equals_accumulating_sequentially(cuts, seed, skipping, dtypes):
    image_dtype, dtype = dtypes
    rng = np.random.default_rng(seed)
    images = random_image(rng, (9, 5, 6, 3), image_dtype, high=255)
    saturation = 200 if skipping else None
    sequential = kernels.PixelStats((5, 6, 3), exceed_k=0.5, dtype=dtype)
    sequential.update_from_stack(images, saturation=saturation)
    bounds = [0] + sorted(cuts) + [9]
    merged = kernels.PixelStats((5, 6, 3), exceed_k=0.5, dtype=dtype)
    for start, stop in itertools.pairwise(bounds):
        part = kernels.PixelStats((5, 6, 3), exceed_k=0.5, dtype=dtype)
        if stop > start:
            part.update_from_stack(images[start:stop], saturation=saturation)
        merged.merge(part)
    assert merged.n_images == sequential.n_images
    np.testing.assert_array_equal(merged.count, sequential.count)
    np.testing.assert_array_equal(merged.exceed, sequential.exceed)
    tol = _tolerances(dtype)
    np.testing.assert_allclose(merged.mean, sequential.mean, **tol)
    np.testing.assert_allclose(merged.m2, sequential.m2, rtol=tol["rtol"] * 10, atol=tol["atol"] * 100)


def test_merge_rejects_incompatible_accumulators():
    stats = kernels.PixelStats((4, 5))
    with pytest.raises(ValueError, match="cannot merge"):
        stats.merge(kernels.PixelStats((5, 4)))
    with pytest.raises(ValueError, match="cannot merge"):
        stats.merge(kernels.PixelStats((4, 5), dtype=np.float64))
    with pytest.raises(ValueError, match="cannot merge"):
        stats.merge(kernels.PixelStats((4, 5), exceed_k=3.0))
    with pytest.raises(TypeError, match="PixelStats"):
        stats.merge({"mean": 0})


def test_float32_accumulators_stay_accurate_over_thousands_of_images():
    """Welford in float32 over 5,000 images of strong defects (mean / sd = 500).

    The frame holds isolated hot pixels on a zero background, so their residual is exactly
    their value and the exact statistics are known.
    """
    rng = np.random.default_rng(4)
    n_images = 5000
    hot = (500.0 + rng.standard_normal((n_images, 2, 2))).astype(np.float32)
    images = np.zeros((n_images, 6, 6), np.float32)
    images[:, ::3, ::3] = hot
    sequential = kernels.PixelStats((6, 6)).update_from_stack(images)
    merged = kernels.PixelStats((6, 6))
    for start in range(0, n_images, 500):
        merged.merge(kernels.PixelStats((6, 6)).update_from_stack(images[start:start + 500]))
    exact = hot.astype(np.float64)
    for accumulated in (sequential, merged):
        np.testing.assert_allclose(accumulated.mean[::3, ::3], exact.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(accumulated.variance()[::3, ::3], exact.var(axis=0, ddof=1), rtol=1e-3)
    # what the accumulators replace: float32 sum and sum of squares lose the variance entirely
    total = hot.sum(axis=0, dtype=np.float32)
    squares = (hot * hot).sum(axis=0, dtype=np.float32)
    naive = (squares - total * total / n_images) / (n_images - 1)
    assert np.abs(naive - exact.var(axis=0, ddof=1)).max() > 0.1


# ---------------------------------------------------------------- serialisation

def test_round_trip_through_a_dict_and_npz(tmp_path):
    rng = np.random.default_rng(5)
    stats = kernels.PixelStats((6, 8, 3), exceed_k=2.0, dtype=np.float64)
    stats.update_from_stack(random_image(rng, (3, 6, 8, 3), np.uint16, high=255), saturation=250)
    np.savez(tmp_path / "stats.npz", **stats.to_dict())
    with np.load(tmp_path / "stats.npz") as saved:
        loaded = kernels.PixelStats.from_dict(dict(saved))
    for name in ("mean", "m2", "skipped", "exceed"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    assert (loaded.shape, loaded.dtype, loaded.exceed_k, loaded.n_images) == ((6, 8, 3), np.float64, 2.0, 3)
    copy = stats.copy()
    copy.update_from_image(random_image(rng, (6, 8, 3), np.uint16))
    assert stats.n_images == 3 and copy.n_images == 4
    plain = kernels.PixelStats.from_dict(kernels.PixelStats((2, 2)).to_dict())
    assert plain.exceed is None and plain.skipped is None and plain.exceed_k is None


def test_from_dict_rejects_broken_states():
    state = kernels.PixelStats((3, 3), exceed_k=1.0).to_dict()
    with pytest.raises(ValueError, match="missing"):
        kernels.PixelStats.from_dict({k: v for k, v in state.items() if k != "m2"})
    with pytest.raises(ValueError, match="state\\['mean'\\]"):
        kernels.PixelStats.from_dict({**state, "mean": np.zeros((3, 4), np.float32)})
    with pytest.raises(ValueError, match="exceed"):
        kernels.PixelStats.from_dict({k: v for k, v in state.items() if k != "exceed"})
    with pytest.raises(ValueError, match="format"):
        kernels.PixelStats.from_dict({**state, "format": np.array(99)})


# ---------------------------------------------------------------- bad input

def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        kernels.PixelStats((3,))
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.PixelStats((3, 3), dtype=np.int32)
    stats = kernels.PixelStats((4, 5))
    with pytest.raises(ValueError, match="shape"):
        stats.update(np.zeros((5, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        stats.update(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="no exceedances"):
        stats.update(np.zeros((4, 5), np.float32), sigma=1.0)
    with pytest.raises(ValueError, match="bool"):
        stats.update(np.zeros((4, 5), np.float32), valid=np.ones((4, 5), np.uint8))
    residual = np.zeros((4, 5), np.float32)
    residual[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        stats.update(residual)
    with pytest.raises(ValueError, match="NaN"):
        stats.update_from_image(residual)
    with pytest.raises(ValueError, match="stack"):
        stats.update_from_stack(np.zeros((4, 5), np.uint8))
    with pytest.raises(TypeError, match="dtype"):
        stats.update_from_image(np.zeros((4, 5), np.int64))
    with pytest.raises(ValueError, match="cfa=True"):
        kernels.PixelStats((4, 5, 3)).update_from_image(np.zeros((4, 5, 3), np.uint8), cfa=True)
    counting = kernels.PixelStats((4, 5, 3), exceed_k=2.0)
    with pytest.raises(ValueError, match="does not fit"):
        counting.update_from_image(np.zeros((4, 5, 3), np.uint8), sigma=[1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        counting.update_from_image(np.zeros((4, 5, 3), np.uint8), sigma=-1.0)
    assert stats.n_images == 0 and counting.n_images == 0  # rejected updates leave no trace
