"""The capture-time likelihood of Fridrich–Goljan with uncertain onsets, and the posterior an
examiner reads from it (issue 14, the library half of ``pipeline.date``).

References here are brute force and do not share the code under test: each onset's posterior
against its definition (gap length times the trusted images' present/absent ratios after it), the
time likelihood against an average over onset times drawn on a fine grid inside every gap with
that posterior's weights, the posterior's ranges and likelihood ratios against closed forms of
step likelihoods.
"""

import numpy as np
import pytest

from baselines.fridrich_goljan import FridrichGoljanClassifier
from pipeline.dating.posterior import time_grid, time_posterior


def _fitted(seed=4, n=200, onsets=(25.0, 40.0, 60.0, 75.0, 90.0), amplitude=8.0):
    rng = np.random.default_rng(seed)
    time = np.sort(rng.uniform(0, 100, n))
    y = (time >= 50).astype(int)
    onsets = np.asarray(onsets)
    X = rng.normal(size=(n, onsets.size)) + amplitude * (time[:, None] >= onsets)
    train = np.arange(0, n, 2)
    fg = FridrichGoljanClassifier().fit(X[train], y[train], time=time[train])
    test = np.arange(1, n, 2)
    return fg, X[test], time[test], time[train], X[train]


def _onset_weights(fg, trusted_X, trusted_time, j):
    """Brute force: P(onset of defect j in the gap before each distinct trusted time), from the
    definition — uniform prior in time, likelihood of "present from that gap on" = product over
    the trusted images at or after it of their present/absent likelihood ratio."""
    lam = fg.defect_log_likelihood_ratios(trusted_X)[:, j]
    knots = np.unique(trusted_time)
    log_w = np.array([np.log(knots[q] - knots[q - 1]) + lam[trusted_time >= knots[q]].sum()
                      for q in range(1, knots.size)])
    w = np.exp(log_w - log_w.max())
    return knots, w / w.sum()


def test_the_onset_posterior_follows_its_definition_and_holds_the_change_point():
    fg, _, _, trusted, trusted_X = _fitted()
    informative = np.flatnonzero(np.isfinite(fg.onset_time_))
    assert informative.size == 5
    for j in informative:
        knots, weights = _onset_weights(fg, trusted_X, trusted, j)
        np.testing.assert_allclose(fg.onset_knots_, knots)
        np.testing.assert_allclose(fg.onset_cdf_[j], np.r_[0.0, np.cumsum(weights)], atol=1e-9)
        # an 8σ step: the gap around the GLR's onset holds most of the mass, and the reported
        # bounds are trusted images around it
        q = int(np.searchsorted(knots, fg.onset_time_[j]))
        assert weights[q - 1] > 0.8
        lo, hi = fg.onset_bounds_[j]
        assert lo in trusted and hi in trusted and lo < fg.onset_time_[j] < hi
    # a weak step spreads its onset over several gaps, and the bounds say so
    weak, _, _, weak_trusted, weak_X = _fitted(amplitude=1.2, onsets=(50.0,))
    assert np.isfinite(weak.onset_time_[0])  # a 1.2σ step over 100 images passes the onset test
    _, weights = _onset_weights(weak, weak_X, weak_trusted, 0)
    assert weights.max() < 0.8
    lo, hi = weak.onset_bounds_[0]
    assert np.sum((weak_trusted > lo) & (weak_trusted < hi)) >= 2


def test_time_likelihood_averages_over_onsets_drawn_from_their_posterior():
    fg, X, _, trusted, trusted_X = _fitted(amplitude=3.0)
    lam = fg.defect_log_likelihood_ratios(X[:4])
    informative = np.flatnonzero(np.isfinite(fg.onset_time_))
    times = np.linspace(0, 100, 21)
    got = fg.time_log_likelihood(X[:4], times)
    # brute force: each defect's onset on a fine grid inside every gap, weighted by its gap's
    # posterior; the joint average over the defects whose onset is uncertain at t
    draws = {}
    for j in informative:
        knots, weights = _onset_weights(fg, trusted_X, trusted, j)
        points = [(lo + (hi - lo) * (np.arange(400) + 0.5) / 400, np.full(400, w / 400))
                  for lo, hi, w in zip(knots[:-1], knots[1:], weights) if w > 1e-12]
        draws[j] = (np.concatenate([p for p, _ in points]), np.concatenate([w for _, w in points]))
    for i in range(4):
        for t_index, t in enumerate(times):
            total = 0.0
            for j in informative:
                onset, weight = draws[j]
                p_before = weight[onset < t].sum()
                total += np.log(p_before * np.exp(lam[i, j]) + (1 - p_before))
            assert got[i, t_index] == pytest.approx(total, abs=0.01), (i, t)


def test_a_model_saved_before_the_onset_posterior_uses_its_gap():
    # models saved without onset_cdf_ take the onset as uniform in its bounds: outside every gap
    # the time likelihood is then the interval likelihood of point onsets
    fg, X, _, _, _ = _fitted()
    params = fg.to_params()
    del params["onset_cdf_"], params["onset_knots_"]
    old = FridrichGoljanClassifier.from_params(params)
    edges = old.interval_edges_
    gaps = old.onset_bounds_[np.isfinite(old.onset_time_)]
    times = np.array([t for t in np.linspace(0.5, 99.5, 60) if not np.any((gaps[:, 0] <= t) & (t <= gaps[:, 1]))])
    assert times.size > 20
    by_time = old.time_log_likelihood(X, times)
    by_interval = old.interval_log_likelihood(X)[:, np.searchsorted(edges, times, side="right")]
    np.testing.assert_allclose(by_time, by_interval, atol=1e-9)


def test_unknown_exposure_is_averaged_over_the_trusted_conditions():
    rng = np.random.default_rng(7)
    n = 160
    time = np.sort(rng.uniform(0, 100, n))
    tau = rng.uniform(0.01, 0.1, n)
    X = rng.normal(size=(n, 3)) + 120 * tau[:, None] * (time[:, None] >= np.array([30.0, 50.0, 70.0]))
    fg = FridrichGoljanClassifier().fit(X, (time >= 50).astype(int), exposure=tau, time=time)
    times = np.linspace(0, 100, 11)
    unknown = fg.time_log_likelihood(X[:3], times, exposure=np.full(3, np.nan))
    per_condition = np.stack([fg.time_log_likelihood(X[:3], times, exposure=np.full(3, t_s))
                              for t_s, _ in fg.condition_samples_])
    expected = np.log(np.mean(np.exp(per_condition), axis=0))
    np.testing.assert_allclose(unknown, expected, atol=1e-9)
    with pytest.raises(ValueError, match="exposure"):
        fg.time_log_likelihood(X[:3], times)


def test_saved_models_without_bounds_load_with_point_onsets():
    fg, X, _, _, _ = _fitted()
    params = fg.to_params()
    np.testing.assert_allclose(FridrichGoljanClassifier.from_params(params).onset_bounds_, fg.onset_bounds_)
    del params["onset_bounds_"]
    old = FridrichGoljanClassifier.from_params(params)
    np.testing.assert_array_equal(old.onset_bounds_[:, 0], old.onset_bounds_[:, 1])


def test_credible_range_and_before_after_ratio_of_a_step_likelihood():
    grid = time_grid(0.0, 10.0, points=10001)
    # likely on [2, 6): the posterior is uniform there under a uniform prior
    ll = np.where((grid >= 2) & (grid < 6), 0.0, -60.0)
    post = time_posterior(ll, grid)
    lo, hi = post.credible_range(0.95)
    assert lo == pytest.approx(2 + 0.025 * 4, abs=2e-3) and hi == pytest.approx(2 + 0.975 * 4, abs=2e-3)
    assert post.probability_before(4.0) == pytest.approx(0.5, abs=1e-3)
    # before 4: mean likelihood 2/4; after 4: 2/6 -> LR 1.5, whatever the prior's split
    assert post.log10_lr_before(4.0) == pytest.approx(np.log10(1.5), abs=2e-3)
    # before 8: 4/8 vs after: ~0 -> a huge LR; before 1: ~0
    assert post.log10_lr_before(8.0) > 20 and post.log10_lr_before(1.0) < -20
    np.testing.assert_allclose(post.interval_probabilities([2.0, 6.0]), [0, 1, 0], atol=2e-3)


def test_a_prior_moves_the_posterior_but_not_the_likelihood_ratio():
    grid = time_grid(0.0, 10.0, points=4001)
    ll = -0.5 * ((grid - 5.0) / 1.5) ** 2
    flat = time_posterior(ll, grid)
    # a prior that puts 3 times the density after 5 and is uniform on each side of it
    late = time_posterior(ll, grid, prior=np.where(grid > 5, 3.0, 1.0))
    assert late.probability_before(5.0) < flat.probability_before(5.0)
    # equal up to the one grid step (0.0025) over which the discretised prior climbs from 1 to 3
    assert late.log10_lr_before(5.0) == pytest.approx(flat.log10_lr_before(5.0), abs=1e-3)
    assert flat.probability_before(5.0) == pytest.approx(0.5, abs=1e-3)


def test_grid_keeps_every_onset_bound_and_refuses_bad_input():
    bounds = np.array([[1.234, 1.5], [np.inf, np.inf], [-5.0, 0.5]])
    grid = time_grid(0.0, 10.0, bounds, points=11)
    assert {1.234, 1.5, 0.5} <= set(grid) and grid[0] == 0 and grid[-1] == 10
    with pytest.raises(ValueError, match="period"):
        time_grid(3.0, 3.0)
    with pytest.raises(ValueError, match="finite"):
        time_posterior(np.full(grid.size, np.nan), grid)
    with pytest.raises(ValueError, match="no mass"):
        time_posterior(np.zeros(grid.size), grid, prior=np.zeros(grid.size))


def test_dating_an_image_from_its_defects_covers_its_time():
    """End to end on the fitted model: the 95 % range of held-out images covers their true time
    in (about) 95 % of cases; a constant answer (the whole period's middle 95 %) is far wider."""
    fg, X, time, trusted, _ = _fitted(n=400)
    grid = time_grid(trusted.min(), trusted.max(), fg.onset_bounds_, points=1001)
    ll = fg.time_log_likelihood(X, grid)
    inside = (time >= trusted.min()) & (time <= trusted.max())
    ranges = np.array([time_posterior(ll[i], grid).credible_range(0.95) for i in np.flatnonzero(inside)])
    covered = (ranges[:, 0] <= time[inside]) & (time[inside] <= ranges[:, 1])
    assert covered.mean() >= 0.9
    assert np.median(ranges[:, 1] - ranges[:, 0]) < 0.3 * (trusted.max() - trusted.min())
