"""Calibrated evidence: method scores -> bounded likelihood ratios and probabilities.

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

A fitted calibrator is stored in a run folder as a JSON table (:func:`calibration_table`) and
applied from it (:func:`calibrated_lr_from_table`). The metrics (Cllr, ECE, Brier) are in
:mod:`pipeline.analysis.metrics`, the reliability and Tippett figures in
:mod:`pipeline.analysis.calibration_figures`.

Dependencies
------------
:class:`EvidenceCalibrator` uses ``lir`` (imported when it is fitted, so importing this module
does not need it; note that importing ``lir``'s ELUB module imports ``matplotlib.pyplot``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import expit, logsumexp
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedKFold

from pipeline.analysis.metrics import cllr
from pipeline.logs import get_logger

__all__ = [
    "cross_fitted_scores",
    "EvidenceCalibrator",
    "posterior_from_lr",
    "log_scores",
    "calibration_table",
    "calibrated_lr_from_table",
]

logger = get_logger(__name__)

_LN10 = np.log(10.0)
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
        logger.debug("cross-fitting with %d folds instead of %d: the smallest class has %d images",
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
    logger.debug("cross-fitted %d rows in %d folds", y.size, n_splits)
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
                    logger.debug("calibration of class %r: %s", cls[t], cal.note)
                self._calibrators_.append(cal)
                self.bounds_[t] = (cal.lower, cal.upper) if cal.model is not None else (0.0, 0.0)
            if k == 2:
                self.bounds_[0] = -self.bounds_[1, ::-1]
        logger.debug("calibrated %s/%s on %d images; log10 LR bounds %s", self.method, self.bound, y.size,
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
# calibration tables (how a run folder stores a fitted calibrator)
# ----------------------------------------------------------------------------------------------

def calibration_table(calibrator: EvidenceCalibrator, scores: np.ndarray) -> dict:
    """A fitted calibrator as a JSON table, applied later by :func:`calibrated_lr_from_table`.

    Parameters
    ----------
    calibrator : EvidenceCalibrator
        Fitted.
    scores : ndarray, shape (n, K)
        The natural-log scores it was fitted on: they set the range of the tabulated grid.

    Returns
    -------
    dict
        ``classes``, ``priors``, ``bounds`` (ELUB, log10), ``n_calibration``, ``method`` and
        ``tables``: for each class (one table for two classes: class 1 against class 0), its
        one-vs-rest ``score`` on a grid and the ``log10_lr`` there (a monotone map).
    """
    k = calibrator.classes_.size
    s = scores[:, 1] - scores[:, 0] if k == 2 else None
    tables = []
    for j in range(1 if k == 2 else k):
        col = 1 if k == 2 else j
        if k == 2:
            ovr = s
        else:
            others = np.delete(scores, j, axis=1)
            ovr = scores[:, j] - logsumexp(others, axis=1)
        finite = ovr[np.isfinite(ovr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
        grid = np.unique(np.concatenate([np.linspace(lo - 5 - 0.5 * (hi - lo), hi + 5 + 0.5 * (hi - lo), 400),
                                         finite]))
        probe = np.zeros((grid.size, k))
        probe[:, col] = grid + (np.log(k - 1) if k > 2 else 0.0)
        tables.append({"class": calibrator.classes_[col].item(), "score": grid.tolist(),
                       "log10_lr": calibrator.log10_lr(probe)[:, col].tolist()})
    return {"classes": calibrator.classes_.tolist(), "priors": calibrator.priors_.tolist(),
            "bounds": calibrator.bounds_.tolist(), "n_calibration": int(calibrator.n_calibration_),
            "method": calibrator.method, "tables": tables}


def calibrated_lr_from_table(table: dict, scores: np.ndarray) -> np.ndarray:
    """log10 LR of each class (one-vs-rest) from a :func:`calibration_table`, for (n, K) log-scores."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    k = len(table["classes"])
    out = np.zeros((scores.shape[0], k))
    if k == 2:
        t = table["tables"][0]
        out[:, 1] = np.interp(scores[:, 1] - scores[:, 0], t["score"], t["log10_lr"])
        out[:, 0] = -out[:, 1]
        return out
    for j, t in enumerate(table["tables"]):
        ovr = scores[:, j] - logsumexp(np.delete(scores, j, axis=1), axis=1)
        out[:, j] = np.interp(ovr, t["score"], t["log10_lr"])
    return out
