"""Onset of a defect in a time-ordered residual series (Fridrich–Goljan GLR change point).

Model for one candidate pixel over images ``j = 0..N-1`` (oldest first), residual ``W_j``,
noise ``sigma_j`` and exposure ``tau_j``:

* absent:  ``W_j ~ N(0, sigma_j²)``;
* present from image ``k`` on: ``W_j ~ N(mu_j, sigma_j²)`` for ``j >= k`` with
  ``mu_j = tau_j·D + c``, ``D, c >= 0`` (dark-current rate and offset); without exposure
  times ``mu_j = c``.

For each ``k``, ``(D, c)`` is the weighted least-squares fit of ``W`` on ``(tau, 1)`` over
``j >= k`` with weights ``1 / sigma_j²`` under ``D, c >= 0`` (if the unconstrained fit
violates a constraint, the best of the one-parameter fits ``D = 0`` and ``c = 0``, each
clipped at 0, is taken — exact for this concave quadratic), and

    llr(k) = sum_{j >= k} [W_j² - (W_j - mu_j)²] / (2 sigma_j²),

the log-likelihood ratio of "present from k" against "never present" (``>= 0``, since
``D = c = 0`` is feasible). The onset is ``k̂ = argmax llr(k)`` over
``k = 0..N - min_segment``, ties to the smallest ``k``.

Convention: ``k`` is the index of the first image in which the defect is present; ``k = 0``
means present from the first image; ``k = N`` means never present (returned when every
``llr(k)`` is 0, with ``D = c = llr = 0``).

Suffix sums make the scan O(N) per candidate. When the exposures after ``k`` are (nearly)
all equal, ``D`` and ``c`` cannot be told apart; the offset-only fit (``D = 0``) is returned.
"""

import math
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
from numba import njit, prange

_SINGULAR = 1e-12  # relative determinant below which (tau, 1) is treated as collinear


class Onset(NamedTuple):
    """Change point of one series: onset index, parameters and log-likelihood ratio."""

    k: int
    D: float
    c: float
    llr: float


class Onsets(NamedTuple):
    """Change points of M series: arrays of shape (M,)."""

    k: np.ndarray
    D: np.ndarray
    c: np.ndarray
    llr: np.ndarray


@njit(cache=True)
def _quadratic(D, c, s11, s1w, s1t, stt, stw):
    """llr of mu = tau·D + c from the weighted sums over the 'present' segment."""
    return D * stw + c * s1w - 0.5 * (D * D * stt + 2.0 * D * c * s1t + c * c * s11)


@njit(cache=True)
def _fit(s11, s1w, s1t, stt, stw, use_tau):
    """Constrained (D, c >= 0) weighted least squares; returns D, c, llr."""
    c_only = max(0.0, s1w / s11)
    llr_c = _quadratic(0.0, c_only, s11, s1w, s1t, stt, stw)
    if not use_tau:
        return 0.0, c_only, llr_c
    det = stt * s11 - s1t * s1t
    if det > _SINGULAR * stt * s11:
        D = (stw * s11 - s1w * s1t) / det
        c = (stt * s1w - s1t * stw) / det
        if D >= 0.0 and c >= 0.0:
            return D, c, _quadratic(D, c, s11, s1w, s1t, stt, stw)
    if stt > 0.0:
        d_only = max(0.0, stw / stt)
        llr_d = _quadratic(d_only, 0.0, s11, s1w, s1t, stt, stw)
        if llr_d > llr_c:
            return d_only, 0.0, llr_d
    return 0.0, c_only, llr_c


@njit(parallel=True, cache=True, nogil=True)
def _changepoints(w, inv_var, tau, use_tau, min_segment, k_out, d_out, c_out, llr_out):
    n_series, n_images = w.shape
    for m in prange(n_series):
        s11 = 0.0
        s1w = 0.0
        s1t = 0.0
        stt = 0.0
        stw = 0.0
        best_k = n_images
        best_d = 0.0
        best_c = 0.0
        best_llr = 0.0
        for k in range(n_images - 1, -1, -1):
            weight = inv_var[m, k]
            x = w[m, k]
            t = tau[k]
            s11 += weight
            s1w += weight * x
            s1t += weight * t
            stt += weight * t * t
            stw += weight * t * x
            if n_images - k < min_segment:
                continue
            D, c, llr = _fit(s11, s1w, s1t, stt, stw, use_tau)
            if llr > 0.0 and llr >= best_llr:  # scanning backwards: >= keeps the smallest k
                best_k = k
                best_d = D
                best_c = c
                best_llr = llr
        k_out[m] = best_k
        d_out[m] = best_d
        c_out[m] = best_c
        llr_out[m] = best_llr


def _as_finite(array, name, dtype=np.float64):
    array = np.asarray(array)
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.floating)
                                       or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be numeric, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=dtype)
    if not np.isfinite(array).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"{name} contains NaN or inf (first at index {bad}); drop or fix that image")
    return array


def onset_changepoints(W, sigma, tau=None, min_segment=1):
    """GLR onset change points of many residual series at once.

    Parameters
    ----------
    W : array_like
        (M, N) residuals of M candidates in N time-ordered images (float32 or float64).
    sigma : array_like
        Noise level, (M, N) per candidate and image, or (N,) shared by all candidates;
        must be > 0.
    tau : array_like, optional
        (N,) exposure times (>= 0). When given, ``mu_j = tau_j·D + c``; when None,
        ``mu_j = c`` and ``D`` is 0.
    min_segment : int
        Minimum number of images in the 'present' segment (``k <= N - min_segment``).

    Returns
    -------
    Onsets
        ``k`` (int64), ``D``, ``c``, ``llr`` (float64), each of shape (M,). See the module
        docstring for the convention on ``k``.

    Raises
    ------
    TypeError
        For non-numeric input.
    ValueError
        For mismatched shapes, empty input, NaN/inf, ``sigma <= 0``, ``tau < 0`` or a
        ``min_segment`` outside ``1..N``.
    """
    W = _as_finite(W, "W")
    if W.ndim != 2 or W.size == 0:
        raise ValueError(f"W must be a non-empty (M, N) array, got shape {W.shape}")
    n_series, n_images = W.shape
    sigma = _as_finite(sigma, "sigma")
    if sigma.shape not in ((n_images,), (n_series, n_images)):
        raise ValueError(f"sigma has shape {sigma.shape}; give ({n_images},) or {W.shape}")
    if (sigma <= 0).any():
        raise ValueError("sigma must be > 0; floor the noise level (e.g. np.maximum(sigma, 0.5))")
    inv_var = np.empty(W.shape)
    inv_var[...] = 1.0 / sigma**2
    use_tau = tau is not None
    if use_tau:
        tau = _as_finite(tau, "tau")
        if tau.shape != (n_images,):
            raise ValueError(f"tau has shape {tau.shape}; give one exposure time per image, ({n_images},)")
        if (tau < 0).any():
            raise ValueError("tau (exposure times) must be >= 0")
    else:
        tau = np.zeros(n_images)
    if isinstance(min_segment, bool) or not isinstance(min_segment, (int, np.integer)) \
            or not 1 <= min_segment <= n_images:
        raise ValueError(f"min_segment must be an integer in 1..{n_images}, got {min_segment!r}")
    k = np.empty(n_series, np.int64)
    D = np.empty(n_series)
    c = np.empty(n_series)
    llr = np.empty(n_series)
    _changepoints(W, inv_var, tau, use_tau, int(min_segment), k, D, c, llr)
    return Onsets(k, D, c, llr)


def onset_changepoint(w, sigma, tau=None, min_segment=1):
    """GLR onset change point of one residual series.

    Parameters
    ----------
    w : array_like
        (N,) residuals in time order.
    sigma : float or array_like
        Noise level, scalar or (N,), > 0.
    tau : array_like, optional
        (N,) exposure times; None for an offset-only model.
    min_segment : int
        Minimum number of images in the 'present' segment.

    Returns
    -------
    Onset
        ``(k, D, c, llr)``; see :func:`onset_changepoints`.
    """
    w = np.asarray(w)
    if w.ndim != 1:
        raise ValueError(f"w must be 1-D, got shape {w.shape}")
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), w.shape)
    result = onset_changepoints(w[np.newaxis], sigma, tau, min_segment)
    return Onset(int(result.k[0]), float(result.D[0]), float(result.c[0]), float(result.llr[0]))


def llr_threshold(false_alarm, n_images, with_tau=False):
    """Conservative llr threshold for a false-alarm probability on a defect-free series.

    Under "never present", for a fixed ``k`` ``2·llr(k)`` is 0 with probability 1/2 and
    chi-squared with one degree of freedom otherwise (offset-only model), and is bounded in
    distribution by chi-squared with two degrees of freedom with exposure times. A Bonferroni
    bound over the ``n_images`` onsets gives

    * offset-only: ``t = z² / 2`` with ``z = Phi^-1(1 - false_alarm / n_images)``;
    * with ``tau``: ``t = ln(n_images / false_alarm)``.

    Then ``P(max_k llr(k) > t) <= false_alarm``.

    Parameters
    ----------
    false_alarm : float
        Probability in (0, 1).
    n_images : int
        Series length N.
    with_tau : bool
        Whether the exposure-time model (D and c) is fitted.

    Returns
    -------
    float
    """
    if not 0.0 < false_alarm < 1.0:
        raise ValueError(f"false_alarm must be in (0, 1), got {false_alarm}")
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    per_onset = false_alarm / n_images
    if with_tau:
        return math.log(1.0 / per_onset)
    z = NormalDist().inv_cdf(1.0 - per_onset)
    return 0.5 * z * z
