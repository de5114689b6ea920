"""Figures of calibrated evidence: the reliability diagram and the Tippett plot."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from pipeline.analysis.metrics import ECE_BINS, _bin_index, expected_calibration_error

__all__ = ["reliability_figure", "tippett_figure"]


def _colours():
    return matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3"])


def reliability_figure(curves: Mapping[str, tuple], title: str, *, n_bins: int = ECE_BINS):
    """Reliability diagram of top-label probabilities, one curve per method.

    Parameters
    ----------
    curves : mapping
        Method display name -> ``(confidence, correct)``: the probability of the predicted class and
        whether the prediction is right (see :func:`top_label`).
    title : str
    n_bins : int, default 10
        Equal-width bins on [0, 1].

    Returns
    -------
    matplotlib.figure.Figure
        Top: observed fraction correct against mean predicted probability per non-empty bin
        (marker area proportional to the images in the bin), with the diagonal of perfect
        calibration. Bottom: images per bin.
    """

    fig = Figure(figsize=(7.0, 7.5), layout="constrained")
    ax, axh = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], color="0.4", linestyle=":", label="perfect calibration")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    colours = _colours()
    n_methods = max(len(curves), 1)
    width = (edges[1] - edges[0]) / (n_methods + 1)
    for m, (name, (confidence, correct)) in enumerate(curves.items()):
        conf = np.asarray(confidence, dtype=float).reshape(-1)
        ok = np.asarray(correct, dtype=float).reshape(-1)
        col = colours[m % len(colours)]
        b = _bin_index(conf, n_bins)
        n_b = np.bincount(b, minlength=n_bins)
        nz = n_b > 0
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins)[nz] / n_b[nz]
        freq = np.bincount(b, weights=ok, minlength=n_bins)[nz] / n_b[nz]
        ece = expected_calibration_error(conf, ok, n_bins)
        # ECE in percent, as the evidence table of summary.md prints it
        label = f"{name} (n={conf.size}, ECE {100 * ece:.1f} %)" if conf.size else f"{name} (n=0)"
        ax.plot(mean_conf, freq, color=col, linewidth=1.2, label=label)
        if conf.size:
            ax.scatter(mean_conf, freq, s=20 + 400 * n_b[nz] / n_b.max(), color=col, alpha=0.6,
                       edgecolors="black", linewidths=0.5, zorder=3)
        axh.bar(edges[:-1] + width * (m + 0.5), n_b, width=width, align="edge", color=col, label=name)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Observed fraction correct (0–1)")
    ax.set_title(title)
    ax.grid(True, linestyle=":", linewidth=0.6)
    ax.legend(loc="upper left", fontsize="small")
    ax.text(0.98, 0.02, f"{n_bins} equal-width bins;\nmarker area ∝ images in bin", transform=ax.transAxes,
            ha="right", va="bottom", fontsize="small", color="0.3")
    axh.set_yscale("log")
    axh.set_ylim(bottom=0.7)  # a bin with one image stays visible
    axh.set_xlabel("Predicted probability of the predicted class (top-label confidence, 0–1)")
    axh.set_ylabel("Images per bin\n(count, log scale)")
    axh.grid(True, axis="y", linestyle=":", linewidth=0.6)
    return fig


def _tippett_curve(values: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Proportion of ``values >= x`` as a step curve over [lo, hi] (for ``step(where='pre')``)."""
    v = np.sort(values)
    xs = np.unique(v)
    prop = (v.size - np.searchsorted(v, xs, side="left")) / v.size
    return np.concatenate([[lo], xs, [hi]]), np.concatenate([[1.0], prop, [0.0]])


def tippett_figure(llrs: Mapping[str, tuple], title: str, *, xlabel: str = "log10 LR (class 1 vs class 0)",
                   h1_name: str = "class 1", h2_name: str = "class 0", xlim: tuple[float, float] | None = None):
    """Tippett plot: cumulative proportion of log10 LR >= x under each proposition, per method.

    Parameters
    ----------
    llrs : mapping
        Method display name -> ``(log10_lr, is_h1)``: class 1's log10 LR against class 0 and
        whether class 1 is the true class.
    title : str
    xlabel : str, default "log10 LR (class 1 vs class 0)"
    h1_name, h2_name : str
        Names of the propositions in the legend.
    xlim : (float, float), optional
        Range of the x axis; default the finite values' range +- 0.5. Values outside it are drawn
        at its edge (useful when an uncalibrated method's log10 LRs dwarf the calibrated ones).

    Returns
    -------
    matplotlib.figure.Figure
        Solid line: images of class 1 (H1 true); dashed: class 0 (H2 true); same colour per method.
        A well-performing system has its solid curve to the right of 0 and its dashed curve to the
        left. Infinite values are drawn at the edge of the axis.
    """

    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    ax = fig.subplots()
    data = {name: (np.asarray(v, dtype=float).reshape(-1), np.asarray(h, dtype=bool).reshape(-1))
            for name, (v, h) in llrs.items()}
    if xlim is None:
        finite = np.concatenate([v[np.isfinite(v)] for v, _ in data.values()] + [np.zeros(1)])
        lo, hi = float(finite.min()) - 0.5, float(finite.max()) + 0.5
    else:
        lo, hi = float(xlim[0]), float(xlim[1])
        if not lo < 0 < hi:
            raise ValueError(f"xlim must include 0 (LR = 1); got {xlim}")
    colours = _colours()
    for m, (name, (v, h1)) in enumerate(data.items()):
        if v.size != h1.size:
            raise ValueError(f"{name}: {v.size} log10 LRs but {h1.size} labels")
        col = colours[m % len(colours)]
        v = np.clip(v, lo, hi)
        for sel, style, prop_name, hyp in ((h1, "-", h1_name, "H1"), (~h1, "--", h2_name, "H2")):
            if sel.any():
                x, p = _tippett_curve(v[sel], lo, hi)
                ax.step(x, p, where="pre", color=col, linestyle=style,
                        label=f"{name}: {prop_name} true ({hyp}, n={int(sel.sum())})")
    ax.axvline(0.0, color="0.3", linewidth=1.0, label="LR = 1 (no evidence)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Proportion of images with log10 LR ≥ x")
    ax.set_title(title)
    ax.grid(True, linestyle=":", linewidth=0.6)
    ax.legend(loc="best", fontsize="small")
    return fig
