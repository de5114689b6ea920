"""Robust noise levels of median residuals, so that textured regions weigh little.

Estimator: ``sigma = 1.4826 * median(|W|)`` over a window of residuals. A healthy pixel's
residual has mean zero, so the median absolute residual about zero, scaled by
``1 / Phi^-1(3/4) = 1.4826``, is a consistent estimate of a Gaussian residual's standard
deviation; a few defective or edge pixels inside the window barely move it.

Window (``local_sigma``, ``local_sigma_at``): the ``(2r+1) × (2r+1)`` residuals of the same
channel (or, with ``cfa=True``, of the same CFA colour plane, i.e. sites ``2·a`` and ``2·b``
away) centred on the pixel, with borders reflected per channel/plane like
``scipy.ndimage.median_filter(mode="reflect")``. ``r = 2`` (25 residuals) runs through a
vectorised selection network; other radii use a per-pixel sort and are much slower.

A flat region of an integer image often has ``median(|W|) = 0``, hence ``sigma = 0``: floor
the result (``np.maximum(sigma, floor)``) before dividing by it.
"""

import numpy as np
from numba import njit, prange

from kernels._median25 import median25
from kernels._rows import (
    chunk_bounds,
    clamp_neighbours,
    n_row_chunks,
    reflect,
    residual_at,
    residual_span,
    row_is_finite,
    segment_length,
    window_is_finite,
)
from kernels._validate import (
    check_float32,
    check_image,
    check_out,
    check_positions,
    raise_non_finite,
)
from kernels.sparse import flatten_positions

MAD_SCALE = np.float32(1.4826022185056018)  # 1 / Phi^-1(3/4)


@njit(cache=True)
def _plane_index(i, offset, step, size):
    """Index ``offset`` plane-steps from ``i`` in its plane (``i % step``), reflected at the plane ends."""
    phase = i % step
    n = (size - phase + step - 1) // step
    return reflect(i // step + offset, n) * step + phase


@njit(cache=True)
def _middle_value(buf, n):
    """Middle value (rank n // 2) of ``buf[:n]``, by insertion sort (windows are small)."""
    for i in range(1, n):
        value = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > value:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = value
    return buf[n // 2]


@njit(cache=True)
def _sigma_one(res2d, row_idx, j, radius, step, buf):
    """Scaled median absolute residual of the window centred on column ``j`` (rows given)."""
    length = res2d.shape[1]
    k = 0
    for a in range(row_idx.size):
        row = res2d[row_idx[a]]
        for e in range(-radius, radius + 1):
            buf[k] = abs(row[_plane_index(j, e, step, length)])
            k += 1
    return MAD_SCALE * _middle_value(buf, k)


@njit(cache=True)
def _sigma25_interior(r0, r1, r2, r3, r4, s, j0, j1, out):
    """Radius-2 sigma of elements ``j0..j1-1``, all at least ``2 s`` away from both row ends."""
    n = j1 - j0
    b = j0 - 2 * s
    a00, a01, a02, a03, a04 = r0[b:b + n], r0[b + s:b + s + n], r0[j0:j1], r0[j0 + s:j1 + s], r0[j0 + 2 * s:j1 + 2 * s]
    a10, a11, a12, a13, a14 = r1[b:b + n], r1[b + s:b + s + n], r1[j0:j1], r1[j0 + s:j1 + s], r1[j0 + 2 * s:j1 + 2 * s]
    a20, a21, a22, a23, a24 = r2[b:b + n], r2[b + s:b + s + n], r2[j0:j1], r2[j0 + s:j1 + s], r2[j0 + 2 * s:j1 + 2 * s]
    a30, a31, a32, a33, a34 = r3[b:b + n], r3[b + s:b + s + n], r3[j0:j1], r3[j0 + s:j1 + s], r3[j0 + 2 * s:j1 + 2 * s]
    a40, a41, a42, a43, a44 = r4[b:b + n], r4[b + s:b + s + n], r4[j0:j1], r4[j0 + s:j1 + s], r4[j0 + 2 * s:j1 + 2 * s]
    for k in range(n):
        i = np.uint64(k)
        med = median25(
            abs(a00[i]), abs(a01[i]), abs(a02[i]), abs(a03[i]), abs(a04[i]),
            abs(a10[i]), abs(a11[i]), abs(a12[i]), abs(a13[i]), abs(a14[i]),
            abs(a20[i]), abs(a21[i]), abs(a22[i]), abs(a23[i]), abs(a24[i]),
            abs(a30[i]), abs(a31[i]), abs(a32[i]), abs(a33[i]), abs(a34[i]),
            abs(a40[i]), abs(a41[i]), abs(a42[i]), abs(a43[i]), abs(a44[i]),
        )
        out[i] = MAD_SCALE * med


@njit(parallel=True, cache=True, nogil=True)
def _sigma_rows(res2d, row_step, col_step, radius, out2d, n_chunks):
    """Sigma map of a flattened residual; returns the number of rows holding NaN/inf."""
    height, length = res2d.shape
    width = 2 * radius + 1
    n_bad = 0
    for k in prange(n_chunks):
        y0, y1 = chunk_bounds(height, n_chunks, k)
        buf = np.empty(width * width, np.float32)
        row_idx = np.empty(width, np.int64)
        for y in range(y0, y1):
            if not row_is_finite(res2d[y]):
                n_bad += 1
            for a in range(width):
                row_idx[a] = _plane_index(y, a - radius, row_step, height)
            out = out2d[y]
            first = 2 * col_step if radius == 2 else length
            last = max(first, length - 2 * col_step) if radius == 2 else length
            for j in range(min(first, length)):
                out[j] = _sigma_one(res2d, row_idx, j, radius, col_step, buf)
            if last > first:
                _sigma25_interior(res2d[row_idx[0]], res2d[row_idx[1]], res2d[row_idx[2]],
                                  res2d[row_idx[3]], res2d[row_idx[4]], col_step, first, last,
                                  out[first:last])
            for j in range(max(last, first), length):
                out[j] = _sigma_one(res2d, row_idx, j, radius, col_step, buf)
    return n_bad


@njit(cache=True, nogil=True)
def _sigma_points(src2d, row_step, col_step, radius, rows, flat_cols, out):
    """Sigma at each position from the image itself; returns the first bad index or -1."""
    height, length = src2d.shape
    width = 2 * radius + 1
    buf = np.empty(width * width, np.float32)
    for i in range(rows.size):
        k = 0
        for a in range(-radius, radius + 1):
            yy = _plane_index(rows[i], a, row_step, height)
            up, dn = clamp_neighbours(yy, row_step, height)
            for e in range(-radius, radius + 1):
                jj = _plane_index(flat_cols[i], e, col_step, length)
                if not window_is_finite(src2d[up], src2d[yy], src2d[dn], col_step, jj):
                    return i
                buf[k] = abs(residual_at(src2d[up], src2d[yy], src2d[dn], col_step, jj))
                k += 1
        out[i] = MAD_SCALE * _middle_value(buf, k)
    return -1


@njit(cache=True, nogil=True)
def _grid_residuals(src2d, row_step, col_step, rows, flat_cols, out):
    """Residual at every (row, flattened column) pair of a grid, ``out[a, b]``.

    Each sampled row's residuals are computed over the span of ``flat_cols`` with the
    vectorised row kernel, then picked out: a whole row costs less than a scalar median per
    sampled element.
    """
    height, length = src2d.shape
    segment = segment_length(src2d.itemsize)
    scratch = np.empty((3, segment + 2 * col_step), src2d.dtype)
    lo = flat_cols.min()
    hi = flat_cols.max() + 1
    row = np.empty(hi - lo, np.float32)
    for a in range(rows.size):
        y = rows[a]
        up, dn = clamp_neighbours(y, row_step, height)
        for j0 in range(lo, hi, segment):
            j1 = min(j0 + segment, hi)
            residual_span(src2d[up], src2d[y], src2d[dn], col_step, j0, j1, scratch, row[j0 - lo:])
        for b in range(flat_cols.size):
            out[a, b] = row[flat_cols[b] - lo]


@njit(cache=True, nogil=True)
def _grid_is_finite(src2d, row_step, col_step, rows, flat_cols):
    """False if the 3×3 window of any grid element holds NaN or inf."""
    height = src2d.shape[0]
    for a in range(rows.size):
        y = rows[a]
        up, dn = clamp_neighbours(y, row_step, height)
        for b in range(flat_cols.size):
            if not window_is_finite(src2d[up], src2d[y], src2d[dn], col_step, flat_cols[b]):
                return False
    return True


def _check_radius(radius):
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 1:
        raise ValueError(f"radius must be a positive integer (2 gives a 5×5 window), got {radius!r}")
    return int(radius)


def local_sigma(residual, radius=2, cfa=False, out=None):
    """Map of the local robust noise level of a residual.

    ``sigma[p] = 1.4826 * median(|W|)`` over the ``(2r+1)²`` residuals of ``p``'s channel (or
    CFA colour plane) centred on ``p``, borders reflected per channel/plane. Equal, bit for bit,
    to ``np.float32(1.4826022185056018) * scipy.ndimage.median_filter(np.abs(W),
    size=(2r+1, 2r+1, 1), mode="reflect")`` applied per channel (per plane for ``cfa=True``).

    Parameters
    ----------
    residual : numpy.ndarray
        float32 residual, H×W or H×W×C (``cfa=False``) or an H×W CFA residual (``cfa=True``).
    radius : int
        Window radius r; 2 (5×5) is the vectorised fast path.
    cfa : bool
        Take the window over same-colour sites of a 2×2 CFA (offsets multiple of 2).
    out : numpy.ndarray, optional
        Preallocated C-contiguous float32 array of the residual's shape.

    Returns
    -------
    numpy.ndarray
        float32 map of the residual's shape (``out`` when given).

    Raises
    ------
    TypeError
        If ``residual`` is not float32.
    ValueError
        For a wrong rank, empty input, a bad radius or NaN/inf values.
    """
    residual = check_float32(residual, "residual")
    if residual.ndim not in ((2,) if cfa else (2, 3)):
        raise ValueError(f"residual must be {'H×W' if cfa else 'H×W or H×W×C'}, got shape {residual.shape}")
    radius = _check_radius(radius)
    out = check_out(out, residual.shape)
    row_step, col_step = (2, 2) if cfa else (1, residual.shape[2] if residual.ndim == 3 else 1)
    res2d = residual.reshape(residual.shape[0], -1)
    if _sigma_rows(res2d, row_step, col_step, radius, out.reshape(res2d.shape), n_row_chunks(res2d.shape[0])):
        raise_non_finite(residual, "residual")
    return out


def local_sigma_at(image, rows, cols, channels=None, radius=2, cfa=False):
    """Local robust noise level at given positions, computed from the image directly.

    Only the ``(2r+3)²`` image values around each position are read: the residuals of the
    ``(2r+1)²`` window are computed on the fly. The result equals, bit for bit,
    ``local_sigma(median_residual(image), radius)[rows, cols(, channels)]`` (or the CFA
    counterpart with ``cfa=True``).

    Parameters
    ----------
    image : numpy.ndarray
        H×W or H×W×C image, or an H×W mosaic with ``cfa=True``; uint8, uint16 or float32.
    rows, cols : array_like of int
        Positions, 1-D, of equal length N.
    channels : array_like of int, optional
        Channel of each position; required for H×W×C images.
    radius : int
        Window radius r.
    cfa : bool
        Use CFA residuals and same-colour windows.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (N,).
    """
    image = check_image(image, "image", ndims=(2,) if cfa else (2, 3))
    radius = _check_radius(radius)
    rows, cols, channels = check_positions(image.shape, rows, cols, channels)
    row_step, col_step = (2, 2) if cfa else (1, image.shape[2] if image.ndim == 3 else 1)
    out = np.empty(rows.size, np.float32)
    bad = _sigma_points(image.reshape(image.shape[0], -1), row_step, col_step, radius, rows,
                        flatten_positions(image.shape, rows, cols, channels), out)
    if bad >= 0:
        raise_non_finite(image, "image")
    return out


def _grid_groups(shape, cfa, stride):
    """Sampling grid per channel or CFA plane: yields (output index, rows, cols, channel)."""
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    height, width = shape[:2]
    if cfa:
        for py in range(2):
            for px in range(2):
                yield (py, px), np.arange(py, height, 2 * stride), np.arange(px, width, 2 * stride), None
        return
    rows, cols = np.arange(0, height, stride), np.arange(0, width, stride)
    for c in range(shape[2] if len(shape) == 3 else 1):
        yield c, rows, cols, (c if len(shape) == 3 else None)


@njit(cache=True, nogil=True)
def _abs_counts(values):
    """How often each of 0..255 occurs as ``|v|`` over a 2-D array of whole numbers in -255..255."""
    counts = np.zeros(256, np.int64)
    for a in range(values.shape[0]):
        for b in range(values.shape[1]):
            counts[int(abs(values[a, b]))] += 1
    return counts


def _scaled_median_abs(values, integer=False):
    """``MAD_SCALE * np.median(np.abs(values))`` (0 for no values).

    With ``integer`` (residuals of uint8 pixels: whole numbers in -255..255) the median is read
    from a 256-bin histogram, which gives the same float32 value as ``np.median`` without its
    partition.
    """
    if not values.size:
        return np.float32(0.0)
    if not integer:
        return MAD_SCALE * np.median(np.abs(values))
    counts = np.cumsum(_abs_counts(values))
    n = values.size
    upper = np.float32(np.searchsorted(counts, n // 2, side="right"))
    if n % 2:
        return MAD_SCALE * upper
    lower = np.float32(np.searchsorted(counts, n // 2 - 1, side="right"))
    return MAD_SCALE * ((lower + upper) / np.float32(2))


def _empty_sigma(shape, cfa):
    return np.zeros((2, 2) if cfa else (shape[2] if len(shape) == 3 else 1,), np.float32)


def image_sigma(image, cfa=False, stride=16):
    """Robust noise level of a whole image's residual, per channel or per CFA plane.

    ``1.4826 * median(|W|)`` over the residuals at every ``stride``-th row and column of each
    channel (every ``stride``-th site of each colour plane with ``cfa=True``), computed with
    the sparse kernels at a small fraction of the cost of a full residual. Equal to
    :func:`residual_sigma` of the full residual. This is the default per-image ``sigma`` of
    :class:`kernels.PixelStats`.

    Parameters
    ----------
    image : numpy.ndarray
        H×W or H×W×C image, or an H×W mosaic with ``cfa=True``.
    cfa : bool
        Treat ``image`` as a 2×2 CFA mosaic.
    stride : int
        Sampling step, in pixels of a channel or sites of a colour plane.

    Returns
    -------
    numpy.ndarray
        float32, shape (C,) for H×W×C, (1,) for H×W, (2, 2) indexed ``[y % 2, x % 2]`` for a
        mosaic. A colour plane without sites (a 1-pixel-high or -wide mosaic) gets 0.
    """
    image = check_image(image, "image", ndims=(2,) if cfa else (2, 3))
    sigma = _empty_sigma(image.shape, cfa)
    src2d = image.reshape(image.shape[0], -1)
    n_channels = image.shape[2] if image.ndim == 3 else 1
    row_step, col_step = (2, 2) if cfa else (1, n_channels)
    groups = {}  # channels or planes sampled on the same rows share one pass over those rows
    for index, rows, cols, channel in _grid_groups(image.shape, cfa, stride):
        flat_cols = cols * n_channels + (0 if channel is None else channel)
        groups.setdefault(rows.tobytes(), (rows, []))[1].append((index, flat_cols))
    for rows, members in groups.values():
        rows = np.ascontiguousarray(rows, np.int64)
        flat_cols = np.ascontiguousarray(np.concatenate([cols for _, cols in members]), np.int64)
        if rows.size == 0 or flat_cols.size == 0:
            continue  # a colour plane without sites keeps sigma 0
        if image.dtype.kind == "f" and not _grid_is_finite(src2d, row_step, col_step, rows, flat_cols):
            raise_non_finite(image, "image")
        w = np.empty((rows.size, flat_cols.size), np.float32)
        _grid_residuals(src2d, row_step, col_step, rows, flat_cols, w)
        at = 0
        for index, cols in members:
            sigma[index] = _scaled_median_abs(w[:, at:at + cols.size], integer=image.dtype == np.uint8)
            at += cols.size
    return sigma


def residual_sigma(residual, cfa=False, stride=16):
    """Robust noise level of a residual, per channel or per CFA plane.

    The residual counterpart of :func:`image_sigma`: the same sample positions and estimator,
    hence the same values for ``residual = median_residual(image)`` (or ``cfa_residual``).

    Parameters
    ----------
    residual : numpy.ndarray
        float32 H×W or H×W×C residual, or an H×W CFA residual with ``cfa=True``.
    cfa : bool
        Estimate per 2×2 CFA plane.
    stride : int
        Sampling step, in pixels of a channel or sites of a colour plane.

    Returns
    -------
    numpy.ndarray
        float32, shape (C,), (1,) or (2, 2) as for :func:`image_sigma`.
    """
    residual = check_float32(residual, "residual")
    if residual.ndim not in ((2,) if cfa else (2, 3)):
        raise ValueError(f"residual must be {'H×W' if cfa else 'H×W or H×W×C'}, got shape {residual.shape}")
    sigma = _empty_sigma(residual.shape, cfa)
    for index, rows, cols, channel in _grid_groups(residual.shape, cfa, stride):
        sample = residual[np.ix_(rows, cols)]
        if channel is not None:
            sample = sample[..., channel]
        if not np.isfinite(sample).all():
            raise_non_finite(residual, "residual")
        sigma[index] = _scaled_median_abs(sample)
    return sigma
