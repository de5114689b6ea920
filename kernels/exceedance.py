"""Where an image's residual exceeds its noise level: a sparse record of one image.

:func:`exceedances` computes the median residual ``W`` of every element (per channel, or per
CFA plane), and returns, as sorted flat indices, the elements where ``W > k·σ`` and the
elements whose residual window holds a clipped neighbour. The residual is never
materialised: each row segment is computed, compared and flagged while in cache, then the
flags are gathered into index arrays in parallel.

Such a record is a few thousandths of the image's size, so the records of every image of a
device can be kept and re-combined for any subset of images (for example the training
images of each split) without decoding the images again.
"""

import numpy as np
from numba import njit, prange

from kernels._rows import (
    chunk_bounds,
    clamp_neighbours,
    n_row_chunks,
    neighbour_clipped_span,
    residual_span,
    row_is_finite,
    segment_length,
)
from kernels._validate import check_finite, check_image, raise_non_finite
from kernels.clipping import _geometry, saturation_level

__all__ = ["exceedances"]

_EXCEED = np.uint8(1)
_CLIPPED = np.uint8(2)


@njit(parallel=True, cache=True, nogil=True)
def _flag_rows(src2d, row_step, col_step, thresholds, level, use_level, flags2d, n_exceed, n_clipped, n_chunks):
    """Flag each element 1 (exceeds), 2 (clipped neighbourhood) or 0; count both per row.

    ``thresholds`` is ``(2, L)``: the threshold of every element of an even and an odd row.
    Returns the number of rows holding NaN/inf.
    """
    height, length = src2d.shape
    n_bad = 0
    for k in prange(n_chunks):
        y0, y1 = chunk_bounds(height, n_chunks, k)
        segment = segment_length(src2d.itemsize)
        scratch = np.empty((3, segment + 2 * col_step), src2d.dtype)
        res = np.empty(segment, np.float32)
        clip = np.zeros(segment, np.uint8)
        for y in range(y0, y1):
            up, dn = clamp_neighbours(y, row_step, height)
            mid = src2d[y]
            if not row_is_finite(mid):
                n_bad += 1
            thr = thresholds[y % 2]
            row_flags = flags2d[y]
            ne = 0
            nc = 0
            for j0 in range(0, length, segment):
                j1 = min(j0 + segment, length)
                n = j1 - j0
                residual_span(src2d[up], mid, src2d[dn], col_step, j0, j1, scratch, res)
                if use_level:
                    neighbour_clipped_span(src2d[up], mid, src2d[dn], col_step, j0, j1, level[0],
                                           up == y, dn == y, clip)
                out = row_flags[j0:j1]
                t = thr[j0:j1]
                if use_level:
                    for i in range(n):
                        c = clip[i]
                        e = np.uint8(res[i] > t[i]) & (c ^ np.uint8(1))
                        out[i] = e | (c << np.uint8(1))
                        ne += e
                        nc += c
                else:
                    for i in range(n):
                        e = np.uint8(res[i] > t[i])
                        out[i] = e
                        ne += e
            n_exceed[y] = ne
            n_clipped[y] = nc
    return n_bad


@njit(cache=True, nogil=True)
def _emit_span(row, j0, j1, base, exceed_out, clipped_out, e, c):
    """Append the flagged elements ``j0..j1-1`` of a row; returns the next free slots."""
    for j in range(j0, j1):
        f = row[j]
        if f == 1:
            exceed_out[e] = base + j
            e += 1
        elif f == 2:
            clipped_out[c] = base + j
            c += 1
    return e, c


@njit(parallel=True, cache=True, nogil=True)
def _gather_rows(flags2d, exceed_start, clipped_start, exceed_out, clipped_out, n_chunks):
    height, length = flags2d.shape
    n_words = length // 8
    for k in prange(n_chunks):
        y0, y1 = chunk_bounds(height, n_chunks, k)
        for y in range(y0, y1):
            e = exceed_start[y]
            c = clipped_start[y]
            base = y * length
            row = flags2d[y]
            # flags are mostly 0: skip them eight at a time
            words = row[:n_words * 8].view(np.uint64)
            for w in range(n_words):
                if words[w] != 0:
                    e, c = _emit_span(row, 8 * w, 8 * w + 8, base, exceed_out, clipped_out, e, c)
            _emit_span(row, n_words * 8, length, base, exceed_out, clipped_out, e, c)


def _threshold_table(shape, sigma, k, cfa):
    """Per-element thresholds of an even and an odd row, ``(2, L)`` float32."""
    sigma = np.asarray(sigma, dtype=np.float64)
    width = shape[1]
    if cfa:
        if sigma.shape != (2, 2):
            raise ValueError(f"sigma of a CFA mosaic must be (2, 2) per colour plane, got shape {sigma.shape}")
        rows = [np.resize(k * sigma[p], width) for p in range(2)]
    else:
        channels = shape[2] if len(shape) == 3 else 1
        if sigma.shape not in {(), (1,), (channels,)}:
            raise ValueError(f"sigma must be a scalar or one value per channel ({channels}), got shape {sigma.shape}")
        row = np.resize(k * np.broadcast_to(sigma.reshape(-1), (channels,)), width * channels)
        rows = [row, row]
    table = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
    if not np.all(np.isfinite(table)):
        raise ValueError("sigma and k must be finite")
    return table


def exceedances(image, sigma, k, saturation=None, cfa=False):
    """Flat indices of elements whose residual exceeds ``k·σ``, and of clipped elements.

    Parameters
    ----------
    image : numpy.ndarray
        H×W or H×W×C image (``cfa=False``; residual per channel, as :func:`kernels.median_residual`)
        or H×W mosaic (``cfa=True``; as :func:`kernels.cfa_residual`); uint8, uint16 or float32.
    sigma : float or array_like
        Noise level: a scalar, one value per channel ``(C,)``, or ``(2, 2)`` per CFA plane
        indexed ``[y % 2, x % 2]`` (e.g. :func:`kernels.image_sigma`).
    k : float
        Threshold factor: an element exceeds when ``W > k·σ`` (strictly).
    saturation : float, optional
        Clipping level in the image's units. An element with a neighbour ``>= saturation`` in
        its residual window (the rule of :func:`kernels.clipped_neighbourhood`) is reported as
        clipped and never as exceeding. None: nothing is clipped.
    cfa : bool
        The image is a 2×2 CFA mosaic.

    Returns
    -------
    exceed : numpy.ndarray of int64
        Sorted flat indices into ``image.ravel()`` of the exceeding elements.
    clipped : numpy.ndarray of int64
        Sorted flat indices of the clipped elements.

    Raises
    ------
    TypeError
        For an unsupported dtype.
    ValueError
        For a wrong rank, an empty image, NaN/inf values, or a sigma of the wrong shape.
    """
    image = check_image(image, "image", ndims=(2,) if cfa else (2, 3))
    thresholds = _threshold_table(image.shape, sigma, float(k), cfa)
    row_step, col_step = _geometry(image, cfa)
    src2d = image.reshape(image.shape[0], -1)
    use_level = saturation is not None
    level = np.zeros(1, image.dtype)
    if use_level:
        if image.dtype.kind == "f":
            check_finite(image, "image")
        level, use_level = saturation_level(image.dtype, saturation)
    height = src2d.shape[0]
    flags = np.empty(src2d.shape, np.uint8)
    n_exceed = np.zeros(height, np.int64)
    n_clipped = np.zeros(height, np.int64)
    chunks = n_row_chunks(height)
    if _flag_rows(src2d, row_step, col_step, thresholds, level, use_level, flags, n_exceed, n_clipped, chunks):
        raise_non_finite(image, "image")
    exceed_start = np.concatenate([[0], np.cumsum(n_exceed)[:-1]])
    clipped_start = np.concatenate([[0], np.cumsum(n_clipped)[:-1]])
    exceed = np.empty(int(n_exceed.sum()), np.int64)
    clipped = np.empty(int(n_clipped.sum()), np.int64)
    _gather_rows(flags, exceed_start, clipped_start, exceed, clipped, chunks)
    return exceed, clipped
