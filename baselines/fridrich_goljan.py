"""Fridrich–Goljan maximum-likelihood age estimation from residuals at known defects.

Model (after Fridrich & Goljan, SPIE 7880, 2011, made faithful to a real camera). The
median-filter residual ``w`` of a healthy pixel is noise of scale ``a·σ`` (``σ`` the local noise
level the caller measures, ``a`` a per-defect correction learned before the onset). After the
onset of a defect its residual has the mean

    μ = g^κ · (τ^κ · D + c)

with exposure time ``τ``, analogue gain ``g = ISO / base ISO`` (dark current and offset are added
before the gain), dark-current rate ``D`` and offset ``c``. ``κ = 1`` is the linear RAW model;
after demosaicing, the tone curve and JPEG the jump in an 8-bit residual is concave in the raw
amplitude, and ``κ < 1`` (chosen per device from a grid by profile likelihood on the trusted
images) is a monotone concave stand-in for that curve. Around its mean a present defect spreads
with its *own* spread ``s`` (estimated per defect from the trusted images after its onset, on top
of the local noise), not with the healthy noise level.

Both states are robust, so that no single defect casts an unbounded vote:

* present: ``(1 − ε)·N(μ, s² + a²σ²) + ε·absent`` — with probability ``ε`` (per defect, fitted by
  EM on the trusted images after the onset, shrunk towards 0.1) the defect is masked by
  saturation, clipping, texture or compression and looks healthy. A defect that is missing
  therefore costs at most ``−log ε``;
* absent: ``(1 − η)·N(0, a²σ²) + η·N(0, a²σ² + μ̄²)`` — a healthy pixel that texture makes bright
  (probability ``η``) is not taken for proof of a defect.

A defect only adds charge, so a residual below zero never counts more for "present" than a
residual of zero does (the present state's Gaussian spread would otherwise read a clearly
negative residual as a defect with a low amplitude).

Onsets are located in time at the resolution of the trusted images (the Fridrich–Goljan GLR
change point, :func:`kernels.onset_changepoints`, on the time-ordered trusted images with
residuals clipped at ``clip_z`` noise levels); the onset time is the midpoint between the last
image without and the first image with the defect. Sorted onsets cut time into intervals; an
image taken in interval ``m`` shows exactly the defects with onset before it, and

    L(m) = Σ_{onset_i before interval m} λ_i,   λ_i = log p_present(w_i) − log p_absent(w_i).

For dating in calendar time (:meth:`time_log_likelihood`) the onset is not taken as known:
its position among the trusted images has a posterior, ``P(onset in gap q) ∝ (u_q − u_{q−1})
· exp(Σ_{trusted j with t_j ≥ u_q} λ_ij)`` over the gaps between consecutive distinct trusted
times ``u`` (a uniform prior in time over the trusted period, and the fitted present/absent
model as likelihood, so one masked image after the onset costs at most ``−log ε``), uniform
inside each gap (:attr:`onset_cdf_`). A weak defect whose change point the trusted images
cannot pin down spreads its onset over several gaps; a strong one keeps it in one. (Taking the
change point as certain made held-out trusted dates fall outside the 95 % ranges of the
posterior about twice as often as they should on real mosaics.)

An age class is a period of time, so its likelihood marginalises the capture time over the
class: ``P(w | k) = Σ_m q_{k,m} exp(L(m))`` with ``q_{k,m}`` the share of class ``k``'s trusted
images in interval ``m`` (smoothed over the class's span). A defect whose onset falls inside a
class therefore counts for that class's images after it and not before.

Exposure time and ISO: an image whose exposure or ISO is unknown (NaN) has its likelihood
marginalised over the trusted images' (τ, g) — a documented empirical prior, not a guess of 1 s.
A model fitted with exposure (or ISO) refuses to predict when the argument is omitted.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

import kernels

__all__ = ["FridrichGoljanClassifier", "fit_presence"]

_LOG_2PI = np.log(2 * np.pi)
#: tone exponents κ tried by the profile likelihood (1 = linear RAW)
TONE_EXPONENTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _check_side(name, value, n, m, *, per_defect: bool, unit: str = "seconds"):
    """Validate an optional per-sample (n,) or per-sample-and-defect (n, m) array."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if per_defect:
        if arr.ndim == 1 and arr.shape == (m,):
            arr = np.broadcast_to(arr, (n, m))
        if arr.shape != (n, m):
            raise ValueError(f"{name} must have shape ({n}, {m}) like X (or ({m},)), got {arr.shape}")
        if np.any(arr[np.isfinite(arr)] <= 0):
            raise ValueError(f"{name} must be positive (a noise level); mark unknown values with NaN")
    else:
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), one value per image, got {arr.shape}")
        if np.any(arr[np.isfinite(arr)] <= 0):
            raise ValueError(f"{name} must be positive {unit}; mark unknown values with NaN")
    return arr


def fit_presence(w, s2, tau, present, *, gain=None):
    """Weighted least squares of ``w`` on ``(g·τ, g)`` over ``present`` images, with D, c ≥ 0.

    Parameters
    ----------
    w : ndarray, shape (n_images, n_defects)
        Residuals (NaN entries are ignored).
    s2 : ndarray, shape (n_images, n_defects)
        Noise variances (weights are ``1 / s2``).
    tau : ndarray, shape (n_images,)
        Exposure times (ones for a constant mean).
    present : ndarray of bool, shape (n_images, n_defects)
        Images in which each defect is taken to be present.
    gain : ndarray, shape (n_images,), optional
        Analogue gain ``g`` (ISO over base ISO); the mean is ``g·(τD + c)``. Default 1.

    Returns
    -------
    D, c, llr : ndarray, shape (n_defects,)
        The constrained estimates and the log-likelihood ratio of "present with mean g(τD + c)
        on those images" against "never present". The constrained optimum is the best feasible
        of the unconstrained fit and the two one-parameter fits (the objective is convex).
    """
    weight = np.where(present & np.isfinite(w), 1.0 / s2, 0.0)
    w0 = np.where(weight > 0, w, 0.0)
    g = np.ones(len(tau)) if gain is None else np.asarray(gain, dtype=np.float64)
    t = (g * tau)[:, None]
    one = g[:, None]
    s_1, s_t, s_tt = (weight * one * one).sum(0), (weight * t * one).sum(0), (weight * t * t).sum(0)
    s_w, s_tw = (weight * one * w0).sum(0), (weight * t * w0).sum(0)
    candidates = []
    det = s_tt * s_1 - s_t * s_t
    with np.errstate(divide="ignore", invalid="ignore"):
        d_full = np.where(det > 1e-12 * np.maximum(s_tt * s_1, 1e-300), (s_1 * s_tw - s_t * s_w) / det, -1.0)
        c_full = np.where(det > 1e-12 * np.maximum(s_tt * s_1, 1e-300), (s_tt * s_w - s_t * s_tw) / det, -1.0)
        candidates.append((d_full, c_full))
        candidates.append((np.zeros_like(s_1), np.where(s_1 > 0, s_w / s_1, 0.0)))      # offset only
        candidates.append((np.where(s_tt > 0, s_tw / s_tt, 0.0), np.zeros_like(s_1)))   # dark current only
    best_d, best_c = np.zeros_like(s_1), np.zeros_like(s_1)
    best_llr = np.zeros_like(s_1)
    for d, c in candidates:
        feasible = (d >= 0) & (c >= 0)
        # Σ weight·[w² − (w − μ)²]/2 = Σ weight·(w μ − μ²/2), expanded into the sums above
        llr = (d * s_tw + c * s_w) - 0.5 * (d * d * s_tt + 2 * d * c * s_t + c * c * s_1)
        better = feasible & (llr > best_llr)
        best_d, best_c, best_llr = (np.where(better, d, best_d), np.where(better, c, best_c),
                                    np.where(better, llr, best_llr))
    return best_d, best_c, best_llr


def _norm_logpdf(w, var):
    return -0.5 * (_LOG_2PI + np.log(var) + w * w / var)


def _robust_scale(values, axis=0):
    """1.4826 × median absolute deviation from 0-centred median, NaN-aware."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(values, axis=axis, keepdims=True)
        return 1.4826 * np.nanmedian(np.abs(values - med), axis=axis)


class FridrichGoljanClassifier(ClassifierMixin, BaseEstimator):
    """Maximum-likelihood image age from the residuals at in-field defect locations.

    Parameters
    ----------
    false_alarm : float, default 1e-3
        Probability that a defect column with no change at all (pure noise) is nevertheless
        used: its onset's GLR against "never present" on the trusted images must exceed
        :func:`kernels.llr_threshold` (a Bonferroni bound over the possible onsets). Other
        columns carry no information (weight 0).
    base_iso : float, optional
        ISO of unit analogue gain. Default: the lowest ISO among the trusted images.
    masked_prior : float, default 0.1
        Prior mean of ``ε``, the probability that a present defect is masked; ``ε`` is fitted
        per defect by EM and shrunk towards this value with the weight of 10 images.
    outlier_weight : float, default 0.01
        ``η``, the weight of the broad component of the absent state.
    min_segment : int, default 3
        Trusted images required on each side of an onset.
    clip_z : float, default 4.0
        Largest standardised residual one image contributes to the onset test.
    max_marginal : int, default 32
        Number of (exposure, gain) pairs of the trusted images over which the likelihood of an
        image with unknown exposure or ISO is averaged.

    Attributes
    ----------
    classes_ : ndarray
        Class labels in time order (sorted; the first is the oldest period).
    onset_time_ : ndarray, shape (n_defects,)
        Onset time of each defect on the ``time`` axis of :meth:`fit` (``inf`` when the defect
        carries no information).
    onset_bounds_ : ndarray, shape (n_defects, 2)
        Trusted capture times between which the onset lies with posterior probability at least
        0.99 (:attr:`onset_cdf_`), widened where needed to hold the change point's gap (so
        :attr:`onset_time_` lies inside); for a clear change point, the last trusted image
        without and the first with the defect (``inf`` for a defect that carries no information).
    onset_knots_ : ndarray, shape (n_knots,)
        The distinct trusted capture times, sorted.
    onset_cdf_ : ndarray, shape (n_defects, n_knots)
        Posterior probability that each defect's onset came at or before each knot (linear in
        between: uniform inside a gap); all 0 for a defect that carries no information.
    onset_ : ndarray of int, shape (n_defects,)
        Index into ``classes_`` of the first class with a trusted image after the onset
        (``len(classes_)`` for an uninformative defect); for reports.
    dark_current_, offset_ : ndarray, shape (n_defects,)
        ``D`` and ``c`` on the scale of ``g^κ(τ^κ D + c)``.
    tone_exponent_ : float
        ``κ``.
    spread_ : ndarray
        Each defect's own spread ``s`` around its mean.
    masked_ : ndarray
        ``ε`` per defect.
    noise_scale_ : ndarray
        ``a`` per defect: healthy residual scale relative to ``sigma``.
    sigma_ : ndarray
        Healthy noise level per defect used where ``sigma`` is not given (median of the trusted
        images' before the onset, or a robust scale of the residuals).
    onset_llr_ : ndarray
        GLR of the onset against "never present"; ``llr_threshold_`` the bar it had to pass.
    base_iso_ : float or None
    uses_exposure_, uses_iso_ : bool
        Whether the model was fitted with exposure times / ISO (and so needs them to predict).
    condition_samples_ : ndarray, shape (n_samples, 2)
        Trusted (τ, g) pairs used to marginalise unknown conditions.
    interval_log_weight_ : ndarray, shape (n_classes, n_intervals)
        ``log q_{k,m}``.
    defect_interval_ : ndarray of int
        First interval in which each defect is present (``n_intervals`` if never).
    n_features_in_ : int

    Notes
    -----
    ``X`` holds the residual ``W`` at each defect (columns) for each image (rows); a NaN residual
    (a clipped or saturated neighbourhood) contributes nothing. Keyword arguments of
    :meth:`fit` and :meth:`predict_proba`: ``sigma`` (local noise level of each residual, X's
    shape), ``exposure`` (seconds) and ``iso`` per image (NaN where unknown), and for
    :meth:`fit` ``time`` (capture time of each trusted image as a number, e.g. days; without
    it the class index stands for time and onsets can only be located between classes).

    Examples
    --------
    Residuals at six defects in 90 trusted images of three age classes (oldest first). Three
    defects appear during class 1 and three during class 2; four are hot (their residual rises
    with the exposure time), two stuck (a constant offset):

    >>> import numpy as np
    >>> from baselines import FridrichGoljanClassifier
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 30)
    >>> exposure = rng.uniform(0.01, 0.1, 90)           # seconds, one per image
    >>> sigma = rng.uniform(1.0, 2.0, (90, 6))          # local noise level of each residual
    >>> onset = np.array([1, 1, 1, 2, 2, 2])            # the class in which each defect appears
    >>> dark, offset = np.array([60.0, 0, 80] * 2), np.array([0, 6.0, 0] * 2)
    >>> def residuals():
    ...     present = y[:, None] >= onset
    ...     return sigma * rng.normal(size=sigma.shape) + present * (exposure[:, None] * dark + offset)
    >>> X = residuals()
    >>> fg = FridrichGoljanClassifier().fit(X, y, sigma=sigma, exposure=exposure)
    >>> fg.onset_                                       # the class of each onset, found in X
    array([1, 1, 1, 2, 2, 2])
    >>> X_new = residuals()                             # new images taken in the same conditions
    >>> proba = fg.predict_proba(X_new, sigma=sigma, exposure=exposure)
    >>> proba.shape, bool(np.allclose(proba.sum(axis=1), 1.0))
    ((90, 3), True)
    >>> proba[[0, 45, 89]].round(2)                     # an image of each class
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    >>> float((fg.predict(X_new, sigma=sigma, exposure=exposure) == y).mean())
    1.0

    Inside a :class:`~sklearn.pipeline.Pipeline` or another meta-estimator, scikit-learn's
    metadata routing passes the per-image ``sigma`` and ``exposure`` (and ``iso``, ``time``) to
    the methods that request them. Routing is switched on here for the block only
    (``sklearn.set_config(enable_metadata_routing=True)`` switches it on for the session):

    >>> import sklearn
    >>> from sklearn.pipeline import make_pipeline
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     fg = (FridrichGoljanClassifier()
    ...           .set_fit_request(sigma=True, exposure=True)
    ...           .set_predict_proba_request(sigma=True, exposure=True)
    ...           .set_predict_request(sigma=True, exposure=True))
    ...     pipe = make_pipeline(fg).fit(X, y, sigma=sigma, exposure=exposure)
    ...     routed = pipe.predict_proba(X_new, sigma=sigma, exposure=exposure)
    ...     predicted = pipe.predict(X_new, sigma=sigma, exposure=exposure)
    >>> bool(np.allclose(routed, proba)), float((predicted == y).mean())
    (True, 1.0)
    >>> sklearn.get_config()["enable_metadata_routing"]
    False

    scikit-learn's scorers pass metadata to the metric, not to ``predict``: a model fitted with
    ``exposure`` refuses to predict without it, so score it on its own predictions (as above),
    not with ``cross_val_score``.
    """

    def __init__(self, false_alarm: float = 1e-3, base_iso: float | None = None, masked_prior: float = 0.1,
                 outlier_weight: float = 0.01, min_segment: int = 3, clip_z: float = 4.0, max_marginal: int = 32):
        self.false_alarm = false_alarm
        self.base_iso = base_iso
        self.masked_prior = masked_prior
        self.outlier_weight = outlier_weight
        self.min_segment = min_segment
        self.clip_z = clip_z
        self.max_marginal = max_marginal

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        # Expected failure of check_classifiers_train's accuracy bar, by design: the model only
        # knows "residual shifted upwards from some time on", so generic blobs are not learnable.
        tags.classifier_tags.poor_score = True
        return tags

    # ------------------------------------------------------------------ fitting
    def _check_params(self):
        if not isinstance(self.false_alarm, (int, float)) or not 0 < self.false_alarm < 1:
            raise ValueError(f"false_alarm must be a probability in (0, 1), got {self.false_alarm!r}")
        if self.base_iso is not None and not (np.isfinite(self.base_iso) and self.base_iso > 0):
            raise ValueError(f"base_iso must be a positive ISO or None, got {self.base_iso!r}")
        if not 0 < self.masked_prior < 1:
            raise ValueError(f"masked_prior must be in (0, 1), got {self.masked_prior!r}")
        if not 0 < self.outlier_weight < 1:
            raise ValueError(f"outlier_weight must be in (0, 1), got {self.outlier_weight!r}")
        if not isinstance(self.min_segment, (int, np.integer)) or self.min_segment < 1:
            raise ValueError(f"min_segment must be a positive integer, got {self.min_segment!r}")
        if not self.clip_z > 0:
            raise ValueError(f"clip_z must be positive, got {self.clip_z!r}")
        if not isinstance(self.max_marginal, (int, np.integer)) or self.max_marginal < 1:
            raise ValueError(f"max_marginal must be a positive integer, got {self.max_marginal!r}")

    def fit(self, X, y, *, sigma=None, exposure=None, iso=None, time=None):
        """Locate each defect's onset in time and learn its present-state model from trusted images.

        Parameters
        ----------
        X : array-like of shape (n_images, n_defects)
            Residuals at the defect locations.
        y : array-like of shape (n_images,)
            Age class of each trusted image; classes are ordered by label.
        sigma : array-like of shape (n_images, n_defects) or (n_defects,), optional
            Local noise level of each residual.
        exposure : array-like of shape (n_images,), optional
            Exposure time in seconds (NaN where unknown).
        iso : array-like of shape (n_images,), optional
            ISO speed (NaN where unknown); gain = ISO / ``base_iso``.
        time : array-like of shape (n_images,), optional
            Capture time as a number (any monotone scale: days, slots). Default: the class index.

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        self._check_params()
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        n, m = X.shape
        n_classes = len(self.classes_)
        sigma = _check_side("sigma", sigma, n, m, per_defect=True)
        exposure = _check_side("exposure", exposure, n, m, per_defect=False)
        iso = _check_side("iso", iso, n, m, per_defect=False, unit="ISO values")
        if time is None:
            t = y_idx.astype(np.float64)
        else:
            t = np.asarray(time, dtype=np.float64)
            if t.shape != (n,) or not np.isfinite(t).all():
                raise ValueError(f"time must be ({n},) finite numbers, one per image, got shape {t.shape}")
        self.uses_exposure_ = exposure is not None and bool(np.isfinite(exposure).any())
        self.uses_iso_ = iso is not None and bool(np.isfinite(iso).any())
        tau = exposure if self.uses_exposure_ else np.ones(n)
        if self.uses_iso_:
            self.base_iso_ = float(self.base_iso) if self.base_iso is not None else float(np.nanmin(iso))
            gain = iso / self.base_iso_
        else:
            self.base_iso_ = None
            gain = np.ones(n)
        known = np.isfinite(tau) & np.isfinite(gain)
        pairs = np.column_stack([tau[known], gain[known]]) if known.any() else np.ones((1, 2))
        order = np.argsort(pairs[:, 0] * pairs[:, 1], kind="stable")
        pick = np.unique(np.linspace(0, len(order) - 1, min(self.max_marginal, len(order))).round().astype(int))
        self.condition_samples_ = pairs[order[pick]]

        # healthy noise level per defect: median local σ, else a robust scale of the residuals
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fallback = _robust_scale(np.where(y_idx[:, None] == 0, X, np.nan))
            fallback = np.where(np.isfinite(fallback) & (fallback > 0), fallback, np.nanstd(X, axis=0))
            fallback = np.where(np.isfinite(fallback) & (fallback > 0), fallback, 1.0)
            sig_default = fallback if sigma is None else np.nanmedian(np.where(np.isfinite(sigma), sigma, np.nan), 0)
        self.sigma_ = np.where(np.isfinite(sig_default) & (sig_default > 0), sig_default, fallback)
        s = np.broadcast_to(self.sigma_, (n, m)) if sigma is None else np.where(np.isfinite(sigma), sigma, self.sigma_)

        # onsets in time: the GLR change point over the time-ordered trusted images
        time_order = np.argsort(t, kind="stable")
        ts = t[time_order]
        x = tau * gain
        x_fill = np.where(known, x, np.nanmedian(x[known]) if known.any() else 1.0)
        missing = ~np.isfinite(X)
        w0 = np.where(missing, 0.0, X)
        s_on = np.where(missing, 1e6, s)
        robust = np.clip(w0, -self.clip_z * s_on, self.clip_z * s_on)
        varying = self.uses_exposure_ or self.uses_iso_
        min_seg = int(min(self.min_segment, n))
        self.llr_threshold_ = float(kernels.llr_threshold(self.false_alarm, max(n, 1), with_tau=varying))
        if m:
            k, _, _, llr = kernels.onset_changepoints(
                np.ascontiguousarray(robust[time_order].T), np.ascontiguousarray(s_on[time_order].T),
                x_fill[time_order] if varying else None, min_segment=min_seg)
        else:
            k, llr = np.zeros(0, dtype=np.int64), np.zeros(0)
        # an onset between two images taken at the same time (e.g. time = class index) is moved to
        # the nearer edge of their group: time cannot separate them
        k = np.asarray(k, dtype=np.int64)
        group_lo = np.searchsorted(ts, ts[np.clip(k, 0, n - 1)], side="left") if n else k
        group_hi = np.searchsorted(ts, ts[np.clip(k, 0, n - 1)], side="right") if n else k
        tied = (k > 0) & (k < n) & (ts[np.clip(k - 1, 0, n - 1)] == ts[np.clip(k, 0, n - 1)]) if n else k > 0
        k = np.where(tied, np.where(k - group_lo <= group_hi - k, group_lo, group_hi), k)
        informative = (llr > self.llr_threshold_) & (k >= min(self.min_segment, n - 1)) & (k >= 1) & (k < n)
        k_safe = np.clip(k, 1, max(n - 1, 1))
        onset_time = np.where(informative, 0.5 * (ts[np.minimum(k_safe - 1, n - 1)] + ts[np.minimum(k_safe, n - 1)]),
                              np.inf)
        self.onset_time_ = onset_time
        self.onset_bounds_ = np.column_stack([
            np.where(informative, ts[np.minimum(k_safe - 1, n - 1)], np.inf),
            np.where(informative, ts[np.minimum(k_safe, n - 1)], np.inf)]).reshape(-1, 2)
        self.onset_llr_ = np.asarray(llr, dtype=np.float64)
        after = t[:, None] >= onset_time[None, :]
        # class of the first trusted image after the onset (for reports)
        first_class = np.full(m, n_classes, dtype=np.intp)
        for j in np.flatnonzero(informative):
            later = y_idx[t >= onset_time[j]]
            first_class[j] = later.min() if later.size else n_classes
        self.onset_ = first_class

        # present state: mean g^κ(τ^κ D + c), own spread, masking probability
        present = after & known[:, None] & ~missing & informative[None, :]
        s2 = s * s
        tau_k, gain_k = np.where(known, tau, 1.0), np.where(known, gain, 1.0)
        best = None
        exponents = TONE_EXPONENTS if varying else (1.0,)
        for kappa in exponents:
            d, c, _ = fit_presence(X, s2, tau_k ** kappa, present, gain=gain_k ** kappa)
            mu = (gain_k ** kappa)[:, None] * ((tau_k ** kappa)[:, None] * d + c)
            r2 = np.where(present, (X - mu) ** 2 / s2, np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                n_j = present.sum(0)
                score = -0.5 * np.nansum(np.where(n_j > 0, n_j * np.log(np.nanmean(r2, 0) + 1e-12), 0.0))
            if best is None or score > best[0] + 1e-9:
                best = (score, kappa, d, c, mu)
        _, self.tone_exponent_, d, c, mu = best
        self.dark_current_ = np.where(informative, d, 0.0)
        self.offset_ = np.where(informative, c, 0.0)

        # healthy scale correction a (before the onset) and the defect's own spread (after it)
        before = ~after & ~missing
        z_before = np.where(before, X / s, np.nan)
        n_before = before.sum(0)
        a_raw = _robust_scale(z_before)
        a_raw = np.where(np.isfinite(a_raw) & (a_raw > 0), a_raw, 1.0)
        self.noise_scale_ = np.clip(np.sqrt((n_before * a_raw ** 2 + 5.0) / (n_before + 5.0)), 0.5, 5.0)
        a2s2 = self.noise_scale_ ** 2 * s2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            total = _robust_scale(np.where(present, X - mu, np.nan)) ** 2
            noise = np.nanmedian(np.where(present, a2s2, np.nan), axis=0)
            mean_mu = np.nanmean(np.where(present, mu, np.nan), axis=0)
        total = np.where(np.isfinite(total), total, 0.0)
        noise = np.where(np.isfinite(noise), noise, np.median(self.sigma_) ** 2)
        mean_mu = np.where(np.isfinite(mean_mu), mean_mu, 0.0)
        self.spread_ = np.sqrt(np.maximum(total - noise, (0.1 * mean_mu) ** 2))
        self._fit_masking(X, mu, a2s2, present)
        self.typical_mean_ = mean_mu

        # intervals between sorted onsets and each class's share of them
        self._set_intervals(t, y_idx, informative)
        self._fit_onset_posterior(X, s, np.where(known, tau, np.nanmedian(tau[known]) if known.any() else 1.0),
                                  np.where(known, gain, np.nanmedian(gain[known]) if known.any() else 1.0), t)
        return self

    def _fit_onset_posterior(self, X, s, tau, gain, t):
        """Posterior of each informative defect's onset over the gaps between trusted times."""
        knots = np.unique(t)
        m = X.shape[1]
        cdf = np.zeros((m, knots.size))
        lam = self._lambda(X, s, tau, gain)                       # (n, m), 0 where not informative
        if knots.size >= 2 and m:
            at_knot = np.searchsorted(knots, t)
            per_knot = np.zeros((knots.size, m))
            np.add.at(per_knot, at_knot, lam)
            # log-likelihood of "present from knot q on" = sum of λ over images at or after knot q
            from_q = np.cumsum(per_knot[::-1], axis=0)[::-1][1:]   # q = 1 .. Q-1
            with np.errstate(divide="ignore"):
                log_w = from_q + np.log(np.diff(knots))[:, None]
            log_w -= logsumexp(log_w, axis=0, keepdims=True)
            cdf[:, 1:] = np.cumsum(np.exp(log_w), axis=0).T
            cdf = np.clip(cdf / np.maximum(cdf[:, -1:], 1e-300), 0.0, 1.0)
        informative = np.isfinite(self.onset_time_)
        cdf[~informative] = 0.0
        self.onset_knots_ = knots
        self.onset_cdf_ = cdf
        lo = np.array([knots[max(int(np.searchsorted(row, 0.005, side="right")) - 1, 0)] for row in cdf])
        hi = np.array([knots[min(int(np.searchsorted(row, 0.995, side="left")), knots.size - 1)] for row in cdf])
        if knots.size >= 2:  # and always the change point's own gap: the onset the intervals use lies inside
            at = np.clip(np.searchsorted(knots, np.where(informative, self.onset_time_, knots[0])), 1, knots.size - 1)
            lo = np.minimum(lo, knots[at - 1])
            hi = np.maximum(hi, knots[at])
        self.onset_bounds_ = np.where(informative[:, None], np.column_stack([lo, hi]), np.inf).reshape(-1, 2)

    def _fit_masking(self, X, mu, a2s2, present):
        """EM for ε, the weight of 'looks healthy' among present images, with a Beta prior."""
        m = X.shape[1]
        eps = np.full(m, self.masked_prior)
        prior_n = 10.0
        var1 = self.spread_ ** 2 + a2s2
        lp1 = np.where(present, _norm_logpdf(np.nan_to_num(X - mu), var1), 0.0)
        lp0 = np.where(present, _norm_logpdf(np.nan_to_num(X), a2s2), 0.0)
        n_j = present.sum(0)
        for _ in range(30):
            num = np.log(eps) + lp0
            den = np.logaddexp(num, np.log1p(-eps) + lp1)
            resp = np.where(present, np.exp(num - den), 0.0)
            eps = (resp.sum(0) + prior_n * self.masked_prior) / (n_j + prior_n)
        self.masked_ = np.clip(eps, 1e-3, 0.9)

    def _set_intervals(self, t, y_idx, informative):
        n_classes = len(self.classes_)
        edges = np.unique(self.onset_time_[informative])
        self.interval_edges_ = edges
        n_int = edges.size + 1
        self.defect_interval_ = np.where(informative, np.searchsorted(edges, self.onset_time_, side="left") + 1,
                                         n_int).astype(np.intp)
        img_int = np.searchsorted(edges, t, side="right")
        logq = np.full((n_classes, n_int), -np.inf)
        for k in range(n_classes):
            ints = img_int[y_idx == k]
            if ints.size == 0:
                continue
            lo, hi = ints.min(), ints.max()
            counts = np.bincount(ints, minlength=n_int)[lo:hi + 1] + 0.5
            logq[k, lo:hi + 1] = np.log(counts / counts.sum())
        self.interval_log_weight_ = logq

    # ------------------------------------------------------------------ likelihoods
    def _conditions(self, n, exposure, iso):
        """Per-image exposure and gain, NaN where unknown; errors when an argument is missing."""
        if self.uses_exposure_:
            if exposure is None:
                raise ValueError("this model was fitted with exposure times: pass exposure= for every image "
                                 "(NaN where unknown, to average over the trusted images' exposures)")
            tau = _check_side("exposure", exposure, n, 0, per_defect=False)
        else:
            tau = np.ones(n)
        if self.uses_iso_:
            if iso is None:
                raise ValueError("this model was fitted with ISO: pass iso= for every image "
                                 "(NaN where unknown, to average over the trusted images' ISO)")
            gain = _check_side("iso", iso, n, 0, per_defect=False, unit="ISO values") / self.base_iso_
        else:
            gain = np.ones(n)
        return tau, gain

    def _sigma(self, X, sigma):
        n, m = X.shape
        sigma = _check_side("sigma", sigma, n, m, per_defect=True)
        return np.broadcast_to(self.sigma_, (n, m)) if sigma is None else np.where(np.isfinite(sigma), sigma,
                                                                                  self.sigma_)

    def expected_residual(self, exposure, gain):
        """Mean residual ``g^κ(τ^κ D + c)`` of each present defect, shape (n_images, n_defects)."""
        kappa = self.tone_exponent_
        tau, gain = np.asarray(exposure, dtype=np.float64), np.asarray(gain, dtype=np.float64)
        return (gain ** kappa)[:, None] * ((tau ** kappa)[:, None] * self.dark_current_ + self.offset_)

    def _lambda(self, X, s, tau, gain):
        """Per-defect log-likelihood ratio present vs absent at known conditions."""
        mu = self.expected_residual(tau, gain)
        a2s2 = self.noise_scale_ ** 2 * s * s
        w = np.nan_to_num(X)
        log_healthy = _norm_logpdf(w, a2s2)
        log_absent = np.logaddexp(np.log1p(-self.outlier_weight) + log_healthy,
                                  np.log(self.outlier_weight) + _norm_logpdf(w, a2s2 + self.typical_mean_ ** 2 + 1e-12))
        log_defect = _norm_logpdf(w - mu, self.spread_ ** 2 + a2s2)
        log_present = np.logaddexp(np.log1p(-self.masked_) + log_defect, np.log(self.masked_) + log_absent)
        lam = log_present - log_absent
        # A defect only adds charge, so a residual below 0 cannot favour "present" more than 0
        # does (the likelihood ratio of a non-negative shift rises with w). The Gaussian spread of
        # the present state would otherwise let a wide-spread defect read a clearly negative
        # residual as evidence of presence.
        zero = np.zeros_like(w)
        log_absent0 = np.logaddexp(np.log1p(-self.outlier_weight) + _norm_logpdf(zero, a2s2),
                                   np.log(self.outlier_weight) + _norm_logpdf(zero, a2s2 + self.typical_mean_ ** 2 + 1e-12))
        lam0 = np.logaddexp(np.log1p(-self.masked_) + _norm_logpdf(-mu, self.spread_ ** 2 + a2s2),
                            np.log(self.masked_) + log_absent0) - log_absent0
        lam = np.where(w < 0, np.minimum(lam, lam0), lam)
        lam = np.where(np.isfinite(X), lam, 0.0)
        return np.where(np.isfinite(self.onset_time_), lam, 0.0)

    def _interval_sums(self, lam):
        n_int = self.interval_log_weight_.shape[1]
        by_interval = np.zeros((lam.shape[0], n_int + 1))
        np.add.at(by_interval.T, self.defect_interval_, lam.T)
        return np.cumsum(by_interval[:, :n_int], axis=1)

    def defect_log_likelihood_ratios(self, X, *, sigma=None, exposure=None, iso=None):
        """Each defect's log-likelihood ratio "present" vs "absent", shape (n_images, n_defects).

        Images with unknown exposure or ISO are evaluated at the median trusted condition
        (for display only; :meth:`interval_log_likelihood` averages over the conditions).
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        tau, gain = self._conditions(X.shape[0], exposure, iso)
        med = np.median(self.condition_samples_, axis=0)
        tau, gain = np.where(np.isfinite(tau), tau, med[0]), np.where(np.isfinite(gain), gain, med[1])
        return self._lambda(X, self._sigma(X, sigma), tau, gain)

    def interval_log_likelihood(self, X, *, sigma=None, exposure=None, iso=None):
        """Log-likelihood ``L(m)`` of each interval between onsets, per image.

        Returns
        -------
        ndarray of shape (n_images, n_intervals)
            ``L(m) − L(0)``; for images with unknown exposure or ISO, the log of the likelihood
            averaged over the trusted images' conditions.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        tau, gain = self._conditions(X.shape[0], exposure, iso)
        return self._marginalised(X, self._sigma(X, sigma), tau, gain, self._interval_sums,
                                  self.interval_log_weight_.shape[1])

    def _marginalised(self, X, s, tau, gain, evaluate, width):
        """``evaluate(λ)`` of each image, shape (n_images, width): at its own conditions where they
        are known, else the log of its mean over the trusted images' conditions."""
        known = np.isfinite(tau) & np.isfinite(gain)
        out = np.zeros((X.shape[0], width))
        if known.any():
            out[known] = evaluate(self._lambda(X[known], s[known], tau[known], gain[known]))
        unknown = np.flatnonzero(~known)
        if unknown.size:
            per_sample = [evaluate(self._lambda(X[unknown], s[unknown],
                                                np.where(np.isfinite(tau[unknown]), tau[unknown], tau_s),
                                                np.where(np.isfinite(gain[unknown]), gain[unknown], gain_s)))
                          for tau_s, gain_s in self.condition_samples_]
            out[unknown] = logsumexp(np.stack(per_sample), axis=0) - np.log(len(per_sample))
        return out

    def onset_probability(self, times) -> np.ndarray:
        """Probability that each defect's onset came before each time, shape (n_times, n_defects).

        The posterior of the onset over the gaps between trusted images (:attr:`onset_cdf_`),
        uniform inside each gap: the trusted images say no more. A defect that carries no
        information has probability 0 everywhere.
        """
        check_is_fitted(self)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if getattr(self, "onset_cdf_", None) is not None:
            out = np.empty((times.size, self.onset_cdf_.shape[0]))
            for i, row in enumerate(self.onset_cdf_):
                out[:, i] = np.interp(times, self.onset_knots_, row, left=0.0, right=row[-1] if row.size else 0.0)
            return out
        lo, hi = self.onset_bounds_[:, 0], self.onset_bounds_[:, 1]
        width = hi - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            ramp = np.clip((times[:, None] - lo) / np.where(width > 0, width, 1.0), 0.0, 1.0)
        step = (times[:, None] >= lo).astype(np.float64)
        out = np.where(width > 0, ramp, step)
        return np.where(np.isfinite(lo) & np.isfinite(hi), out, 0.0)

    def time_log_likelihood(self, X, times, *, sigma=None, exposure=None, iso=None, chunk: int = 16):
        """Log-likelihood of each capture time, per image, with each onset uncertain in its gap.

        For an image taken at time ``t``, defect ``i`` is present with probability ``F_i(t)``
        (:meth:`onset_probability`), so

            log p(w | t) − Σ_i log p_absent(w_i) = Σ_i log(F_i(t)·exp(λ_i) + 1 − F_i(t)).

        At a time outside every onset's gap this is :meth:`interval_log_likelihood` of the
        interval holding ``t`` (up to the per-image constant ``L(0)``). Unknown exposure or ISO
        is averaged over the trusted images' conditions, as there.

        Parameters
        ----------
        X : array-like of shape (n_images, n_defects)
        times : array-like of shape (n_times,)
            On the ``time`` axis of :meth:`fit`.
        sigma, exposure, iso
            As in :meth:`predict_proba`.
        chunk : int, default 16
            Images evaluated at once (memory: chunk × n_times × n_defects floats).

        Returns
        -------
        ndarray of shape (n_images, n_times)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if not np.isfinite(times).all():
            raise ValueError("times must be finite numbers on the time axis of fit")
        tau, gain = self._conditions(X.shape[0], exposure, iso)
        F = self.onset_probability(times)
        with np.errstate(divide="ignore"):
            log_f, log_not_f = np.log(F), np.log1p(-F)

        def summed(lam):
            out = np.empty((lam.shape[0], times.size))
            for start in range(0, lam.shape[0], max(1, int(chunk))):
                part = lam[start:start + chunk]
                out[start:start + chunk] = np.logaddexp(log_f[None] + part[:, None, :], log_not_f[None]).sum(-1)
            return out

        return self._marginalised(X, self._sigma(X, sigma), tau, gain, summed, times.size)

    def class_log_likelihood(self, X, *, sigma=None, exposure=None, iso=None):
        """``log P(w | class)`` up to a common constant, shape (n_images, n_classes)."""
        ll = self.interval_log_likelihood(X, sigma=sigma, exposure=exposure, iso=iso)
        return logsumexp(ll[:, None, :] + self.interval_log_weight_[None, :, :], axis=2)

    def predict_log_proba(self, X, *, sigma=None, exposure=None, iso=None):
        """Log posterior over classes under a uniform prior."""
        ll = self.class_log_likelihood(X, sigma=sigma, exposure=exposure, iso=iso)
        return ll - logsumexp(ll, axis=1, keepdims=True)

    def predict_proba(self, X, *, sigma=None, exposure=None, iso=None):
        """Posterior over classes under a uniform prior (uncalibrated: see
        :mod:`pipeline.analysis.calibration` for calibrated probabilities and likelihood ratios)."""
        return np.exp(self.predict_log_proba(X, sigma=sigma, exposure=exposure, iso=iso))

    def predict(self, X, *, sigma=None, exposure=None, iso=None):
        """Maximum-likelihood class of each image."""
        ll = self.class_log_likelihood(X, sigma=sigma, exposure=exposure, iso=iso)
        return self.classes_[np.argmax(ll, axis=1)]

    # ------------------------------------------------------------------ persistence
    _ARRAYS = ("classes_", "onset_time_", "onset_", "dark_current_", "offset_", "spread_", "masked_",
               "noise_scale_", "sigma_", "onset_llr_", "condition_samples_", "interval_log_weight_",
               "defect_interval_", "interval_edges_", "typical_mean_", "onset_bounds_", "onset_knots_",
               "onset_cdf_")
    _SCALARS = ("tone_exponent_", "base_iso_", "uses_exposure_", "uses_iso_", "llr_threshold_", "n_features_in_")

    def to_params(self) -> dict:
        """The fitted model as JSON-serialisable values (see :meth:`from_params`)."""
        check_is_fitted(self)

        def plain(a):
            a = np.asarray(a)
            return np.where(np.isfinite(a), a, np.where(np.isnan(a), 0, np.sign(a) * 1e308)).tolist() \
                if a.dtype.kind == "f" else a.tolist()

        return {"params": self.get_params(), **{k: plain(getattr(self, k)) for k in self._ARRAYS},
                **{k: (getattr(self, k).item() if hasattr(getattr(self, k), "item") else getattr(self, k))
                   for k in self._SCALARS}}

    @classmethod
    def from_params(cls, params: dict) -> "FridrichGoljanClassifier":
        """Rebuild a fitted model from :meth:`to_params`."""
        model = cls(**params["params"])
        if "onset_bounds_" not in params:  # saved before the bounds were kept: the onset is a point
            params = {**params, "onset_bounds_": [[t, t] for t in params["onset_time_"]]}
        legacy = params.get("onset_cdf_") is None  # saved before the onset posterior: uniform in its bounds
        for k in cls._ARRAYS:
            if legacy and k in ("onset_knots_", "onset_cdf_"):
                setattr(model, k, None)
                continue
            a = np.asarray(params[k])
            if a.dtype.kind == "f":
                a = np.where(np.abs(a) >= 1e308, np.copysign(np.inf, a), a)
            setattr(model, k, a)
        for k in cls._SCALARS:
            setattr(model, k, params[k])
        model.onset_ = model.onset_.astype(np.intp)
        model.defect_interval_ = model.defect_interval_.astype(np.intp)
        model.condition_samples_ = model.condition_samples_.reshape(-1, 2)
        model.onset_bounds_ = model.onset_bounds_.reshape(-1, 2)
        if not legacy:
            model.onset_cdf_ = model.onset_cdf_.reshape(len(model.onset_time_), -1)
        model.interval_log_weight_ = model.interval_log_weight_.reshape(len(model.classes_), -1)
        return model
