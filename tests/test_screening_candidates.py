"""Candidate screening from sparse per-image records, against dense per-strip counting (the way
before issue 19, kept here as the plain numpy reference)."""

from types import SimpleNamespace

import numpy as np
import pytest

from baselines.defects import DefectIdentifier
from pipeline.features.screening import screen_candidates


def _dense_reference(records, n_blocks, shape, identifier):
    blocks = [b for b in np.array_split(np.arange(len(records)), n_blocks) if b.size]
    size = int(np.prod(shape))
    exceed = np.zeros((len(blocks), size), np.int32)
    count = np.repeat(np.array([b.size for b in blocks], np.int32)[:, None], size, axis=1)
    for b, members in enumerate(blocks):
        for i in members:
            exceed[b, records[i].exceed] += 1
            count[b, records[i].clipped] -= 1
    index, score = identifier.screen_counts(exceed, count)
    return identifier.strongest(index, score, shape)


def _records(rng, n, shape, rising):
    size = int(np.prod(shape))
    out = []
    for i in range(n):
        noise = rng.random(size) < 0.01
        hot = np.zeros(size, bool)
        hot[rising] = i >= n // 2  # defects appearing halfway
        clipped = rng.random(size) < 0.05
        exceed = (noise | hot) & ~clipped
        out.append(SimpleNamespace(exceed=np.flatnonzero(exceed).astype(np.int32),
                                   clipped=np.flatnonzero(clipped).astype(np.int32), shape=shape))
    return out


@pytest.mark.parametrize("shape, strip", [((40, 50, 3), 1 << 22), ((40, 50, 3), 777), ((61, 47), 100)])
def test_sparse_counts_give_the_dense_counts_candidates(shape, strip):
    rng = np.random.default_rng(sum(shape))
    rising = rng.choice(int(np.prod(shape)), 25, replace=False)
    records = _records(rng, 24, shape, rising)
    identifier = DefectIdentifier()
    got = screen_candidates(records, 8, shape, identifier, strip=strip)
    expected = _dense_reference(records, 8, shape, identifier)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    assert got[0].size >= 20


def test_no_exceedance_at_all_gives_no_candidates():
    shape = (8, 9)
    records = [SimpleNamespace(exceed=np.zeros(0, np.int32), clipped=np.arange(5, dtype=np.int32), shape=shape)
               for _ in range(6)]
    rows, cols, chans = screen_candidates(records, 3, shape, DefectIdentifier())
    assert rows.size == cols.size == chans.size == 0
