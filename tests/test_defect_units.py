"""Unit checks of the defect-identification building blocks against independent references.

* ``fit_presence`` against scipy's non-negative least squares (``scipy.optimize.nnls`` on
  rows scaled by the square root of the weights) and against the log-likelihood ratio written
  out term by term;
* ``rank_shift_z`` against ``scipy.stats.mannwhitneyu`` (its U statistic, and its asymptotic
  p-value turned back into z);
* ``DefectIdentifier.identify``'s false-alarm rate on defect-free series (Gaussian and
  integer-valued heavy-tailed "JPEG-like" residuals, with exposure times) bounded by an exact
  binomial test, and its refusal of series whose level *drops* (the reverse of an onset).

None of the references calls project code; each test says what a broken implementation would
do to make it fail.
"""

from __future__ import annotations

import itertools
import math

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.optimize import nnls

from baselines.defects import DefectIdentifier, rank_shift_z
from baselines.fridrich_goljan import fit_presence


# ----------------------------------------------------------------------------- fit_presence

def nnls_reference(w, s2, tau, present):
    """Per column: weighted NNLS of w on (τ, 1) over present, finite rows; LLR written out."""
    n_images, n_defects = w.shape
    d_out, c_out, llr_out, mu_out = (np.zeros(n_defects) for _ in range(4))
    for j in range(n_defects):
        rows = present[:, j] & np.isfinite(w[:, j])
        if not rows.any():
            continue
        sw = 1.0 / np.sqrt(s2[rows, j])
        design = np.stack([tau[rows], np.ones(rows.sum())], axis=1) * sw[:, None]
        (d, c), _ = nnls(design, w[rows, j] * sw)
        mu = tau[rows] * d + c
        weight = 1.0 / s2[rows, j]
        d_out[j], c_out[j] = d, c
        llr_out[j] = np.sum(weight * (w[rows, j] ** 2 - (w[rows, j] - mu) ** 2)) / 2
    return d_out, c_out, llr_out


def random_presence_case(rng, n_images=40, n_defects=60):
    """Residuals with every regime: positive D and c, negative slope (D ≥ 0 active), negative
    level (both active), offsets only, all-absent columns, NaN entries, one present image."""
    tau = np.exp(rng.uniform(np.log(1 / 1000), np.log(1 / 8), n_images))
    s2 = rng.uniform(0.3, 4.0, (n_images, n_defects)) ** 2
    d_true = rng.choice([0.0, 50.0, 400.0, -300.0], n_defects) * rng.uniform(0.5, 1.5, n_defects)
    c_true = rng.choice([0.0, 3.0, 10.0, -6.0], n_defects) * rng.uniform(0.5, 1.5, n_defects)
    w = tau[:, None] * d_true + c_true + rng.standard_normal((n_images, n_defects)) * np.sqrt(s2)
    onset = rng.integers(0, n_images, n_defects)
    present = np.arange(n_images)[:, None] >= onset[None, :]
    present[:, :4] = False                                    # all-absent columns
    present[:, 4] = np.arange(n_images) == n_images - 1        # a single present image:
    w[:, 4] = np.nan                                           # ... and it is NaN -> no data at all
    present[:, 5] = True
    w[rng.random((n_images, n_defects)) < 0.1] = np.nan       # unmeasured entries are ignored
    w[:, 5] = np.nan
    w[[0, 7], 5] = [3.0, 5.0]                                  # two finite present images only
    return w, s2, tau, present, d_true, c_true


@pytest.mark.parametrize("seed", range(6))
def test_fit_presence_matches_scipy_nnls(seed):
    # A broken fit_presence — unconstrained least squares (negative D or c returned), a wrong
    # weight (1/σ instead of 1/σ²), a fallback that misses the one-parameter optimum when the
    # other parameter's constraint is active, or NaN residuals leaking in — gives other D, c
    # than NNLS on the same rows.
    rng = np.random.default_rng(seed)
    w, s2, tau, present, d_true, c_true = random_presence_case(rng)
    d, c, llr = fit_presence(w, s2, tau, present)
    d_ref, c_ref, llr_ref = nnls_reference(w, s2, tau, present)
    # D and c are identified where the present, finite rows hold two distinct exposure times;
    # with a single one only μ = τD + c is (any split of it fits equally well)
    used = present & np.isfinite(w)
    identified = np.array([np.unique(tau[used[:, j]]).size >= 2 or not used[:, j].any()
                           for j in range(w.shape[1])])
    assert identified.sum() >= 50
    scale_d, scale_c = np.abs(d_ref).max(), np.abs(c_ref).max()
    np.testing.assert_allclose(d[identified], d_ref[identified], rtol=1e-6, atol=1e-9 * scale_d)
    np.testing.assert_allclose(c[identified], c_ref[identified], rtol=1e-6, atol=1e-9 * scale_c)
    mu, mu_ref = tau[:, None] * d + c, tau[:, None] * d_ref + c_ref
    np.testing.assert_allclose(np.where(used, mu, 0), np.where(used, mu_ref, 0), rtol=1e-6, atol=1e-9 * scale_c)
    np.testing.assert_allclose(llr, llr_ref, rtol=1e-6, atol=1e-9 * np.abs(llr_ref).max())
    assert np.all(d >= 0) and np.all(c >= 0) and np.all(llr >= 0)
    # the regimes really occurred: constraints active on negative-slope / negative-level data
    # columns, strictly positive estimates elsewhere, and nothing at all without data
    assert np.all((d[:5] == 0) & (c[:5] == 0) & (llr[:5] == 0))
    fitted = present.sum(0) >= 5
    assert np.any(fitted & (d_true < 0) & (d_ref == 0)), "no negative-slope column with D >= 0 active"
    assert np.any(fitted & (d_ref > 0) & (c_ref > 0)), "no column with both parameters free"


def test_fit_presence_llr_is_the_sum_of_per_image_terms():
    # The llr must be Σ weight·[w² − (w − μ)²]/2 over the present, finite images at the returned
    # (D, c) — computed here directly from the returned estimates. An implementation that
    # forgot the ½, used σ instead of σ², or summed over absent images would differ.
    rng = np.random.default_rng(11)
    w, s2, tau, present, *_ = random_presence_case(rng, n_images=25, n_defects=40)
    d, c, llr = fit_presence(w, s2, tau, present)
    mu = tau[:, None] * d[None, :] + c[None, :]
    used = present & np.isfinite(w)
    terms = np.where(used, (np.nan_to_num(w) ** 2 - (np.nan_to_num(w) - mu) ** 2) / s2 / 2, 0.0)
    np.testing.assert_allclose(llr, terms.sum(0), rtol=1e-9, atol=1e-12)


def test_fit_presence_constant_tau_fits_the_mean():
    # With one exposure time the design (τ, 1) is rank deficient: D and c are not separately
    # identified, but the fitted mean μ = τD + c and the llr are. With τ ≡ 1 they must be the
    # weighted mean of the present residuals (floored at 0) and its LLR.
    rng = np.random.default_rng(5)
    n, m = 30, 20
    s2 = rng.uniform(0.5, 2.0, (n, m))
    w = rng.normal(rng.uniform(-2, 6, m), 1.0, (n, m))
    present = rng.random((n, m)) < 0.6
    d, c, llr = fit_presence(w, s2, np.ones(n), present)
    weight = np.where(present, 1 / s2, 0)
    mean = np.maximum((weight * w).sum(0) / weight.sum(0), 0)
    np.testing.assert_allclose(d + c, mean, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(llr, (weight * (w ** 2 - (w - mean) ** 2)).sum(0) / 2, rtol=1e-6, atol=1e-12)


# ----------------------------------------------------------------------------- rank_shift_z

def mannwhitney_z(series, onset):
    """z of the U statistic of 'after' vs 'before', from scipy (tie-corrected, no continuity
    correction); NaN replaced by the median of the finite values, as documented."""
    x = np.asarray(series, dtype=float)
    finite = np.isfinite(x)
    fill = np.median(x[finite]) if finite.any() else 0.0
    x = np.where(finite, x, fill)
    after, before = x[onset:], x[:onset]
    if len(after) == 0 or len(before) == 0 or np.all(x == x[0]):
        return 0.0, None
    n_a, n_b = len(after), len(before)
    u = stats.mannwhitneyu(after, before, use_continuity=False, alternative="two-sided", method="asymptotic")
    # scipy's p-value is a function of z only: invert the one-sided p on the accurate side
    if u.statistic >= n_a * n_b / 2:
        p = stats.mannwhitneyu(after, before, use_continuity=False, alternative="greater", method="asymptotic").pvalue
        z = stats.norm.isf(p)
    else:
        p = stats.mannwhitneyu(after, before, use_continuity=False, alternative="less", method="asymptotic").pvalue
        z = stats.norm.ppf(p)
    return z, u.statistic


def rank_cases(rng):
    """(series, onset) cases: continuous, heavily tied integers, shifts up and down, NaNs,
    empty parts, all tied, all NaN."""
    cases = []
    for n in (7, 20, 61):
        for _ in range(6):
            k = int(rng.integers(1, n))
            x = rng.standard_normal(n) + np.where(np.arange(n) >= k, rng.normal(0, 2), 0)
            cases.append((x, k))
            cases.append((np.round(rng.standard_t(2, n)), k))            # integer, many ties
            y = rng.integers(0, 3, n).astype(float)
            y[rng.random(n) < 0.2] = np.nan                               # NaN -> median
            cases.append((y, k))
    cases += [(np.arange(10.0), 0), (np.arange(10.0), 10),               # an empty part
              (np.full(12, 3.0), 5), (np.full(9, np.nan), 4),              # all tied / all NaN
              (np.array([np.nan, 1, 1, 1, 5, 5, np.nan, 5.0]), 4),         # NaN is the median
              (np.array([0, 0, 0, 9, 9, 9.0]), 3)]                         # perfect separation
    return cases


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # the all-NaN case warns (it returns 0)
def test_rank_shift_z_matches_scipy_mannwhitneyu():
    # A broken rank_shift_z — U of "before" instead of "after" (sign flipped), ordinal ranks
    # instead of midranks, the untied variance on tied data, a continuity correction, NaN left
    # in or replaced by 0 — moves z by far more than the tolerance on some of these cases.
    rng = np.random.default_rng(3)
    cases = rank_cases(rng)
    width = max(len(x) for x, _ in cases)
    # one call per length (the function takes a 2-D batch of equal-length series)
    by_length: dict[int, list] = {}
    for x, k in cases:
        by_length.setdefault(len(x), []).append((x, k))
    checked = 0
    for n, group in by_length.items():
        z = rank_shift_z(np.stack([x for x, _ in group]), np.array([k for _, k in group]))
        for (x, k), got in zip(group, z):
            want, _ = mannwhitney_z(x, k)
            np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9, err_msg=f"series {x}, onset {k}")
            checked += 1
    assert checked == len(cases) and width == 61


def test_rank_shift_pvalue_is_exact_for_a_small_part_and_asymptotic_otherwise():
    # scipy as the oracle: its exact one-sided Mann–Whitney p-value where either part has at
    # most EXACT_RANK_MAX images, the normal approximation of rank_shift_z elsewhere. A p-value
    # from the normal approximation everywhere, or a two-sided one, misses by orders of
    # magnitude on the small-part cases (perfect separation of 5 vs 59: 1.3e-7 against 1.1e-4).
    from baselines.defects import EXACT_RANK_MAX, rank_shift_pvalue

    rng = np.random.default_rng(11)
    n = 64
    series, onsets = [], []
    for k in (1, 3, 5, 9, EXACT_RANK_MAX, EXACT_RANK_MAX + 1, 30, n - 12, n - 5, n - 2):
        for shift in (0.0, 1.5, 6.0):
            x = rng.standard_normal(n) + np.where(np.arange(n) >= k, shift, 0.0)
            series.append(x)
            onsets.append(k)
    z = np.stack(series)
    got = rank_shift_pvalue(z, np.array(onsets))
    for x, k, p in zip(series, onsets, got):
        small = min(k, n - k) <= EXACT_RANK_MAX
        want = stats.mannwhitneyu(x[k:], x[:k], alternative="greater",
                                  method="exact" if small else "asymptotic", use_continuity=False).pvalue
        np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-300, err_msg=f"onset {k}, exact {small}")
    separated = np.r_[np.zeros(5), np.ones(59) * 5.0] + np.linspace(0, 0.1, 64)
    assert rank_shift_pvalue(separated[None, :], np.array([5]))[0] == pytest.approx(1 / math.comb(64, 5))
    # an empty part or all-tied values say nothing
    assert list(rank_shift_pvalue(np.ones((2, 10)), np.array([0, 4]))) == [1.0, 1.0]
    # tied values: never below the exact permutation p-value of the midrank statistic (brute force
    # over every split; scipy's untied exact distribution on midranks goes below it: before
    # [0, 0], after [0, 1] gives 1/3 where the permutation p is 1/2), and still far below the
    # normal approximation for a clear step
    def permutation_p(row, k):
        ranks = stats.rankdata(row)
        observed = ranks[k:].sum()
        sums = [ranks[list(after)].sum() for after in itertools.combinations(range(row.size), row.size - k)]
        return np.mean(np.asarray(sums) >= observed - 1e-9)

    tied_cases = [(np.array([0.0, 0.0, 0.0, 1.0]), 2), (np.array([0, 0, 1, 1, 1, 2, 2, 0, 3, 3.0]), 3),
                  (np.array([0, 1, 0, 0, 2, 2, 3, 2, 2, 3, 3, 3.0]), 4), (np.array([0, 0, 0, 0, 5, 5, 0, 5, 5, 5.0]), 4)]
    for row, k in tied_cases:
        got = rank_shift_pvalue(row[None, :], np.array([k]))[0]
        assert got >= permutation_p(row, k) - 1e-12, (row, k)
    assert rank_shift_pvalue(np.array([[0.0, 0.0, 0.0, 1.0]]), np.array([2]))[0] == pytest.approx(2 / 3)
    step = np.r_[np.zeros(5), np.round(np.linspace(4, 9, 59))]
    normal = stats.norm.sf(rank_shift_z(step[None, :], np.array([5]))[0])
    assert rank_shift_pvalue(step[None, :], np.array([5]))[0] < normal / 100


def test_an_onset_among_the_first_trusted_images_is_identified():
    # A strong defect present from the 6th of 64 images on. With the normal approximation of the
    # rank test (z = 3.7 for perfect separation of 5 vs 59, below the Bonferroni quantile 4.1)
    # no onset among the first or last six images could ever be confirmed.
    rng = np.random.default_rng(5)
    n, m = 64, 40
    sigma = np.full((n, m), 2.0, dtype=np.float32)
    w = (rng.standard_normal((n, m)) * sigma).astype(np.float32)
    onset = np.where(np.arange(m) < m // 2, 5, n - 6)
    w += np.where(np.arange(n)[:, None] >= onset[None, :], 40.0, 0.0).astype(np.float32)
    found = identify(DefectIdentifier(), w, sigma, None)
    assert len(found) == m
    np.testing.assert_array_equal(np.sort(found.onset_index), np.sort(onset))


def test_rank_shift_z_u_statistic_and_sign():
    # the statistic is U of the *after* part: a clear rise gives a large positive z, a drop a
    # large negative one (a two-sided or flipped statistic would not tell them apart)
    rise = np.r_[np.zeros(10), np.ones(10) * 5] + np.linspace(0, 0.1, 20)
    drop = rise[::-1]
    z = rank_shift_z(np.stack([rise, drop]), np.array([10, 10]))
    assert z[0] > 3.5 and z[1] < -3.5
    np.testing.assert_allclose(z, [mannwhitney_z(rise, 10)[0], mannwhitney_z(drop, 10)[0]], rtol=1e-9)


# ----------------------------------------------------------------------------- identifier false alarms

N_SERIES, N_IMAGES = 20_000, 100


def exposure_times(rng, n=N_IMAGES):
    return np.exp(rng.uniform(np.log(1 / 1000), np.log(1 / 10), n)).astype(np.float32)


def gaussian_null(rng):
    """Defect-free residuals: Gaussian with a local σ that varies per image and pixel."""
    sigma = rng.uniform(0.5, 3.0, (N_IMAGES, N_SERIES))
    return (rng.standard_normal(sigma.shape) * sigma).astype(np.float32), sigma.astype(np.float32)


def jpeg_like_null(rng):
    """Defect-free JPEG-like residuals: integers, heavy tails (Student t, 2.5 dof), heavily
    tied at 0, and σ from an integer MAD (1.4826 or 2.9652), some NaN (clipped) entries."""
    mad = rng.integers(1, 3, (N_IMAGES, N_SERIES)).astype(np.float64)
    w = np.round(rng.standard_t(2.5, mad.shape) * mad * 0.8)
    w[rng.random(w.shape) < 0.02] = np.nan
    return w.astype(np.float32), (1.4826 * mad).astype(np.float32)


def identify(identifier, w, sigma, tau):
    n = w.shape[1]
    index = np.arange(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return identifier.identify(w, sigma, tau, index, index, np.zeros(n, dtype=np.int64), demosaiced=False)


def false_alarms_are_bounded(accepted: int, n: int, alpha: float) -> bool:
    """Exact one-sided binomial test of 'rate <= alpha' at level 1e-3."""
    return stats.binomtest(accepted, n, alpha, alternative="greater").pvalue >= 1e-3


@pytest.mark.parametrize("alpha", [1e-3, 1e-2])
@pytest.mark.parametrize("noise", ["gaussian", "jpeg_like"])
def test_identifier_false_alarm_rate_on_defect_free_series(noise, alpha):
    # An identifier whose onset test does not work as a whole — GLR threshold and rank
    # confirmation both switched off, so that min_snr is the only filter — accepts about 2 % of
    # these series and fails the binomial bound (test_the_false_alarm_check_has_power); one
    # that accepts nothing passes the bound but fails the power check at the end. The bound is
    # loose for this identifier: it is conservative (two gates, each Bonferroni-corrected, plus
    # min_snr); measured on these data it accepts 0–1 of 20,000, and even with the Bonferroni
    # factor removed from both gates it stays below alpha, so such a partial breakage is *not*
    # caught here (the gates are checked one by one above, against scipy).
    rng = np.random.default_rng(100 + int(alpha * 1e4) + (noise == "gaussian"))
    w, sigma = (gaussian_null if noise == "gaussian" else jpeg_like_null)(rng)
    tau = exposure_times(rng)
    table = identify(DefectIdentifier(onset_false_alarm=alpha), w, sigma, tau)
    assert false_alarms_are_bounded(len(table), N_SERIES, alpha), (
        f"{len(table)} of {N_SERIES} defect-free series accepted at onset_false_alarm={alpha}")
    # power on the same noise: genuine onsets of 6 noise levels in the middle are found
    onset = rng.integers(30, 70, 500)
    step = np.where(np.arange(N_IMAGES)[:, None] >= onset[None, :], 6 * np.nanmedian(sigma), 0).astype(np.float32)
    found = identify(DefectIdentifier(onset_false_alarm=alpha), w[:, :500] + step, sigma[:, :500], tau)
    assert len(found) >= 0.95 * 500, f"only {len(found)} of 500 genuine onsets found"
    assert np.mean(np.abs(found.onset_index - onset[found.rows]) <= 2) >= 0.95


def test_the_false_alarm_check_has_power():
    # The bound above is not vacuous: an identifier whose onset test is switched off (GLR
    # threshold -inf, rank confirmation always passing) accepts defect-free JPEG-like series
    # far more often than 1e-2 and the same binomial check rejects it.
    import baselines.defects as defects_module
    import kernels

    rng = np.random.default_rng(7)
    w, sigma = jpeg_like_null(rng)
    tau = exposure_times(rng)
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(kernels, "llr_threshold", lambda *a, **k: -np.inf)
        mp.setattr(defects_module, "rank_shift_pvalue", lambda z, onset: np.zeros(np.shape(z)[0]))
        broken = identify(DefectIdentifier(onset_false_alarm=1e-2), w, sigma, tau)
    finally:
        mp.undo()
    assert not false_alarms_are_bounded(len(broken), N_SERIES, 1e-2), len(broken)


def drop_series(rng, n_series=4000):
    """Series whose level falls after some time and stays down: from a positive level to 0 or
    to a lower level, from 0 to a negative level, levels constant or growing with exposure
    (a hot pixel's τ·D), with leading NaN blocks in some (the identifier must not take the
    first measured image for an onset)."""
    tau = exposure_times(rng)
    sigma = rng.uniform(0.5, 3.0, (N_IMAGES, n_series))
    drop_at = rng.integers(4, N_IMAGES - 4, n_series)
    level = rng.uniform(3, 40, n_series) * np.median(sigma)
    kind = rng.integers(0, 4, n_series)
    before = np.where(kind == 2, 0.0, level)
    after = np.select([kind == 0, kind == 1, kind == 2], [0.0, level * rng.uniform(0.1, 0.6, n_series), -level],
                      0.0)
    exposure_scaled = kind == 3     # μ = τ·D before, 0 after
    t = np.arange(N_IMAGES)[:, None]
    scale = np.where(exposure_scaled[None, :], tau[:, None] / tau.mean(), 1.0)
    mean = np.where(t < drop_at[None, :], before[None, :], after[None, :]) * scale
    w = mean + rng.standard_normal(mean.shape) * sigma
    lead = rng.integers(0, 10, n_series) * (rng.random(n_series) < 0.3)
    w[t < lead[None, :]] = np.nan
    return w.astype(np.float32), sigma.astype(np.float32), tau, kind


def test_identifier_never_accepts_a_drop():
    # A defect never heals: a level that falls (or a healthy pixel that turns dark) is not an
    # onset. An identifier that relies on the GLR alone, without the one-sided rank
    # confirmation, accepts some of these series (16 of 4,000 with these seeds): when the first
    # images are unmeasured (NaN), the first measured image becomes the "before" part and the
    # falling rest an onset. (A rank statistic made two-sided is caught by
    # test_rank_shift_z_u_statistic_and_sign, not here.) That the series are strong changes is
    # shown by reversing time: read backwards, the falls to 0 are genuine onsets and the
    # identifier finds them.
    rng = np.random.default_rng(21)
    w, sigma, tau, kind = drop_series(rng)
    ident = DefectIdentifier(onset_false_alarm=0.05)
    accepted = identify(ident, w, sigma, tau)
    assert len(accepted) == 0, (f"{len(accepted)} drop series accepted as defects, e.g. columns "
                                f"{accepted.rows[:10].tolist()}")
    # read backwards, the falls to 0 (kinds 0 and 3) start at the healthy level 0: onsets
    rises = np.flatnonzero((kind == 0) | (kind == 3))
    reversed_found = identify(ident, w[::-1][:, rises].copy(), sigma[::-1][:, rises].copy(), tau[::-1].copy())
    assert len(reversed_found) >= 0.9 * len(rises), (len(reversed_found), len(rises))
