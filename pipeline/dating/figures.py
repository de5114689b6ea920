"""The figures of the dating evidence report, each drawn from the report's numbers only.

One function per figure of :mod:`pipeline.dating.report` (residual crops, defect timelines,
posterior over capture date, defect map, calibration); each takes the JSON-ready dict of
:func:`pipeline.dating.report.build_report` and returns a :class:`matplotlib.figure.Figure` (or
None when there is nothing to show), so that the report's JSON holds everything a figure shows.
Figures are made without pyplot, so drawing them changes no global matplotlib state.
"""

from __future__ import annotations

import math

import matplotlib
import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from pipeline.analysis.calibration_figures import tippett_figure
from pipeline.dating.model import EPOCH

__all__ = ["PAGE_WIDTH_IN", "crops_figure", "timelines_figure", "posterior_figure", "defect_map_figure",
           "calibration_figure"]

#: figure width in inches: fits an A4 or US-letter page with margins
PAGE_WIDTH_IN = 7.5


def _mpl_days(values):
    """Matplotlib date numbers of days since 1970 (whatever matplotlib's epoch)."""
    return np.asarray(values, dtype=float) + mdates.date2num(EPOCH)


def _date_axis(axis, *, max_ticks: int = 6):
    locator = mdates.AutoDateLocator(minticks=2, maxticks=max_ticks)
    axis.set_major_locator(locator)
    axis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _array(grid) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)


def crops_figure(content: dict):
    """Residual crops of the defects with the most evidence (section 2).

    Returns
    -------
    matplotlib.figure.Figure or None
        Two defects per row; for each, the questioned image's crop, the trusted mean before and
        after the onset on one diverging colour scale (DN), the defect pixel outlined. None when no
        defect is shown.
    """
    crops = content["crops"]
    if not crops:
        return None
    # a fixed layout in inches (a constrained layout of 36 panels costs seconds per report)
    per_row, left, right, top, bottom = 2, 0.55, 0.1, 0.08, 0.36
    panel, gap, bar_gap, bar_w = 0.82, 0.08, 0.07, 0.09
    block_w = (PAGE_WIDTH_IN - left - right) / per_row
    block_h = 1.5
    n_rows = math.ceil(len(crops) / per_row)
    height = top + n_rows * block_h + bottom
    fig = Figure(figsize=(PAGE_WIDTH_IN, height))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.75")

    def box(x, y, w, h):  # inches from the top-left corner -> figure fraction
        return [x / PAGE_WIDTH_IN, 1 - (y + h) / height, w / PAGE_WIDTH_IN, h / height]

    for j, c in enumerate(crops):
        x0 = left + (j % per_row) * block_w
        y0 = top + (j // per_row) * block_h
        step, radius = c["pixel_step"], c["radius"]
        half = radius * step + step / 2
        limit = max(c["colour_limit"], 1.0)
        before_n = c["before_count"][radius][radius]
        after_n = c["after_count"][radius][radius]
        titles = ("questioned\nimage", f"trusted, before\nonset (n={before_n})", f"trusted, after\nonset (n={after_n})")
        image = None
        for q, (key, title) in enumerate(zip(("questioned", "before_mean", "after_mean"), titles)):
            ax = fig.add_axes(box(x0 + q * (panel + gap), y0 + 0.5, panel, panel))
            image = ax.imshow(_array(c[key]), cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest",
                              extent=(-half, half, half, -half))
            ax.add_patch(Rectangle((-step / 2, -step / 2), step, step, fill=False, edgecolor="black", linewidth=1.2))
            ax.set_title(title, fontsize=7, pad=2)
            ticks = [-radius * step, 0, radius * step]
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.tick_params(labelsize=6, length=2, pad=1)
            if q:
                ax.set_yticklabels([])
        cax = fig.add_axes(box(x0 + 3 * panel + 2 * gap + bar_gap, y0 + 0.5, bar_w, panel))
        bar = fig.colorbar(image, cax=cax)
        bar.set_label("residual (DN)", fontsize=6.5, labelpad=1)
        bar.ax.tick_params(labelsize=6, length=2, pad=1)
        llr = c["log_likelihood_ratio"]
        fig.text((x0 + 1.5 * panel + gap) / PAGE_WIDTH_IN, 1 - (y0 + 0.08) / height,
                 f"#{c['rank']}: row {c['row']}, col {c['col']}, {c['channel_name']}; LLR "
                 f"{'n/a' if llr is None else f'{llr:+.2f}'}", fontsize=8, fontweight="bold", ha="center", va="top")
    fig.text(0.5, 0.12 / height, "horizontal offset from the defect (sensor pixels; the defect is at 0, outlined)",
             fontsize=7.5, ha="center", va="bottom")
    fig.text(0.12 / PAGE_WIDTH_IN, 0.5, "vertical offset from the defect (sensor pixels)", fontsize=7.5,
             rotation=90, ha="left", va="center")
    return fig


def timelines_figure(content: dict):
    """The shown defects' residual in the trusted images against capture date (section 3).

    Returns
    -------
    matplotlib.figure.Figure or None
        Small multiples, three per row, one per defect; None when no defect is shown.
    """
    data = content["timelines"]
    shown = data["defects"]
    if not shown:
        return None
    per_row = 3
    n_rows = math.ceil(len(shown) / per_row)
    fig = Figure(figsize=(PAGE_WIDTH_IN, 1.95 * n_rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, per_row, sharex=True, squeeze=False)).reshape(-1)
    days = np.asarray(data["trusted_days"], dtype=float)
    x = _mpl_days(days)
    handles = {}
    for j, ax in enumerate(axes):
        if j >= len(shown):
            ax.set_visible(False)
            continue
        d = shown[j]
        w = np.array([np.nan if v is None else v for v in d["trusted_residuals"]], dtype=float)
        after = days >= d["onset_days"]
        lo, hi = _mpl_days([d["onset_from_days"], d["onset_to_days"]])
        handles["onset"] = ax.axvspan(lo, hi, color="tab:orange", alpha=0.35, linewidth=0, label="onset range")
        ax.axvline(_mpl_days([d["onset_days"]])[0], color="tab:orange", linewidth=0.9)
        handles["zero"] = ax.axhline(0.0, color="0.5", linestyle=":", linewidth=0.8, label="healthy level (0)")
        if d["expected_if_present"] is not None:
            handles["expected"] = ax.axhline(d["expected_if_present"], color="0.3", linestyle="--", linewidth=0.8,
                                             label="expected if present")
        handles["before"] = ax.scatter(x[~after], w[~after], s=6, color="0.6", linewidths=0,
                                       label="trusted image, before onset")
        handles["after"] = ax.scatter(x[after], w[after], s=6, color="black", linewidths=0,
                                      label="trusted image, after onset")
        if d["questioned_residual"] is not None:
            handles["questioned"] = ax.axhline(d["questioned_residual"], color="tab:red", linewidth=1.3,
                                               label="questioned image")
        llr = d["log_likelihood_ratio"]
        ax.set_title(f"#{d['rank']} ({d['row']}, {d['col']}) {d['channel_name']}, LLR "
                     f"{'n/a' if llr is None else f'{llr:+.2f}'}", fontsize=7.5)
        ax.tick_params(labelsize=6.5)
        ax.grid(True, linestyle=":", linewidth=0.5)
        _date_axis(ax.xaxis, max_ticks=5)
        if j % per_row == 0:
            ax.set_ylabel("residual (DN)", fontsize=7)
        if j >= len(shown) - per_row:
            ax.set_xlabel("capture date", fontsize=7)
            ax.xaxis.set_tick_params(labelbottom=True)
    order = [key for key in ("before", "after", "onset", "questioned", "expected", "zero") if key in handles]
    fig.legend([handles[key] for key in order], [handles[key].get_label() for key in order], loc="outside upper center",
               ncols=3, fontsize=7, frameon=False)
    return fig


def posterior_figure(content: dict):
    """The posterior density over capture date (section 4).

    Returns
    -------
    matplotlib.figure.Figure
        Top: the whole trusted period; bottom: a zoom on the credible range. Density per day
        against date, the credible range shaded between dashed lines, the most probable interval
        in a hatched green band, the onsets as ticks along the bottom.
    """
    p = content["posterior"]
    grid = np.asarray(p["grid_days"], dtype=float)
    density = np.asarray(p["density_per_day"], dtype=float)
    x = _mpl_days(grid)
    fig = Figure(figsize=(PAGE_WIDTH_IN, 6.8), layout="constrained")
    axes = fig.subplots(2, 1)
    start, end = _mpl_days(p["period_days"])
    c_lo, c_hi = _mpl_days([p["credible_from_days"], p["credible_to_days"]])
    i_lo, i_hi = _mpl_days([p["interval_from_days"], p["interval_to_days"]])
    margin = max(0.25 * (c_hi - c_lo), 10.0)
    views = ((start, end, "the whole trusted period"),
             (max(start, min(c_lo, i_lo) - margin), min(end, max(c_hi, i_hi) + margin), "zoom on the credible range"))
    inside = (grid >= p["credible_from_days"]) & (grid <= p["credible_to_days"])
    onsets = _mpl_days(p["onsets_days"])
    top = 1.12 * float(np.max(density)) if density.size else 1.0
    for ax, (lo, hi, title) in zip(axes, views):
        ax.axvspan(i_lo, i_hi, facecolor="tab:green", alpha=0.10, edgecolor="tab:green", hatch="///", linewidth=0.8,
                   zorder=1, label=f"most probable interval between onsets (p = {p['interval_probability']:.3f})")
        ax.fill_between(x, 0, density, where=inside, color="tab:blue", alpha=0.3, linewidth=0, zorder=2,
                        label=f"{100 * p['level']:.0f} % credible range")
        for edge in (c_lo, c_hi):
            ax.axvline(edge, color="tab:blue", linestyle="--", linewidth=0.9, zorder=2)
        ax.plot(x, density, color="tab:blue", linewidth=1.4, zorder=3, label="posterior density")
        ax.plot(onsets, np.zeros_like(onsets), linestyle="none", marker="|", markersize=11, markeredgewidth=1.3,
                color="black", transform=ax.get_xaxis_transform(), clip_on=True, zorder=4, label="defect onsets")
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, top)
        _date_axis(ax.xaxis, max_ticks=9)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("density (probability per day)", fontsize=8.5)
        ax.tick_params(labelsize=8)
        ax.grid(True, linestyle=":", linewidth=0.6)
    axes[1].set_xlabel("capture date (camera clock)", fontsize=8.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=2, fontsize=7.5, frameon=False)
    return fig


def defect_map_figure(content: dict):
    """The sensor's defects, coloured by onset date (section 5).

    Returns
    -------
    matplotlib.figure.Figure
        The frame outline in sensor pixels (row 0 at the top), defects with an onset as filled
        circles coloured by onset date (colour bar in dates), the others as grey crosses, the
        shown defects numbered.
    """
    m = content["defect_map"]
    height, width = m["frame"]
    rows, cols = np.asarray(m["rows"], dtype=float), np.asarray(m["cols"], dtype=float)
    informative = np.asarray(m["informative"], dtype=bool)
    onset = np.array([np.nan if v is None else v for v in m["onset_days"]], dtype=float)
    plot_w = PAGE_WIDTH_IN - 1.6
    fig = Figure(figsize=(PAGE_WIDTH_IN, min(9.0, plot_w * height / width + 1.0)), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.08, h_pad=0.08)
    ax = fig.subplots()
    ax.add_patch(Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor="black", linewidth=1.2))
    if (~informative).any():
        ax.scatter(cols[~informative], rows[~informative], marker="x", s=28, color="0.55", linewidths=1.0)
    if informative.any():
        dots = ax.scatter(cols[informative], rows[informative], c=_mpl_days(onset[informative]), cmap="viridis", s=42,
                          edgecolors="black", linewidths=0.5)
        bar = fig.colorbar(dots, ax=ax, shrink=0.9, pad=0.02)
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        bar.ax.yaxis.set_major_locator(locator)
        bar.ax.yaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
        bar.set_label("onset date")
        bar.ax.tick_params(labelsize=7)
    for r, c, rank in zip(rows, cols, m["rank"]):
        if rank is not None:
            ax.annotate(str(rank), (c, r), xytext=(4, 3), textcoords="offset points", fontsize=7, fontweight="bold")
    ax.set_xlim(-0.5 - 0.02 * width, width - 0.5 + 0.02 * width)
    ax.set_ylim(height - 0.5 + 0.02 * height, -0.5 - 0.02 * height)
    ax.set_aspect("equal")
    ax.set_xlabel("column (sensor pixels)")
    ax.set_ylabel("row (sensor pixels)")
    proxies = []
    if informative.any():
        proxies.append(Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="0.8",
                              markeredgecolor="black", markeredgewidth=0.5,
                              label="onset inside the trusted period (colour: onset date)"))
    if (~informative).any():
        proxies.append(Line2D([], [], linestyle="none", marker="x", markersize=6, color="0.55",
                              label="no onset inside the trusted period"))
    ax.legend(handles=proxies, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2, fontsize="small",
              frameon=False)
    return fig


def calibration_figure(content: dict):
    """Tippett plot of the cross-fitted before/after-D log10 LRs (section 6).

    Returns
    -------
    matplotlib.figure.Figure or None
        :func:`pipeline.analysis.calibration.tippett_figure` of the calibrated and the model's own
        log10 LRs, truly-before pairs solid, truly-after dashed; None without a calibration.
    """
    cal = content["calibration"]
    if not cal["available"]:
        return None
    raw = np.asarray(cal["raw_log10_lr"], dtype=float)
    calibrated = np.asarray(cal["calibrated_log10_lr"], dtype=float)
    before = np.asarray(cal["before"], dtype=bool)
    reach = max(abs(cal["bounds"][0]), abs(cal["bounds"][1]), 1.0) + 2.0
    fig = tippett_figure({f"calibrated (Cllr {cal['cllr']:.3f})": (calibrated, before),
                          f"model's own (Cllr {cal['cllr_raw']:.3f})": (raw, before)},
                         f"Held-out trusted images: {cal['n_pairs']} image–date pairs",
                         xlabel="log10 LR 'taken before D' vs 'taken after D'", h1_name="before D",
                         h2_name="after D", xlim=(-reach, reach))
    fig.set_size_inches(PAGE_WIDTH_IN, 5.4)
    ax = fig.axes[0]
    ax.set_ylabel("Proportion of image–date pairs with log10 LR ≥ x")
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=7.5, frameon=False)
    return fig
