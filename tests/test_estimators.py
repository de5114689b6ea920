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


def reference_class_loglik(fg, X, s, tau, gain):
    """Naive per-image, per-interval, per-class log-likelihood from the fitted parameters, with
    scipy's densities: the robust mixtures written out one defect at a time, a negative residual
    capped at the ratio of a residual 0 (as the module documents)."""
    n, m = X.shape
    kappa = fg.tone_exponent_
    n_int = fg.interval_log_weight_.shape[1]
    out = np.zeros((n, len(fg.classes_)))
    for i in range(n):
        L = np.zeros(n_int)
        for j in range(m):
            if not np.isfinite(X[i, j]) or not np.isfinite(fg.onset_time_[j]):
                continue
            mu = gain[i] ** kappa * (tau[i] ** kappa * fg.dark_current_[j] + fg.offset_[j])
            sd0 = fg.noise_scale_[j] * s[i, j]
            eta, eps = fg.outlier_weight, fg.masked_[j]
            absent = ((1 - eta) * norm.pdf(X[i, j], 0, sd0)
                      + eta * norm.pdf(X[i, j], 0, np.sqrt(sd0 ** 2 + fg.typical_mean_[j] ** 2 + 1e-12)))
            present = (1 - eps) * norm.pdf(X[i, j], mu, np.sqrt(fg.spread_[j] ** 2 + sd0 ** 2)) + eps * absent
            lam = np.log(present) - np.log(absent)
            if X[i, j] < 0:  # a defect only adds charge: no more for "present" than a residual of 0
                absent0 = (1 - eta) * norm.pdf(0, 0, sd0) + eta * norm.pdf(
                    0, 0, np.sqrt(sd0 ** 2 + fg.typical_mean_[j] ** 2 + 1e-12))
                present0 = (1 - eps) * norm.pdf(0, mu, np.sqrt(fg.spread_[j] ** 2 + sd0 ** 2)) + eps * absent0
                lam = min(lam, np.log(present0) - np.log(absent0))
            for interval in range(n_int):
                if fg.defect_interval_[j] <= interval:
                    L[interval] += lam
        for k in range(len(fg.classes_)):
            w = fg.interval_log_weight_[k]
            ok = np.isfinite(w)
            out[i, k] = np.log(np.sum(np.exp(L[ok] + w[ok])))
    return out


def test_class_likelihood_matches_naive_reference():
    rng = np.random.default_rng(3)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=90, m=12, n_classes=3)
    iso = rng.choice([100.0, 200.0, 400.0], 90)
    X = X * (iso / 100.0)[:, None]
    fg = FridrichGoljanClassifier().fit(X, y, sigma=sigma, exposure=tau, iso=iso)
    X[4, 2] = np.nan  # a clipped neighbourhood contributes nothing
    got = fg.class_log_likelihood(X[:20], sigma=sigma[:20], exposure=tau[:20], iso=iso[:20])
    ref = reference_class_loglik(fg, X[:20], sigma[:20], tau[:20], iso[:20] / fg.base_iso_)
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-7)
    proba = fg.predict_proba(X, sigma=sigma, exposure=tau, iso=iso)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(fg.predict(X[:20], sigma=sigma[:20], exposure=tau[:20], iso=iso[:20]),
                                  fg.classes_[ref.argmax(1)])


def test_fg_recovers_onsets_and_dates_images():
    rng = np.random.default_rng(11)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=400, m=40, n_classes=3)
    train, test = np.arange(0, 400, 2), np.arange(1, 400, 2)
    fg = FridrichGoljanClassifier().fit(X[train], y[train], sigma=sigma[train], exposure=tau[train])
    assert (fg.onset_ == onset).mean() >= 0.9
    acc = (fg.predict(X[test], sigma=sigma[test], exposure=tau[test]) == y[test]).mean()
    assert acc >= 0.95


def test_fg_onset_inside_a_class_counts_only_after_it():
    """Two classes; one strong defect appears halfway through class 1. Early class-1 images
    without it must still be dated to class 1 by the other defects, and the late ones are
    not pulled anywhere by it: its onset is located in time, not at the class boundary."""
    rng = np.random.default_rng(4)
    n = 200
    time = np.sort(rng.uniform(0, 100, n))
    y = (time >= 50).astype(int)
    onsets = np.array([25.0, 40.0, 60.0, 75.0, 90.0])
    amp = np.array([8.0, 8.0, 8.0, 8.0, 8.0])
    X = rng.normal(size=(n, 5)) + amp * (time[:, None] >= onsets)
    train = np.arange(0, n, 2)
    fg = FridrichGoljanClassifier().fit(X[train], y[train], time=time[train])
    assert np.all(np.abs(fg.onset_time_ - onsets) < 3.0)
    # the interval structure follows the onsets, and each class covers its own intervals
    assert fg.interval_log_weight_.shape == (2, 6)
    test = np.arange(1, n, 2)
    # images between the onsets at 40 and 60 show the same two defects whichever class they are
    # in: the model must say so (a posterior near the classes' shares of that interval), and be
    # right elsewhere
    shared = (time[test] > 41) & (time[test] < 59)
    assert (fg.predict(X[test][~shared]) == y[test][~shared]).mean() >= 0.97
    p_new = fg.predict_proba(X[test][shared])[:, 1]
    assert np.all((p_new > 0.2) & (p_new < 0.8))


def test_fg_gain_scales_the_expected_residual():
    """Residuals ∝ ISO: a model with ISO dates low- and high-ISO images alike; without ISO
    the same defects, weaker at low ISO than their average, pull low-ISO new images old."""
    rng = np.random.default_rng(7)
    n, m = 400, 30
    y = np.repeat([0, 1], n // 2)
    iso = rng.choice([100.0, 400.0, 1600.0], n)
    amp = rng.uniform(2, 4, m)
    X = rng.normal(size=(n, m)) + (iso / 100.0)[:, None] * amp * (y[:, None] == 1)
    tr, te = np.arange(0, n, 2), np.arange(1, n, 2)
    fg = FridrichGoljanClassifier().fit(X[tr], y[tr], iso=iso[tr], time=y[tr].astype(float))
    assert fg.base_iso_ == 100.0
    mu = fg.expected_residual(np.ones(3), np.array([1.0, 4.0, 16.0]))
    np.testing.assert_allclose(mu[1] / mu[0], 4.0 ** fg.tone_exponent_, rtol=1e-9)
    assert fg.tone_exponent_ == 1.0  # linear data: the profile likelihood picks the linear model
    np.testing.assert_allclose(np.median(mu[0] / amp), 1.0, atol=0.15)
    low = te[iso[te] == 100.0]
    assert (fg.predict(X[low], iso=iso[low]) == y[low]).mean() >= 0.9


def test_fg_missing_defect_costs_a_bounded_vote():
    """A present defect masked in one image (residual 0) cannot outvote many defects that agree."""
    rng = np.random.default_rng(9)
    n, m = 200, 10
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, m)) + 50.0 * (y[:, None] == 1)
    fg = FridrichGoljanClassifier().fit(X, y)
    new = rng.normal(size=(1, m)) + 50.0
    new[0, 0] = 0.0  # masked: looks healthy
    lam = fg.defect_log_likelihood_ratios(new)[0]
    assert lam[0] >= np.log(fg.masked_[0]) - 1e-9  # at most −log ε against the defect
    assert fg.predict(new)[0] == 1
    # and a healthy pixel that texture makes bright is not unbounded proof either
    bright = rng.normal(size=(1, m))
    bright[0, 0] = 500.0
    assert fg.defect_log_likelihood_ratios(bright)[0, 0] < 12.0


def test_fg_a_negative_residual_never_counts_for_a_defect():
    # A defect whose amplitude varies a lot between images (a wide present-state spread): by
    # the Gaussian densities alone a residual of -8σ is likelier "present" (wide) than "absent"
    # (narrow) — a defect only adds charge, so the ratio must not exceed that of a residual 0,
    # and must not fall as the residual rises.
    rng = np.random.default_rng(12)
    n, m = 200, 3
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, m)) + (y[:, None] == 1) * rng.uniform(5.0, 60.0, size=(n, m))
    fg = FridrichGoljanClassifier().fit(X, y)
    assert fg.spread_[0] > 5.0
    sweep = np.linspace(-40.0, 40.0, 161)
    columns = np.column_stack([sweep, np.zeros_like(sweep), np.zeros_like(sweep)])
    lam = fg.defect_log_likelihood_ratios(columns)[:, 0]
    at_zero = lam[sweep == 0.0][0]
    assert np.all(lam[sweep < 0] <= at_zero + 1e-12)
    assert np.all(np.diff(lam) >= -1e-9)


def test_fg_unknown_exposure_is_marginalised_and_omission_raises():
    rng = np.random.default_rng(8)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=400, m=40)
    fg = FridrichGoljanClassifier().fit(X[::2], y[::2], sigma=sigma[::2], exposure=tau[::2])
    unknown = np.full(200, np.nan)
    acc_known = (fg.predict(X[1::2], sigma=sigma[1::2], exposure=tau[1::2]) == y[1::2]).mean()
    acc_unknown = (fg.predict(X[1::2], sigma=sigma[1::2], exposure=unknown) == y[1::2]).mean()
    assert acc_unknown >= acc_known - 0.05
    # marginal likelihood = log of the mean over the trusted conditions: between their min and max
    ll = fg.interval_log_likelihood(X[1::2], sigma=sigma[1::2], exposure=unknown)
    each = np.stack([fg.interval_log_likelihood(X[1::2], sigma=sigma[1::2], exposure=np.full(200, t))
                     for t in fg.condition_samples_[:, 0]])
    assert np.all(ll <= each.max(0) + 1e-9) and np.all(ll >= each.min(0) - 1e-9)
    with pytest.raises(ValueError, match="fitted with exposure times"):
        fg.predict(X[1::2], sigma=sigma[1::2])


def test_fg_false_alarm_on_defect_free_columns():
    rng = np.random.default_rng(5)
    n, m = 200, 2000
    y = np.repeat([0, 1], n // 2)
    fg = FridrichGoljanClassifier(false_alarm=0.01).fit(rng.normal(size=(n, m)), y,
                                                         exposure=rng.uniform(0.01, 0.1, n))
    used = np.isfinite(fg.onset_time_).mean()
    assert used <= 0.01 + 3 * np.sqrt(0.01 / m)  # the bound holds (it is conservative)


def test_fg_params_round_trip():
    import json

    rng = np.random.default_rng(1)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=120, m=10)
    fg = FridrichGoljanClassifier().fit(X, y, sigma=sigma, exposure=tau)
    back = FridrichGoljanClassifier.from_params(json.loads(json.dumps(fg.to_params())))
    np.testing.assert_array_equal(back.predict_proba(X, sigma=sigma, exposure=tau),
                                  fg.predict_proba(X, sigma=sigma, exposure=tau))


def test_fg_validates_side_arrays():
    rng = np.random.default_rng(0)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=40, m=5)
    with pytest.raises(ValueError, match=r"exposure must have shape \(40,\)"):
        FridrichGoljanClassifier().fit(X, y, exposure=tau[:3])
    with pytest.raises(ValueError, match="sigma must be positive"):
        FridrichGoljanClassifier().fit(X, y, sigma=-sigma)
    with pytest.raises(ValueError, match="iso must be positive"):
        FridrichGoljanClassifier().fit(X, y, iso=-np.ones(40))
    with pytest.raises(ValueError, match="false_alarm"):
        FridrichGoljanClassifier(false_alarm=2).fit(X, y)


def test_nb_and_svm_learn_residual_features():
    rng = np.random.default_rng(2)
    y, tau, onset, sigma, X = synthetic_residuals(rng, n=200, m=20, with_tau=False)
    for est in (ResidualNaiveBayes(), ResidualSVM(random_state=1)):
        est.fit(X[::2], y[::2])
        assert (est.predict(X[1::2]) == y[1::2]).mean() >= 0.9
        assert est.predict_proba(X[1::2]).shape == (100, 2)
