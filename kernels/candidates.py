"""Defect candidates: pixels whose residual is high in a later part of the trusted images only.

Input: time-ordered *block* accumulators, one :class:`kernels.PixelStats` per contiguous block
of trusted images (oldest first). For a split ``b`` (``1 <= b < B``) the blocks ``0..b-1`` form
the *before* part and ``b..B-1`` the *after* part; their counts, means and variances follow
exactly from Chan's merge. The split score is Welch's standardised difference

    t(b) = (mean_after - mean_before) / sqrt(var_after / n_after + var_before / n_before)

(sample variances, ``ddof = 1``), turned into the standard-normal deviate with the same
tail probability under Student's t with the Welch–Satterthwaite degrees of freedom (Wallace's
approximation, ``z = (8ν+1)/(8ν+3) · sqrt(ν · ln(1 + t²/ν))``), so that small parts are not
over-trusted. A pixel's score is the maximum over the admissible splits: both parts hold at
least ``min_count`` images of that pixel and ``mean_after - mean_before >= min_difference``.
A zero standard error gives ``+inf`` for a positive difference and 0 for none. Pixels
without an admissible split score ``-inf`` (split ``-1``).

Threshold: ``z* = Phi^-1(1 - false_alarm / (B - 1))``, so that a defect-free pixel with
Gaussian residuals exceeds it with probability at most about ``false_alarm`` (Bonferroni over
the ``B - 1`` splits; conservative, since neighbouring splits are correlated). Residuals of
real images have heavier tails than a Gaussian, so expect more false alarms there than the
nominal rate; the onset GLR (:mod:`kernels.onset`) is the second filter.
"""

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numba import njit, prange

from kernels._rows import chunk_bounds, n_row_chunks
from kernels.stats import PixelStats

_CHUNK = 1 << 16  # pixels scored per batch of stacked block states


@dataclass(frozen=True)
class Candidates:
    """Candidate defect positions with the evidence behind them.

    Attributes
    ----------
    rows, cols : numpy.ndarray
        int64 positions.
    channels : numpy.ndarray
        int64 channels for H×W×C statistics; all 0 for H×W ones.
    score : numpy.ndarray
        float64 best split score (normal-equivalent Welch statistic).
    split : numpy.ndarray
        int64 index of the first block of the *after* part at the best split.
    mean_before, mean_after : numpy.ndarray
        float64 mean residual of the two parts at the best split.
    threshold : float
        The score threshold that was applied.
    """

    rows: np.ndarray
    cols: np.ndarray
    channels: np.ndarray
    score: np.ndarray
    split: np.ndarray
    mean_before: np.ndarray
    mean_after: np.ndarray
    threshold: float


@njit(cache=True)
def _merge_into(n, mean, m2, n_b, mean_b, m2_b):
    """Chan's merge of (n_b, mean_b, m2_b) into (n, mean, m2); returns the merged triple."""
    if n_b == 0:
        return n, mean, m2
    if n == 0:
        return n_b, mean_b, m2_b
    total = n + n_b
    delta = mean_b - mean
    return total, mean + delta * (n_b / total), m2 + m2_b + delta * delta * (n * (n_b / total))


@njit(cache=True)
def _welch_normal_equivalent(t, dof):
    """Standard-normal deviate with the same tail probability as Student's t (Wallace, 1959)."""
    z = (8.0 * dof + 1.0) / (8.0 * dof + 3.0) * np.sqrt(dof * np.log1p(t * t / dof))
    return z if t >= 0.0 else -z


@njit(parallel=True, cache=True, nogil=True)
def _best_splits(counts, means, m2s, min_count, min_difference, score, split, mean_before,
                 mean_after, n_chunks):
    n_blocks, n_pixels = counts.shape
    for k in prange(n_chunks):
        p0, p1 = chunk_bounds(n_pixels, n_chunks, k)
        suffix_n = np.empty(n_blocks + 1)
        suffix_mean = np.empty(n_blocks + 1)
        suffix_m2 = np.empty(n_blocks + 1)
        for p in range(p0, p1):
            suffix_n[n_blocks] = 0.0
            suffix_mean[n_blocks] = 0.0
            suffix_m2[n_blocks] = 0.0
            for b in range(n_blocks - 1, -1, -1):
                suffix_n[b], suffix_mean[b], suffix_m2[b] = _merge_into(
                    suffix_n[b + 1], suffix_mean[b + 1], suffix_m2[b + 1],
                    counts[b, p], means[b, p], m2s[b, p])
            best = -np.inf
            best_split = -1
            best_before = 0.0
            best_after = 0.0
            n_pre, mean_pre, m2_pre = 0.0, 0.0, 0.0
            for b in range(1, n_blocks):
                n_pre, mean_pre, m2_pre = _merge_into(n_pre, mean_pre, m2_pre,
                                                      counts[b - 1, p], means[b - 1, p], m2s[b - 1, p])
                n_post = suffix_n[b]
                if n_pre < min_count or n_post < min_count:
                    continue
                diff = suffix_mean[b] - mean_pre
                if diff < min_difference:
                    continue
                part_pre = m2_pre / (n_pre * (n_pre - 1.0))
                part_post = suffix_m2[b] / (n_post * (n_post - 1.0))
                se2 = part_pre + part_post
                if se2 > 0.0:
                    z = _welch_normal_equivalent(diff / np.sqrt(se2), se2 * se2 / (
                        part_pre * part_pre / (n_pre - 1.0) + part_post * part_post / (n_post - 1.0)))
                elif diff > 0.0:
                    z = np.inf
                else:
                    z = 0.0
                if z > best:
                    best = z
                    best_split = b
                    best_before = mean_pre
                    best_after = suffix_mean[b]
            score[p] = best
            split[p] = best_split
            mean_before[p] = best_before
            mean_after[p] = best_after


def _check_blocks(blocks):
    blocks = list(blocks)
    if len(blocks) < 2:
        raise ValueError(f"need at least 2 time-ordered blocks to find onsets, got {len(blocks)}")
    for i, block in enumerate(blocks):
        if not isinstance(block, PixelStats):
            raise TypeError(f"blocks[{i}] is a {type(block).__name__}, not a PixelStats")
        if block.shape != blocks[0].shape:
            raise ValueError(f"blocks[{i}] has shape {block.shape}, blocks[0] has {blocks[0].shape}; "
                             "accumulate all blocks over the same frame")
    return blocks


def _chunk_counts(block, start, stop):
    counts = np.full(stop - start, float(block.n_images))
    if block.skipped is not None:
        counts -= block.skipped.reshape(-1)[start:stop]
    return counts


def split_scores(blocks, min_count=2, min_difference=0.0):
    """Per-pixel best split score between time-ordered block accumulators.

    Parameters
    ----------
    blocks : sequence of PixelStats
        At least two accumulators of equal shape, oldest block first.
    min_count : int
        Minimum number of images of the pixel in each part (at least 2, for a variance).
    min_difference : float
        Minimum ``mean_after - mean_before`` (in residual units) for a split to count.

    Returns
    -------
    score : numpy.ndarray
        float64 map of the best ``z`` (``-inf`` where no split is admissible).
    split : numpy.ndarray
        int64 map of the best split (first block of the *after* part; -1 where none).
    mean_before, mean_after : numpy.ndarray
        float64 maps of the two parts' means at the best split.
    """
    blocks = _check_blocks(blocks)
    if int(min_count) < 2:
        raise ValueError(f"min_count must be at least 2 (a variance needs two images), got {min_count}")
    shape = blocks[0].shape
    size = int(np.prod(shape))
    score = np.empty(size)
    split = np.empty(size, np.int64)
    mean_before = np.empty(size)
    mean_after = np.empty(size)
    for start in range(0, size, _CHUNK):
        stop = min(start + _CHUNK, size)
        counts = np.stack([_chunk_counts(b, start, stop) for b in blocks])
        means = np.stack([b.mean.reshape(-1)[start:stop] for b in blocks]).astype(np.float64)
        m2s = np.stack([b.m2.reshape(-1)[start:stop] for b in blocks]).astype(np.float64)
        _best_splits(counts, means, m2s, float(min_count), float(min_difference),
                     score[start:stop], split[start:stop], mean_before[start:stop],
                     mean_after[start:stop], n_row_chunks(stop - start))
    return (score.reshape(shape), split.reshape(shape), mean_before.reshape(shape),
            mean_after.reshape(shape))


def score_threshold(false_alarm, n_blocks):
    """Score threshold for a per-pixel false-alarm probability (Bonferroni over splits).

    Parameters
    ----------
    false_alarm : float
        Probability, in (0, 1), that a defect-free pixel becomes a candidate.
    n_blocks : int
        Number of blocks (``n_blocks - 1`` splits are tried).

    Returns
    -------
    float
        ``Phi^-1(1 - false_alarm / (n_blocks - 1))``.
    """
    if not 0.0 < false_alarm < 1.0:
        raise ValueError(f"false_alarm must be in (0, 1), got {false_alarm}")
    if n_blocks < 2:
        raise ValueError(f"n_blocks must be at least 2, got {n_blocks}")
    return NormalDist().inv_cdf(1.0 - false_alarm / (n_blocks - 1))


def block_candidates(blocks, false_alarm=1e-6, min_count=2, min_difference=0.0):
    """Pixels whose residual rises significantly between an earlier and a later part.

    Parameters
    ----------
    blocks : sequence of PixelStats
        Time-ordered block accumulators (oldest first), equal shapes.
    false_alarm : float
        Per-pixel false-alarm probability; the score threshold is
        :func:`score_threshold` ``(false_alarm, len(blocks))``. With 12 MP × 3 channels,
        1e-6 lets through about 36 defect-free pixels.
    min_count : int
        Minimum images of the pixel in each part.
    min_difference : float
        Minimum rise of the mean residual, in residual units.

    Returns
    -------
    Candidates
        Positions sorted by decreasing score, with their best split and part means.
    """
    blocks = _check_blocks(blocks)
    threshold = score_threshold(false_alarm, len(blocks))
    score, split, before, after = split_scores(blocks, min_count, min_difference)
    hits = np.flatnonzero(score.reshape(-1) >= threshold)
    hits = hits[np.argsort(-score.reshape(-1)[hits], kind="stable")]
    position = np.unravel_index(hits, score.shape)
    return Candidates(
        rows=position[0].astype(np.int64),
        cols=position[1].astype(np.int64),
        channels=position[2].astype(np.int64) if score.ndim == 3 else np.zeros(hits.size, np.int64),
        score=score.reshape(-1)[hits],
        split=split.reshape(-1)[hits],
        mean_before=before.reshape(-1)[hits],
        mean_after=after.reshape(-1)[hits],
        threshold=threshold,
    )
