"""Plain numpy/scipy reference implementations of the kernels, and test sizes.

Written for clarity, not speed: every function here follows the documented definition
directly, so that the compiled kernels can be checked against it value by value.
"""

import os

import numpy as np
from scipy.ndimage import maximum_filter, median_filter
from scipy.optimize import lsq_linear

#: The kernels run as plain Python (coverage run); keep arrays small then.
PURE_PYTHON = os.environ.get("NUMBA_DISABLE_JIT") == "1"

SMALL_SHAPES_2D = [(1, 1), (1, 9), (9, 1), (2, 3), (3, 3), (4, 4), (5, 8)]
#: "Large" sizes: odd and even, wider than one kernel segment (1024 elements) when compiled.
LARGE_SHAPES_2D = [(13, 17), (12, 22)] if PURE_PYTHON else [(37, 1031), (64, 2050)]
SMALL_SHAPES_3D = [(1, 1, 3), (1, 5, 3), (2, 3, 3), (3, 3, 3), (4, 5, 4), (3, 4, 1)]
LARGE_SHAPES_3D = [(11, 13, 3), (10, 16, 3)] if PURE_PYTHON else [(33, 515, 3), (40, 700, 3)]

MAD_SCALE = np.float32(1.4826022185056018)


def random_image(rng, shape, dtype, high=None):
    """Random image of a kernel dtype with values in 0..high (integers, exact in float32)."""
    dtype = np.dtype(dtype)
    if high is None:
        high = 255 if dtype == np.uint8 else 4095
    if dtype == np.float32:
        return (rng.random(shape, dtype=np.float32) * high).astype(np.float32)
    return rng.integers(0, high + 1, shape).astype(dtype)


def per_plane(array, function):
    """Apply ``function`` to each of the four 2×2 CFA colour planes of an H×W array."""
    out = np.empty(array.shape, np.float32)
    for py in range(2):
        for px in range(2):
            plane = array[py::2, px::2]
            if plane.size:
                out[py::2, px::2] = function(plane)
    return out


def residual_reference(image):
    """``Y - median3x3(Y)`` per channel with scipy (reflect borders), in float32."""
    size = (3, 3, 1) if image.ndim == 3 else 3
    return image.astype(np.float32) - median_filter(image, size=size, mode="reflect").astype(np.float32)


def cfa_residual_reference(mosaic):
    """CFA residual: slice the four colour planes and take the 3×3 median residual of each."""
    return per_plane(mosaic, residual_reference)


def local_sigma_reference(residual, radius, cfa=False):
    """``1.4826 * median(|W|)`` over the (2r+1)² window per channel / CFA plane."""
    width = 2 * radius + 1

    def sigma(plane):
        size = (width, width, 1) if plane.ndim == 3 else width
        return MAD_SCALE * median_filter(np.abs(plane), size=size, mode="reflect")

    return per_plane(residual, sigma) if cfa else sigma(residual)


def clipped_reference(image, saturation, cfa=False):
    """True where a neighbour inside the image (centre excluded) of the residual window is >= saturation."""

    def clipped(plane):
        footprint = np.ones((3, 3, 1) if plane.ndim == 3 else (3, 3), bool)
        footprint[1, 1] = False
        peak = maximum_filter(plane.astype(np.float64), footprint=footprint, mode="constant", cval=-np.inf)
        return peak >= saturation

    if not cfa:
        return clipped(image)
    out = np.zeros(image.shape, bool)
    for py in range(2):
        for px in range(2):
            plane = image[py::2, px::2]
            if plane.size:
                out[py::2, px::2] = clipped(plane)
    return out


def stats_reference(residuals, thresholds=None, valid=None):
    """Count, mean, M2 and exceedance counts of a (N, ...) residual stack, in float64.

    ``thresholds`` (broadcastable to the stack) gives the exceedance level per image and
    pixel; ``valid`` (bool, same shape as the stack) drops entries.
    """
    residuals = residuals.astype(np.float64)
    if valid is None:
        valid = np.ones(residuals.shape, bool)
    count = valid.sum(axis=0)
    total = np.where(valid, residuals, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    m2 = np.where(valid, (residuals - mean) ** 2, 0.0).sum(axis=0)
    exceed = None
    if thresholds is not None:
        exceed = ((residuals > np.broadcast_to(thresholds, residuals.shape)) & valid).sum(axis=0)
    return count, mean, m2, exceed


def split_scores_reference(blocks_residuals, blocks_valid=None, min_count=2, min_difference=0.0):
    """Best split score per pixel, from the raw residuals of each block (list of (n_b, P) arrays).

    For each split, the before/after parts are concatenated (only entries marked valid) and
    their sample statistics taken directly (no merging formulas); Welch's t with
    Welch–Satterthwaite degrees of freedom is then converted to a normal deviate by Wallace's
    approximation.
    """
    n_blocks = len(blocks_residuals)
    if blocks_valid is None:
        blocks_valid = [np.ones(blk.shape, bool) for blk in blocks_residuals]
    n_pixels = blocks_residuals[0].shape[1]
    score = np.full(n_pixels, -np.inf)
    split = np.full(n_pixels, -1)
    for p in range(n_pixels):
        parts = [blk[:, p][ok[:, p]].astype(np.float64) for blk, ok in zip(blocks_residuals, blocks_valid)]
        for b in range(1, n_blocks):
            before = np.concatenate(parts[:b])
            after = np.concatenate(parts[b:])
            if before.size < min_count or after.size < min_count:
                continue
            diff = after.mean() - before.mean()
            if diff < min_difference:
                continue
            va = before.var(ddof=1) / before.size
            vb = after.var(ddof=1) / after.size
            se2 = va + vb
            if se2 > 0:
                t = diff / np.sqrt(se2)
                dof = se2**2 / (va**2 / (before.size - 1) + vb**2 / (after.size - 1))
                z = np.sign(t) * (8 * dof + 1) / (8 * dof + 3) * np.sqrt(dof * np.log1p(t * t / dof))
            else:
                z = np.inf if diff > 0 else 0.0
            if z > score[p]:
                score[p], split[p] = z, b
    return score, split


def onset_reference(w, sigma, tau=None, min_segment=1):
    """Brute-force GLR onset: for every k, the constrained WLS fit by scipy's lsq_linear.

    Returns ``(k, D, c, llr, llr_by_k)``; ``k = N`` and zeros when no k has a positive ratio.
    """
    w = np.asarray(w, np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), w.shape)
    n = w.size
    llr_by_k = np.zeros(n - min_segment + 1)
    fits = []
    for k in range(n - min_segment + 1):
        weight = 1.0 / sigma[k:]
        design = weight[:, None] if tau is None else np.stack([np.asarray(tau[k:]) * weight, weight], axis=1)
        fit = lsq_linear(design, w[k:] * weight, bounds=(0.0, np.inf), method="bvls", tol=1e-12).x
        mu = design @ fit / weight
        llr_by_k[k] = np.sum((w[k:] ** 2 - (w[k:] - mu) ** 2) / (2.0 * sigma[k:] ** 2))
        fits.append((0.0, fit[0]) if tau is None else (fit[0], fit[1]))
    best = int(np.argmax(llr_by_k))
    if llr_by_k[best] <= 0:
        return n, 0.0, 0.0, 0.0, llr_by_k
    return best, fits[best][0], fits[best][1], llr_by_k[best], llr_by_k


def exceedances_reference(image, sigma, k, saturation=None, cfa=False):
    """Flat indices where ``W > k·σ`` outside clipped windows, and of clipped elements."""
    residual = cfa_residual_reference(image) if cfa else residual_reference(image)
    sigma = np.asarray(sigma, dtype=np.float64)
    if cfa:
        thr = np.empty(image.shape, np.float32)
        for py in range(2):
            for px in range(2):
                thr[py::2, px::2] = np.float32(k * sigma[py, px])
    else:
        thr = (k * sigma).astype(np.float32).reshape(-1) if sigma.ndim else np.float32(k * sigma)
    clipped = clipped_reference(image, saturation, cfa) if saturation is not None else np.zeros(image.shape, bool)
    exceed = (residual > thr) & ~clipped
    return np.flatnonzero(exceed), np.flatnonzero(clipped)
