"""Residuals at given pixel positions only, without filtering the whole frame.

The values are bit-identical to the full residual (:func:`kernels.median_residual`,
:func:`kernels.cfa_residual`) at the same positions, borders included, because both use the
same neighbourhood rule and the same float32 subtraction.
"""

import numpy as np
from numba import njit

from kernels._rows import clamp_neighbours, residual_at, window_is_finite
from kernels._validate import check_image, check_positions, raise_non_finite


@njit(cache=True, nogil=True)
def _sparse_residuals(src2d, row_step, col_step, rows, flat_cols, out):
    """Residual at each (row, flattened column); returns the index of the first non-finite window or -1."""
    height = src2d.shape[0]
    for i in range(rows.size):
        y = rows[i]
        j = flat_cols[i]
        up, dn = clamp_neighbours(y, row_step, height)
        if not window_is_finite(src2d[up], src2d[y], src2d[dn], col_step, j):
            return i
        out[i] = residual_at(src2d[up], src2d[y], src2d[dn], col_step, j)
    return -1


def flatten_positions(shape, rows, cols, channels):
    """Column index of each position in the image viewed as H × (W·C) rows."""
    n_channels = shape[2] if len(shape) == 3 else 1
    return cols * n_channels + channels


def _run(image, name, row_step, col_step, rows, flat_cols):
    out = np.empty(rows.size, np.float32)
    bad = _sparse_residuals(image.reshape(image.shape[0], -1), row_step, col_step, rows, flat_cols, out)
    if bad >= 0:
        raise_non_finite(image, name)
    return out


def sparse_residual(image, rows, cols, channels=None):
    """Median residual at given positions of an image.

    Equal, bit for bit, to ``median_residual(image)[rows, cols]`` (H×W) or
    ``median_residual(image)[rows, cols, channels]`` (H×W×C), at a cost proportional to the
    number of positions (about 1,000 positions cost far less than decoding the image).

    Parameters
    ----------
    image : numpy.ndarray
        H×W or H×W×C array of uint8, uint16 or float32.
    rows, cols : array_like of int
        Positions, 1-D, of equal length N (N may be 0).
    channels : array_like of int, optional
        Channel of each position; required for H×W×C images, not allowed for H×W ones.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (N,).

    Raises
    ------
    TypeError
        For an unsupported image dtype or non-integer positions.
    ValueError
        For positions outside the image, mismatched lengths, or NaN/inf in a neighbourhood used.
    """
    image = check_image(image)
    rows, cols, channels = check_positions(image.shape, rows, cols, channels)
    n_channels = image.shape[2] if image.ndim == 3 else 1
    return _run(image, "image", 1, n_channels, rows, flatten_positions(image.shape, rows, cols, channels))


def sparse_cfa_residual(mosaic, rows, cols):
    """CFA residual (same-colour 3×3 median) at given positions of a mosaic.

    Equal, bit for bit, to ``cfa_residual(mosaic)[rows, cols]``.

    Parameters
    ----------
    mosaic : numpy.ndarray
        H×W RAW mosaic of uint8, uint16 or float32.
    rows, cols : array_like of int
        Positions, 1-D, of equal length N (N may be 0).

    Returns
    -------
    numpy.ndarray
        float32 array of shape (N,).

    Raises
    ------
    TypeError
        For an unsupported dtype or non-integer positions.
    ValueError
        For positions outside the mosaic, mismatched lengths, or NaN/inf in a neighbourhood used.
    """
    mosaic = check_image(mosaic, "mosaic", ndims=(2,))
    rows, cols, _ = check_positions(mosaic.shape, rows, cols)
    return _run(mosaic, "mosaic", 2, 2, rows, cols)
