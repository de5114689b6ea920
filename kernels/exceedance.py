"""Where an image's residual exceeds its noise level: a sparse record of one image.

:func:`exceedances` computes the median residual ``W`` of every element (per channel, or per
CFA plane), and returns, as sorted flat indices, the elements where ``W > k·σ`` and the
elements whose residual window holds a clipped neighbour. One pass over the rows does it all:
for each element, the values of its 3×3 window give the median, the residual, its comparison
with the threshold and the clipping test in one vector loop, two rows at a time
where their windows share rows; the flags of those rows live in row-sized buffers and are turned
into indices at once. Neither the residual nor
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
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import overload

from kernels._rows import (
    chunk_bounds,
    clamp_neighbours,
    median9,
    n_row_chunks,
    neighbour_clipped_at,
    residual_at,
    row_is_finite,
)
from kernels._validate import check_finite, check_image, raise_non_finite
from kernels.clipping import _geometry, saturation_level

__all__ = ["exceedances"]

_LOW_BITS = np.uint64(0x0101010101010101)  # bit 0 of every byte of a word


@njit(inline="always")
def _median_exceeds(ul, uc, ur, ml, centre, mr, dl, dc, dr, t):
    """``centre - median > t`` in float32, as ``residual_at`` computes it."""
    median = median9(ul, uc, ur, ml, centre, mr, dl, dc, dr)
    return np.uint8(np.float32(centre) - np.float32(median) > t)


def _window_exceeds(ul, uc, ur, ml, centre, mr, dl, dc, dr, t):
    """1 when the centre of the 3×3 window exceeds the window's median by more than ``t``, else 0.

    The body runs without the JIT; compiled, the overload picks the form for the types.
    """
    if isinstance(t, np.uint8):
        return np.uint8(int(centre) - int(median9(ul, uc, ur, ml, centre, mr, dl, dc, dr)) > int(t))
    return _median_exceeds(ul, uc, ur, ml, centre, mr, dl, dc, dr, t)


@overload(_window_exceeds, inline="always")
def _window_exceeds_typed(ul, uc, ur, ml, centre, mr, dl, dc, dr, t):
    if t == types.uint8:
        # uint8 pixels, whole-number thresholds >= 0: in integers, centre - median > t exactly when
        # the median is below x = centre - t, i.e. when at least 5 of the 9 values are; the centre
        # never is (x <= centre), nor is any value when centre <= t (x saturates at 0). Counting the 8
        # others in 8-bit lanes takes fewer vector operations than sorting: 4-5 % faster at 12 MP (A/B)
        def count_below(ul, uc, ur, ml, centre, mr, dl, dc, dr, t):
            # numba widens integer arithmetic to int64; each truncation back to uint8 lets LLVM keep 8-bit lanes
            x = np.uint8(centre - min(centre, t))
            left = np.uint8(np.uint8(ul < x) + np.uint8(ml < x) + np.uint8(dl < x))
            middle = np.uint8(np.uint8(uc < x) + np.uint8(dc < x))
            right = np.uint8(np.uint8(ur < x) + np.uint8(mr < x) + np.uint8(dr < x))
            return np.uint8(np.uint8(left + middle + right) > np.uint8(4))
        return count_below
    return lambda ul, uc, ur, ml, centre, mr, dl, dc, dr, t: _median_exceeds(ul, uc, ur, ml, centre, mr, dl,
                                                                            dc, dr, t)


@njit(inline="always")
def _flag(ul, uc, ur, ml, centre, mr, dl, dc, dr, above, below, t, level):
    """Flag of one window: 2 when a neighbour is clipped, else 1 when the centre exceeds, else 0.

    The 8 neighbours' maximum is that of the side columns with ``above`` and ``below``, the
    centre column's upper and lower values, or ``ml`` standing in for a row above/below that is
    the centre row itself (image border), exactly as ``neighbour_clipped_span`` does.
    """
    peak = max(max(max(ul, ml), dl), max(max(ur, mr), dr))
    clipped = np.uint8(max(peak, max(above, below)) >= level)
    exceeds = _window_exceeds(ul, uc, ur, ml, centre, mr, dl, dc, dr, t)
    return (exceeds & (clipped ^ np.uint8(1))) | (clipped << np.uint8(1))


@njit(inline="always")
def _shifted(row, step):
    """The row's elements ``step .. size - step - 1`` with their left and right neighbours, as three slices."""
    n = row.size - 2 * step
    return row[0:n], row[step:step + n], row[2 * step:2 * step + n]


@njit(cache=True)
def _interior_pair_flags(a, b, c, d, step, thr_b, thr_c, level, use_level, a_is_b, d_is_c, flags_b, flags_c):
    """Flags of two consecutive rows ``b`` (window rows a-b-c) and ``c`` (rows b-c-d) in one vector loop.

    The elements at least ``step`` away from both row ends are flagged. Each of the four rows is
    read once for both: 12 loads per pair of elements instead of 18, which is what the loop waits
    on (paired 4.6 ms, one row at a time 5.6 ms at 12 MP). ``a_is_b`` / ``d_is_c``: the row above
    ``b`` / below ``c`` is that row itself (image border).
    """
    n = b.size - 2 * step
    a_l, a_c, a_r = _shifted(a, step)
    b_l, b_c, b_r = _shifted(b, step)
    c_l, c_c, c_r = _shifted(c, step)
    d_l, d_c, d_r = _shifted(d, step)
    t_b, t_c = thr_b[step:step + n], thr_c[step:step + n]
    out_b, out_c = flags_b[step:step + n], flags_c[step:step + n]
    if use_level:
        above_b = b_l if a_is_b else a_c
        below_c = c_l if d_is_c else d_c
        for k in range(n):
            i = np.uint64(k)
            out_b[i] = _flag(a_l[i], a_c[i], a_r[i], b_l[i], b_c[i], b_r[i], c_l[i], c_c[i], c_r[i],
                             above_b[i], c_c[i], t_b[i], level)
            out_c[i] = _flag(b_l[i], b_c[i], b_r[i], c_l[i], c_c[i], c_r[i], d_l[i], d_c[i], d_r[i],
                             b_c[i], below_c[i], t_c[i], level)
    else:
        for k in range(n):
            i = np.uint64(k)
            out_b[i] = _window_exceeds(a_l[i], a_c[i], a_r[i], b_l[i], b_c[i], b_r[i], c_l[i], c_c[i], c_r[i],
                                       t_b[i])
            out_c[i] = _window_exceeds(b_l[i], b_c[i], b_r[i], c_l[i], c_c[i], c_r[i], d_l[i], d_c[i], d_r[i],
                                       t_c[i])


@njit(inline="always")
def _border_flag(up, mid, dn, step, j, thr, level, use_level, up_is_centre, dn_is_centre):
    """Flag of one element near a row end (scalar path)."""
    c = np.uint8(0)
    if use_level:
        c = np.uint8(neighbour_clipped_at(up, mid, dn, step, j, level, up_is_centre, dn_is_centre))
    e = np.uint8(residual_at(up, mid, dn, step, j) > thr[j]) & (c ^ np.uint8(1))
    return e | (c << np.uint8(1))


@njit(inline="always")
def _scalar_flags(src2d, row_step, step, y, j0, j1, thr, level, use_level, flags):
    """Flags of elements ``j0..j1-1`` of row ``y``, one at a time (row ends, and rows without a partner)."""
    up, dn = clamp_neighbours(y, row_step, src2d.shape[0])
    above, row, below = src2d[up], src2d[y], src2d[dn]
    for j in range(j0, j1):
        flags[j] = _border_flag(above, row, below, step, j, thr, level, use_level, up == y, dn == y)


@njit(inline="always")
def _row_end_flags(src2d, row_step, step, y, thr, level, use_level, flags):
    """Flags of the elements of row ``y`` less than ``step`` away from a row end (all of a short row)."""
    size = src2d.shape[1]
    _scalar_flags(src2d, row_step, step, y, 0, min(step, size), thr, level, use_level, flags)
    _scalar_flags(src2d, row_step, step, y, max(step, size - step), size, thr, level, use_level, flags)


def _lowest_set_byte(bits):
    """Index of the lowest byte of the word ``bits`` that holds a set bit (the body runs without the JIT)."""
    bits = int(bits)
    return ((bits & -bits).bit_length() - 1) >> 3


@overload(_lowest_set_byte, inline="always")
def _lowest_set_byte_typed(bits):
    return lambda bits: trailing_zeros(bits) >> 3


@njit(inline="always")
def _emit_bits(bits, base, out, start, cap, count):
    """Append ``base + k`` for every byte ``k`` of ``bits`` whose lowest bit is set; the count goes on past the cap."""
    while bits:
        if count < cap:
            out[start + count] = base + _lowest_set_byte(bits)
        count += 1
        bits &= bits - np.uint64(1)
    return count


@njit(inline="always")
def _mark_nonzero(words, marks, n):
    """``marks[w] = words[w] != 0`` for ``w < n``, and 0 up to the next multiple of 8 (a vector loop)."""
    for w in range(n):
        i = np.uint64(w)
        marks[i] = np.uint8(words[i] != 0)
    marks[n:(n + 7) // 8 * 8] = 0


@njit(cache=True)
def _emit(flags, n, base, marks, exceed_out, e_start, e_cap, ne, clipped_out, c_start, c_cap, nc):
    """Append the flagged elements of ``flags[:n]`` (flat indices ``base + j``); counts go on past the caps.

    Flags are mostly 0, so they are found from the top of a three-level summary built by
    vector loops: ``marks[0]`` marks each nonzero word of eight flags, ``marks[1]`` each
    nonzero word of those marks (64 flags), and a word of ``marks[1]`` covers 512 flags. The
    set bytes of a summary word are visited by counting trailing zeros, down to the flag words,
    whose set flags (1 in bit 0 of a byte, 2 in bit 1) are found the same way: in increasing
    order, with no test of an empty word below the top level.
    """
    n_words = (n + 7) // 8
    flags[n:8 * n_words] = 0  # the partial last word
    words = flags[:8 * n_words].view(np.uint64)
    words_marked = marks[0]
    groups_marked = marks[1]
    _mark_nonzero(words, words_marked, n_words)
    n_groups = (n_words + 7) // 8
    _mark_nonzero(words_marked[:8 * n_groups].view(np.uint64), groups_marked, n_groups)
    groups = words_marked[:8 * n_groups].view(np.uint64)
    tops = groups_marked[:(n_groups + 7) // 8 * 8].view(np.uint64)
    for top in range(tops.size):
        marked_groups = tops[top]
        while marked_groups:
            g = 8 * top + _lowest_set_byte(marked_groups)
            marked_groups &= marked_groups - np.uint64(1)
            marked_words = groups[g]
            while marked_words:
                w = 8 * g + _lowest_set_byte(marked_words)
                marked_words &= marked_words - np.uint64(1)
                word = words[w]
                ne = _emit_bits(word & _LOW_BITS, base + 8 * w, exceed_out, e_start, e_cap, ne)
                nc = _emit_bits((word >> np.uint64(1)) & _LOW_BITS, base + 8 * w, clipped_out, c_start, c_cap, nc)
    return ne, nc


@njit(parallel=True, cache=True, nogil=True)
def _screen_rows(src2d, row_step, col_step, thresholds, level, use_level, n_chunks, todo,
                 exceed_out, e_start, e_cap, n_exceed, clipped_out, c_start, c_cap, n_clipped):
    """Residual, threshold and clipping of every element of the chunks marked in ``todo``, in one pass.

    Chunk ``k`` (rows ``chunk_bounds(height, n_chunks, k)``) writes the flat indices of its
    exceeding elements to ``exceed_out[e_start[k]:e_start[k] + e_cap[k]]`` and of its clipped
    ones to ``clipped_out[c_start[k]:...]``, in increasing order, and its full counts to
    ``n_exceed[k]`` / ``n_clipped[k]`` (more than the cap: the chunk overflowed and nothing past
    the cap was written). Rows are flagged two at a time whose windows share rows (``y`` and
    ``y + row_step``: neighbours, or the next row of the same CFA planes) into row-sized buffers,
    never an image-sized array, and each row's flags become indices, in row order, before the
    next group. Returns the number of rows holding NaN/inf.
    """
    height, length = src2d.shape
    lev = level[0]
    group = 2 * row_step  # rows y .. y + group - 1 are flagged as row_step pairs (y + p, y + p + row_step)
    n_bad = 0
    for k in prange(n_chunks):
        if not todo[k]:
            continue
        y0, y1 = chunk_bounds(height, n_chunks, k)
        flags = np.zeros((group + 1, length + 8), np.uint8)  # and one for a row flagged only to pair another
        marks = np.zeros((2, length // 8 + 16), np.uint8)
        ne = 0
        nc = 0
        y = y0
        while y < y1:
            n_rows = min(group, y1 - y)
            for p in range(min(row_step, n_rows)):
                row = y + p
                if p + row_step < n_rows:  # both rows of the pair are kept
                    first, second, keep_first, keep_second = row, row + row_step, p, p + row_step
                elif row + row_step < height:  # the partner belongs to the next group or chunk
                    first, second, keep_first, keep_second = row, row + row_step, p, group
                elif row >= row_step:  # the last rows of the image pair with the row before
                    first, second, keep_first, keep_second = row - row_step, row, group, p
                else:  # no row of the same planes above or below: one at a time
                    _scalar_flags(src2d, row_step, col_step, row, 0, length, thresholds[row % 2], lev, use_level,
                                  flags[p])
                    continue
                above = first - row_step if first >= row_step else first
                below = second + row_step if second + row_step < height else second
                for r, kept in ((first, keep_first), (second, keep_second)):
                    if kept < group:
                        _row_end_flags(src2d, row_step, col_step, r, thresholds[r % 2], lev, use_level, flags[kept])
                if length > 2 * col_step:
                    _interior_pair_flags(src2d[above], src2d[first], src2d[second], src2d[below], col_step,
                                         thresholds[first % 2], thresholds[second % 2], lev, use_level,
                                         above == first, below == second, flags[keep_first], flags[keep_second])
            for r in range(n_rows):
                if not row_is_finite(src2d[y + r]):
                    n_bad += 1
                ne, nc = _emit(flags[r], length, (y + r) * length, marks, exceed_out, e_start[k], e_cap[k], ne,
                               clipped_out, c_start[k], c_cap[k], nc)
            y += n_rows
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


def _repeat_to(values, size):
    """``values`` repeated to ``size`` elements, as ``np.resize`` (which measured 0.4 ms for a 12 MP row)."""
    return np.tile(values, -(-size // values.size))[:size]


def _threshold_table(shape, sigma, k, cfa, narrow=False):
    """Per-element thresholds of an even and an odd row, ``(2, L)`` float32; with ``narrow`` (uint8
    pixels) and no threshold below 0, the uint8 floors that give the same comparisons."""
    sigma = np.asarray(sigma, dtype=np.float64)
    width = shape[1]
    if cfa:
        if sigma.shape != (2, 2):
            raise ValueError(f"sigma of a CFA mosaic must be (2, 2) per colour plane, got shape {sigma.shape}")
        rows = [_repeat_to(k * sigma[p], width) for p in range(2)]
    else:
        channels = shape[2] if len(shape) == 3 else 1
        if sigma.shape not in {(), (1,), (channels,)}:
            raise ValueError(f"sigma must be a scalar or one value per channel ({channels}), got shape {sigma.shape}")
        row = _repeat_to(k * np.broadcast_to(sigma.reshape(-1), (channels,)), width * channels)
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
