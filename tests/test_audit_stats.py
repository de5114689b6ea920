"""Intervals and the verdict rule of the bias audit (pipeline.analysis.audit.stats)."""

import math

import numpy as np
import pytest
from scipy.stats import beta, binom, norm

from pipeline.analysis.audit.stats import (
    FOUND,
    NO_BIAS,
    SUSPECTED,
    AuditLevels,
    decide,
    mean_of_proportions_ci,
    paired_difference_ci,
    paired_difference_figure,
    proportion_ci,
    proportion_figure,
    wilson_ci,
    worst_verdict,
)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (17, 40), (250, 480)])
def test_clopper_pearson_matches_beta_quantiles(k, n):
    lo, hi = proportion_ci(k, n, 0.95)
    want_lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    want_hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    assert lo == pytest.approx(want_lo, abs=1e-9)
    assert hi == pytest.approx(want_hi, abs=1e-9)


def test_clopper_pearson_closed_forms_at_the_ends():
    assert proportion_ci(0, 10, 0.95) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert proportion_ci(10, 10, 0.95) == pytest.approx((0.025 ** (1 / 10), 1.0))
    assert proportion_ci(0, 0, 0.95) == (0.0, 1.0)


def test_wilson_matches_its_formula():
    k, n, z = 7, 20, norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_ci(k, n, 0.95) == pytest.approx((centre - half, centre + half))


@pytest.mark.parametrize("bad", [(-1, 10), (11, 10), (2.5, 10), (1, -3)])
def test_bad_counts_say_what_is_wrong(bad):
    with pytest.raises(ValueError, match="integer"):
        proportion_ci(*bad)


def test_bad_confidence_is_refused():
    with pytest.raises(ValueError, match="confidence"):
        proportion_ci(1, 2, 1.5)


def test_paired_difference_interval():
    assert paired_difference_ci(0, 0, 50) == (0.0, 0.0)
    lo, hi = paired_difference_ci(12, 0, 40, 0.95)
    assert 0 < lo < hi and hi == pytest.approx(12 / 40)
    # swapping the classifiers negates the interval
    a = paired_difference_ci(9, 3, 60, 0.9)
    b = paired_difference_ci(3, 9, 60, 0.9)
    assert a == pytest.approx((-b[1], -b[0]))
    # it is the Clopper-Pearson interval of b / (b + c), rescaled
    cp = proportion_ci(9, 12, 0.9)
    assert a == pytest.approx((12 / 60 * (2 * cp[0] - 1), 12 / 60 * (2 * cp[1] - 1)))
    with pytest.raises(ValueError, match="b \\+ c"):
        paired_difference_ci(30, 30, 50)


def test_mean_of_proportions_reduces_to_wilson_for_one_group_and_narrows_with_more():
    assert mean_of_proportions_ci([7], [20], 0.95) == pytest.approx(wilson_ci(7, 20, 0.95))
    one = mean_of_proportions_ci([30], [60], 0.95)
    two = mean_of_proportions_ci([30, 30], [60, 60], 0.95)
    assert two[0] > one[0] and two[1] < one[1]
    assert mean_of_proportions_ci([10, 10], [10, 10], 0.95)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mean_of_proportions_ci([1], [0])


def test_levels_are_bonferroni_adjusted_and_validated():
    levels = AuditLevels(family_size=10)
    assert levels.confidence == pytest.approx(1 - 0.05 / 10)
    assert levels.confidence_strict == pytest.approx(1 - 0.01 / 10)
    assert "10 judged" in levels.describe()
    with pytest.raises(ValueError, match="family_size"):
        AuditLevels(family_size=0)
    with pytest.raises(ValueError, match="alpha_found"):
        AuditLevels(alpha_suspect=0.01, alpha_found=0.05)


def test_verdict_rule():
    assert decide(0.5, (0.6, 0.8), (0.55, 0.85)) == FOUND
    assert decide(0.5, (0.52, 0.8), (0.45, 0.85)) == SUSPECTED
    assert decide(0.5, (0.45, 0.8), (0.4, 0.85)) == NO_BIAS
    assert decide(0.5, (0.1, 0.3), (0.05, 0.35)) == NO_BIAS          # below chance is no bias of this kind
    assert decide(0.0, (0.01, 0.2), (-0.02, 0.25)) == SUSPECTED
    with pytest.raises(ValueError, match="contain"):
        decide(0.5, (0.4, 0.9), (0.5, 0.8))
    assert worst_verdict([NO_BIAS, FOUND, SUSPECTED]) == FOUND
    assert worst_verdict([NO_BIAS, SUSPECTED]) == SUSPECTED
    assert worst_verdict([]) == NO_BIAS
    with pytest.raises(ValueError):
        worst_verdict(["maybe"])


@pytest.mark.parametrize("n", [40, 144, 480])
@pytest.mark.parametrize("chance", [0.5, 0.25])
def test_false_alarms_are_bounded_by_the_intervals(n, chance):
    """Exact probability, under no bias, that one figure says more than 'no bias found'."""
    levels = AuditLevels(family_size=11)
    k = np.arange(int(n * chance), n + 1)        # at or below chance nothing can raise a verdict
    pmf = binom.pmf(k, n, chance)
    verdicts = [proportion_figure("f", "f", int(x), n, chance, levels).verdict for x in k]
    assert proportion_figure("f", "f", int(n * chance) - 1, n, chance, levels).verdict == NO_BIAS
    p_alarm = pmf[[v != NO_BIAS for v in verdicts]].sum()
    p_found = pmf[[v == FOUND for v in verdicts]].sum()
    assert p_alarm <= levels.alpha_suspect / (2 * levels.family_size)
    assert p_found <= levels.alpha_found / (2 * levels.family_size)
    # and a clear bias is found
    strong = round(n * (chance + 0.3))
    assert proportion_figure("f", "f", strong, n, chance, levels).verdict == FOUND


@pytest.mark.parametrize("discordant", [5, 20, 60])
def test_paired_false_alarms_are_bounded(discordant):
    levels = AuditLevels(family_size=11)
    b = np.arange(discordant + 1)
    pmf = binom.pmf(b, discordant, 0.5)
    alarm = 0.0
    for bi, p in zip(b, pmf):
        first = np.zeros(100, bool)
        second = np.zeros(100, bool)
        first[:bi] = True
        second[bi:discordant] = True
        if paired_difference_figure("d", "d", first, second, levels).verdict != NO_BIAS:
            alarm += p
    assert alarm <= levels.alpha_suspect / (2 * levels.family_size)


def test_figures_carry_counts_and_roles():
    levels = AuditLevels(family_size=2)
    fig = proportion_figure("acc", "accuracy", 30.4, 40, 0.5, levels, role="context")
    assert fig.verdict is None and fig.counts == {"successes": 30.4, "trials": 40}
    assert fig.value == pytest.approx(30.4 / 40)
    assert fig.ci == proportion_ci(30, 40, levels.confidence)
    data = fig.to_dict()
    assert data["ci"] == list(fig.ci) and data["role"] == "context"
    drop = paired_difference_figure("drop", "drop", [1, 1, 1, 0], [0, 0, 1, 1], levels)
    assert drop.value == pytest.approx(0.25) and drop.chance == 0.0
    assert drop.counts["first_only"] == 2 and drop.counts["second_only"] == 1
    with pytest.raises(ValueError, match="one correctness flag"):
        paired_difference_figure("d", "d", [1, 0], [1], levels)
