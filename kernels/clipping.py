"""Clipped (saturated) neighbourhoods: where a residual carries no defect information.

A pixel is *clipped* when one of its 8 neighbours in the window its residual uses — the same
channel for :func:`kernels.median_residual`, the same-colour sites for
:func:`kernels.cfa_residual` — lies inside the image and is ``>= saturation``. Saturated
neighbours bias the median and hide a defect, so such residuals are skipped by the
statistics and should be skipped by the estimators. The pixel itself does not count: a
defect bright enough to saturate its own photosite still has a valid residual (the median
does not depend on the exact value of the window's maximum), a lower bound of its strength.
"""

import math

import numpy as np
from numba import njit, prange

from kernels._rows import (
    chunk_bounds,
    clamp_neighbours,
    n_row_chunks,
    neighbour_clipped_at,
    neighbour_clipped_span,
    segment_length,
    window_is_finite,
)
from kernels._validate import (
    check_finite,
    check_image,
    check_positions,
    raise_non_finite,
)
from kernels.sparse import flatten_positions


def saturation_level(dtype, saturation):
    """The saturation threshold as a 1-element array of the image dtype.

    ``x >= level`` in the image dtype is then equivalent to ``x >= saturation`` in exact
    arithmetic: integer images round the level up, float32 images take the smallest float32
    not below it.

    Parameters
    ----------
    dtype : numpy.dtype
        uint8, uint16 or float32.
    saturation : float
        Threshold in the image's units.

    Returns
    -------
    level : numpy.ndarray
        Shape (1,), of ``dtype``.
    reachable : bool
        False when no value of ``dtype`` can reach the threshold (nothing is clipped).
    """
    saturation = float(saturation)
    if math.isnan(saturation):
        raise ValueError("saturation is NaN; give a level in the image's units, e.g. 255 for uint8")
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        info = np.iinfo(dtype)
        level = math.ceil(saturation) if math.isfinite(saturation) else saturation
        if level > info.max:
            return np.array([info.max], dtype), False
        return np.array([max(level, 0)], dtype), True
    level = np.float32(saturation)
    if level < saturation:
        level = np.nextafter(level, np.float32(np.inf))
    return np.array([level], np.float32), bool(level < np.inf)


@njit(parallel=True, cache=True, nogil=True)
def _clipped_rows(src2d, row_step, col_step, level, flags2d, n_chunks):
    height, length = src2d.shape
    segment = segment_length(src2d.itemsize)
    for k in prange(n_chunks):
        y0, y1 = chunk_bounds(height, n_chunks, k)
        for y in range(y0, y1):
            up, dn = clamp_neighbours(y, row_step, height)
            row_flags = flags2d[y]
            for j0 in range(0, length, segment):
                j1 = min(j0 + segment, length)
                neighbour_clipped_span(src2d[up], src2d[y], src2d[dn], col_step, j0, j1, level[0],
                                       up == y, dn == y, row_flags[j0:j1])


@njit(cache=True, nogil=True)
def _clipped_points(src2d, row_step, col_step, level, rows, flat_cols, flags):
    """Flag each position; returns the index of the first non-finite window or -1."""
    height = src2d.shape[0]
    for i in range(rows.size):
        y = rows[i]
        up, dn = clamp_neighbours(y, row_step, height)
        if not window_is_finite(src2d[up], src2d[y], src2d[dn], col_step, flat_cols[i]):
            return i
        flags[i] = neighbour_clipped_at(src2d[up], src2d[y], src2d[dn], col_step, flat_cols[i], level[0],
                                        up == y, dn == y)
    return -1


def _geometry(image, cfa):
    if cfa:
        return 2, 2
    return 1, (image.shape[2] if image.ndim == 3 else 1)


def clipped_neighbourhood(image, saturation, cfa=False):
    """Map of pixels with a neighbour ``>= saturation`` in their residual window.

    See the module docstring for the exact rule (the pixel itself does not count).

    Parameters
    ----------
    image : numpy.ndarray
        H×W or H×W×C image (``cfa=False``) or H×W mosaic (``cfa=True``); uint8, uint16 or
        float32.
    saturation : float
        Clipping level in the image's units (e.g. 255 for 8-bit JPEG, the white level for RAW).
    cfa : bool
        Use the same-colour window of :func:`kernels.cfa_residual`.

    Returns
    -------
    numpy.ndarray
        bool array of the image's shape, True where clipped.
    """
    image = check_image(image, "image", ndims=(2,) if cfa else (2, 3))
    check_finite(image, "image")
    level, reachable = saturation_level(image.dtype, saturation)
    flags = np.zeros(image.shape, np.uint8)
    if reachable:
        row_step, col_step = _geometry(image, cfa)
        src2d = image.reshape(image.shape[0], -1)
        _clipped_rows(src2d, row_step, col_step, level, flags.reshape(src2d.shape),
                      n_row_chunks(src2d.shape[0]))
    return flags.view(np.bool_)


def clipped_at(image, rows, cols, channels=None, *, saturation, cfa=False):
    """Whether each given position has a neighbour ``>= saturation`` in its residual window.

    Equal to ``clipped_neighbourhood(image, saturation, cfa)[rows, cols(, channels)]``.

    Parameters
    ----------
    image : numpy.ndarray
        H×W or H×W×C image, or H×W mosaic with ``cfa=True``.
    rows, cols : array_like of int
        Positions, 1-D, of equal length N.
    channels : array_like of int, optional
        Channel of each position; required for H×W×C images.
    saturation : float
        Clipping level in the image's units.
    cfa : bool
        Use the same-colour window of :func:`kernels.cfa_residual`.

    Returns
    -------
    numpy.ndarray
        bool array of shape (N,).
    """
    image = check_image(image, "image", ndims=(2,) if cfa else (2, 3))
    rows, cols, channels = check_positions(image.shape, rows, cols, channels)
    flags = np.zeros(rows.size, np.uint8)
    level, reachable = saturation_level(image.dtype, saturation)
    if reachable and rows.size:
        row_step, col_step = _geometry(image, cfa)
        bad = _clipped_points(image.reshape(image.shape[0], -1), row_step, col_step, level, rows,
                              flatten_positions(image.shape, rows, cols, channels), flags)
        if bad >= 0:
            raise_non_finite(image, "image")
    return flags.view(np.bool_)
