"""Candidate screening of one split run from the screening records of its training images.

The training images, in time order, are cut into ``n_blocks`` contiguous blocks; for every
element of the frame the number of images of each block in which its residual exceeded
``EXCEED_K`` noise levels, and the number in which it was measured at all (not clipped), are
summed from the images' :class:`pipeline.features.extract.ScreenRecord`; elements whose
exceedance rate rises from an earlier to a later part are candidates
(:meth:`baselines.defects.DefectIdentifier.screen_counts`).

The frame is processed in strips of at most ``strip`` elements, so memory stays
``2 × n_blocks × strip`` counters whatever the image size, and no image is decoded again.
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
        exceed = np.zeros((len(blocks), stop - start), np.int32)
        count = np.repeat(sizes[:, None], stop - start, axis=1)
        for b, members in enumerate(blocks):
            for i in members:
                rec = records[i]
                _add_range(exceed[b], rec.exceed, start, stop, 1)
                _add_range(count[b], rec.clipped, start, stop, -1)
        index, score = identifier.screen_counts(exceed, count)
        found_index.append(index + start)
        found_score.append(score)
    return identifier.strongest(np.concatenate(found_index), np.concatenate(found_score), shape)


def _add_range(counts: np.ndarray, sorted_index: np.ndarray, start: int, stop: int, value: int) -> None:
    lo, hi = np.searchsorted(sorted_index, [start, stop])
    if hi > lo:
        # indices of one image are unique, so fancy-index addition is exact
        counts[sorted_index[lo:hi] - start] += value
