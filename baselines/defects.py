"""Identify in-field defects, and their onsets, from trusted scene images of one device.

Only defects whose onset falls *inside* the trusted period carry age information (Jöchl & Uhl,
ICIP 2021): a defect present from the first trusted image, or never present, cannot tell an
older image from a newer one. The identification therefore

1. screens pixels with per-pixel residual statistics accumulated over contiguous,
   time-ordered blocks of trusted images: a candidate's residual is high in a later part and
   not in an earlier one. The pipeline uses the rise of the *rate of exceedances*
   ``W > k·σ`` (:meth:`DefectIdentifier.screen_counts`, from per-image sparse records of
   :func:`kernels.exceedances`, so that every split run screens its own training images
   without decoding them again). This is robust to what defeats a test of the block *means*
   (:func:`kernels.block_candidates`, a Welch statistic, also available through
   :meth:`DefectIdentifier.candidates`): the JPEG residual of a defect swings widely with the
   background's brightness (gamma), which inflates the variance the Welch statistic divides by;
2. locates each candidate's onset in the time-ordered series of its residuals with the
   Fridrich–Goljan generalised likelihood-ratio test (:func:`kernels.onset_changepoints`), and
   keeps it when the ratio beats a threshold set by a false-alarm probability. In this test a
   residual counts at most ``clip_z`` noise levels: a single image with a thin bright
   structure at the pixel (residual 20σ where the local MAD is small) would otherwise pass
   for a hot pixel on its own, all the more when its exposure is long. ``D`` and ``c`` are
   then estimated by weighted least squares against exposure time on the *unclipped*
   residuals after the onset (:func:`baselines.fridrich_goljan.fit_presence`);
3. confirms each onset with a distribution-free test: the one-sided Mann–Whitney p-value of
   the standardised residuals after the onset against those before it, which must not exceed
   ``onset_false_alarm`` divided by the number of possible onsets (a Bonferroni bound, valid
   for any onset the GLR picked). The GLR's own bound assumes Gaussian residuals; JPEG
   residuals are integer-valued, tied and heavy-tailed, and ranks make the false-alarm level
   hold whatever their distribution (:func:`rank_shift_pvalue`). The p-value is the normal
   approximation (midranks, tie-corrected variance: :func:`rank_shift_z`) when both parts have
   more than ``EXACT_RANK_MAX`` images, and the exact null distribution otherwise (ties broken
   against the alternative, so that it stays valid for tied JPEG and raw residuals): in the far
   tail the normal approximation is poor for a small part (five clean images before an onset
   and 59 after it, perfectly separated, have p = 1/C(64, 5) ≈ 1.3e-7, where the
   approximation says 1.1e-4), and it made every onset among the first or last six or so
   trusted images fail, which is where dating in calendar time needs them;
4. keeps only onsets with enough trusted images on both sides, and defects whose mean rise
   after the onset is at least ``min_snr`` times their healthy noise level;
5. on demosaiced images, merges the spread of one sensor defect into one defect: bilinear
   demosaicing turns one hot photosite into a small multi-channel spot, and JPEG's 8×8 DCT
   rings it further, so the strongest response claims every weaker one within
   ``spread_radius`` pixels, over all channels.

No file I/O happens here: the pipeline feeds the accumulators and residual series.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import warnings

import numpy as np
from scipy.stats import mannwhitneyu, norm, rankdata

import kernels
from baselines.fridrich_goljan import fit_presence

__all__ = ["DefectTable", "DefectIdentifier", "merge_colour_spread", "exceedance_scores",
           "exceedance_scores_from_counts", "rank_shift_z", "rank_shift_pvalue", "EXACT_RANK_MAX"]

#: smaller part (images) up to which the rank test's p-value is exact (:func:`rank_shift_pvalue`)
EXACT_RANK_MAX = 12


def rank_shift_z(z: np.ndarray, onset: np.ndarray) -> np.ndarray:
    """Mann–Whitney z statistic of each series after its onset against before it.

    Parameters
    ----------
    z : ndarray, shape (n_series, n_images)
        Standardised residuals in time order; NaN (unmeasured) entries are replaced by the
        series' median, which can only pull the statistic towards "no change".
    onset : ndarray of int, shape (n_series,)
        Index of the first image of the "after" part.

    Returns
    -------
    ndarray, shape (n_series,)
        ``(U - n_a n_b / 2) / sd(U)`` with midranks and the tie-corrected variance; 0 where a
        part is empty or all values are tied.
    """
    z = np.asarray(z, dtype=np.float64)
    m, n = z.shape
    med = np.nanmedian(np.where(np.isfinite(z), z, np.nan), axis=1, keepdims=True)
    z = np.where(np.isfinite(z), z, np.where(np.isfinite(med), med, 0.0))
    ranks = rankdata(z, axis=1)
    after = np.arange(n)[None, :] >= np.asarray(onset)[:, None]
    n_a = after.sum(1).astype(np.float64)
    n_b = n - n_a
    u = (ranks * after).sum(1) - n_a * (n_a + 1) / 2
    ties = np.zeros(m)
    sorted_z = np.sort(z, axis=1)
    for i in range(m):
        _, counts = np.unique(sorted_z[i], return_counts=True)
        ties[i] = np.sum(counts ** 3 - counts)
    var = n_a * n_b / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (u - n_a * n_b / 2) / np.sqrt(var)
    return np.where((n_a > 0) & (n_b > 0) & (var > 0), out, 0.0)


def rank_shift_pvalue(z: np.ndarray, onset: np.ndarray, *, exact_max: int | None = None) -> np.ndarray:
    """One-sided Mann–Whitney p-value of "after the onset is larger than before it", per series.

    Parameters
    ----------
    z, onset
        As in :func:`rank_shift_z` (NaN entries replaced by the series' median).
    exact_max : int, optional
        Series whose smaller part has at most this many images get the exact p-value
        (``scipy.stats.mannwhitneyu(method="exact")``); the others the normal approximation of
        :func:`rank_shift_z`. Default :data:`EXACT_RANK_MAX`.

    Returns
    -------
    ndarray, shape (n_series,)
        p-values; 1 where a part is empty or every value is tied. Exact ones break ties against
        the alternative (an 'after' value ranks below an equal 'before' one) before taking the
        untied exact distribution: scipy's exact distribution is that of untied data, and with
        midranks it can understate the p-value (before [0, 0] against after [0, 1]: 1/3 where the
        permutation p-value is 1/2); broken this way it is 2/3, never below the permutation one.
    """
    exact_max = EXACT_RANK_MAX if exact_max is None else int(exact_max)
    z = np.asarray(z, dtype=np.float64)
    onset = np.asarray(onset, dtype=np.int64)
    m, n = z.shape
    p = norm.sf(rank_shift_z(z, onset))
    n_after = n - np.clip(onset, 0, n)
    small = np.flatnonzero((np.minimum(n_after, n - n_after) <= exact_max) & (n_after > 0) & (n_after < n))
    if small.size:
        med = np.nanmedian(np.where(np.isfinite(z[small]), z[small], np.nan), axis=1, keepdims=True)
        filled = np.where(np.isfinite(z[small]), z[small], np.where(np.isfinite(med), med, 0.0))
        for row, i in zip(filled, small):
            if np.all(row == row[0]):
                p[i] = 1.0
                continue
            # ties broken against "after is larger" (an 'after' value ranks below an equal 'before'
            # one): the statistic can only fall, and with distinct ranks its exact null distribution
            # is the untied one, so the p-value is valid, conservative where values tie
            after = np.arange(row.size) >= onset[i]
            ranks = np.empty(row.size)
            ranks[np.lexsort((~after, row))] = np.arange(row.size)
            p[i] = mannwhitneyu(ranks[after], ranks[~after], alternative="greater", method="exact").pvalue
    return np.where((n_after > 0) & (n_after < n), p, 1.0)


def exceedance_scores(blocks) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel score of a rise in the rate of exceedances between earlier and later blocks.

    Parameters
    ----------
    blocks : sequence of kernels.PixelStats
        Time-ordered accumulators, all built with ``exceed_k``.

    Returns
    -------
    score, split : ndarray
        See :func:`exceedance_scores_from_counts`.
    """
    if any(b.exceed is None for b in blocks):
        raise ValueError("exceedance scores need accumulators built with exceed_k")
    return exceedance_scores_from_counts(np.stack([b.exceed for b in blocks]), np.stack([b.count for b in blocks]))


def exceedance_scores_from_counts(exceed, count) -> tuple[np.ndarray, np.ndarray]:
    """Per-element score of a rise in the exceedance rate, from per-block counts.

    For every split ``b`` of the time-ordered blocks into ``[0, b)`` and ``[b, B)``, the
    two-proportion z statistic of the exceedance rates (after minus before, pooled rate with a
    half-count continuity correction so that an element with no exceedance at all scores 0);
    the score is the best split's.

    Parameters
    ----------
    exceed : array_like, shape (B, ...)
        Number of images of each block in which the element's residual exceeded ``k·σ``.
    count : array_like, shape (B, ...)
        Number of images of each block in which the element was measured (not clipped).

    Returns
    -------
    score : ndarray of float32, shape (...)
        Best z per element (``-inf`` where no split has images on both sides).
    split : ndarray of int, shape (...)
        First block of the "after" part at the best split (-1 where none).
    """
    x = np.asarray(exceed, dtype=np.float32)
    n = np.asarray(count, dtype=np.float32)
    if x.shape != n.shape or x.ndim < 1:
        raise ValueError(f"exceed and count must have the same (B, ...) shape, got {x.shape} and {n.shape}")
    if np.any(x > n) or np.any(n < 0) or np.any(x < 0):
        raise ValueError("exceedance counts must lie between 0 and the block's measured count")
    x_cum, n_cum = np.cumsum(x, axis=0), np.cumsum(n, axis=0)
    x_tot, n_tot = x_cum[-1], n_cum[-1]
    pooled = (x_tot + 0.5) / (n_tot + 1.0)
    spread = pooled * (1 - pooled)
    best = np.full(x.shape[1:], -np.inf, dtype=np.float32)
    split = np.full(x.shape[1:], -1, dtype=np.int64)
    for b in range(1, x.shape[0]):
        n_before, n_after = n_cum[b - 1], n_tot - n_cum[b - 1]
        ok = (n_before > 0) & (n_after > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate_before = x_cum[b - 1] / n_before
            rate_after = (x_tot - x_cum[b - 1]) / n_after
            z = (rate_after - rate_before) / np.sqrt(spread * (1 / n_before + 1 / n_after))
        z = np.where(ok & np.isfinite(z), z, -np.inf).astype(np.float32)
        better = z > best
        best[better], split[better] = z[better], b
    return best, split


@dataclass
class DefectTable:
    """Identified defects, one entry per defect (arrays of equal length).

    Attributes
    ----------
    rows, cols : ndarray of int
        Sensor position.
    channels : ndarray of int
        Colour channel of the strongest response for demosaiced images; the CFA colour
        (0 R, 1 G, 2 B) or -1 when unknown for RAW mosaics.
    onset_index : ndarray of int
        Index, in the time-ordered trusted images, of the first image showing the defect.
    dark_current, offset : ndarray of float
        ``D`` (residual units per second) and ``c`` (residual units) after the onset.
    llr : ndarray of float
        Log-likelihood ratio of the onset against "never present".
    spread : ndarray of int
        How many candidate responses (pixels × channels) were merged into this defect.
    """

    rows: np.ndarray
    cols: np.ndarray
    channels: np.ndarray
    onset_index: np.ndarray
    dark_current: np.ndarray
    offset: np.ndarray
    llr: np.ndarray
    spread: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def as_dict(self) -> dict:
        """Column name → list, for CSV/JSON output."""
        return {f.name: np.asarray(getattr(self, f.name)).tolist() for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "DefectTable":
        """Inverse of :meth:`as_dict`."""
        ints = {"rows", "cols", "channels", "onset_index", "spread"}
        return cls(**{f.name: np.asarray(data[f.name], dtype=np.int64 if f.name in ints else np.float64)
                      for f in fields(cls)})

    def take(self, index) -> "DefectTable":
        """A table with the selected entries."""
        return DefectTable(**{f.name: np.asarray(getattr(self, f.name))[index] for f in fields(self)})


class DefectIdentifier:
    """Find defects with an onset inside the trusted period of one device.

    Parameters
    ----------
    candidate_false_alarm : float, default 1e-4
        Per-pixel probability that a healthy pixel passes the screening of step 1 (the
        screening only has to be sensitive; the onset test decides).
    onset_false_alarm : float, default 1e-3
        Probability that a candidate with no change at all passes the onset test
        (:func:`kernels.llr_threshold`: a Bonferroni bound over the possible onsets).
    min_images_before, min_images_after : int, default 3
        Trusted images required before and from the onset: an onset at the very start (the
        defect was there all along) or at the very end (nothing to confirm it) carries no age
        information and is rejected.
    clip_z : float, default 4.0
        Largest standardised residual one image contributes to the onset test (Huber-like);
        each image then adds at most clip_z²/2 = 8 to the log-likelihood ratio, so at least two
        images must agree before the default threshold (about 11.6 for 108 images) is passed.
    min_snr : float, default 1.5
        Minimum mean rise of the residual after the onset (``mean(τ·D + c)``), in units of the
        candidate's healthy noise level (median local σ before the onset). The onset test's
        false-alarm bound assumes Gaussian residuals; JPEG residuals are integer-valued and
        heavy-tailed, and on the synthetic camera shifts of about one noise level passed the
        test far more often than the bound allows while carrying almost no evidence per image.
    spread_radius : int, default 5
        Chebyshev radius within which responses of demosaiced images are merged into one
        defect (bilinear demosaicing spreads a defect ±1 pixel; JPEG rings it over its block).
    max_candidates : int, default 50000
        Upper bound on screened candidates (the strongest are kept), bounding the sparse pass.

    Examples
    --------
    The residuals of three screened candidates in 40 time-ordered trusted images; the second
    becomes a stuck pixel (a constant rise of 12) from image 25 on:

    >>> import numpy as np
    >>> from baselines import DefectIdentifier
    >>> rng = np.random.default_rng(0)
    >>> sigma = np.full((40, 3), 2.0)                   # local noise level of each residual
    >>> residuals = sigma * rng.normal(size=(40, 3))
    >>> residuals[25:, 1] += 12.0
    >>> rows, cols, channels = np.array([10, 20, 30]), np.array([5, 6, 7]), np.zeros(3, dtype=int)
    >>> table = DefectIdentifier().identify(residuals, sigma, None, rows, cols, channels, demosaiced=False)
    >>> len(table), table.rows, table.cols, table.onset_index
    (1, array([20]), array([6]), array([25]))
    >>> bool(abs(table.offset[0] - 12.0) < 1.0)         # c, estimated after the onset
    True
    """

    def __init__(self, candidate_false_alarm: float = 1e-4, onset_false_alarm: float = 1e-3,
                 min_images_before: int = 3, min_images_after: int = 3, clip_z: float = 4.0, min_snr: float = 1.5,
                 spread_radius: int = 5, max_candidates: int = 50000):
        self.candidate_false_alarm = candidate_false_alarm
        self.onset_false_alarm = onset_false_alarm
        self.min_images_before = min_images_before
        self.min_images_after = min_images_after
        self.clip_z = clip_z
        self.min_snr = min_snr
        self.spread_radius = spread_radius
        self.max_candidates = max_candidates

    def candidates(self, block_stats):
        """Screen pixels from time-ordered block accumulators.

        Parameters
        ----------
        block_stats : sequence of kernels.PixelStats
            One accumulator per contiguous time block of trusted images, oldest first.

        Returns
        -------
        rows, cols, channels : ndarray of int
            Candidate positions (``channels`` is 0 for 2-D images), strongest first,
            at most ``max_candidates``.
        """
        if len(block_stats) < 2:
            raise ValueError("screening needs at least two time blocks of trusted images")
        by_mean = kernels.block_candidates(block_stats, false_alarm=self.candidate_false_alarm)
        threshold = kernels.score_threshold(self.candidate_false_alarm, len(block_stats))
        z, _ = exceedance_scores(block_stats)
        z = z.reshape(z.shape if z.ndim == 3 else z.shape + (1,))
        r, c, ch = np.nonzero(z >= threshold)
        rows = np.concatenate([by_mean.rows, r])
        cols = np.concatenate([by_mean.cols, c])
        chans = np.concatenate([by_mean.channels, ch])
        score = np.concatenate([by_mean.score, z[r, c, ch]])
        # one entry per position, with its better score
        order = np.argsort(-score, kind="stable")
        _, first = np.unique(np.stack([rows[order], cols[order], chans[order]]), axis=1, return_index=True)
        keep = order[np.sort(first)][: self.max_candidates]
        return rows[keep].astype(np.int64), cols[keep].astype(np.int64), chans[keep].astype(np.int64)

    def screen_counts(self, exceed, count) -> tuple[np.ndarray, np.ndarray]:
        """Screen elements by the rise of their exceedance rate over time-ordered blocks.

        The same rule as the exceedance half of :meth:`candidates`, from per-block counts
        (for example summed from per-image records of :func:`kernels.exceedances`), so that
        it can run over a frame in strips.

        Parameters
        ----------
        exceed, count : array_like, shape (B, n)
            Per block and element: images in which the residual exceeded ``k·σ``, and
            images in which the element was measured.

        Returns
        -------
        index : ndarray of int
            Elements (0..n-1) whose score reaches the threshold of ``candidate_false_alarm``.
        score : ndarray of float32
            Their scores.
        """
        exceed, count = np.asarray(exceed), np.asarray(count)
        if exceed.ndim != 2 or exceed.shape[0] < 2:
            raise ValueError("screening needs (B, n) counts of at least two time blocks of trusted images")
        if count.shape != exceed.shape:
            raise ValueError(f"exceed and count must have the same (B, n) shape, got {exceed.shape} and {count.shape}")
        if np.any(count < 0):
            raise ValueError("exceedance counts must lie between 0 and the block's measured count")
        # an element that never exceeded scores 0 (or -inf), below any threshold: score only the others
        active = np.flatnonzero(exceed.any(axis=0))
        z, _ = exceedance_scores_from_counts(exceed[:, active], count[:, active])
        keep = z >= kernels.score_threshold(self.candidate_false_alarm, exceed.shape[0])
        return active[keep], z[keep]

    def strongest(self, index, score, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions of screened elements, strongest first, at most ``max_candidates``.

        Parameters
        ----------
        index : array_like of int
            Flat indices into an array of ``shape`` (H×W or H×W×C).
        score : array_like
            Their screening scores.
        shape : tuple
            Frame shape.

        Returns
        -------
        rows, cols, channels : ndarray of int64
        """
        index = np.asarray(index, dtype=np.int64)
        order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")[: self.max_candidates]
        full = tuple(shape) if len(shape) == 3 else tuple(shape) + (1,)
        rows, cols, chans = np.unravel_index(index[order], full)
        return rows.astype(np.int64), cols.astype(np.int64), chans.astype(np.int64)

    def identify(self, residuals, sigma, exposure, rows, cols, channels, *, demosaiced: bool) -> DefectTable:
        """Locate onsets and keep the defects that appear inside the trusted period.

        Parameters
        ----------
        residuals : ndarray, shape (n_images, n_candidates)
            Residual of each candidate in each trusted image, images in time order; NaN where
            the neighbourhood was clipped or the image could not be read.
        sigma : ndarray, shape (n_images, n_candidates)
            Local noise level of each residual.
        exposure : ndarray, shape (n_images,) or None
            Exposure times in seconds; None (or all NaN) fits a constant mean ``c`` only.
        rows, cols, channels : ndarray of int, shape (n_candidates,)
            Candidate positions.
        demosaiced : bool
            Merge the colour spread of one defect (RGB / grayscale-from-colour input); False for
            RAW mosaics, where every photosite is its own colour.

        Returns
        -------
        DefectTable
        """
        residuals = np.asarray(residuals, dtype=np.float32)
        sigma = np.asarray(sigma, dtype=np.float32)
        n_images, n_cand = residuals.shape
        if sigma.shape != residuals.shape:
            raise ValueError(f"sigma shape {sigma.shape} differs from residuals shape {residuals.shape}")
        empty = DefectTable(*(np.zeros(0, dtype=np.int64),) * 4, *(np.zeros(0),) * 3, np.zeros(0, dtype=np.int64))
        if n_cand == 0 or n_images < self.min_images_before + self.min_images_after:
            return empty
        tau = None
        if exposure is not None:
            exposure = np.asarray(exposure, dtype=np.float32)
            if np.isfinite(exposure).all():
                tau = exposure
            elif np.isfinite(exposure).any():
                # images without an exposure time take the median: an approximation documented here
                tau = np.where(np.isfinite(exposure), exposure, np.nanmedian(exposure)).astype(np.float32)
        # missing measurements carry no information: residual 0 with a huge σ contributes ~0
        missing = ~np.isfinite(residuals) | ~np.isfinite(sigma) | (sigma <= 0)
        w = np.where(missing, 0.0, residuals).astype(np.float32)
        s = np.where(missing, np.float32(1e6), sigma).astype(np.float32)
        robust = np.clip(w, -self.clip_z * s, self.clip_z * s).astype(np.float32)
        onset, _, _, llr = kernels.onset_changepoints(
            np.ascontiguousarray(robust.T), np.ascontiguousarray(s.T), tau, min_segment=self.min_images_after)
        threshold = kernels.llr_threshold(self.onset_false_alarm, n_images, with_tau=tau is not None)
        after = np.arange(n_images)[None, :] >= onset[:, None]
        present = after.T & ~missing
        # without exposure times, τ = 0 leaves the offset-only model (μ = c)
        dark, offset, _ = fit_presence(np.where(missing, np.nan, residuals).astype(np.float64),
                                       s.astype(np.float64) ** 2,
                                       np.zeros(n_images) if tau is None else tau.astype(np.float64), present)
        tau_row = np.ones(n_images) if tau is None else tau.astype(np.float64)
        mean_rise = (dark[:, None] * tau_row[None, :] + offset[:, None])
        mean_rise = np.where(after, mean_rise, 0.0).sum(1) / np.maximum(after.sum(1), 1)
        with warnings.catch_warnings():  # a series with no healthy measurement gets σ = inf below
            warnings.simplefilter("ignore", RuntimeWarning)
            healthy_sigma = np.nanmedian(np.where(~after & ~missing.T, sigma.T, np.nan), axis=1)
        healthy_sigma = np.where(np.isfinite(healthy_sigma), healthy_sigma, np.inf)
        n_onsets = max(n_images - self.min_images_before - self.min_images_after + 1, 1)
        keep = ((llr > threshold) & (onset >= self.min_images_before) & (onset <= n_images - self.min_images_after)
                & (mean_rise >= self.min_snr * healthy_sigma))
        # the rank test last, on the survivors only (its exact p-values cost a little each)
        survivors = np.flatnonzero(keep)
        p_rank = rank_shift_pvalue(np.where(missing, np.nan, residuals / np.where(missing, 1, sigma)).T[survivors],
                                   onset[survivors])
        keep[survivors] = p_rank <= self.onset_false_alarm / n_onsets
        idx = np.flatnonzero(keep)
        table = DefectTable(np.asarray(rows)[idx].astype(np.int64), np.asarray(cols)[idx].astype(np.int64),
                            np.asarray(channels)[idx].astype(np.int64), onset[idx].astype(np.int64),
                            dark[idx].astype(np.float64), offset[idx].astype(np.float64),
                            llr[idx].astype(np.float64), np.ones(idx.size, dtype=np.int64))
        if demosaiced and len(table):
            table = merge_colour_spread(table, self.spread_radius)
        order = np.lexsort((table.cols, table.rows, table.onset_index))
        return table.take(order)


def merge_colour_spread(table: DefectTable, radius: int) -> DefectTable:
    """Keep, for each cluster of responses within ``radius`` (Chebyshev, any channel), the strongest.

    Greedy non-maximum suppression by log-likelihood ratio: the strongest response claims every
    weaker one within ``radius`` pixels in every channel; ``spread`` counts what it claimed.
    """
    order = np.argsort(-table.llr, kind="stable")
    taken = np.zeros(len(table), dtype=bool)
    keep, spread = [], []
    rows, cols = table.rows, table.cols
    for i in order:
        if taken[i]:
            continue
        near = (~taken) & (np.abs(rows - rows[i]) <= radius) & (np.abs(cols - cols[i]) <= radius)
        taken |= near
        keep.append(i)
        spread.append(int(near.sum()))
    merged = table.take(np.asarray(keep, dtype=np.int64))
    merged.spread = np.asarray(spread, dtype=np.int64)
    return merged
