"""Figures of a train-device x test-device accuracy matrix (the cross-device evaluation's).

:func:`plot_heatmap` draws the matrix of mean accuracies, each cell labelled with its spread and
number of runs; :func:`plot_boxes` one panel per training device with the per-run accuracy on
each test device, as in the device-independence paper's figures. Both take the rows of
``cross_summary.csv`` / ``cross_metrics.csv`` (:mod:`pipeline.analysis.cross_device`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from pipeline.data.atomic import atomic_write

__all__ = ["plot_heatmap", "plot_boxes"]


def _save(fig, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def plot_heatmap(path: Path, rows: list[dict], names: list[str], label: str) -> None:
    """The matrix of mean accuracies, each cell labelled with mean, std and its number of runs."""
    train_names = [n for n in names if any(s["train_device"] == n for s in rows)]
    cell = {(s["train_device"], s["test_device"]): s for s in rows}
    grid = np.full((len(train_names), len(names)), np.nan)
    for i, a in enumerate(train_names):
        for j, b in enumerate(names):
            if (a, b) in cell:
                grid[i, j] = cell[(a, b)]["mean_accuracy"]
    size = 1.3 + 1.05 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, 1.0 + 1.0 * len(train_names)))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for i, a in enumerate(train_names):
        for j, b in enumerate(names):
            s = cell.get((a, b))
            if s is None:
                continue
            spread = "" if s["runs"] < 2 else f"\n±{100 * s['std_accuracy']:.1f}"
            ax.text(j, i, f"{100 * s['mean_accuracy']:.1f}{spread}\nn={s['runs']}", ha="center", va="center",
                    fontsize=7, color="white" if s["mean_accuracy"] < 0.6 else "black",
                    fontweight="bold" if a == b else "normal")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(train_names)), train_names, fontsize=8)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    chance = np.mean([s["chance"] for s in rows])
    ax.set_title(f"{label}: accuracy % (chance ≈ {100 * chance:.0f})", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="mean accuracy")
    fig.tight_layout()
    _save(fig, path)


def plot_boxes(path: Path, metrics: list[dict], rows: list[dict], names: list[str], label: str) -> None:
    """One panel per training device; a box per test device (own device first), as in the paper's figures."""
    train_names = [n for n in names if any(m["train_device"] == n for m in metrics)]
    ncols = min(4, max(1, len(train_names)))
    nrows = int(np.ceil(len(train_names) / ncols))
    panel = max(3.0, 0.6 * len(names) + 0.8)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols + 0.6, 3.6 * nrows), squeeze=False, sharey=True)
    chance = {(s["train_device"], s["test_device"]): s["chance"] for s in rows}
    for k, (ax, train) in enumerate(zip(axes.flat, train_names)):
        order = [train] + [n for n in names if n != train]
        data = [[m["accuracy"] for m in metrics if m["train_device"] == train and m["test_device"] == t]
                for t in order]
        present = [i for i, d in enumerate(data) if d]
        ax.boxplot([data[i] for i in present], positions=[i + 1 for i in present],
                   tick_labels=[order[i] for i in present], widths=0.6)
        ax.axvline(1.5, color="tab:blue", lw=1.0)
        ax.plot([i + 1 for i in present], [chance.get((train, order[i]), np.nan) for i in present], ls="none",
                marker="_", markersize=14, color="0.55", label="chance")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        n_runs = max(len(d) for d in data)
        ax.set_title(f"({chr(ord('a') + k)}) trained on {train}\n{n_runs} run{'s' if n_runs != 1 else ''}", fontsize=9)
    for ax in list(axes.flat)[len(train_names):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(loc="lower right", fontsize=7, frameon=False)
    fig.suptitle(f"{label}: per-run accuracy on each test device "
                 "(own device left of the blue line)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
