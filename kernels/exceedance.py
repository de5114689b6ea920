"""Where an image's residual exceeds its noise level: a sparse record of one image.

:func:`exceedances` computes the median residual ``W`` of every element (per channel, or per
CFA plane), and returns, as sorted flat indices, the elements where ``W > k·σ`` and the
elements whose residual window holds a clipped neighbour. One pass over the rows does it all:
the vertical triples of a row segment are sorted once, and the same sorted columns give the
median, the residual, its comparison with the threshold and the clipping test; the segment's
flags live in an L1-sized scratch and are turned into indices at once. Neither the residual nor
an image-sized array of flags is ever materialised, so the record comes straight from the
decoded pixels. Row chunks run in parallel; each writes its indices into room of its own, and a
chunk that needs more room than first given (a mostly saturated one) is run again into its
exact place.

Such a record is a few thousandths of the image's size, so the records of every image of a
device can be kept and re-combined for any subset of images (for example the training
images of each split) without decoding the images again.
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from kernels._rows import (
    chunk_bounds,
    clamp_neighbours,
    med3,
    n_row_chunks,
    neighbour_clipped_at,
    residual_at,
    row_is_finite,
    segment_length,
    sort_triples,
)
from kernels._validate import check_finite, check_image, raise_non_finite
from kernels.clipping import _geometry, saturation_level

__all__ = ["exceedances"]

_EXCEED = np.uint8(1)
_CLIPPED = np.uint8(2)


def _exceeds(centre, median, t):
    """``centre - median > t`` (the body runs without the JIT; compiled, the overload picks the form)."""
    if isinstance(t, np.uint8):
        return np.uint8(int(centre) - int(median) > int(t))
    return np.uint8(np.float32(centre) - np.float32(median) > t)


@overload(_exceeds, inline="always")
def _exceeds_typed(centre, median, t):
    if t == types.uint8:
        # uint8 pixels, whole-number thresholds >= 0: the comparison stays in 8 bits (1.16-1.25x on
        # 12 MP JPEGs, benchmarks/bench_exceedance_ab.py)
        return lambda centre, median, t: np.uint8(centre > median) & np.uint8(np.uint8(centre - median) > t)
    return lambda centre, median, t: np.uint8(np.float32(centre) - np.float32(median) > t)


@njit(cache=True)
def _interior_flags(up, mid, dn, step, j0, j1, scratch, thr, level, use_level, up_is_centre, dn_is_centre,
                    flags):
    """Flags of elements ``j0..j1-1``, all at least ``step`` away from both row ends, in one loop.

    The vertical triples are sorted once (as in ``residual_span``); the same sorted columns
    give the median and, through their maxima, the clipping test: the 8 neighbours' maximum is
    ``max(hi[j - s], hi[j + s], up[j], dn[j])``, with ``mid[j - s]`` standing in for a row
    above/below that is the centre row itself (image border), exactly as
    ``neighbour_clipped_span`` does.
    """
    n = j1 - j0
    m = n + 2 * step
    a = j0 - step
    lo = scratch[0, :m]
    md = scratch[1, :m]
    hi = scratch[2, :m]
    sort_triples(up[a:a + m], mid[a:a + m], dn[a:a + m], lo, md, hi)
    l0 = lo[0:n]
    l1 = lo[step:step + n]
    l2 = lo[2 * step:2 * step + n]
    m0 = md[0:n]
    m1 = md[step:step + n]
    m2 = md[2 * step:2 * step + n]
    h0 = hi[0:n]
    h1 = hi[step:step + n]
    h2 = hi[2 * step:2 * step + n]
    centre = mid[j0:j1]
    t = thr[j0:j1]
    out = flags[0:n]
    if use_level:
        u1 = mid[j0 - step:j1 - step] if up_is_centre else up[j0:j1]
        d1 = mid[j0 - step:j1 - step] if dn_is_centre else dn[j0:j1]
        lev = level
        for k in range(n):
            i = np.uint64(k)
            low = max(max(l0[i], l1[i]), l2[i])
            high = min(min(h0[i], h1[i]), h2[i])
            median = med3(low, med3(m0[i], m1[i], m2[i]), high)
            peak = max(max(h0[i], h2[i]), max(u1[i], d1[i]))
            c = np.uint8(peak >= lev)
            e = _exceeds(centre[i], median, t[i]) & (c ^ np.uint8(1))
            out[i] = e | (c << np.uint8(1))
    else:
        for k in range(n):
            i = np.uint64(k)
            low = max(max(l0[i], l1[i]), l2[i])
            high = min(min(h0[i], h1[i]), h2[i])
            median = med3(low, med3(m0[i], m1[i], m2[i]), high)
            out[i] = _exceeds(centre[i], median, t[i])


@njit(cache=True)
def _border_flag(up, mid, dn, step, j, thr, level, use_level, up_is_centre, dn_is_centre):
    """Flag of one element near a row end (scalar path)."""
    c = np.uint8(0)
    if use_level:
        c = np.uint8(neighbour_clipped_at(up, mid, dn, step, j, level, up_is_centre, dn_is_centre))
    e = np.uint8(residual_at(up, mid, dn, step, j) > thr[j]) & (c ^ np.uint8(1))
    return e | (c << np.uint8(1))


@njit(cache=True)
def _segment_flags(up, mid, dn, step, j0, j1, scratch, thr, level, use_level, up_is_centre, dn_is_centre, flags):
    """``flags[j - j0]`` for ``j`` in ``j0..j1-1``: 1 exceeds, 2 clipped neighbourhood, 0 neither."""
    size = mid.size
    first = max(j0, step)
    last = min(j1, size - step)
    if first >= last:
        first = last = j1
    for j in range(j0, first):
        flags[j - j0] = _border_flag(up, mid, dn, step, j, thr, level, use_level, up_is_centre, dn_is_centre)
    if last > first:
        _interior_flags(up, mid, dn, step, first, last, scratch, thr, level, use_level, up_is_centre,
                        dn_is_centre, flags[first - j0:])
    for j in range(last, j1):
        flags[j - j0] = _border_flag(up, mid, dn, step, j, thr, level, use_level, up_is_centre, dn_is_centre)


@njit(cache=True)
def _emit(flags, n, base, exceed_out, e_start, e_cap, ne, clipped_out, c_start, c_cap, nc):
    """Append the flagged elements of ``flags[:n]`` (flat indices ``base + j``); counts go on past the caps."""
    n_words = n // 8
    words = flags[:n_words * 8].view(np.uint64)
    for w in range(n_words):
        if words[w] != 0:  # flags are mostly 0: skip them eight at a time
            for j in range(8 * w, 8 * w + 8):
                f = flags[j]
                if f == 1:
                    if ne < e_cap:
                        exceed_out[e_start + ne] = base + j
                    ne += 1
                elif f == 2:
                    if nc < c_cap:
                        clipped_out[c_start + nc] = base + j
                    nc += 1
    for j in range(n_words * 8, n):
        f = flags[j]
        if f == 1:
            if ne < e_cap:
                exceed_out[e_start + ne] = base + j
            ne += 1
        elif f == 2:
            if nc < c_cap:
                clipped_out[c_start + nc] = base + j
            nc += 1
    return ne, nc


@njit(parallel=True, cache=True, nogil=True)
def _screen_rows(src2d, row_step, col_step, thresholds, level, use_level, n_chunks, todo,
                 exceed_out, e_start, e_cap, n_exceed, clipped_out, c_start, c_cap, n_clipped):
    """Residual, threshold and clipping of every element of the chunks marked in ``todo``, in one pass.

    Chunk ``k`` (rows ``chunk_bounds(height, n_chunks, k)``) writes the flat indices of its
    exceeding elements to ``exceed_out[e_start[k]:e_start[k] + e_cap[k]]`` and of its clipped
    ones to ``clipped_out[c_start[k]:...]``, in increasing order, and its full counts to
    ``n_exceed[k]`` / ``n_clipped[k]`` (more than the cap: the chunk overflowed and nothing past
    the cap was written). The flags of one row segment live in a small scratch (L1), never in an
    image-sized array. Returns the number of rows holding NaN/inf.
    """
    height, length = src2d.shape
    n_bad = 0
    for k in prange(n_chunks):
        if not todo[k]:
            continue
        y0, y1 = chunk_bounds(height, n_chunks, k)
        segment = segment_length(src2d.itemsize)
        scratch = np.empty((3, segment + 2 * col_step), src2d.dtype)
        flags = np.zeros(segment, np.uint8)
        ne = 0
        nc = 0
        for y in range(y0, y1):
            up, dn = clamp_neighbours(y, row_step, height)
            mid = src2d[y]
            if not row_is_finite(mid):
                n_bad += 1
            thr = thresholds[y % 2]
            for j0 in range(0, length, segment):
                j1 = min(j0 + segment, length)
                _segment_flags(src2d[up], mid, src2d[dn], col_step, j0, j1, scratch, thr, level[0], use_level,
                               up == y, dn == y, flags)
                ne, nc = _emit(flags, j1 - j0, y * length + j0, exceed_out, e_start[k], e_cap[k], ne,
                               clipped_out, c_start[k], c_cap[k], nc)
        n_exceed[k] = ne
        n_clipped[k] = nc
    return n_bad


#: Room first given to a chunk's entries: one per this many of its elements (more is found by a rerun
#: of that chunk). Exceedances of ``W > 4σ`` are a few per thousand in a photo (10 % in a tiny noisy one),
#: clipped elements can be many; pages of the room that are never written cost no memory.
_EXCEED_ROOM = 8
_CLIPPED_ROOM = 4


def _compact(room, start, cap, count):
    """The entries each chunk wrote into its room, one after the other (room for overflowed chunks kept empty)."""
    out = np.empty(int(count.sum()), np.int64)
    at = 0
    for k in range(start.size):
        n = int(count[k])
        if n <= cap[k]:
            out[at:at + n] = room[start[k]:start[k] + n]
        at += n
    return out


def _threshold_table(shape, sigma, k, cfa, narrow=False):
    """Per-element thresholds of an even and an odd row, ``(2, L)`` float32; with ``narrow`` (uint8
    pixels) and no threshold below 0, the uint8 floors that give the same comparisons."""
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
    if narrow and table.min() >= 0:
        # an integer residual r exceeds t exactly when r > floor(t), and never when t >= 255
        table = np.minimum(np.floor(table), 255).astype(np.uint8)
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
    thresholds = _threshold_table(image.shape, sigma, float(k), cfa, narrow=image.dtype == np.uint8)
    row_step, col_step = _geometry(image, cfa)
    src2d = image.reshape(image.shape[0], -1)
    use_level = saturation is not None
    level = np.zeros(1, image.dtype)
    if use_level:
        if image.dtype.kind == "f":
            check_finite(image, "image")
        level, use_level = saturation_level(image.dtype, saturation)
    height, length = src2d.shape
    chunks = n_row_chunks(height)
    # elements of each chunk (the rows of chunk_bounds)
    elements = np.array([((height * (k + 1)) // chunks - (height * k) // chunks) * length for k in range(chunks)],
                        np.int64)
    # first guess of each chunk's room; np.empty leaves pages that are never written unallocated,
    # so the room costs address space, not memory
    e_cap = elements // _EXCEED_ROOM + 64
    c_cap = elements // _CLIPPED_ROOM + 64
    e_start = np.concatenate([[0], np.cumsum(e_cap)[:-1]])
    c_start = np.concatenate([[0], np.cumsum(c_cap)[:-1]])
    exceed_room = np.empty(int(e_cap.sum()), np.int64)
    clipped_room = np.empty(int(c_cap.sum()), np.int64)
    n_exceed = np.zeros(chunks, np.int64)
    n_clipped = np.zeros(chunks, np.int64)
    todo = np.ones(chunks, np.bool_)
    if _screen_rows(src2d, row_step, col_step, thresholds, level, use_level, chunks, todo,
                    exceed_room, e_start, e_cap, n_exceed, clipped_room, c_start, c_cap, n_clipped):
        raise_non_finite(image, "image")
    exceed = _compact(exceed_room, e_start, e_cap, n_exceed)
    clipped = _compact(clipped_room, c_start, c_cap, n_clipped)
    overflow = (n_exceed > e_cap) | (n_clipped > c_cap)
    if overflow.any():
        # chunks with more entries than their room: run again straight into their final places
        final_e = np.concatenate([[0], np.cumsum(n_exceed)[:-1]])
        final_c = np.concatenate([[0], np.cumsum(n_clipped)[:-1]])
        _screen_rows(src2d, row_step, col_step, thresholds, level, use_level, chunks, overflow,
                     exceed, final_e, n_exceed.copy(), n_exceed, clipped, final_c, n_clipped.copy(), n_clipped)
    return exceed, clipped
