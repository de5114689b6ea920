"""Candidate screening of one split run from the screening records of its training images.

The training images, in time order, are cut into ``n_blocks`` contiguous blocks; for every
element of the frame the number of images of each block in which its residual exceeded
``EXCEED_K`` noise levels, and the number in which it was measured at all (not clipped), are
summed from the images' :class:`pipeline.features.extract.ScreenRecord`; elements whose
exceedance rate rises from an earlier to a later part are candidates
(:meth:`baselines.defects.DefectIdentifier.screen_counts`).

Counts are kept only for the elements that exceeded in at least one of the run's images (the
others cannot score), so a run's screening costs in proportion to its records, not to the frame
(a dense count of every element of a 12 MP frame, per run, was most of the time spent between the
two passes). The frame is still taken in strips of at most ``strip`` elements, and no image is
decoded again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from baselines.defects import DefectIdentifier

__all__ = ["screen_candidates"]

#: Elements per strip: 2 × 8 blocks × 4 Mi × 4 bytes = 256 MiB of counters at most.
DEFAULT_STRIP = 1 << 22


def screen_candidates(records: Sequence, n_blocks: int, shape: tuple, identifier: DefectIdentifier,
                      strip: int = DEFAULT_STRIP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate positions of one run from its training images' screening records.

    Parameters
    ----------
    records : sequence of ScreenRecord
        The run's readable training images, oldest first.
    n_blocks : int
        Contiguous time blocks (``numpy.array_split`` of the images).
    shape : tuple
        Shape of the analysis array (H×W or H×W×C) every record refers to.
    identifier : DefectIdentifier
        Gives the false-alarm threshold and the cap on candidates.
    strip : int
        Elements per strip (bounds memory).

    Returns
    -------
    rows, cols, channels : ndarray of int64
        Strongest first, at most ``identifier.max_candidates``.
    """
    empty = np.zeros(0, dtype=np.int64)
    blocks = [b for b in np.array_split(np.arange(len(records)), n_blocks) if b.size]
    if len(blocks) < 2:
        return empty, empty, empty
    for r in records:
        if tuple(r.shape) != tuple(shape):
            raise ValueError(f"a screening record of shape {r.shape} does not belong to frame {shape}")
    size = int(np.prod(shape))
    sizes = np.array([b.size for b in blocks], dtype=np.int32)
    found_index, found_score = [], []
    for start in range(0, size, strip):
        stop = min(start + strip, size)
        # only elements that exceeded in some image can score: count at those alone (the same
        # counts a dense strip holds there, so the same scores), not over the whole strip
        parts = [_in_range(records[i].exceed, start, stop) for members in blocks for i in members]
        active = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        exceed = np.zeros((len(blocks), active.size), np.int32)
        count = np.repeat(sizes[:, None], active.size, axis=1)
        for b, members in enumerate(blocks):
            for i in members:
                rec = records[i]
                exceed[b, np.searchsorted(active, _in_range(rec.exceed, start, stop))] += 1
                clipped = _in_range(rec.clipped, start, stop)
                at = np.searchsorted(active, clipped)
                hit = at < active.size
                hit[hit] = active[at[hit]] == clipped[hit]
                count[b, at[hit]] -= 1  # indices of one image are unique, so fancy-index updates are exact
        index, score = identifier.screen_counts(exceed, count)
        found_index.append(active[index].astype(np.int64))
        found_score.append(score)
    return identifier.strongest(np.concatenate(found_index), np.concatenate(found_score), shape)


def _in_range(sorted_index: np.ndarray, start: int, stop: int) -> np.ndarray:
    lo, hi = np.searchsorted(sorted_index, [start, stop])
    return sorted_index[lo:hi]
