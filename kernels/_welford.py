"""Compiled Welford updates of per-pixel statistics, from a residual or fused with computing it.

The fused form computes the 3×3 median residual of a row segment (see :mod:`kernels._rows`)
and folds it into the statistics in the same loop, so the residual never leaves registers;
the clipping test (see :mod:`kernels.clipping`: any neighbour inside the image, the centre
excluded) reuses the sorted vertical triples (the maxima of the side columns).

Counts: with ``has_skipped`` False every element has seen ``n_seen`` images and the step uses
the shared ``inv_count = 1 / (n_seen + 1)``; otherwise element ``i`` has seen
``n_seen - skipped[i]`` and a skipped element only increments ``skipped[i]``. Loops are
branch-free (both outcomes computed, one selected) so that they vectorise.
"""

import numpy as np
from numba import njit

from kernels._rows import med3, neighbour_clipped_at, residual_at, sort_triples


@njit(inline="always")
def welford_step(x, mean, m2, inv_count):
    """New (mean, M2) after one more value ``x``, the count being ``1 / inv_count``."""
    delta = x - mean
    updated = mean + delta * inv_count
    return updated, m2 + delta * (x - updated)


@njit(inline="always")
def welford_skip_step(x, use, mean, m2, count_before):
    """New (mean, M2) when ``use`` is True, else the old ones; ``count_before`` images so far.

    The count is converted to float32 (exact below 2**24 images) so that float32 state stays
    in float32 arithmetic.
    """
    delta = x - mean
    updated = mean + delta / np.float32(count_before + 1)
    m2_updated = m2 + delta * (x - updated)
    return (updated if use else mean), (m2_updated if use else m2)


@njit(cache=True, error_model="numpy")  # no ZeroDivisionError branch: counts are >= 1 here
def update_from_values(x, skip, mean, m2, skipped, has_skipped, exceed, threshold, use_exceed,
                       n_seen, inv_count):
    """Fold the values ``x`` into the state slices (all of equal length); ``skip[i] != 0`` skips."""
    for k in range(x.size):
        i = np.uint64(k)
        use = skip[i] == 0
        if has_skipped:
            mean[i], m2[i] = welford_skip_step(x[i], use, mean[i], m2[i], n_seen - skipped[i])
            skipped[i] += 0 if use else 1
        else:
            mean[i], m2[i] = welford_step(x[i], mean[i], m2[i], inv_count)
        if use_exceed:
            exceed[i] += (x[i] > threshold[i]) & use


@njit(cache=True, error_model="numpy")
def _fused_element(up, mid, dn, step, j, i, level, use_level, up_is_centre, dn_is_centre, mean,
                   m2, skipped, has_skipped, exceed, threshold, use_exceed, n_seen, inv_count):
    """Scalar fused update of row element ``j`` into state index ``i`` (border columns)."""
    x = residual_at(up, mid, dn, step, j)
    use = not (use_level and neighbour_clipped_at(up, mid, dn, step, j, level, up_is_centre, dn_is_centre))
    if has_skipped:
        mean[i], m2[i] = welford_skip_step(x, use, mean[i], m2[i], n_seen - skipped[i])
        skipped[i] += 0 if use else 1
    else:
        mean[i], m2[i] = welford_step(x, mean[i], m2[i], inv_count)
    if use_exceed:
        exceed[i] += (x > threshold[i]) & use


@njit(cache=True, error_model="numpy")
def _fused_interior(up, mid, dn, step, j0, j1, scratch, level, use_level, up_is_centre,
                    dn_is_centre, mean, m2, skipped, has_skipped, exceed, threshold, use_exceed,
                    n_seen, inv_count):
    """Fused update of row elements ``j0..j1-1`` (all interior) into state slices of that length."""
    n = j1 - j0
    m = n + 2 * step
    a = j0 - step
    lo = scratch[0, :m]
    md = scratch[1, :m]
    hi = scratch[2, :m]
    sort_triples(up[a:a + m], mid[a:a + m], dn[a:a + m], lo, md, hi)
    l0, l1, l2 = lo[0:n], lo[step:step + n], lo[2 * step:2 * step + n]
    m0, m1, m2_ = md[0:n], md[step:step + n], md[2 * step:2 * step + n]
    h0, h1, h2 = hi[0:n], hi[step:step + n], hi[2 * step:2 * step + n]
    centre = mid[j0:j1]
    # the neighbours above and below the centre (the left neighbour stands in at image borders)
    above = mid[j0 - step:j1 - step] if up_is_centre else up[j0:j1]
    below = mid[j0 - step:j1 - step] if dn_is_centre else dn[j0:j1]
    # four specialised loops: the flags are loop-invariant, and a loop that does not touch the
    # optional arrays vectorises best
    if has_skipped and use_exceed:
        for k in range(n):
            i = np.uint64(k)
            high = min(min(h0[i], h1[i]), h2[i])
            median = med3(max(max(l0[i], l1[i]), l2[i]), med3(m0[i], m1[i], m2_[i]), high)
            x = np.float32(centre[i]) - np.float32(median)
            use = not (use_level and max(max(h0[i], h2[i]), max(above[i], below[i])) >= level)
            mean[i], m2[i] = welford_skip_step(x, use, mean[i], m2[i], n_seen - skipped[i])
            skipped[i] += 0 if use else 1
            exceed[i] += (x > threshold[i]) & use
    elif has_skipped:
        for k in range(n):
            i = np.uint64(k)
            high = min(min(h0[i], h1[i]), h2[i])
            median = med3(max(max(l0[i], l1[i]), l2[i]), med3(m0[i], m1[i], m2_[i]), high)
            x = np.float32(centre[i]) - np.float32(median)
            use = not (use_level and max(max(h0[i], h2[i]), max(above[i], below[i])) >= level)
            mean[i], m2[i] = welford_skip_step(x, use, mean[i], m2[i], n_seen - skipped[i])
            skipped[i] += 0 if use else 1
    elif use_exceed:
        for k in range(n):
            i = np.uint64(k)
            high = min(min(h0[i], h1[i]), h2[i])
            median = med3(max(max(l0[i], l1[i]), l2[i]), med3(m0[i], m1[i], m2_[i]), high)
            x = np.float32(centre[i]) - np.float32(median)
            mean[i], m2[i] = welford_step(x, mean[i], m2[i], inv_count)
            exceed[i] += x > threshold[i]
    else:
        for k in range(n):
            i = np.uint64(k)
            high = min(min(h0[i], h1[i]), h2[i])
            median = med3(max(max(l0[i], l1[i]), l2[i]), med3(m0[i], m1[i], m2_[i]), high)
            x = np.float32(centre[i]) - np.float32(median)
            mean[i], m2[i] = welford_step(x, mean[i], m2[i], inv_count)


@njit(cache=True, error_model="numpy")
def fused_span(up, mid, dn, step, j0, j1, scratch, level, use_level, up_is_centre, dn_is_centre,
               mean, m2, skipped, has_skipped, exceed, threshold, use_exceed, n_seen, inv_count):
    """Residuals of row elements ``j0..j1-1`` folded into state slices indexed from 0.

    ``scratch`` is a ``(3, j1 - j0 + 2 * step)`` (or larger) array of the image dtype;
    ``skipped``/``exceed``/``threshold`` may be empty when their flag is False;
    ``up_is_centre``/``dn_is_centre`` say that the row above/below is the centre row (borders).
    """
    size = mid.size
    first = max(j0, step)
    last = min(j1, size - step)
    if first >= last:
        first = last = j1
    for j in range(j0, first):
        _fused_element(up, mid, dn, step, j, j - j0, level, use_level, up_is_centre, dn_is_centre,
                       mean, m2, skipped, has_skipped, exceed, threshold, use_exceed, n_seen,
                       inv_count)
    if last > first:
        s0, s1 = first - j0, last - j0
        _fused_interior(up, mid, dn, step, first, last, scratch, level, use_level,
                        up_is_centre, dn_is_centre, mean[s0:s1], m2[s0:s1],
                        skipped[s0:s1] if has_skipped else skipped,
                        has_skipped,
                        exceed[s0:s1] if use_exceed else exceed,
                        threshold[s0:s1] if use_exceed else threshold,
                        use_exceed, n_seen, inv_count)
    for j in range(last, j1):
        _fused_element(up, mid, dn, step, j, j - j0, level, use_level, up_is_centre, dn_is_centre,
                       mean, m2, skipped, has_skipped, exceed, threshold, use_exceed, n_seen,
                       inv_count)
