"""GLR onset change points against a brute-force constrained least-squares reference."""

import numpy as np
import pytest
from kernel_reference import PURE_PYTHON, onset_reference

import kernels


def _check_against_reference(w, sigma, tau, result, index, min_segment=1):
    k, _, _, llr, llr_by_k = onset_reference(w, sigma, tau, min_segment)
    got_k = int(result.k[index])
    assert result.llr[index] == pytest.approx(llr, rel=1e-7, abs=1e-9)
    if llr == 0.0:
        assert (got_k, result.D[index], result.c[index], result.llr[index]) == (w.size, 0.0, 0.0, 0.0)
        return
    top = np.sort(llr_by_k)[::-1]
    if top.size < 2 or top[0] - top[1] > 1e-7 * top[0]:  # a unique maximum
        assert got_k == k
    else:
        assert llr_by_k[got_k] == pytest.approx(llr, rel=1e-7)
    # D and c are unique unless the exposures after the onset are collinear with 1:
    # compare the fitted means
    t = np.zeros(w.size - got_k) if tau is None else np.asarray(tau)[got_k:]
    _, fit_d, fit_c, _, _ = onset_reference(w[got_k:], np.broadcast_to(sigma, w.shape)[got_k:],
                                            None if tau is None else t, w.size - got_k)
    np.testing.assert_allclose(t * result.D[index] + result.c[index], t * fit_d + fit_c, rtol=1e-6, atol=1e-9)
    assert result.D[index] >= 0 and result.c[index] >= 0


@pytest.mark.parametrize("with_tau", [False, True])
@pytest.mark.parametrize("shared_sigma", [False, True])
def test_onsets_match_brute_force(with_tau, shared_sigma):
    rng = np.random.default_rng(int(with_tau) + 2 * int(shared_sigma))
    n_series, n_images = (12, 15) if PURE_PYTHON else (40, 25)
    tau = rng.uniform(0.002, 0.5, n_images) if with_tau else None
    sigma = rng.uniform(0.5, 3.0, n_images if shared_sigma else (n_series, n_images))
    w = rng.normal(size=(n_series, n_images)) * np.broadcast_to(sigma, (n_series, n_images))
    onsets = rng.integers(0, n_images + 1, n_series)
    for m, k in enumerate(onsets):
        dark, offset = rng.uniform(0, 8) * rng.integers(0, 2), rng.uniform(-1, 3)
        w[m, k:] += (0.0 if tau is None else dark * tau[k:]) + offset
    w[0] = -np.abs(w[0])  # never positive: "never present" wins
    result = kernels.onset_changepoints(w.astype(np.float32), sigma, tau)
    assert result.k[0] == n_images
    for m in range(n_series):
        row_sigma = sigma if shared_sigma else sigma[m]
        _check_against_reference(w[m].astype(np.float32), row_sigma, tau, result, m)


@pytest.mark.parametrize("min_segment", [1, 3, 10])
def test_min_segment_limits_the_latest_onset(min_segment):
    rng = np.random.default_rng(min_segment)
    w = rng.normal(size=(10, 12))
    w[:, -1] += 20.0  # a spike in the last image pulls the onset to the end
    result = kernels.onset_changepoints(w, np.ones(12), min_segment=min_segment)
    assert (result.k <= 12 - min_segment).all()
    for m in range(10):
        _check_against_reference(w[m], np.ones(12), None, result, m, min_segment)


def test_constrained_boundaries():
    tau = np.linspace(0.5, 1.0, 10)
    # unconstrained c would be negative: the dark-current-only fit (c = 0) is the best feasible
    w = 5.0 * tau - 0.3
    result = kernels.onset_changepoint(w, 1.0, tau)
    assert result.k == 0 and result.c == 0.0 and result.D > 0
    _check_against_reference(w, np.ones(10), tau, kernels.onset_changepoints(w[None], np.ones(10), tau), 0)
    # unconstrained D would be negative: the offset-only fit (D = 0) is the best feasible
    w = 3.0 - 2.0 * tau
    result = kernels.onset_changepoint(w, 1.0, tau)
    assert result.k == 0 and result.D == 0.0 and result.c > 0
    _check_against_reference(w, np.ones(10), tau, kernels.onset_changepoints(w[None], np.ones(10), tau), 0)
    # equal exposures: D and c cannot be told apart, the offset-only fit is returned
    result = kernels.onset_changepoint(np.r_[np.zeros(5), np.full(5, 4.0)], 1.0, np.full(10, 0.25))
    assert (result.k, result.D, result.c) == (5, 0.0, 4.0)
    assert result.llr == pytest.approx(5 * 16.0 / 2)
    # without exposure times mu is the constant c
    result = kernels.onset_changepoint(np.r_[np.zeros(3), np.full(7, 2.0)], 2.0)
    assert (result.k, result.D, result.c) == (3, 0.0, 2.0)
    assert result.llr == pytest.approx(7 * 4.0 / 8)


def test_single_series_equals_the_batch():
    rng = np.random.default_rng(4)
    w, tau = rng.normal(size=30) + np.r_[np.zeros(12), np.full(18, 2.0)], rng.uniform(0.1, 1, 30)
    sigma = rng.uniform(0.5, 2, 30)
    single = kernels.onset_changepoint(w, sigma, tau)
    batch = kernels.onset_changepoints(w[None], sigma[None], tau)
    assert single == kernels.Onset(int(batch.k[0]), batch.D[0], batch.c[0], batch.llr[0])
    k, _, _, llr = single
    assert isinstance(k, int) and isinstance(llr, float)


@pytest.mark.parametrize("with_tau", [False, True])
def test_planted_onsets_are_recovered_at_a_known_snr(with_tau):
    """Mean SNR mu/sigma = 2 and 6, onset uniform in 10..50 of 60 images."""
    rng = np.random.default_rng(5)
    n_series, n_images = (300, 60) if PURE_PYTHON else (600, 60)
    onsets = rng.integers(10, 51, n_series)
    tau = rng.uniform(0.1, 0.5, n_images)
    profile = tau / tau.mean() if with_tau else np.ones(n_images)
    present = np.arange(n_images)[None, :] >= onsets[:, None]
    noise = rng.standard_normal((n_series, n_images))
    result = kernels.onset_changepoints(noise + 2.0 * profile * present, np.ones(n_images),
                                        tau if with_tau else None)
    error = np.abs(result.k - onsets)
    assert np.mean(error == 0) >= 0.5  # measured 0.61-0.65
    assert np.mean(error <= 2) >= 0.88  # measured 0.94-0.95
    assert np.mean(error <= 5) >= 0.97  # measured 0.98-0.99
    assert np.mean(result.llr > kernels.llr_threshold(1e-3, n_images, with_tau)) >= 0.99
    strong = kernels.onset_changepoints(noise + 6.0 * profile * present, np.ones(n_images),
                                        tau if with_tau else None)
    assert np.mean(strong.k == onsets) >= 0.9  # measured 0.96-1.0
    assert np.mean(np.abs(strong.k - onsets) <= 2) >= 0.99
    if with_tau:  # the fitted dark current is the planted one, 6 / mean(tau), on average
        assert np.median(strong.D) == pytest.approx(6.0 / tau.mean(), rel=0.1)


@pytest.mark.parametrize("with_tau", [False, True])
@pytest.mark.parametrize("false_alarm", [0.01, 0.05])
def test_false_alarm_rate_on_defect_free_series_is_bounded(with_tau, false_alarm):
    rng = np.random.default_rng(6)
    n_series, n_images = (1000, 30) if PURE_PYTHON else (10000, 60)
    tau = rng.uniform(0.01, 0.5, n_images) if with_tau else None
    sigma = rng.uniform(0.5, 2.0, n_images)
    w = rng.standard_normal((n_series, n_images)) * sigma
    result = kernels.onset_changepoints(w, sigma, tau)
    rate = np.mean(result.llr > kernels.llr_threshold(false_alarm, n_images, with_tau))
    assert rate <= false_alarm  # Bonferroni: conservative
    assert np.mean(result.llr > 0) > 0.5  # the statistic is not degenerate


def test_llr_threshold_values():
    assert kernels.llr_threshold(0.05, 1, with_tau=True) == pytest.approx(np.log(20.0))
    z = 1.6448536269514722  # Phi^-1(0.95)
    assert kernels.llr_threshold(0.05, 1) == pytest.approx(z * z / 2)
    assert kernels.llr_threshold(0.01, 100) > kernels.llr_threshold(0.01, 10)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="false_alarm"):
            kernels.llr_threshold(bad, 10)
    with pytest.raises(ValueError, match="n_images"):
        kernels.llr_threshold(0.01, 0)


def test_bad_input_is_rejected():
    w = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"\(M, N\)"):
        kernels.onset_changepoints(np.zeros(5), np.ones(5))
    with pytest.raises(ValueError, match="sigma has shape"):
        kernels.onset_changepoints(w, np.ones(4))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        kernels.onset_changepoints(w, np.zeros(5))
    with pytest.raises(ValueError, match="tau has shape"):
        kernels.onset_changepoints(w, np.ones(5), np.ones(3))
    with pytest.raises(ValueError, match=">= 0"):
        kernels.onset_changepoints(w, np.ones(5), -np.ones(5))
    bad = w.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"W contains NaN or inf \(first at index \(1, 2\)\)"):
        kernels.onset_changepoints(bad, np.ones(5))
    with pytest.raises(ValueError, match="sigma contains NaN"):
        kernels.onset_changepoints(w, np.r_[np.ones(4), np.inf])
    with pytest.raises(TypeError, match="numeric"):
        kernels.onset_changepoints(w.astype(bool), np.ones(5))
    for bad_segment in (0, 6, 1.5):
        with pytest.raises(ValueError, match="min_segment"):
            kernels.onset_changepoints(w, np.ones(5), min_segment=bad_segment)
    with pytest.raises(ValueError, match="1-D"):
        kernels.onset_changepoint(w, 1.0)
