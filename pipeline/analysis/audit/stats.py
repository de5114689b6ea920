"""Figures, confidence intervals and the verdict rule shared by every audit check.

The verdict rule
----------------
Every *judged* figure of an audit (an accuracy, an accuracy drop, a rate of predictions that
follow the camera, ...) has a chance level, the value it takes in expectation when the label
carries no information of the kind the figure probes, and a *bias side* (above chance for
all the figures of this package). Each figure gets two two-sided confidence intervals,
Bonferroni-adjusted over the ``m`` judged figures of the audit (``family_size``):

* the **screening interval** at confidence ``1 - alpha_suspect / m`` (family-wise 95 % by
  default), and
* the **strict interval** at confidence ``1 - alpha_found / m`` (family-wise 99 % by default).

The verdict of a figure is

* ``bias found``: the strict interval lies entirely on the bias side of the chance level;
* ``bias suspected``: the screening interval does, the strict one does not;
* ``no bias found``: the screening interval reaches the chance level (or lies below it).

A check's verdict is the most severe verdict of its ``verdict`` figures. ``susceptibility``
figures are judged by the same rule but answer another question: not "is the label
predictable from something that is not age, in these data?" but "would the model read such
a thing if the data let it?" (the camera check's Disjoint stress test, which *creates* a
device-class correlation on purpose); they make the check's separate ``susceptibility``
verdict. Context figures (for example "can the model tell the devices apart at all?") are
reported with the same intervals and decide nothing. Because only the upper side of a
two-sided interval can raise a verdict, when no judged figure of an audit is biased the
probability that *any* says more than ``no bias found`` is at most ``alpha_suspect / 2``
(2.5 %), and that any says ``bias found`` at most ``alpha_found / 2`` (0.5 %), whatever the
number of figures. A point estimate above chance alone is *not* enough for
``bias suspected``: under no bias that happens to about half of all figures.

Intervals
---------
* Proportions (accuracies, rates): Clopper–Pearson ("exact") intervals from
  :meth:`scipy.stats.binomtest`'s ``proportion_ci``; they never cover less than promised.
* Paired differences of two classifiers on the same images (an accuracy drop): conditional
  exact interval. With ``b`` images right only under the first and ``c`` right only under
  the second, ``b | b + c ~ Binomial(b + c, pi)``, and the difference of accuracies is
  ``(b + c) / n * (2 pi - 1)``; the Clopper–Pearson interval of ``pi`` maps onto it (the
  interval behind the exact McNemar test).
* Permutation p-values (:func:`p_value_figure`): ``p = (1 + e) / (1 + B)`` with ``e`` of ``B``
  permutations at least as extreme as the data. Its bias side is *below* the level: the
  verdict is ``bias found`` when ``p <= alpha_found / (2 m)``, ``bias suspected`` when
  ``p <= alpha_suspect / (2 m)`` (half the level, as only one side of a two-sided interval
  can raise a verdict, so the family-wise promise above holds). The figure's ``chance`` is
  the screening threshold, its intervals the Clopper–Pearson intervals of the Monte Carlo
  ``p`` (how far ``B`` permutations pin it down).
* Equal-weight means of independent proportions (a rate averaged over groups of devices):
  MOVER (Zou & Donner's method of variance estimates recovery) from Wilson intervals of each
  proportion, Newcombe's construction generalised to a weighted sum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import binomtest

__all__ = ["FOUND", "JUDGED", "NO_BIAS", "ROLES", "SUSPECTED", "VERDICTS", "AuditLevels", "Figure", "decide",
           "mean_of_proportions_ci", "mean_of_proportions_figure", "paired_difference_ci",
           "paired_difference_figure", "p_value_figure", "p_value_thresholds", "proportion_ci", "proportion_figure", "wilson_ci", "worst_verdict"]

NO_BIAS = "no bias found"
SUSPECTED = "bias suspected"
FOUND = "bias found"
VERDICTS = (NO_BIAS, SUSPECTED, FOUND)
"""Verdicts in increasing order of severity."""
ROLES = ("verdict", "susceptibility", "context")
"""Roles of a figure (see the module docstring)."""
JUDGED = ("verdict", "susceptibility")
"""Roles whose figures get a verdict and count in the Bonferroni family."""


@dataclass(frozen=True)
class AuditLevels:
    """Error levels of an audit and the number of figures they are shared over.

    Parameters
    ----------
    family_size : int, default 1
        Number of judged (verdict and susceptibility) figures of the audit (the Bonferroni divisor).
    alpha_suspect : float, default 0.05
        Family-wise level of the screening intervals (``bias suspected``).
    alpha_found : float, default 0.01
        Family-wise level of the strict intervals (``bias found``); at most ``alpha_suspect``.
    """

    family_size: int = 1
    alpha_suspect: float = 0.05
    alpha_found: float = 0.01

    def __post_init__(self):
        if isinstance(self.family_size, bool) or int(self.family_size) != self.family_size or self.family_size < 1:
            raise ValueError(f"family_size must be a positive integer, got {self.family_size!r}")
        if not 0 < self.alpha_found <= self.alpha_suspect < 1:
            raise ValueError(f"need 0 < alpha_found <= alpha_suspect < 1, got alpha_found={self.alpha_found!r}, "
                             f"alpha_suspect={self.alpha_suspect!r}")

    @property
    def confidence(self) -> float:
        """Per-interval confidence of the screening intervals, ``1 - alpha_suspect / m``."""
        return 1.0 - self.alpha_suspect / self.family_size

    @property
    def confidence_strict(self) -> float:
        """Per-interval confidence of the strict intervals, ``1 - alpha_found / m``."""
        return 1.0 - self.alpha_found / self.family_size

    def describe(self) -> str:
        """One sentence stating the rule with these levels."""
        m = self.family_size
        return (f"{m} judged figure(s); Bonferroni-adjusted two-sided intervals: screening "
                f"{100 * self.confidence:.3g} % (family-wise {100 * (1 - self.alpha_suspect):.3g} %), strict "
                f"{100 * self.confidence_strict:.3g} % (family-wise {100 * (1 - self.alpha_found):.3g} %). "
                f"'{FOUND}': the strict interval lies above chance; '{SUSPECTED}': only the screening "
                f"interval does; '{NO_BIAS}': the screening interval reaches chance.")


@dataclass
class Figure:
    """One measured figure with its chance level, intervals and (if judged) verdict.

    Attributes
    ----------
    key : str
        Identifier, unique within its check (``"thumbnail_accuracy"``).
    label : str
        What it is, for a reader.
    value : float
        Point estimate.
    chance : float
        Its value in expectation when there is no bias of the probed kind.
    n : int
        Number of test images (or pairs) behind it.
    ci, ci_strict : tuple of float
        Screening and strict intervals (see the module docstring).
    confidence, confidence_strict : float
        Their per-interval confidence levels.
    method : str
        How the interval was computed.
    role : {"verdict", "susceptibility", "context"}
        Whether the figure takes part in its check's verdict, in its susceptibility verdict,
        or in neither.
    verdict : str or None
        For judged (verdict and susceptibility) figures, one of :data:`VERDICTS`.
    counts : dict
        The raw counts behind the figure (successes, discordant pairs, ...).
    note : str
        Caveats or interpretation.
    """

    key: str
    label: str
    value: float
    chance: float
    n: int
    ci: tuple[float, float]
    ci_strict: tuple[float, float]
    confidence: float
    confidence_strict: float
    method: str
    role: str = "verdict"
    verdict: str | None = None
    counts: dict = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        data = asdict(self)
        data["ci"], data["ci_strict"] = list(self.ci), list(self.ci_strict)
        return data


def _check_counts(k, n, what="successes"):
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"the number of trials must be a non-negative integer, got {n!r}")
    if int(k) != k or not 0 <= k <= n:
        raise ValueError(f"{what} must be an integer in [0, {n}], got {k!r}")
    return int(k), int(n)


def _check_confidence(confidence):
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def proportion_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson (exact) two-sided interval of a binomial proportion.

    Parameters
    ----------
    k, n : int
        Successes and trials; ``n = 0`` gives the uninformative ``(0, 1)``.
    confidence : float
        Two-sided confidence level.

    Returns
    -------
    (float, float)
    """
    k, n = _check_counts(k, n)
    _check_confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def wilson_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score two-sided interval of a binomial proportion (``(0, 1)`` for ``n = 0``)."""
    k, n = _check_counts(k, n)
    _check_confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def paired_difference_ci(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of ``acc_first - acc_second`` for two classifiers on the same ``n`` images.

    Parameters
    ----------
    b : int
        Images the first classifier gets right and the second wrong.
    c : int
        Images the second gets right and the first wrong.
    n : int
        All images (``b + c <= n``).
    confidence : float
        Two-sided confidence level.

    Returns
    -------
    (float, float)
        ``(b + c) / n * (2 * lo - 1, 2 * hi - 1)`` with ``(lo, hi)`` the Clopper–Pearson
        interval of ``b / (b + c)``; ``(0, 0)`` when no image is discordant.
    """
    if int(b) != b or int(c) != c or b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative integers, got b={b!r}, c={c!r}")
    b, c = int(b), int(c)
    _check_counts(b + c, n, "b + c")
    if b + c == 0:
        return 0.0, 0.0
    lo, hi = proportion_ci(b, b + c, confidence)
    scale = (b + c) / n
    return scale * (2 * lo - 1), scale * (2 * hi - 1)


def mean_of_proportions_ci(ks, ns, confidence: float = 0.95) -> tuple[float, float]:
    """MOVER interval of the equal-weight mean of independent proportions ``k_i / n_i``.

    ``L = m - sqrt(sum w^2 (p_i - l_i)^2)``, ``U = m + sqrt(sum w^2 (u_i - p_i)^2)`` with
    ``w = 1 / len(ks)`` and ``(l_i, u_i)`` Wilson intervals at the same confidence.
    """
    ks, ns = list(ks), list(ns)
    if not ks or len(ks) != len(ns):
        raise ValueError("give one success count per trial count, at least one pair")
    if any(n == 0 for n in ns):
        raise ValueError("every group needs at least one trial")
    w = 1.0 / len(ks)
    p = [k / n for k, n in zip(ks, ns)]
    bounds = [wilson_ci(k, n, confidence) for k, n in zip(ks, ns)]
    mean = w * sum(p)
    lo = mean - math.sqrt(sum((w * (pi - li)) ** 2 for pi, (li, _) in zip(p, bounds)))
    hi = mean + math.sqrt(sum((w * (ui - pi)) ** 2 for pi, (_, ui) in zip(p, bounds)))
    return max(0.0, lo), min(1.0, hi)


def decide(chance: float, ci: tuple[float, float], ci_strict: tuple[float, float]) -> str:
    """The verdict of a figure whose bias side is above ``chance`` (see the module docstring).

    Parameters
    ----------
    chance : float
        Chance level.
    ci, ci_strict : (float, float)
        Screening and strict intervals; the strict one must contain the screening one.

    Returns
    -------
    str
        One of :data:`VERDICTS`.
    """
    if ci_strict[0] > ci[0] + 1e-12 or ci_strict[1] < ci[1] - 1e-12:
        raise ValueError(f"the strict interval {ci_strict} must contain the screening interval {ci}")
    if ci_strict[0] > chance:
        return FOUND
    if ci[0] > chance:
        return SUSPECTED
    return NO_BIAS


def worst_verdict(verdicts) -> str:
    """The most severe of ``verdicts`` (``no bias found`` for none)."""
    verdicts = [v for v in verdicts if v is not None]
    unknown = [v for v in verdicts if v not in VERDICTS]
    if unknown:
        raise ValueError(f"unknown verdict(s) {unknown}; use {VERDICTS}")
    return max(verdicts, key=VERDICTS.index, default=NO_BIAS)


def _finish(key, label, value, chance, n, interval, levels, method, role, counts, note) -> Figure:
    ci = interval(levels.confidence)
    ci_strict = interval(levels.confidence_strict)
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    verdict = decide(chance, ci, ci_strict) if role in JUDGED else None
    return Figure(key, label, float(value), float(chance), int(n), tuple(map(float, ci)),
                  tuple(map(float, ci_strict)), levels.confidence, levels.confidence_strict, method, role,
                  verdict, counts, note)


def proportion_figure(key: str, label: str, k, n: int, chance: float, levels: AuditLevels, *,
                      role: str = "verdict", note: str = "") -> Figure:
    """A proportion ``k / n`` (``k`` is rounded to an integer for the interval) as a :class:`Figure`."""
    k_int = round(float(k))
    value = float(k) / n if n else float("nan")
    return _finish(key, label, value, chance, n, lambda conf: proportion_ci(k_int, n, conf), levels,
                   "Clopper-Pearson", role, {"successes": float(k), "trials": int(n)}, note)


def paired_difference_figure(key: str, label: str, first_correct, second_correct, levels: AuditLevels, *,
                             role: str = "verdict", note: str = "") -> Figure:
    """``accuracy(first) - accuracy(second)`` on the same images as a :class:`Figure` (chance 0)."""
    first = np.asarray(first_correct, dtype=bool)
    second = np.asarray(second_correct, dtype=bool)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"give one correctness flag per image for both classifiers, got shapes "
                         f"{first.shape} and {second.shape}")
    n = first.size
    b = int(np.sum(first & ~second))
    c = int(np.sum(~first & second))
    value = (b - c) / n if n else float("nan")
    return _finish(key, label, value, 0.0, n, lambda conf: paired_difference_ci(b, c, n, conf) if n else (-1.0, 1.0),
                   levels, "conditional exact (McNemar)", role,
                   {"first_only": b, "second_only": c, "pairs": n,
                    "first_accuracy": float(first.mean()) if n else None,
                    "second_accuracy": float(second.mean()) if n else None}, note)


def mean_of_proportions_figure(key: str, label: str, ks, ns, chance: float, levels: AuditLevels, *,
                               role: str = "verdict", note: str = "", groups=None) -> Figure:
    """The equal-weight mean of independent proportions as a :class:`Figure` (MOVER interval)."""
    ks, ns = [int(k) for k in ks], [int(n) for n in ns]
    value = float(np.mean([k / n for k, n in zip(ks, ns)]))
    counts = {"successes": ks, "trials": ns}
    if groups is not None:
        counts["groups"] = list(groups)
    return _finish(key, label, value, chance, sum(ns), lambda conf: mean_of_proportions_ci(ks, ns, conf), levels,
                   "MOVER (Wilson)", role, counts, note)


PERMUTATION = "permutation"
"""The ``method`` of a p-value figure (:func:`p_value_figure`)."""


def p_value_thresholds(levels: AuditLevels) -> tuple[float, float]:
    """The p-values at or below which a p-value figure says ``bias suspected`` and ``bias found``."""
    m = levels.family_size
    return levels.alpha_suspect / (2 * m), levels.alpha_found / (2 * m)


def p_value_figure(key: str, label: str, exceed: int, n_permutations: int, levels: AuditLevels, *,
                   statistic: float | None = None, role: str = "verdict", note: str = "") -> Figure:
    """A one-sided permutation test as a :class:`Figure` (see the module docstring).

    Parameters
    ----------
    exceed : int
        Permutations whose statistic is at least the observed one.
    n_permutations : int
        Permutations drawn (``B``); the smallest attainable p is ``1 / (B + 1)``.
    statistic : float, optional
        The observed statistic (recorded in ``counts``).
    """
    exceed, n_permutations = _check_counts(exceed, n_permutations, "exceedances")
    if n_permutations < 1:
        raise ValueError("a permutation test needs at least one permutation")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    p = (exceed + 1) / (n_permutations + 1)
    suspect, found = p_value_thresholds(levels)
    ci = proportion_ci(exceed + 1, n_permutations + 1, levels.confidence)
    ci_strict = proportion_ci(exceed + 1, n_permutations + 1, levels.confidence_strict)
    verdict = None
    if role in JUDGED:
        verdict = FOUND if p <= found else SUSPECTED if p <= suspect else NO_BIAS
    counts = {"exceedances": exceed, "permutations": n_permutations, "threshold_suspected": suspect,
              "threshold_found": found}
    if statistic is not None:
        counts["statistic"] = float(statistic)
    if p <= suspect and 1 / (n_permutations + 1) > found:
        note = (note + " " if note else "") + "Too few permutations to reach 'bias found'."
    return Figure(key, label, float(p), float(suspect), int(n_permutations), tuple(map(float, ci)),
                  tuple(map(float, ci_strict)), levels.confidence, levels.confidence_strict, PERMUTATION, role,
                  verdict, counts, note)
