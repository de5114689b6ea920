"""The posterior over an image's capture time, and what an examiner reads from it.

A device model gives, for a questioned image, the log-likelihood of each capture time ``t``
(:meth:`baselines.fridrich_goljan.FridrichGoljanClassifier.time_log_likelihood`: each defect is
present with the probability that its onset came before ``t``). With a prior over the period the
trusted images span (uniform in time unless given), the posterior density is

    p(t | w) ∝ p(w | t) · p(t)

on a grid fine enough to resolve every onset's gap (:func:`time_grid`). From it:

* the most probable interval between consecutive onsets (Fridrich & Goljan's own unit of
  dating, the resolution the defects really give);
* an equal-tailed credible range (95 % by default);
* the likelihood ratio of "taken before D" against "taken after D": the ratio of the mean
  likelihood on each side of ``D`` under the prior restricted to that side, which does not
  depend on how the prior splits its mass between the two sides.

Times are numbers on one axis (days since 1970 in the dating command); nothing here knows
about calendars.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TimePosterior", "time_grid", "time_posterior"]


def time_grid(start: float, end: float, onset_bounds=None, *, points: int = 2001) -> np.ndarray:
    """Times on which to evaluate the posterior: an even grid over ``[start, end]`` plus every
    finite onset bound inside it, so that no onset's gap falls between two grid points.

    Parameters
    ----------
    start, end : float
        The period (``end > start``).
    onset_bounds : array-like, optional
        Times that must be grid points (any shape, flattened): the onset bounds
        (:attr:`~baselines.fridrich_goljan.FridrichGoljanClassifier.onset_bounds_`) and the
        trusted times at which an onset's posterior CDF bends.
    points : int, default 2001
        Points of the even grid.

    Returns
    -------
    ndarray
        Sorted, unique times.
    """
    if not (np.isfinite(start) and np.isfinite(end) and end > start):
        raise ValueError(f"the period must be finite with end > start, got [{start}, {end}]")
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    grid = np.linspace(start, end, int(points))
    if onset_bounds is not None:
        bounds = np.asarray(onset_bounds, dtype=float).reshape(-1)
        bounds = bounds[np.isfinite(bounds) & (bounds > start) & (bounds < end)]
        grid = np.union1d(grid, bounds)
    return grid


def _trapezoid_cdf(grid: np.ndarray, density: np.ndarray) -> np.ndarray:
    steps = 0.5 * (density[1:] + density[:-1]) * np.diff(grid)
    return np.concatenate([[0.0], np.cumsum(steps)])


@dataclass(frozen=True)
class TimePosterior:
    """A posterior density over capture time on a grid (piecewise linear between grid points).

    Attributes
    ----------
    grid : ndarray
        Times, sorted.
    density : ndarray
        Posterior density at each grid time (integrates to 1 over the grid).
    likelihood : ndarray
        ``p(w | t)`` at each grid time, up to a constant factor.
    prior : ndarray
        Prior density at each grid time (integrates to 1).
    """

    grid: np.ndarray
    density: np.ndarray
    likelihood: np.ndarray
    prior: np.ndarray

    @property
    def cdf(self) -> np.ndarray:
        """``P(T ≤ t | w)`` at each grid time."""
        return _trapezoid_cdf(self.grid, self.density)

    def probability_before(self, time: float) -> float:
        """``P(T < time | w)``."""
        return float(np.interp(time, self.grid, self.cdf, left=0.0, right=1.0))

    def quantile(self, q) -> np.ndarray:
        """Times below which the posterior has mass ``q`` (array-like in [0, 1])."""
        cdf = self.cdf
        q = np.asarray(q, dtype=float)
        if np.any((q < 0) | (q > 1)):
            raise ValueError("quantiles must lie in [0, 1]")
        keep = np.concatenate([[True], np.diff(cdf) > 0])  # a flat stretch has no inverse: skip it
        return np.interp(q, cdf[keep], self.grid[keep])

    def credible_range(self, level: float = 0.95) -> tuple[float, float]:
        """The equal-tailed credible range: ``(1 − level)/2`` of the mass on each side outside it."""
        if not 0 < level < 1:
            raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
        lo, hi = self.quantile([(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    def interval_probabilities(self, edges) -> np.ndarray:
        """Posterior mass of each interval between consecutive ``edges`` (and before the first and
        after the last, within the grid): ``len(edges) + 1`` values summing to 1."""
        edges = np.sort(np.asarray(edges, dtype=float).reshape(-1))
        below = np.array([self.probability_before(e) for e in edges])
        return np.diff(np.concatenate([[0.0], below, [1.0]]))

    def log10_lr_before(self, time: float) -> float:
        """log10 of the likelihood ratio "taken before ``time``" vs "taken at or after it".

        Each proposition's likelihood is the mean of ``p(w | t)`` over its side of ``time`` under
        the prior restricted to that side. ``±inf`` when one side has no prior mass.
        """
        prior_cdf = _trapezoid_cdf(self.grid, self.prior)
        joint_cdf = _trapezoid_cdf(self.grid, self.prior * self.likelihood)
        p_before = float(np.interp(time, self.grid, prior_cdf, left=0.0, right=1.0))
        j_before = float(np.interp(time, self.grid, joint_cdf, left=0.0, right=joint_cdf[-1]))
        j_after = joint_cdf[-1] - j_before
        if p_before <= 0:
            return -np.inf
        if p_before >= 1:
            return np.inf
        with np.errstate(divide="ignore"):
            return float(np.log10(j_before / p_before) - np.log10(j_after / (1 - p_before)))


def time_posterior(log_likelihood, grid, prior=None) -> TimePosterior:
    """The posterior over capture time from one image's log-likelihood on a grid.

    Parameters
    ----------
    log_likelihood : array-like of shape (n_grid,)
        ``log p(w | t)`` at each grid time, up to a constant.
    grid : array-like of shape (n_grid,)
        Sorted times (:func:`time_grid`).
    prior : array-like of shape (n_grid,), optional
        Prior density (any positive scale; normalised here). Default: uniform over the grid.

    Returns
    -------
    TimePosterior
    """
    grid = np.asarray(grid, dtype=float)
    ll = np.asarray(log_likelihood, dtype=float)
    if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) <= 0):
        raise ValueError("grid must be at least two strictly increasing times")
    if ll.shape != grid.shape or not np.all(np.isfinite(ll)):
        raise ValueError(f"log_likelihood must be {grid.shape} finite values, one per grid time")
    prior = np.ones_like(grid) if prior is None else np.asarray(prior, dtype=float)
    if prior.shape != grid.shape or np.any(prior < 0) or not np.all(np.isfinite(prior)):
        raise ValueError("prior must be non-negative finite densities, one per grid time")
    mass = _trapezoid_cdf(grid, prior)[-1]
    if not mass > 0:
        raise ValueError("the prior has no mass on the grid")
    prior = prior / mass
    likelihood = np.exp(ll - ll.max())
    joint = likelihood * prior
    total = _trapezoid_cdf(grid, joint)[-1]
    if not total > 0:
        raise ValueError("the prior gives no mass where the image is possible")
    return TimePosterior(grid, joint / total, likelihood, prior)

