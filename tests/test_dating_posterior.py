"""The capture-time likelihood of Fridrich–Goljan with uncertain onsets, and the posterior an
examiner reads from it (issue 14, the library half of ``pipeline.date``).

References here are brute force and do not share the code under test: the time likelihood is
checked against an average over onset times drawn on a fine grid inside each onset's gap, the
posterior's ranges and likelihood ratios against closed forms of step likelihoods.
"""

import itertools

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
    return fg, X[test], time[test], time[train]


def test_onset_bounds_are_the_trusted_images_around_each_onset():
    fg, _, _, trusted = _fitted()
    lo, hi = fg.onset_bounds_.T
    for j in np.flatnonzero(np.isfinite(fg.onset_time_)):
        assert lo[j] in trusted and hi[j] in trusted
        assert lo[j] < fg.onset_time_[j] < hi[j]
        assert not np.any((trusted > lo[j]) & (trusted < hi[j]))  # consecutive trusted images


def test_time_likelihood_equals_an_average_over_onsets_in_their_gaps():
    fg, X, _, _ = _fitted()
    lam = fg.defect_log_likelihood_ratios(X[:6])
    informative = np.flatnonzero(np.isfinite(fg.onset_time_))
    lo, hi = fg.onset_bounds_[informative].T
    times = np.linspace(0, 100, 41)
    got = fg.time_log_likelihood(X[:6], times)
    # brute force: every combination of onset times on a 25-point grid inside each gap (the two
    # gaps that matter at a given time), averaged; defects whose gap is elsewhere are 0 or 1
    for i in range(6):
        for t_index, t in enumerate(times):
            inside = [j for j in range(informative.size) if lo[j] < t < hi[j]]
            fixed = sum(lam[i, informative[j]] for j in range(informative.size) if t >= hi[j])
            if not inside:
                expected = fixed
            else:
                grids = [np.linspace(lo[j], hi[j], 25) for j in inside]
                values = [sum(lam[i, informative[j]] for j, onset in zip(inside, combo) if onset < t)
                          for combo in itertools.product(*grids)]
                expected = fixed + np.log(np.mean(np.exp(values)))
            assert got[i, t_index] == pytest.approx(expected, abs=0.15), (i, t)


def test_outside_every_gap_the_time_likelihood_is_the_interval_likelihood():
    fg, X, time, _ = _fitted()
    edges = fg.interval_edges_
    gaps = fg.onset_bounds_[np.isfinite(fg.onset_time_)]
    times = np.array([t for t in np.linspace(0.5, 99.5, 60) if not np.any((gaps[:, 0] <= t) & (t <= gaps[:, 1]))])
    by_time = fg.time_log_likelihood(X, times)
    by_interval = fg.interval_log_likelihood(X)[:, np.searchsorted(edges, times, side="right")]
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
    fg, X, _, _ = _fitted()
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
    fg, X, time, trusted = _fitted(n=400)
    grid = time_grid(trusted.min(), trusted.max(), fg.onset_bounds_, points=1001)
    ll = fg.time_log_likelihood(X, grid)
    inside = (time >= trusted.min()) & (time <= trusted.max())
    ranges = np.array([time_posterior(ll[i], grid).credible_range(0.95) for i in np.flatnonzero(inside)])
    covered = (ranges[:, 0] <= time[inside]) & (time[inside] <= ranges[:, 1])
    assert covered.mean() >= 0.9
    assert np.median(ranges[:, 1] - ranges[:, 0]) < 0.3 * (trusted.max() - trusted.min())
