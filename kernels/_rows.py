"""Compiled building blocks for 3×3 median residuals on flattened rows.

An H×W×C image is viewed as H rows of W·C values; the horizontal neighbours of element ``j``
are ``j - s`` and ``j + s`` with the *column step* ``s = C``. A CFA mosaic uses ``s = 2`` and
rows two apart, which makes the same code take the median over same-colour sites.

Border rule (identical to ``scipy.ndimage.median_filter(mode="reflect")`` for a 3-wide
window): a neighbour that falls outside the image, or outside its colour plane, is replaced
by the centre element itself.

The interior of a row is processed in segments of ``SEGMENT_BYTES`` (the scratch stays in
L1): the vertical triples are sorted once per column into scratch rows ``lo``/``md``/``hi``
(each column is shared by three windows), then the median of a window is
``med3(max(lows), med3(mids), min(highs))``, subtracted from the centre in float32 in the
same loop (a separate conversion pass measured slower). All loops run over a plain ``range``
on shifted slices, which LLVM turns into vector min/max instructions; border columns go
through the scalar ``residual_at``. Hot loops index with ``np.uint64``: numba adds
negative-index wraparound code for signed indices, which makes LLVM fall back to gathers or
scalar code when a loop reads many arrays.
"""

import numba
import numpy as np
from numba import njit, prange

SEGMENT_BYTES = 4096  # bytes of one scratch row: measured best, keeps the scratch in L1


@njit(inline="always")
def med3(a, b, c):
    """Median of three values."""
    return max(min(a, b), min(max(a, b), c))


@njit(inline="always")
def sort3(a, b, c):
    """The three values in ascending order."""
    lo = min(a, b)
    hi = max(a, b)
    mid = min(hi, c)
    hi = max(hi, c)
    return min(lo, mid), max(lo, mid), hi


@njit(cache=True)
def median9(a0, a1, a2, b0, b1, b2, c0, c1, c2):
    """Median of nine values given as three triples."""
    a0, a1, a2 = sort3(a0, a1, a2)
    b0, b1, b2 = sort3(b0, b1, b2)
    c0, c1, c2 = sort3(c0, c1, c2)
    return med3(max(max(a0, b0), c0), med3(a1, b1, c1), min(min(a2, b2), c2))


@njit(cache=True)
def reflect(i, n):
    """Index ``i`` mapped into ``0..n-1`` like scipy's ``mode="reflect"`` (d c b a | a b c d)."""
    period = 2 * n
    i = i % period
    if i < 0:
        i += period
    if i >= n:
        i = period - 1 - i
    return i


@njit(cache=True)
def clamp_neighbours(j, step, size):
    """Indices of the two neighbours of ``j`` at distance ``step``, replaced by ``j`` when outside."""
    left = j - step if j >= step else j
    right = j + step if j + step < size else j
    return left, right


@njit(cache=True)
def residual_at(up, mid, dn, step, j):
    """Residual (float32) of element ``j`` of ``mid`` with its 3×3 neighbourhood in up/mid/dn."""
    left, right = clamp_neighbours(j, step, mid.size)
    med = median9(up[left], up[j], up[right], mid[left], mid[j], mid[right],
                  dn[left], dn[j], dn[right])
    return np.float32(mid[j]) - np.float32(med)


@njit(cache=True)
def sort_triples(up, mid, dn, lo, md, hi):
    for k in range(lo.size):
        i = np.uint64(k)
        a = up[i]
        b = mid[i]
        c = dn[i]
        t = min(a, b)
        b = max(a, b)
        a = t
        t = min(b, c)
        c = max(b, c)
        b = t
        lo[i] = min(a, b)
        md[i] = max(a, b)
        hi[i] = c


@njit(cache=True)
def _interior_residuals(up, mid, dn, step, j0, j1, scratch, res):
    """Residuals of elements ``j0..j1-1``, all at least ``step`` away from both row ends."""
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
    out = res[0:n]
    for k in range(n):
        i = np.uint64(k)
        low = max(max(l0[i], l1[i]), l2[i])
        high = min(min(h0[i], h1[i]), h2[i])
        median = med3(low, med3(m0[i], m1[i], m2[i]), high)
        out[i] = np.float32(centre[i]) - np.float32(median)


@njit(cache=True)
def segment_length(itemsize):
    """Elements per row segment for an image dtype of ``itemsize`` bytes."""
    return SEGMENT_BYTES // itemsize


@njit(cache=True)
def residual_span(up, mid, dn, step, j0, j1, scratch, res):
    """Write the residuals of elements ``j0..j1-1`` of ``mid`` into ``res[0:j1-j0]``.

    ``scratch`` is a ``(3, segment + 2 * step)`` array of the image dtype (see
    ``segment_length``), and ``j1 - j0`` must not exceed ``segment``.
    """
    size = mid.size
    first = max(j0, step)  # interior: both neighbours inside the row
    last = min(j1, size - step)
    if first >= last:
        for j in range(j0, j1):
            res[j - j0] = residual_at(up, mid, dn, step, j)
        return
    for j in range(j0, first):
        res[j - j0] = residual_at(up, mid, dn, step, j)
    _interior_residuals(up, mid, dn, step, first, last, scratch, res[first - j0:])
    for j in range(last, j1):
        res[j - j0] = residual_at(up, mid, dn, step, j)


@njit(cache=True)
def neighbour_clipped_at(up, mid, dn, step, j, level, up_is_centre, dn_is_centre):
    """True when a neighbour of element ``j`` inside the image is ``>= level``.

    The window is the 3×3 one of ``residual_at`` without its centre; a neighbour that falls
    outside the image (clamped back onto the centre) does not count either. ``up_is_centre``
    / ``dn_is_centre`` say that the row above / below is the centre row itself (image border).
    """
    left, right = clamp_neighbours(j, step, mid.size)
    clipped = False
    for c in (left, j, right):
        if c != j:
            clipped |= (up[c] >= level) | (mid[c] >= level) | (dn[c] >= level)
        else:
            clipped |= (not up_is_centre) and up[c] >= level
            clipped |= (not dn_is_centre) and dn[c] >= level
    return clipped


@njit(cache=True)
def neighbour_clipped_span(up, mid, dn, step, j0, j1, level, up_is_centre, dn_is_centre, flags):
    """``flags[j - j0] = 1`` where ``neighbour_clipped_at`` holds for element ``j``, else 0."""
    size = mid.size
    first = max(j0, step)
    last = min(j1, size - step)
    if first >= last:
        first = last = j1
    for j in range(j0, first):
        flags[j - j0] = neighbour_clipped_at(up, mid, dn, step, j, level, up_is_centre, dn_is_centre)
    n = last - first
    if n > 0:
        # above / below the centre: the left neighbour stands in when that row is the centre's
        u1 = mid[first - step:last - step] if up_is_centre else up[first:last]
        d1 = mid[first - step:last - step] if dn_is_centre else dn[first:last]
        u0 = up[first - step:last - step]
        u2 = up[first + step:last + step]
        m0 = mid[first - step:last - step]
        m2 = mid[first + step:last + step]
        d0 = dn[first - step:last - step]
        d2 = dn[first + step:last + step]
        out = flags[first - j0:last - j0]
        for k in range(n):
            i = np.uint64(k)
            peak = max(max(max(u0[i], u1[i]), max(u2[i], m0[i])),
                       max(max(m2[i], d0[i]), max(d1[i], d2[i])))
            out[i] = peak >= level
    for j in range(last, j1):
        flags[j - j0] = neighbour_clipped_at(up, mid, dn, step, j, level, up_is_centre, dn_is_centre)


@njit(cache=True)
def row_is_finite(row):
    """False if the row holds NaN or inf (always True for integer rows)."""
    ok = True
    for k in range(row.size):
        i = np.uint64(k)
        ok &= np.isfinite(row[i])
    return ok


@njit(cache=True)
def chunk_bounds(n_items, n_chunks, k):
    """Start and stop of chunk ``k`` when ``n_items`` are split into ``n_chunks`` near-equal parts."""
    return (n_items * k) // n_chunks, (n_items * (k + 1)) // n_chunks


def n_row_chunks(height):
    """Number of row chunks for a parallel kernel: a few per thread, at most one per row.

    Computed in Python because calling ``numba.get_num_threads`` inside a kernel prevents
    caching it.
    """
    return max(1, min(height, 8 * numba.get_num_threads()))


@njit(cache=True)
def window_is_finite(up, mid, dn, step, j):
    """False if the 3×3 neighbourhood of element ``j`` holds NaN or inf."""
    left, right = clamp_neighbours(j, step, mid.size)
    ok = True
    for row in (up, mid, dn):
        for i in (left, j, right):
            ok &= np.isfinite(row[i])
    return ok


@njit(parallel=True, cache=True, nogil=True)
def all_finite_rows(array2d, n_chunks):
    """True if no element of the 2-D array is NaN or inf."""
    height = array2d.shape[0]
    n_bad = 0
    for k in prange(n_chunks):
        y0, y1 = chunk_bounds(height, n_chunks, k)
        for y in range(y0, y1):
            if not row_is_finite(array2d[y]):
                n_bad += 1
    return n_bad == 0
