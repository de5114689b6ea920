"""Figures of a train-device x test-device accuracy matrix (the cross-device evaluation's).

:func:`plot_heatmap` draws the matrix of mean accuracies, each cell labelled with its spread and
number of runs; :func:`plot_boxes` one panel per training device with the per-run accuracy on
each test device, as in the device-independence paper's figures. Both take the rows of
``cross_summary.csv`` / ``cross_metrics.csv`` (:mod:`pipeline.analysis.cross_device`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.analysis.figures import chance_segments, n_label, per_run_boxes, percent, percent_axis, save_figure

__all__ = ["plot_heatmap", "plot_boxes"]


def _chance_text(rows: list[dict], test: str) -> str:
    """The chance level of a test device in percent ("50 %"; a range when the cells differ)."""
    levels = sorted({round(100 * s["chance"]) for s in rows if s["test_device"] == test})
    if not levels:
        return ""
    return f"{levels[0]} %" if len(levels) == 1 else f"{levels[0]}–{levels[-1]} %"


def plot_heatmap(path: Path, rows: list[dict], names: list[str], label: str) -> list[Path]:
    """The matrix of mean test accuracies (percent), each cell labelled with mean, std and runs.

    Parameters
    ----------
    path : Path
        The PNG file; an SVG of the same name is written beside it.
    rows : list of dict
        The method's rows of ``cross_summary.csv`` (fractions).
    names : list of str
        Every device, in order; a device without a training row has no row in the matrix.
    label : str
        The method's display name.

    Returns
    -------
    list of Path
        The PNG and the SVG.

    Notes
    -----
    The colour bar and the cells are in percent, as in ``cross_device.md``; each test device's tick
    says its chance level (the largest class share of its test images); the diagonal (the
    training device's own test images) is in bold.
    """
    train_names = [n for n in names if any(s["train_device"] == n for s in rows)]
    cell = {(s["train_device"], s["test_device"]): s for s in rows}
    grid = np.full((len(train_names), len(names)), np.nan)
    for i, a in enumerate(train_names):
        for j, b in enumerate(names):
            if (a, b) in cell:
                grid[i, j] = 100 * cell[(a, b)]["mean_accuracy"]
    fig = Figure(figsize=(2.2 + 1.15 * len(names), 1.9 + 0.85 * len(train_names)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid, vmin=0.0, vmax=100.0, cmap="viridis", aspect="auto")
    for i, a in enumerate(train_names):
        for j, b in enumerate(names):
            s = cell.get((a, b))
            if s is None:
                continue
            spread = " —" if s["runs"] < 2 else f" ± {100 * s['std_accuracy']:.1f}"  # as in the tables
            ax.text(j, i, f"{100 * s['mean_accuracy']:.1f}{spread}\nn={s['runs']}", ha="center", va="center",
                    fontsize=7.5, color="white" if s["mean_accuracy"] < 0.6 else "black",
                    fontweight="bold" if a == b else "normal")
    rotate = {"rotation": 30, "ha": "right", "rotation_mode": "anchor"} if len(names) > 6 else {}
    ax.set_xticks(range(len(names)), [f"{n}\nchance {_chance_text(rows, n)}" for n in names], fontsize=8, **rotate)
    ax.set_yticks(range(len(train_names)), train_names, fontsize=8)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title(f"{label}: mean test accuracy (%) ± std over runs\n(bold: own device; n: runs per cell)",
                 fontsize=9)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mean test accuracy (%)\n(white line: chance)")
    for level in sorted({round(100 * s["chance"], 1) for s in rows}):
        bar.ax.axhline(level, color="white", linewidth=1.5)
    return save_figure(fig, path, vector="svg")


def plot_boxes(path: Path, metrics: list[dict], rows: list[dict], names: list[str], label: str) -> list[Path]:
    """One panel per training device: per-run test accuracy (percent) on each test device, own first.

    Parameters
    ----------
    path : Path
        The PNG file; an SVG of the same name is written beside it.
    metrics : list of dict
        The method's rows of ``cross_metrics.csv`` (one per training device, test device and run).
    rows : list of dict
        The method's rows of ``cross_summary.csv`` (their ``chance``).
    names : list of str
        Every device, in order.
    label : str
        The method's display name.

    Returns
    -------
    list of Path
        The PNG and the SVG.

    Notes
    -----
    Each tick says how many runs its box holds; up to 15 runs are also drawn as points, fewer than
    three as points and their mean only. A dashed segment marks each test device's chance level.
    """
    train_names = [n for n in names if any(m["train_device"] == n for m in metrics)]
    ncols = min(3, max(1, len(train_names)))
    nrows = int(np.ceil(len(train_names) / ncols))
    panel = max(3.0, 0.75 * len(names) + 0.9)
    fig = Figure(figsize=(panel * ncols + 0.4, 3.7 * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    chance = {(s["train_device"], s["test_device"]): s["chance"] for s in rows}
    for k, (ax, train) in enumerate(zip(axes.flat, train_names)):
        order = [train] + [n for n in names if n != train]
        data = [percent([m["accuracy"] for m in metrics if m["train_device"] == train and m["test_device"] == t])
                for t in order]
        present = [i for i, d in enumerate(data) if d.size]
        positions = [i + 1 for i in present]
        chance_segments(ax, positions, [100 * chance.get((train, order[i]), np.nan) for i in present],
                        label=k == 0)
        per_run_boxes(ax, [data[i] for i in present], positions)
        ax.axvline(1.5, color="tab:blue", lw=1.0)
        ax.set_xticks(positions, [n_label(order[i] + (" (own)" if i == 0 else ""), data[i].size, one_line=True)
                                  for i in present], rotation=40, ha="right", rotation_mode="anchor", fontsize=7.5)
        ax.set_xlim(0.4, len(order) + 0.6)
        ax.set_title(f"({chr(ord('a') + k)}) trained on {train}", fontsize=9)
        percent_axis(ax, "test accuracy (%)" if k % ncols == 0 else "")
    for ax in list(axes.flat)[len(train_names):]:
        ax.axis("off")
    handles, legend_labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, [f"{t} (largest class share of the test images)" for t in legend_labels],
                   loc="outside lower center", fontsize=8, frameon=False)
    fig.suptitle(f"{label}: per-run test accuracy on each test device "
                 "(own device left of the blue line)", fontsize=10)
    return save_figure(fig, path, vector="svg")
