"""Fridrich–Goljan maximum-likelihood age estimation from residuals at known defects.

Model (Fridrich & Goljan, SPIE 7880, 2011): the median-filter residual ``w`` of a healthy pixel
is ``N(0, σ²)``; after the onset of a defect it is ``N(μ, σ²)`` with ``μ = τ·D + c`` (exposure
time ``τ``, dark-current rate ``D``, offset ``c``). Defects sorted by onset cut time into
intervals; an image taken in interval ``m`` shows exactly the defects with onset before it. For an
untrusted image each defect contributes the log-likelihood ratio

    λ_i = log N(w_i; μ_i, σ_i²) − log N(w_i; 0, σ_i²) = (w_i μ_i − μ_i² / 2) / σ_i²

and the log-likelihood of interval ``m`` is the prefix sum ``L(m) = Σ_{onset_i ≤ m} λ_i``; the
estimate is ``argmax_m L(m)``. Here the intervals are the experiment's age classes: classes are
ordered in time by their label (class 0 is the oldest period), and each defect's onset is the
first class in which it is present — learned in :meth:`FridrichGoljanClassifier.fit` from the
trusted images by the same generalised likelihood-ratio test that locates onsets in time
(:func:`kernels.onset_changepoints`), restricted to class boundaries. Defects whose best onset
does not beat "never present" carry no information and get weight zero.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["FridrichGoljanClassifier", "fit_presence"]


def _check_side(name, value, n, m, *, per_defect: bool):
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
            raise ValueError(f"{name} must be positive seconds; mark unknown exposure times with NaN")
    return arr


def fit_presence(w, s2, tau, present):
    """Weighted least squares of ``w`` on ``(τ, 1)`` over ``present`` images, with D, c ≥ 0.

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

    Returns
    -------
    D, c, llr : ndarray, shape (n_defects,)
        The constrained estimates and the log-likelihood ratio of "present with mean τD + c on
        those images" against "never present". The constrained optimum is the best feasible of
        the unconstrained fit and the two one-parameter fits (the objective is convex).
    """
    weight = np.where(present & np.isfinite(w), 1.0 / s2, 0.0)
    w0 = np.where(weight > 0, w, 0.0)
    t = tau[:, None]
    s_1, s_t, s_tt = weight.sum(0), (weight * t).sum(0), (weight * t * t).sum(0)
    s_w, s_tw = (weight * w0).sum(0), (weight * t * w0).sum(0)
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


class FridrichGoljanClassifier(ClassifierMixin, BaseEstimator):
    """Maximum-likelihood image age from the residuals at in-field defect locations.

    Parameters
    ----------
    false_alarm : float, default 1e-3
        Probability that a defect column with no change at all (pure noise) is nevertheless
        used. A defect is used only if its best onset's log-likelihood ratio against "never
        present" on the training images exceeds ``log((n_classes - 1) / false_alarm)``: under
        "never present" twice the ratio of one onset is at most χ²₂-distributed (two
        non-negative parameters), whose half has the tail ``exp(-η)``, and the
        ``n_classes - 1`` possible onsets are accounted for by a union bound. Other defects
        carry no information (weight 0).
    tau_grid : int, default 25
        Number of exposure times (geometric grid over the training range) over which the
        likelihood is maximised for an image whose exposure time is unknown (NaN), as
        Fridrich & Goljan suggest for images without EXIF.

    Attributes
    ----------
    classes_ : ndarray
        Class labels in time order (sorted; the first is the oldest period).
    onset_ : ndarray of int, shape (n_defects,)
        Index into ``classes_`` of the first class in which each defect is present
        (``len(classes_)`` for a defect never found present).
    dark_current_ : ndarray, shape (n_defects,)
        Estimated ``D`` (residual units per second of exposure).
    offset_ : ndarray, shape (n_defects,)
        Estimated ``c`` (residual units).
    onset_llr_ : ndarray, shape (n_defects,)
        Training log-likelihood ratio of the chosen onset against "never present".
    llr_threshold_ : float
        The threshold ``onset_llr_`` had to exceed (from ``false_alarm``).
    sigma_ : ndarray, shape (n_defects,)
        Healthy-residual noise level per defect, used when ``sigma`` is not passed: a robust
        (MAD) estimate over the training images before each defect's onset.
    n_features_in_ : int

    Notes
    -----
    ``X`` holds the residual ``W`` at each defect (columns) for each image (rows). Optional
    keyword arguments of :meth:`fit` and :meth:`predict_proba`: ``sigma`` (the local noise level
    at each residual, same shape as X) and ``exposure`` (exposure time per image in seconds;
    NaN where unknown). Without ``exposure``, every image is taken to have τ = 1 so that
    ``μ = D + c`` is a constant per defect. A NaN residual (a defect whose neighbourhood is
    clipped or saturated in that image) contributes nothing to any interval.
    """

    def __init__(self, false_alarm: float = 1e-3, tau_grid: int = 25):
        self.false_alarm = false_alarm
        self.tau_grid = tau_grid

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        # Expected failure of check_classifiers_train's accuracy bar, by design: the model only
        # knows "residual shifted upwards from class k on", so generic blobs (whose classes
        # differ in any direction) are not learnable by it.
        tags.classifier_tags.poor_score = True
        return tags

    def _validate_X(self, X, reset):
        return validate_data(self, X, reset=reset, dtype=np.float64, ensure_all_finite="allow-nan")

    def fit(self, X, y, *, sigma=None, exposure=None):
        """Learn each defect's onset class and its (D, c) from trusted images.

        Parameters
        ----------
        X : array-like of shape (n_images, n_defects)
            Residuals at the defect locations.
        y : array-like of shape (n_images,)
            Age class of each trusted image; classes are ordered by label.
        sigma : array-like of shape (n_images, n_defects) or (n_defects,), optional
            Local noise level of each residual.
        exposure : array-like of shape (n_images,), optional
            Exposure time in seconds (NaN where unknown: such images are left out of the
            parameter fit).

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        if not isinstance(self.false_alarm, (int, float)) or not 0 < self.false_alarm < 1:
            raise ValueError(f"false_alarm must be a probability in (0, 1), got {self.false_alarm!r}")
        if not isinstance(self.tau_grid, (int, np.integer)) or self.tau_grid < 1:
            raise ValueError(f"tau_grid must be a positive integer, got {self.tau_grid!r}")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        n, m = X.shape
        n_classes = len(self.classes_)
        sigma = _check_side("sigma", sigma, n, m, per_defect=True)
        exposure = _check_side("exposure", exposure, n, m, per_defect=False)
        self.uses_exposure_ = exposure is not None
        tau = np.ones(n) if exposure is None else exposure
        known_tau = np.isfinite(tau)
        tau_fit = np.where(known_tau, tau, 1.0)
        if self.uses_exposure_ and known_tau.any():
            lo, hi = np.nanmin(tau), np.nanmax(tau)
            self.tau_range_ = (float(lo), float(hi))
        else:
            self.tau_range_ = (1.0, 1.0)

        # noise level per defect from images of the first class (before any onset here),
        # robust to the defect itself being present in some of them
        first = y_idx == 0
        with np.errstate(invalid="ignore"):
            mad = np.nanmedian(np.abs(X[first] - np.nanmedian(X[first], axis=0)), axis=0) * 1.4826
        fallback = np.nanstd(X, axis=0)
        sig = np.where(np.isfinite(mad) & (mad > 0), mad, fallback)
        sig = np.where(np.isfinite(sig) & (sig > 0), sig, 1.0)
        self.sigma_ = sig
        s2 = (np.broadcast_to(self.sigma_, (n, m)) if sigma is None else np.where(np.isfinite(sigma), sigma, self.sigma_)) ** 2

        best_llr = np.zeros(m)
        best_onset = np.full(m, n_classes)
        best_d, best_c = np.zeros(m), np.zeros(m)
        usable = known_tau[:, None] & np.isfinite(X)
        for onset in range(1, n_classes):
            present = (y_idx >= onset)[:, None] & usable
            d, c, llr = fit_presence(X, s2, tau_fit, present)
            better = llr > best_llr
            best_llr = np.where(better, llr, best_llr)
            best_onset = np.where(better, onset, best_onset)
            best_d, best_c = np.where(better, d, best_d), np.where(better, c, best_c)
        self.llr_threshold_ = float(np.log(max(n_classes - 1, 1) / self.false_alarm))
        informative = best_llr > self.llr_threshold_
        self.onset_ = np.where(informative, best_onset, n_classes).astype(np.intp)
        self.dark_current_ = np.where(informative, best_d, 0.0) if self.uses_exposure_ else np.zeros(m)
        self.offset_ = np.where(informative, best_c + (0.0 if self.uses_exposure_ else best_d), 0.0)
        self.onset_llr_ = best_llr
        return self

    def interval_log_likelihood(self, X, *, sigma=None, exposure=None):
        """Log-likelihood ``L(m)`` of each age interval (class), per image.

        Returns
        -------
        ndarray of shape (n_images, n_classes)
            ``L(m) − L(0)``: the prefix sums of the per-defect log-likelihood ratios.
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        n, m = X.shape
        sigma = _check_side("sigma", sigma, n, m, per_defect=True)
        exposure = _check_side("exposure", exposure, n, m, per_defect=False)
        s2 = (np.broadcast_to(self.sigma_, (n, m)) if sigma is None
              else np.where(np.isfinite(sigma), sigma, self.sigma_)) ** 2
        if not self.uses_exposure_:
            return self._prefix_sums(X, s2, np.ones(n))
        tau = np.ones(n) if exposure is None else exposure
        out = self._prefix_sums(X, s2, np.where(np.isfinite(tau), tau, 1.0))
        unknown = ~np.isfinite(tau)
        if unknown.any():
            # unknown exposure: maximise each interval's likelihood over τ (profile likelihood)
            lo, hi = self.tau_range_
            grid = np.geomspace(lo, hi, self.tau_grid) if hi > lo else np.array([lo])
            profiles = np.stack([self._prefix_sums(X[unknown], s2[unknown], np.full(unknown.sum(), g))
                                 for g in grid])
            out[unknown] = profiles.max(axis=0)
        return out

    def _prefix_sums(self, X, s2, tau):
        mu = tau[:, None] * self.dark_current_ + self.offset_
        lam = np.where(np.isfinite(X), (np.nan_to_num(X) * mu - 0.5 * mu * mu) / s2, 0.0)
        n_classes = len(self.classes_)
        # L(k) = sum of λ over defects whose onset class is ≤ k
        by_onset = np.zeros((X.shape[0], n_classes + 1))
        for k in range(1, n_classes):
            by_onset[:, k] = lam[:, self.onset_ == k].sum(axis=1)
        return np.cumsum(by_onset[:, :n_classes], axis=1)

    def predict_proba(self, X, *, sigma=None, exposure=None):
        """Posterior over classes under a uniform prior (softmax of the interval log-likelihoods)."""
        ll = self.interval_log_likelihood(X, sigma=sigma, exposure=exposure)
        return np.exp(ll - logsumexp(ll, axis=1, keepdims=True))

    def predict_log_proba(self, X, *, sigma=None, exposure=None):
        """Log of :meth:`predict_proba`."""
        ll = self.interval_log_likelihood(X, sigma=sigma, exposure=exposure)
        return ll - logsumexp(ll, axis=1, keepdims=True)

    def predict(self, X, *, sigma=None, exposure=None):
        """Maximum-likelihood class of each image."""
        ll = self.interval_log_likelihood(X, sigma=sigma, exposure=exposure)
        return self.classes_[np.argmax(ll, axis=1)]
