"""Calibrated evidence: method scores -> bounded likelihood ratios, probabilities, metrics and figures.

A method's raw output (a naive-Bayes log-posterior, an SVM decision value, a CNN softmax) is a
*score*, not evidence. Forensic reporting needs likelihood ratios that are calibrated on data the
scorer did not see and bounded by what that data can support (DESIGN.md, "Evidence, not just
labels"; notes/references.md, "Forensic evaluation of evidence"). The workflow inside one training
split is::

    S = cross_fitted_scores(fit_score, y_train)          # out-of-fold log-scores, (n_train, K)
    cal = EvidenceCalibrator().fit(S, y_train, classes=classes)
    model = fit the method on all of the training split
    llr = cal.log10_lr(log-scores of the test images)    # (n_test, K), log10 LR per class
    proba = cal.predict_proba(log-scores of the test images)
    metrics = evidence_metrics(proba, llr, y_test, classes)

Conventions
-----------
* **Scores** given to this module are natural-log scores (log-probabilities or any log-scores),
  one column per class, columns in sorted class order. Use :func:`log_scores` to turn
  probabilities into log-scores.
* **Likelihood ratios** are reported as **log10 LR** (as in ``lir``). For class ``k`` the LR is
  one-vs-rest: ``P(evidence | class k) / P(evidence | not class k)``. With two classes there is one
  calibrator (class 1 vs class 0) and class 0's log10 LR is the negative of class 1's.
* **Cllr** is in bits (base 2), ``1/2 [mean_H1 log2(1 + 1/LR) + mean_H2 log2(1 + LR)]``; for K > 2
  classes it is the mean over classes of the one-vs-rest Cllr. ``Cllr_min`` is the Cllr after the
  optimal monotone (PAV) recalibration with balanced class weights, as in ``lir.metrics.cllr_min``.
* **Brier** is ``mean_i sum_k (p_ik - onehot_ik)^2 / 2``. For two classes this equals
  ``mean_i (p_i1 - y_i1)^2``, scikit-learn's ``brier_score_loss``; every K is on the same 0..1 scale.
* **ECE** is the top-label expected calibration error: 10 equal-width, right-closed bins
  ``(lo, hi]`` (a confidence of exactly 0 goes to the first bin) on the probability of the
  predicted class, ``sum_b n_b / n |accuracy_b - mean confidence_b|``.
* **Logistic map**: linear in the one-vs-rest score, or in ``asinh(score)`` when that has the lower
  out-of-fold Cllr on the calibration data (5 stratified folds): the raw log-odds of an
  overconfident method grow much faster than its evidence, and a straight line through them
  misplaces the decision threshold; a score that is a scaled log LR keeps the linear map.
* **ELUB** (Vergeer et al. 2016, via ``lir.algorithms.bayeserror.elub`` with one added misleading
  item per side and 0.01 log10 steps) is computed from the calibration data itself, on
  *out-of-fold* calibrated log10 LRs (the calibrator refitted in 5 stratified folds of the
  calibration data; in-sample when a proposition has fewer than 2 items). In-sample LLRs of a
  flexible calibrator such as PAV look informative even on pure noise, and ELUB on them would
  allow LRs that noise cannot support. Every later log10 LR is clipped into those bounds; they
  never exceed ``[-log10(n_H1 + 1), log10(n_H2 + 1)]``.

Dependencies
------------
:class:`EvidenceCalibrator` uses ``lir`` (imported when it is fitted, so importing this module
does not need it; note that importing ``lir``'s ELUB module imports ``matplotlib.pyplot``).
Metrics are plain numpy/scipy and are checked against ``lir.metrics`` in the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.special import expit, logsumexp
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedKFold

try:  # scipy >= 1.12
    from scipy.optimize import isotonic_regression as _scipy_pav

    def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _scipy_pav(y, weights=w, increasing=True).x
except ImportError:  # pragma: no cover - older scipy
    from sklearn.isotonic import isotonic_regression as _sklearn_pav

    def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _sklearn_pav(y, sample_weight=w, increasing=True)

__all__ = [
    "cross_fitted_scores",
    "EvidenceCalibrator",
    "posterior_from_lr",
    "evidence_metrics",
    "cllr",
    "cllr_min",
    "expected_calibration_error",
    "log_scores",
    "top_label",
    "reliability_figure",
    "tippett_figure",
    "CONFIDENT",
    "ECE_BINS",
]

LOG = logging.getLogger(__name__)

#: probability of the predicted class at or above which a wrong answer counts as "confident wrong"
CONFIDENT = 0.99
#: equal-width bins of the expected calibration error and the reliability diagram
ECE_BINS = 10

_LN10 = np.log(10.0)
_LN2 = np.log(2.0)
# one-vs-rest scores (natural log) are clipped here: log(1e-300) = -690.8, so any finite
# log-probability survives, while an exact 0 or 1 probability (a -inf score) stays usable
_SCORE_CLIP = 1000.0
# numerical safety cap on any log10 LR (lir.elub substitutes +-9 for infinite LLRs too); ELUB
# bounds are far inside it for any realistic calibration set
_LLR_CAP = 9.0
_METHODS = ("logistic", "isotonic")
# stratified folds inside the calibration data for the out-of-fold LLRs that ELUB is computed on
_ELUB_FOLDS = 5
_BOUNDS = ("elub", None)
# The logistic penalty is weak (C on the standardised score) so that ELUB, not an arbitrary
# shrinkage, bounds the LRs of separable calibration data (with C = 1 a method that separates its
# cross-fitted scores perfectly was held near p = 0.9, an ECE of 0.1 at 100 % accuracy).
_LOGIT_C = 100.0
# score transformations the logistic calibrator chooses between (see _BinaryCalibration.fit)
_TRANSFORMS = ("linear", "asinh")


# ----------------------------------------------------------------------------------------------
# cross-fitting
# ----------------------------------------------------------------------------------------------

def cross_fitted_scores(fit_score: Callable[[np.ndarray, np.ndarray], np.ndarray], y, *, n_folds: int = 5,
                        random_state=0) -> np.ndarray:
    """Out-of-fold log-scores for every row of a training split (cross-fitting).

    Parameters
    ----------
    fit_score : callable
        ``fit_score(train_idx, test_idx) -> array (len(test_idx), K)``: fits the method on the rows
        ``train_idx`` (indices into ``y``) and returns its natural-log scores (log-probabilities or any
        log-scores) for the rows ``test_idx``, one column per class in the order of
        ``np.unique(y)``. It is never asked to score a row it was fitted on.
    y : array-like of shape (n,)
        Class labels of the training split.
    n_folds : int, default 5
        Number of stratified folds; lowered to the size of the smallest class (at least 2).
    random_state : int, RandomState or None, default 0
        Seed of the shuffled :class:`~sklearn.model_selection.StratifiedKFold`.

    Returns
    -------
    ndarray of shape (n, K)
        The out-of-fold score of every row. Every training fold contains every class.

    Raises
    ------
    ValueError
        Fewer than two classes, a class with fewer than two images, ``n_folds < 2``, or a callback
        that returns the wrong shape or NaN.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be one label per image (1-D); got shape {y.shape}")
    if int(n_folds) < 2:
        raise ValueError(f"n_folds must be at least 2; got {n_folds}")
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise ValueError(f"cross-fitting needs at least two classes; y has {classes.size} ({list(classes)})")
    if counts.min() < 2:
        small = [f"{c!r} ({k} image)" for c, k in zip(classes, counts) if k < 2]
        raise ValueError(f"cross-fitting needs at least 2 training images per class; too few in class(es) "
                         f"{', '.join(small)}: add images, merge classes or calibrate without this class")
    n_splits = int(min(int(n_folds), counts.min()))
    if n_splits < n_folds:
        LOG.info("cross-fitting with %d folds instead of %d: the smallest class has %d images",
                 n_splits, n_folds, counts.min())
    k = classes.size
    out = np.full((y.size, k), np.nan)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    for fold, (train_idx, test_idx) in enumerate(folds.split(np.zeros((y.size, 1)), y)):
        scores = np.asarray(fit_score(train_idx, test_idx), dtype=float)
        if scores.shape != (test_idx.size, k):
            raise ValueError(f"fit_score returned shape {scores.shape} for fold {fold}; expected "
                             f"({test_idx.size}, {k}): one row per test index, one column per class")
        if np.isnan(scores).any():
            raise ValueError(f"fit_score returned NaN scores in fold {fold}")
        out[test_idx] = scores
    LOG.debug("cross-fitted %d rows in %d folds", y.size, n_splits)
    return out


# ----------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------

def log_scores(proba, floor: float = 1e-300) -> np.ndarray:
    """Natural-log scores from probabilities, with exact zeros floored at ``log(floor)``.

    Parameters
    ----------
    proba : array-like of shape (n, K)
        Probabilities (rows need not sum to 1).
    floor : float, default 1e-300
        Smallest probability kept.

    Returns
    -------
    ndarray of shape (n, K)
    """
    proba = np.asarray(proba, dtype=float)
    if np.isnan(proba).any():
        raise ValueError("probabilities contain NaN")
    return np.log(np.clip(proba, floor, None))


def _check_scores(scores, n_classes: int | None = None) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D array (n images, K classes); got shape {scores.shape}")
    if n_classes is not None and scores.shape[1] != n_classes:
        raise ValueError(f"scores have {scores.shape[1]} columns but the calibrator knows {n_classes} classes")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; a method that cannot score an image must say so before calibration")
    if np.isposinf(scores).any():
        raise ValueError("scores contain +inf; pass finite log-scores (log-probabilities are <= 0)")
    return scores


def _one_vs_rest(scores: np.ndarray) -> np.ndarray:
    """``s_k = scores[:, k] - logsumexp(scores[:, others])``; for K = 2 only class 1 (shape (n, 1))."""
    n, k = scores.shape
    if k == 2:
        with np.errstate(invalid="ignore"):
            s = (scores[:, 1] - scores[:, 0])[:, None]
    else:
        s = np.empty((n, k))
        for j in range(k):
            rest = np.delete(scores, j, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                s[:, j] = scores[:, j] - logsumexp(rest, axis=1)
    # -inf - (-inf): the method gave no support to either side; that is no evidence
    s = np.where(np.isnan(s), 0.0, s)
    return np.clip(s, -_SCORE_CLIP, _SCORE_CLIP)


class _BinaryCalibration:
    """One score -> bounded log10 LR map for H1 (label 1) against H2 (label 0)."""

    def __init__(self, method: str, bound: str | None, random_state):
        self.method, self.bound, self.random_state = method, bound, random_state
        self.model = None
        self.center, self.scale = 0.0, 1.0
        self.lower, self.upper = 0.0, 0.0
        self.note = ""

    def fit(self, s: np.ndarray, h1: np.ndarray) -> _BinaryCalibration:
        n1, n2 = int(h1.sum()), int(h1.size - h1.sum())
        if n1 == 0 or n2 == 0:
            self.note = f"no calibration data for one proposition (n_H1={n1}, n_H2={n2}): log10 LR 0"
            return self
        if np.ptp(s) == 0:
            self.note = "all calibration scores are equal: log10 LR 0"
            return self
        labels = h1.astype(int)
        n_inner = min(_ELUB_FOLDS, n1, n2)
        folds = (list(StratifiedKFold(n_splits=n_inner, shuffle=True, random_state=self.random_state)
                      .split(s[:, None], labels)) if n_inner >= 2 else None)
        # The logistic map is linear in the score, or in asinh(score) when that predicts the
        # calibration data better out of fold: the raw log-odds of an overconfident method
        # (naive Bayes, an uncalibrated likelihood) grow far faster than the evidence, and a
        # straight line through them misplaces the threshold; for a score that is a scaled log LR
        # the linear map is right. Chosen by out-of-fold Cllr on the calibration data only.
        candidates = _TRANSFORMS if (self.method == "logistic" and folds is not None) else ("linear",)
        best = None
        for name in candidates:
            self.transform_name = name
            t = self._transformed(s)
            self.center, self.scale = float(np.mean(t)), float(np.std(t)) or 1.0
            z = (t - self.center) / self.scale
            if folds is not None:
                oof = np.zeros(s.size)
                for tr, te in folds:
                    if np.ptp(z[tr]) > 0:
                        oof[te] = self._llr(self._new_model().fit(z[tr], labels[tr]), z[te])
                cost = cllr(oof, labels == 1)
            else:
                oof, cost = None, 0.0
            if best is None or cost < best[0] - 1e-9:
                best = (cost, name, self.center, self.scale, z, oof)
        _, self.transform_name, self.center, self.scale, z, oof = best
        self.model = self._new_model().fit(z, labels)
        if self.bound == "elub":
            # ELUB needs log10 LRs of labelled data that the calibrator did not fit: in-sample LLRs of
            # a flexible calibrator (PAV) look informative even on pure noise. Calibrate within
            # stratified folds of the calibration data and bound with the out-of-fold LLRs.
            if oof is None:
                oof = self._llr(self.model, z)
                self.note = f"ELUB from in-sample LLRs (n_H1={n1}, n_H2={n2}: too few for folds)"
            # lir.elub expects log10 LRs and labels 0/1 (1 = Hp = H1); it modifies its input in place
            from lir.algorithms.bayeserror import elub

            lower, upper = elub(oof.copy(), labels, add_misleading=1)
            self.lower, self.upper = float(lower), float(upper)
        else:
            self.lower, self.upper = -_LLR_CAP, _LLR_CAP
        return self

    def _transformed(self, s):
        s = np.asarray(s, dtype=float)
        return np.arcsinh(s) if getattr(self, "transform_name", "linear") == "asinh" else s

    def _new_model(self):
        if self.method == "logistic":
            # lir: LogisticRegression(class_weight='balanced') on labels 0/1 where 1 = H1; transform()
            # returns intercept + coef * x converted from natural log to log10 (ln_to_log10). The
            # balanced weights make that log-odds a log LR (equal effective priors).
            from lir.algorithms.logistic_regression import LogitCalibrator

            return LogitCalibrator(random_state=self.random_state, C=_LOGIT_C)
        # lir: PAV with weights that balance the classes (labels must be exactly {0, 1}, 1 = H1);
        # transform() returns log10 odds of the fitted probability = log10 LR; may be +-inf.
        from lir.algorithms.isotonic_regression import IsotonicCalibrator

        return IsotonicCalibrator()

    @staticmethod
    def _llr(model, z: np.ndarray) -> np.ndarray:
        llr = np.asarray(model.transform(z), dtype=float).reshape(-1)
        llr = np.where(np.isnan(llr), 0.0, llr)
        return np.clip(llr, -_LLR_CAP, _LLR_CAP)

    def transform(self, s: np.ndarray) -> np.ndarray:
        if self.model is None:
            return np.zeros(np.shape(s)[0])
        z = (self._transformed(s) - self.center) / self.scale
        return np.clip(self._llr(self.model, z), self.lower, self.upper)


def posterior_from_lr(log10_lr, priors) -> np.ndarray:
    """Posterior class probabilities from one-vs-rest log10 LRs and prior class probabilities.

    Parameters
    ----------
    log10_lr : array-like of shape (n, K)
    priors : array-like of shape (K,)

    Returns
    -------
    ndarray of shape (n, K)
        For K = 2: ``logit p_1 = ln(10) log10 LR_1 + ln(prior_1 / prior_0)``. For K > 2 the
        one-vs-rest posteriors ``expit(ln(10) log10 LR_k + logit prior_k)``, each row
        renormalised to sum to 1. Finite, in [0, 1].
    """
    llr = np.atleast_2d(np.asarray(log10_lr, dtype=float))
    k = llr.shape[1]
    if k < 2:
        return np.ones_like(llr)
    pri = np.asarray(priors, dtype=float)
    if pri.shape != (k,) or np.any(pri < 0) or not np.isfinite(pri).all() or pri.sum() <= 0:
        raise ValueError(f"priors must be {k} non-negative numbers; got {priors}")
    pri = pri / pri.sum()
    with np.errstate(divide="ignore"):
        prior_logit = np.log(pri) - np.log1p(-pri)  # +-inf for a prior of 1 or 0
    if k == 2:
        p1 = expit(_LN10 * llr[:, 1] + prior_logit[1])
        return np.column_stack([1.0 - p1, p1])
    post = expit(_LN10 * llr + prior_logit[None, :])
    total = post.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    if empty.any():
        post[empty] = pri
        total[empty] = 1.0
    return post / total


class EvidenceCalibrator(BaseEstimator):
    """Maps cross-fitted log-scores to bounded, calibrated one-vs-rest log10 likelihood ratios.

    Parameters
    ----------
    method : {'logistic', 'isotonic'}, default 'logistic'
        Calibrator of each one-vs-rest score: ``lir``'s ``LogitCalibrator`` (logistic regression,
        balanced classes, scikit-learn's default L2 penalty on the standardised score) or
        ``IsotonicCalibrator`` (PAV, balanced classes).
    bound : {'elub', None}, default 'elub'
        ``'elub'`` clips every log10 LR into the empirical lower and upper bounds (Vergeer et al.
        2016) of the calibration data, computed on out-of-fold calibrated LLRs (see the module
        notes); ``None`` applies only a numerical cap of +-9.
    random_state : int, RandomState or None, default 0
        Seed of the stratified folds used for the ELUB bounds (and passed to the logistic
        regression, whose solver is deterministic).

    Attributes
    ----------
    classes_ : ndarray of shape (K,)
        Sorted classes; the column order of scores, LRs and probabilities.
    priors_ : ndarray of shape (K,)
        Class frequencies of the calibration data; the priors of :meth:`predict_proba`.
    bounds_ : ndarray of shape (K, 2)
        ``[lower, upper]`` log10 LR bound of each class's one-vs-rest LR (``[0, 0]`` where the
        class could not be calibrated).
    n_calibration_ : int
        Number of images the calibrator was fitted on.
    notes_ : list of str
        Why a class says "no evidence", if it does.

    Notes
    -----
    For class ``k`` the one-vs-rest score is ``s_k = scores[:, k] - logsumexp(scores[:, others])``.
    A class absent from the calibration data, a class that is all of it, or constant scores give a
    fitted calibrator whose log10 LR is exactly 0 for that class.
    """

    def __init__(self, method: str = "logistic", bound: str | None = "elub", random_state=0):
        self.method = method
        self.bound = bound
        self.random_state = random_state

    def fit(self, scores, y, classes: Sequence | None = None) -> EvidenceCalibrator:
        """Fit one calibrator per one-vs-rest proposition (one in all for two classes).

        Parameters
        ----------
        scores : array-like of shape (n, K)
            Natural-log scores, normally from :func:`cross_fitted_scores` (never in-sample scores).
        y : array-like of shape (n,)
            True classes.
        classes : sequence, optional
            All K classes (sorted order is used). Needed when a class may be absent from ``y``;
            without it the classes are ``np.unique(y)`` and must match the number of columns.

        Returns
        -------
        self
        """
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}; got {self.method!r}")
        if self.bound not in _BOUNDS:
            raise ValueError(f"bound must be one of {_BOUNDS}; got {self.bound!r}")
        scores = _check_scores(scores)
        y = np.asarray(y)
        if y.ndim != 1 or y.size != scores.shape[0]:
            raise ValueError(f"y must hold one label per row of scores ({scores.shape[0]}); got shape {y.shape}")
        if y.size == 0:
            raise ValueError("cannot calibrate on zero images")
        if classes is None:
            cls = np.unique(y)
            if cls.size != scores.shape[1]:
                raise ValueError(f"y has {cls.size} classes but scores have {scores.shape[1]} columns; pass "
                                 f"classes=... (all classes, the column order of scores)")
        else:
            cls = np.unique(np.asarray(classes))
            if cls.size != np.asarray(classes).size:
                raise ValueError(f"classes must be distinct; got {list(classes)}")
            if cls.size != scores.shape[1]:
                raise ValueError(f"{cls.size} classes but scores have {scores.shape[1]} columns")
            unknown = np.setdiff1d(np.unique(y), cls)
            if unknown.size:
                raise ValueError(f"labels {list(unknown)} are not among classes {list(cls)}")
        k = cls.size
        self.classes_ = cls
        self.priors_ = np.array([np.mean(y == c) for c in cls], dtype=float)
        self.n_calibration_ = int(y.size)
        self.bounds_ = np.zeros((k, 2))
        self.notes_ = []
        self._calibrators_ = []
        if k < 2:
            self.notes_.append("a single class: log10 LR 0")
        else:
            s = _one_vs_rest(scores)
            targets = [1] if k == 2 else list(range(k))
            for j, t in enumerate(targets):
                cal = _BinaryCalibration(self.method, self.bound, self.random_state).fit(s[:, j], y == cls[t])
                if cal.note:
                    self.notes_.append(f"class {cls[t]!r}: {cal.note}")
                    LOG.info("calibration of class %r: %s", cls[t], cal.note)
                self._calibrators_.append(cal)
                self.bounds_[t] = (cal.lower, cal.upper) if cal.model is not None else (0.0, 0.0)
            if k == 2:
                self.bounds_[0] = -self.bounds_[1, ::-1]
        LOG.debug("calibrated %s/%s on %d images; log10 LR bounds %s", self.method, self.bound, y.size,
                  np.round(self.bounds_, 2).tolist())
        return self

    def _check_fitted(self):
        if not hasattr(self, "classes_"):
            raise ValueError("this EvidenceCalibrator is not fitted yet; call fit(scores, y) first")

    def log10_lr(self, scores) -> np.ndarray:
        """Bounded, calibrated one-vs-rest log10 likelihood ratio of every class.

        Parameters
        ----------
        scores : array-like of shape (n, K)
            Natural-log scores of the images to evaluate (same method, same column order).

        Returns
        -------
        ndarray of shape (n, K)
            ``log10 P(E | class k) / P(E | not class k)``; finite, within ``bounds_``.
        """
        self._check_fitted()
        k = self.classes_.size
        scores = _check_scores(scores, k)
        out = np.zeros((scores.shape[0], k))
        if k < 2:
            return out
        s = _one_vs_rest(scores)
        if k == 2:
            out[:, 1] = self._calibrators_[0].transform(s[:, 0])
            out[:, 0] = -out[:, 1]
        else:
            for j, cal in enumerate(self._calibrators_):
                out[:, j] = cal.transform(s[:, j])
        return out

    def predict_proba(self, scores, priors=None) -> np.ndarray:
        """Posterior class probabilities from the calibrated LRs and the priors.

        Parameters
        ----------
        scores : array-like of shape (n, K)
            Natural-log scores.
        priors : array-like of shape (K,), optional
            Prior class probabilities; default ``priors_`` (the calibration data's frequencies).

        Returns
        -------
        ndarray of shape (n, K)
            For K = 2: ``logit p_1 = ln(10) log10 LR_1 + ln(prior_1 / prior_0)``. For K > 2 the
            one-vs-rest posteriors ``expit(ln(10) log10 LR_k + logit prior_k)``, each row
            renormalised to sum to 1. Finite, in [0, 1].
        """
        pri = self.priors_ if priors is None else np.asarray(priors, dtype=float)
        return posterior_from_lr(self.log10_lr(scores), pri)

    def predict(self, scores) -> np.ndarray:
        """Class with the highest posterior probability."""
        return self.classes_[np.argmax(self.predict_proba(scores), axis=1)]


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------

def _llr_and_labels(log10_lr, is_h1) -> tuple[np.ndarray, np.ndarray]:
    llr = np.asarray(log10_lr, dtype=float).reshape(-1)
    h1 = np.asarray(is_h1, dtype=bool).reshape(-1)
    if llr.size != h1.size:
        raise ValueError(f"{llr.size} log10 LRs but {h1.size} labels")
    if np.isnan(llr).any():
        raise ValueError("log10 LRs contain NaN")
    return llr, h1


def cllr(log10_lr, is_h1) -> float:
    """Log-likelihood-ratio cost in bits (Brümmer & du Preez 2006).

    Parameters
    ----------
    log10_lr : array-like of shape (n,)
        log10 LR of H1 against H2 for each item.
    is_h1 : array-like of bool, shape (n,)
        True where H1 is true.

    Returns
    -------
    float
        ``1/2 [mean_H1 log2(1 + 1/LR) + mean_H2 log2(1 + LR)]``: 0 perfect, 1 for LR = 1 always,
        above 1 misleading. NaN when either proposition has no item.
    """
    llr, h1 = _llr_and_labels(log10_lr, is_h1)
    if h1.all() or not h1.any():
        return float("nan")
    with np.errstate(over="ignore"):
        c1 = np.mean(np.logaddexp(0.0, -_LN10 * llr[h1])) / _LN2
        c2 = np.mean(np.logaddexp(0.0, _LN10 * llr[~h1])) / _LN2
    return float(0.5 * (c1 + c2))


def _pav_log10_lr(log10_lr: np.ndarray, h1: np.ndarray) -> np.ndarray:
    """Optimal monotone recalibration (PAV, classes weighted to equal total weight) -> log10 LR."""
    order = np.argsort(log10_lr, kind="stable")
    x = log10_lr[order]
    t = h1[order].astype(float)
    w = np.where(t > 0, 1.0 / t.sum(), 1.0 / (t.size - t.sum()))
    # pool (near-)identical scores first, as scikit-learn's isotonic regression (used by lir) does
    with np.errstate(invalid="ignore"):
        new = np.diff(x) >= np.finfo(float).resolution
    group = np.concatenate([[0], np.cumsum(new)])
    wg = np.bincount(group, weights=w)
    yg = np.bincount(group, weights=w * t) / wg
    fitted = _pav(yg, wg)
    p = np.empty_like(x)
    p[order] = np.clip(fitted[group], 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return np.log10(p) - np.log10(1.0 - p)


def cllr_min(log10_lr, is_h1) -> float:
    """Cllr after optimal monotone (PAV) recalibration: the discrimination loss, in bits.

    Parameters
    ----------
    log10_lr : array-like of shape (n,)
        log10 LR (or any score increasing with support for H1).
    is_h1 : array-like of bool, shape (n,)
        True where H1 is true.

    Returns
    -------
    float
        NaN when either proposition has no item.
    """
    llr, h1 = _llr_and_labels(log10_lr, is_h1)
    if h1.all() or not h1.any():
        return float("nan")
    return cllr(_pav_log10_lr(llr, h1), h1)


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def expected_calibration_error(confidence, correct, n_bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error.

    Parameters
    ----------
    confidence : array-like of shape (n,)
        Probability of the predicted class.
    correct : array-like of bool, shape (n,)
        Whether the predicted class is the true one.
    n_bins : int, default 10
        Equal-width, right-closed bins on [0, 1].

    Returns
    -------
    float
        ``sum_b n_b / n |mean(correct)_b - mean(confidence)_b|``; NaN for no items.
    """
    conf = np.asarray(confidence, dtype=float).reshape(-1)
    ok = np.asarray(correct, dtype=float).reshape(-1)
    if conf.size == 0:
        return float("nan")
    b = _bin_index(conf, n_bins)
    n_b = np.bincount(b, minlength=n_bins)
    gap = np.abs(np.bincount(b, weights=ok, minlength=n_bins) - np.bincount(b, weights=conf, minlength=n_bins))
    return float(gap.sum() / conf.size) if n_b.sum() else float("nan")


def top_label(proba, y, classes) -> tuple[np.ndarray, np.ndarray]:
    """Probability of the predicted class and whether the prediction is right.

    Parameters
    ----------
    proba : array-like of shape (n, K)
        Columns in the order of ``classes``.
    y : array-like of shape (n,)
        True classes.
    classes : sequence of length K

    Returns
    -------
    confidence : ndarray of shape (n,)
    correct : ndarray of bool, shape (n,)
    """
    proba = np.asarray(proba, dtype=float)
    classes = np.asarray(classes)
    yi = _class_index(y, classes)
    pred = np.argmax(proba, axis=1)
    return proba[np.arange(proba.shape[0]), pred], pred == yi


def _class_index(y, classes: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    try:
        return np.array([lookup[v] for v in y.tolist()], dtype=int)
    except KeyError as exc:
        raise ValueError(f"label {exc.args[0]!r} is not among classes {classes.tolist()}") from None


def evidence_metrics(proba, log10_lr, y, classes) -> dict:
    """Accuracy, Cllr, Cllr_min, ECE, Brier and confident-wrong rate of one set of predictions.

    Parameters
    ----------
    proba : array-like of shape (n, K)
        Posterior probabilities, columns in the order of ``classes``.
    log10_lr : array-like of shape (n, K), or (n,) for two classes
        One-vs-rest log10 LR per class (a 1-D array is class 1's LR against class 0).
    y : array-like of shape (n,)
        True classes.
    classes : sequence of length K

    Returns
    -------
    dict
        ``accuracy``; ``cllr`` and ``cllr_min`` in bits (two classes: on class 1's LR; more: mean of
        the one-vs-rest values over classes that have items on both sides; NaN if none);
        ``ece`` (top-label, 10 bins); ``brier`` (``mean sum_k (p - onehot)^2 / 2``, equal to
        scikit-learn's ``brier_score_loss`` for two classes); ``confident_wrong`` (fraction of all
        images predicted wrongly with probability >= 0.99); ``n``.
    """
    classes = np.asarray(classes)
    k = classes.size
    proba = np.asarray(proba, dtype=float)
    llr = np.asarray(log10_lr, dtype=float)
    y = np.asarray(y)
    n = int(y.size)
    if llr.ndim == 1:
        if k != 2:
            raise ValueError("a 1-D log10_lr is only meaningful for two classes; pass (n, K)")
        llr = np.column_stack([-llr, llr])
    if proba.shape != (n, k) or llr.shape != (n, k):
        raise ValueError(f"proba {proba.shape} and log10_lr {llr.shape} must both be ({n}, {k})")
    nan = float("nan")
    if n == 0:
        return {"accuracy": nan, "cllr": nan, "cllr_min": nan, "ece": nan, "brier": nan,
                "confident_wrong": nan, "n": 0}
    if np.isnan(proba).any() or np.isnan(llr).any():
        raise ValueError("proba or log10_lr contain NaN")
    yi = _class_index(y, classes)
    conf, correct = top_label(proba, y, classes)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), yi] = 1.0
    if k == 2:
        c, cm = cllr(llr[:, 1], yi == 1), cllr_min(llr[:, 1], yi == 1)
    else:
        per = [(cllr(llr[:, j], yi == j), cllr_min(llr[:, j], yi == j)) for j in range(k)
               if 0 < np.sum(yi == j) < n]
        c = float(np.mean([a for a, _ in per])) if per else nan
        cm = float(np.mean([b for _, b in per])) if per else nan
    return {
        "accuracy": float(np.mean(correct)),
        "cllr": c,
        "cllr_min": cm,
        "ece": expected_calibration_error(conf, correct),
        "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1)) / 2.0),
        "confident_wrong": float(np.mean(~correct & (conf >= CONFIDENT))),
        "n": n,
    }


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------

def _colours():
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3"])


def reliability_figure(curves: Mapping[str, tuple], title: str, *, n_bins: int = ECE_BINS):
    """Reliability diagram of top-label probabilities, one curve per method.

    Parameters
    ----------
    curves : mapping
        Method display name -> ``(confidence, correct)``: the probability of the predicted class and
        whether the prediction is right (see :func:`top_label`).
    title : str
    n_bins : int, default 10
        Equal-width bins on [0, 1].

    Returns
    -------
    matplotlib.figure.Figure
        Top: observed fraction correct against mean predicted probability per non-empty bin
        (marker area proportional to the images in the bin), with the diagonal of perfect
        calibration. Bottom: images per bin.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 7.5), layout="constrained")
    ax, axh = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], color="0.4", linestyle=":", label="perfect calibration")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    colours = _colours()
    n_methods = max(len(curves), 1)
    width = (edges[1] - edges[0]) / (n_methods + 1)
    for m, (name, (confidence, correct)) in enumerate(curves.items()):
        conf = np.asarray(confidence, dtype=float).reshape(-1)
        ok = np.asarray(correct, dtype=float).reshape(-1)
        col = colours[m % len(colours)]
        b = _bin_index(conf, n_bins)
        n_b = np.bincount(b, minlength=n_bins)
        nz = n_b > 0
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins)[nz] / n_b[nz]
        freq = np.bincount(b, weights=ok, minlength=n_bins)[nz] / n_b[nz]
        ece = expected_calibration_error(conf, ok, n_bins)
        label = f"{name} (n={conf.size}, ECE={ece:.3f})" if conf.size else f"{name} (n=0)"
        ax.plot(mean_conf, freq, color=col, linewidth=1.2, label=label)
        if conf.size:
            ax.scatter(mean_conf, freq, s=20 + 400 * n_b[nz] / n_b.max(), color=col, alpha=0.6,
                       edgecolors="black", linewidths=0.5, zorder=3)
        axh.bar(edges[:-1] + width * (m + 0.5), n_b, width=width, align="edge", color=col, label=name)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Observed fraction correct (0–1)")
    ax.set_title(title)
    ax.grid(True, linestyle=":", linewidth=0.6)
    ax.legend(loc="upper left", fontsize="small")
    ax.text(0.98, 0.02, f"{n_bins} equal-width bins;\nmarker area ∝ images in bin", transform=ax.transAxes,
            ha="right", va="bottom", fontsize="small", color="0.3")
    axh.set_yscale("log")
    axh.set_ylim(bottom=0.7)  # a bin with one image stays visible
    axh.set_xlabel("Predicted probability of the predicted class (top-label confidence, 0–1)")
    axh.set_ylabel("Images per bin\n(count, log scale)")
    axh.grid(True, axis="y", linestyle=":", linewidth=0.6)
    return fig


def _tippett_curve(values: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Proportion of ``values >= x`` as a step curve over [lo, hi] (for ``step(where='pre')``)."""
    v = np.sort(values)
    xs = np.unique(v)
    prop = (v.size - np.searchsorted(v, xs, side="left")) / v.size
    return np.concatenate([[lo], xs, [hi]]), np.concatenate([[1.0], prop, [0.0]])


def tippett_figure(llrs: Mapping[str, tuple], title: str, *, xlabel: str = "log10 LR (class 1 vs class 0)",
                   h1_name: str = "class 1", h2_name: str = "class 0", xlim: tuple[float, float] | None = None):
    """Tippett plot: cumulative proportion of log10 LR >= x under each proposition, per method.

    Parameters
    ----------
    llrs : mapping
        Method display name -> ``(log10_lr, is_h1)``: class 1's log10 LR against class 0 and
        whether class 1 is the true class.
    title : str
    xlabel : str, default "log10 LR (class 1 vs class 0)"
    h1_name, h2_name : str
        Names of the propositions in the legend.
    xlim : (float, float), optional
        Range of the x axis; default the finite values' range +- 0.5. Values outside it are drawn
        at its edge (useful when an uncalibrated method's log10 LRs dwarf the calibrated ones).

    Returns
    -------
    matplotlib.figure.Figure
        Solid line: images of class 1 (H1 true); dashed: class 0 (H2 true); same colour per method.
        A well-performing system has its solid curve to the right of 0 and its dashed curve to the
        left. Infinite values are drawn at the edge of the axis.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.subplots()
    data = {name: (np.asarray(v, dtype=float).reshape(-1), np.asarray(h, dtype=bool).reshape(-1))
            for name, (v, h) in llrs.items()}
    if xlim is None:
        finite = np.concatenate([v[np.isfinite(v)] for v, _ in data.values()] + [np.zeros(1)])
        lo, hi = float(finite.min()) - 0.5, float(finite.max()) + 0.5
    else:
        lo, hi = float(xlim[0]), float(xlim[1])
        if not lo < 0 < hi:
            raise ValueError(f"xlim must include 0 (LR = 1); got {xlim}")
    colours = _colours()
    for m, (name, (v, h1)) in enumerate(data.items()):
        if v.size != h1.size:
            raise ValueError(f"{name}: {v.size} log10 LRs but {h1.size} labels")
        col = colours[m % len(colours)]
        v = np.clip(v, lo, hi)
        for sel, style, prop_name, hyp in ((h1, "-", h1_name, "H1"), (~h1, "--", h2_name, "H2")):
            if sel.any():
                x, p = _tippett_curve(v[sel], lo, hi)
                ax.step(x, p, where="pre", color=col, linestyle=style,
                        label=f"{name}: {prop_name} true ({hyp}, n={int(sel.sum())})")
    ax.axvline(0.0, color="0.3", linewidth=1.0, label="LR = 1 (no evidence)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Proportion of images with log10 LR ≥ x")
    ax.set_title(title)
    ax.grid(True, linestyle=":", linewidth=0.6)
    ax.legend(loc="best", fontsize="small")
    return fig
