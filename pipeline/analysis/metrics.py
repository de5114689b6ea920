"""How good calibrated evidence is: Cllr, Cllr_min, ECE, Brier and the share of confident errors.

Conventions (as in :mod:`pipeline.analysis.calibration`, whose likelihood ratios these measure):

* **Cllr** is in bits (base 2), ``1/2 [mean_H1 log2(1 + 1/LR) + mean_H2 log2(1 + LR)]``; for K > 2
  classes it is the mean over classes of the one-vs-rest Cllr. ``Cllr_min`` is the Cllr after the
  optimal monotone (PAV) recalibration with balanced class weights, as in ``lir.metrics.cllr_min``.
* **Brier** is ``mean_i sum_k (p_ik - onehot_ik)^2 / 2``. For two classes this equals
  ``mean_i (p_i1 - y_i1)^2``, scikit-learn's ``brier_score_loss``; every K is on the same 0..1 scale.
* **ECE** is the top-label expected calibration error: 10 equal-width, right-closed bins
  ``(lo, hi]`` (a confidence of exactly 0 goes to the first bin) on the probability of the
  predicted class, ``sum_b n_b / n |accuracy_b - mean confidence_b|``.

Plain numpy/scipy; checked against ``lir.metrics`` in the tests.
"""

from __future__ import annotations

import numpy as np

try:  # scipy >= 1.12
    from scipy.optimize import isotonic_regression as _scipy_pav

    def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _scipy_pav(y, weights=w, increasing=True).x
except ImportError:  # pragma: no cover - older scipy
    from sklearn.isotonic import isotonic_regression as _sklearn_pav

    def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
        return _sklearn_pav(y, sample_weight=w, increasing=True)

__all__ = ["evidence_metrics", "cllr", "cllr_min", "expected_calibration_error", "top_label", "CONFIDENT",
           "ECE_BINS"]

#: probability of the predicted class at or above which a wrong answer counts as "confident wrong"
CONFIDENT = 0.99
#: equal-width bins of the expected calibration error and the reliability diagram
ECE_BINS = 10

_LN10 = np.log(10.0)
_LN2 = np.log(2.0)


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
