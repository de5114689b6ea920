"""Fridrich–Goljan, Naive Bayes and SVM estimators: sklearn conventions and known-truth checks."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.utils.estimator_checks import check_estimator

from baselines.fridrich_goljan import FridrichGoljanClassifier
from baselines.residual_classifiers import ResidualNaiveBayes, ResidualSVM


def synthetic_residuals(rng, n=240, m=40, n_classes=2, snr=4.0, with_tau=True):
    """Residuals at m defects with known onset classes (n_classes = never present)."""
    y = np.sort(rng.integers(0, n_classes, n))
    tau = rng.uniform(0.005, 0.1, n) if with_tau else np.ones(n)
    onset = rng.integers(1, n_classes + 1, m)
    dark = rng.uniform(0, snr / 0.05, m) * (rng.random(m) < 0.6)
    offset = np.where(dark == 0, rng.uniform(snr / 2, snr, m), 0.0)
    sigma = rng.uniform(0.5, 2.0, (n, m))
    mu = (tau[:, None] * dark + offset) * (y[:, None] >= onset)
    return y, tau, onset, sigma, mu * sigma + sigma * rng.normal(size=(n, m))


def test_fg_passes_check_estimator():
    check_estimator(FridrichGoljanClassifier())


def test_nb_and_svm_pass_check_estimator():
    check_estimator(ResidualNaiveBayes())
    check_estimator(ResidualSVM(inner_folds=2))


def reference_interval_loglik(X, s2, tau, onset, dark, offset, n_classes):
    """Naive per-image, per-interval sum of Gaussian log-likelihood ratios."""
    out = np.zeros((X.shape[0], n_classes))
    for i in range(X.shape[0]):
        for interval in range(n_classes):
            for j in range(X.shape[1]):
                if onset[j] <= interval and np.isfinite(X[i, j]):
                    mu, sd = tau[i] * dark[j] + offset[j], np.sqrt(s2[i, j])
                    out[i, interval] += norm.logpdf(X[i, j], mu, sd) - norm.logpdf(X[i, j], 0, sd)
    return out


def test_interval_likelihood_matches_naive_reference():
    rng = np.random.default_rng(3)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=90, m=12, n_classes=3)
    fg = FridrichGoljanClassifier().fit(X, y, sigma=sigma, exposure=tau)
    X[4, 2] = np.nan  # a clipped neighbourhood contributes nothing
    got = fg.interval_log_likelihood(X, sigma=sigma, exposure=tau)
    ref = reference_interval_loglik(X, sigma ** 2, tau, fg.onset_, fg.dark_current_, fg.offset_, 3)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    proba = fg.predict_proba(X, sigma=sigma, exposure=tau)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(fg.predict(X, sigma=sigma, exposure=tau), fg.classes_[ref.argmax(1)])


def test_fg_recovers_onsets_and_dates_images():
    rng = np.random.default_rng(11)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=400, m=40, n_classes=3)
    train, test = np.arange(0, 400, 2), np.arange(1, 400, 2)
    fg = FridrichGoljanClassifier().fit(X[train], y[train], sigma=sigma[train], exposure=tau[train])
    assert (fg.onset_ == onset).mean() >= 0.9
    acc = (fg.predict(X[test], sigma=sigma[test], exposure=tau[test]) == y[test]).mean()
    assert acc >= 0.95


def test_fg_false_alarm_on_defect_free_columns():
    rng = np.random.default_rng(5)
    n, m = 200, 2000
    y = np.repeat([0, 1], n // 2)
    fg = FridrichGoljanClassifier(false_alarm=0.01).fit(rng.normal(size=(n, m)), y,
                                                         exposure=rng.uniform(0.01, 0.1, n))
    used = (fg.onset_ < 2).mean()
    assert used <= 0.01 + 3 * np.sqrt(0.01 / m)  # the bound holds (it is conservative)


def test_fg_unknown_exposure_maximises_over_tau():
    rng = np.random.default_rng(8)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=400, m=40)
    fg = FridrichGoljanClassifier().fit(X[::2], y[::2], sigma=sigma[::2], exposure=tau[::2])
    unknown = np.full(200, np.nan)
    acc_known = (fg.predict(X[1::2], sigma=sigma[1::2], exposure=tau[1::2]) == y[1::2]).mean()
    acc_unknown = (fg.predict(X[1::2], sigma=sigma[1::2], exposure=unknown) == y[1::2]).mean()
    assert acc_unknown >= acc_known - 0.05
    # the profile likelihood is the maximum over the grid: never below the known-τ value at a grid point
    ll = fg.interval_log_likelihood(X[1::2], sigma=sigma[1::2], exposure=unknown)
    ll_grid = fg.interval_log_likelihood(X[1::2], sigma=sigma[1::2], exposure=np.full(200, fg.tau_range_[0]))
    assert np.all(ll >= ll_grid - 1e-9)


def test_fg_validates_side_arrays():
    rng = np.random.default_rng(0)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=40, m=5)
    with pytest.raises(ValueError, match=r"exposure must have shape \(40,\)"):
        FridrichGoljanClassifier().fit(X, y, exposure=tau[:3])
    with pytest.raises(ValueError, match="sigma must be positive"):
        FridrichGoljanClassifier().fit(X, y, sigma=-sigma)
    with pytest.raises(ValueError, match="false_alarm"):
        FridrichGoljanClassifier(false_alarm=2).fit(X, y)


def test_nb_and_svm_learn_residual_features():
    rng = np.random.default_rng(2)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=200, m=20, with_tau=False)
    for est in (ResidualNaiveBayes(), ResidualSVM(random_state=1)):
        est.fit(X[::2], y[::2])
        assert (est.predict(X[1::2]) == y[1::2]).mean() >= 0.9
        assert est.predict_proba(X[1::2]).shape == (100, 2)
