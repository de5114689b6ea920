"""Defect candidates from time-ordered block accumulators."""

import numpy as np
import pytest
from kernel_reference import PURE_PYTHON, split_scores_reference

import kernels


def _blocks_from(residuals_by_block, valid_by_block=None, dtype=np.float64):
    blocks = []
    for i, residuals in enumerate(residuals_by_block):
        stats = kernels.PixelStats(residuals.shape[1:], dtype=dtype)
        for j, residual in enumerate(residuals):
            stats.update(residual, valid=None if valid_by_block is None else valid_by_block[i][j])
        blocks.append(stats)
    return blocks


@pytest.mark.parametrize("shape", [(1, 1), (4, 5), (3, 4, 3)])
@pytest.mark.parametrize("n_blocks", [2, 3, 5])
def test_split_scores_match_brute_force(shape, n_blocks):
    rng = np.random.default_rng(n_blocks + len(shape))
    sizes = rng.integers(2, 7, n_blocks)
    residuals = [rng.normal(0.0, rng.uniform(0.5, 2.0), (n,) + shape).astype(np.float32) for n in sizes]
    residuals[-1] += 1.0
    valid = [rng.random(r.shape) < 0.85 for r in residuals]
    blocks = _blocks_from(residuals, valid)
    score, split, before, after = kernels.split_scores(blocks)
    flat = [r.reshape(r.shape[0], -1) for r in residuals]
    flat_valid = [v.reshape(v.shape[0], -1) for v in valid]
    expected_score, expected_split = split_scores_reference(flat, flat_valid)
    np.testing.assert_allclose(score.ravel(), expected_score, rtol=1e-9)
    np.testing.assert_array_equal(split.ravel(), expected_split)
    for p in np.flatnonzero(expected_split > 0):
        b = expected_split[p]
        pre = np.concatenate([r[:, p][v[:, p]] for r, v in zip(flat[:b], flat_valid[:b])])
        post = np.concatenate([r[:, p][v[:, p]] for r, v in zip(flat[b:], flat_valid[b:])])
        assert before.ravel()[p] == pytest.approx(pre.astype(np.float64).mean(), rel=1e-9, abs=1e-12)
        assert after.ravel()[p] == pytest.approx(post.astype(np.float64).mean(), rel=1e-9, abs=1e-12)


def test_min_count_and_min_difference_restrict_the_splits():
    rng = np.random.default_rng(1)
    residuals = [rng.normal(size=(n, 3, 3)).astype(np.float32) for n in (2, 8, 8)]
    residuals[1] += 0.5
    residuals[2] += 1.0
    blocks = _blocks_from(residuals)
    flat = [r.reshape(r.shape[0], -1) for r in residuals]
    score, split, _, _ = kernels.split_scores(blocks, min_count=5)
    assert not (split == 1).any()  # the 2-image first part is too small on its own
    expected, expected_split = split_scores_reference(flat, min_count=5)
    np.testing.assert_allclose(score.ravel(), expected, rtol=1e-9)
    np.testing.assert_array_equal(split.ravel(), expected_split)
    score, split, _, _ = kernels.split_scores(blocks, min_difference=100.0)
    assert np.isneginf(score).all() and (split == -1).all()


def test_noise_free_residuals_give_infinite_or_zero_scores():
    residuals = [np.zeros((4, 2, 2), np.float32), np.zeros((4, 2, 2), np.float32)]
    residuals[1][:, 0, 0] = 7.0  # a clean step: zero variance on both sides
    score, split, before, after = kernels.split_scores(_blocks_from(residuals))
    assert np.isposinf(score[0, 0]) and split[0, 0] == 1
    assert (before[0, 0], after[0, 0]) == (0.0, 7.0)
    assert (score.ravel()[1:] == 0.0).all()


def test_planted_onsets_are_found_at_their_block():
    rng = np.random.default_rng(2)
    shape, n_blocks, per_block = (30, 40, 3), 8, 15
    planted = [(int(rng.integers(30)), int(rng.integers(40)), int(rng.integers(3)), int(rng.integers(1, n_blocks)))
               for _ in range(12)]
    planted = list({p[:3]: p for p in planted}.values())
    residuals = [rng.standard_normal((per_block,) + shape).astype(np.float32) for _ in range(n_blocks)]
    for y, x, c, onset in planted:
        for b in range(onset, n_blocks):
            residuals[b][:, y, x, c] += 2.0
    blocks = _blocks_from(residuals, dtype=np.float32)
    found = kernels.block_candidates(blocks, false_alarm=1e-4)
    hits = {(int(r), int(c), int(ch)): int(s) for r, c, ch, s in zip(found.rows, found.cols, found.channels, found.split)}
    for y, x, c, onset in planted:
        assert hits.get((y, x, c)) == onset
    assert len(hits) - len(planted) <= 3  # 3,600 defect-free pixels at 1e-4 each
    assert (np.diff(found.score) <= 0).all()
    assert found.threshold == pytest.approx(kernels.score_threshold(1e-4, n_blocks))
    assert (found.mean_after - found.mean_before > 1.0).all()


def test_false_alarm_rate_on_defect_free_pixels_is_bounded():
    """Measured rate of candidates among Gaussian, defect-free pixels stays below the nominal one."""
    rng = np.random.default_rng(3)
    shape = (20, 25, 3) if PURE_PYTHON else (60, 80, 3)
    n_pixels = int(np.prod(shape))
    residuals = [rng.standard_normal((int(n),) + shape).astype(np.float32) for n in (6, 10, 8, 12, 9)]
    blocks = _blocks_from(residuals, dtype=np.float32)
    for false_alarm in (0.01, 0.05):
        found = kernels.block_candidates(blocks, false_alarm=false_alarm)
        rate = found.rows.size / n_pixels
        assert rate <= false_alarm + 3 * np.sqrt(false_alarm / n_pixels)


def test_two_dimensional_statistics_give_zero_channels():
    residuals = [np.zeros((3, 4, 4), np.float32), np.full((3, 4, 4), 0.0, np.float32)]
    residuals[1][:, 1, 2] = 5.0
    found = kernels.block_candidates(_blocks_from(residuals), false_alarm=0.01)
    assert found.rows.tolist() == [1] and found.cols.tolist() == [2] and found.channels.tolist() == [0]


def test_bad_arguments_are_rejected():
    one = kernels.PixelStats((3, 3))
    with pytest.raises(ValueError, match="at least 2"):
        kernels.block_candidates([one])
    with pytest.raises(ValueError, match="same frame"):
        kernels.split_scores([one, kernels.PixelStats((3, 4))])
    with pytest.raises(TypeError, match="PixelStats"):
        kernels.split_scores([one, np.zeros((3, 3))])
    with pytest.raises(ValueError, match="min_count"):
        kernels.split_scores([one, one], min_count=1)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="false_alarm"):
            kernels.block_candidates([one, one], false_alarm=bad)
