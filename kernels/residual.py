"""Median-filter residuals ``W = Y - median3x3(Y)`` of whole images and CFA mosaics."""

import numpy as np
from numba import njit, prange

from kernels._rows import (
    chunk_bounds,
    clamp_neighbours,
    n_row_chunks,
    residual_span,
    row_is_finite,
    segment_length,
)
from kernels._validate import check_image, check_out, raise_non_finite


@njit(parallel=True, cache=True, nogil=True)
def _residual_rows(src, out, row_step, col_step, n_chunks):
    """Residual of every element of ``src`` (H × L) into ``out``; returns the number of rows with NaN/inf."""
    height, length = src.shape
    n_bad = 0
    for k in prange(n_chunks):
        y0, y1 = chunk_bounds(height, n_chunks, k)
        segment = segment_length(src.itemsize)
        scratch = np.empty((3, segment + 2 * col_step), src.dtype)
        for y in range(y0, y1):
            up, dn = clamp_neighbours(y, row_step, height)
            mid = src[y]
            if not row_is_finite(mid):
                n_bad += 1
            row_out = out[y]
            for j0 in range(0, length, segment):
                j1 = min(j0 + segment, length)
                residual_span(src[up], mid, src[dn], col_step, j0, j1, scratch, row_out[j0:j1])
    return n_bad


def _run(src2d, out2d, row_step, col_step, image, name):
    if _residual_rows(src2d, out2d, row_step, col_step, n_row_chunks(src2d.shape[0])):
        raise_non_finite(image, name)


def median_residual(image, out=None):
    """Residual of a 3×3 median filter, per colour channel.

    ``W = Y - median3x3(Y)``, computed in float32 for every pixel and channel, with borders
    handled like ``scipy.ndimage.median_filter(Y, size=(3, 3, 1), mode="reflect")`` (for a
    3-wide window a neighbour outside the image is replaced by the pixel itself).

    Parameters
    ----------
    image : numpy.ndarray
        H×W or H×W×C array of uint8, uint16 or float32 (float32 must be finite).
    out : numpy.ndarray, optional
        Preallocated C-contiguous float32 array of the image's shape; reusing one on hot
        paths saves the cost of allocating a fresh output.

    Returns
    -------
    numpy.ndarray
        float32 residual of the image's shape (``out`` when given).

    Raises
    ------
    TypeError
        For another dtype (convert first) or a non-float32 ``out``.
    ValueError
        For a wrong rank, an empty image, a mismatched ``out`` or NaN/inf values.
    """
    image = check_image(image)
    out = check_out(out, image.shape)
    channels = image.shape[2] if image.ndim == 3 else 1
    src2d = image.reshape(image.shape[0], -1)
    _run(src2d, out.reshape(src2d.shape), 1, channels, image, "image")
    return out


def cfa_residual(mosaic, out=None):
    """Residual of a 3×3 median over same-colour sites of a 2×2 CFA mosaic.

    For the pixel at ``(y, x)`` the window is ``{(y + 2a, x + 2b) : a, b ∈ {-1, 0, 1}}``,
    i.e. the 3×3 neighbourhood in its own colour plane ``mosaic[y % 2::2, x % 2::2]``.
    Borders are reflected per plane, so the result equals slicing the four planes and applying
    ``scipy.ndimage.median_filter(plane, size=3, mode="reflect")`` to each. Any 2×2 pattern
    (RGGB, BGGR, GRBG, GBRG) works; the two green phases are separate planes.

    Parameters
    ----------
    mosaic : numpy.ndarray
        H×W RAW mosaic of uint8, uint16 or float32 (black level already subtracted or not;
        the residual does not depend on a constant offset).
    out : numpy.ndarray, optional
        Preallocated C-contiguous float32 H×W array.

    Returns
    -------
    numpy.ndarray
        float32 H×W residual (``out`` when given).

    Raises
    ------
    TypeError
        For another dtype or a non-float32 ``out``.
    ValueError
        For a non-2-D or empty mosaic, a mismatched ``out`` or NaN/inf values.
    """
    mosaic = check_image(mosaic, "mosaic", ndims=(2,))
    out = check_out(out, mosaic.shape)
    _run(mosaic, out, 2, 2, mosaic, "mosaic")
    return out
