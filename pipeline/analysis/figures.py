"""Saving figures for a paper, and the drawing pieces the analyses' figures share.

Every figure that ``ml_age``, ``cross_device``, ``audit`` and ``saliency`` write goes through
:func:`save_figure`: a PNG at 300 dpi under its documented file name and a vector file beside it
(SVG, or PDF where a figure kind has always been PDF), each written atomically. Figures are drawn
on :class:`matplotlib.figure.Figure` objects and never through ``pyplot``, and no module of the
library calls ``matplotlib.use``: drawing a figure changes no backend, opens no window and leaves
no figure in pyplot's registry, so the library is safe to call from a notebook.

The tables of the reports print accuracies in percent; the figures do too (:func:`percent`), on
the axes and the colour bars. Per-run values are drawn by :func:`per_run_boxes`: a box only where
there are enough runs for quartiles to mean something, the runs themselves as points when they are
few, and the number of runs under each box (:func:`n_label`), so that a method run on one split
is never drawn as if it had been run on ten.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from pipeline.data.atomic import atomic_write

__all__ = ["PNG_DPI", "VECTOR_FORMATS", "SMALL_N", "MIN_BOX_N", "CHANCE_STYLE", "save_figure", "vector_path",
           "percent", "percent_axis", "per_run_boxes", "chance_segments", "n_label"]

#: resolution of every PNG the analyses write
PNG_DPI = 300
#: the vector formats a figure may be saved in besides its PNG
VECTOR_FORMATS = ("svg", "pdf")
#: up to this many runs per box, the runs are also drawn as points
SMALL_N = 15
#: fewer runs than this get no box (quartiles of one or two values mean nothing): points and their mean
MIN_BOX_N = 3
#: how a chance level is drawn in every figure
CHANCE_STYLE = {"color": "0.35", "linestyle": "--", "linewidth": 1.0}


def vector_path(path: str | Path, vector: str = "svg") -> Path:
    """The vector file saved beside the PNG ``path`` (same name, suffix ``.svg`` or ``.pdf``)."""
    if vector not in VECTOR_FORMATS:
        raise ValueError(f"vector format must be one of {VECTOR_FORMATS}, got {vector!r}")
    return Path(path).with_suffix(f".{vector}")


def save_figure(fig, path: str | Path, *, vector: str = "svg", dpi: int = PNG_DPI) -> list[Path]:
    """Save ``fig`` as the PNG ``path`` at ``dpi`` and as a vector file beside it, both atomically.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (drawn without pyplot; nothing global is touched).
    path : str or Path
        The PNG file, ending in ``.png``; its folder is created if missing.
    vector : {"svg", "pdf"}, default "svg"
        The vector format, written to ``path`` with that suffix (:func:`vector_path`). Its bytes do
        not depend on the date or on random ids, so an unchanged figure gives an unchanged file.
    dpi : int, default 300
        Resolution of the PNG.

    Returns
    -------
    list of Path
        The PNG and the vector file, in that order.

    Raises
    ------
    ValueError
        ``path`` does not end in ``.png`` or ``vector`` is not a known format.
    pipeline.data.atomic.FolderWriteError
        The folder cannot be written (full, read-only, no permission).
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figure path {path} must end in .png (the vector file is written beside it)")
    vector_file = vector_path(path, vector)
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}[vector]
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    with matplotlib.rc_context({"svg.hashsalt": "agetrace", "svg.fonttype": "none"}):
        with atomic_write(vector_file, "wb") as fh:
            fig.savefig(fh, format=vector, metadata=metadata)
    return [path, vector_file]


def percent(values) -> np.ndarray:
    """Fractions (0–1) as percent (0–100), as the tables print them."""
    return 100.0 * np.asarray(values, dtype=float)


def percent_axis(ax, label: str = "accuracy (%)") -> None:
    """A 0–100 % y axis with a light grid."""
    ax.set_ylim(-2, 102)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(label)
    ax.grid(axis="y", alpha=0.3)


def n_label(name: str, n: int, *, one_line: bool = False) -> str:
    """A tick label: the name and, under it (or after it, for rotated labels), the runs (``n=3``)."""
    return f"{name}, n={n}" if one_line else f"{name}\nn={n}"


def per_run_boxes(ax, groups: list, positions: list, *, small_n: int = SMALL_N, width: float = 0.6,
                  colour: str = "C0") -> None:
    """Per-run values (percent) at ``positions``: boxes where there are enough runs, points where few.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    groups : list of sequences of float
        Per position, the per-run values in percent; an empty one draws nothing.
    positions : list of float
        The x position of each group.
    small_n : int, default :data:`SMALL_N`
        Up to this many runs the runs are drawn as points over the box.
    width : float
        Box width in x units.
    colour : str
        Colour of the points.

    Notes
    -----
    A group of at least :data:`MIN_BOX_N` runs gets a box (median, quartiles, whiskers at 1.5 IQR);
    a smaller one gets its points and a short bar at their mean. The points are spread across the
    box's width by a fixed pattern (no random jitter), so the figure is the same on every run.
    """
    for values, pos in zip(groups, positions):
        values = np.asarray(values, dtype=float)
        if values.size == 0:
            continue
        if values.size >= MIN_BOX_N:  # outliers are drawn as points below when the runs are shown
            ax.boxplot([values], positions=[pos], widths=width, showfliers=values.size > small_n,
                       manage_ticks=False, zorder=2, medianprops={"color": "black", "linewidth": 1.4})
        else:
            ax.hlines(values.mean(), pos - width / 2, pos + width / 2, colors="black", linewidth=1.4, zorder=2)
        if values.size <= small_n:
            spread = np.linspace(-width / 4, width / 4, values.size) if values.size > 1 else np.zeros(1)
            order = np.argsort(values, kind="stable")
            xs = np.empty(values.size)
            xs[order] = pos + spread
            ax.scatter(xs, values, s=14, color=colour, edgecolors="black", linewidths=0.4, alpha=0.85, zorder=3)


def chance_segments(ax, positions: list, chances: list, *, width: float = 0.8, label: bool = True) -> None:
    """A dashed segment at each position's chance level (percent); the first one labelled "chance"."""
    first = label
    for pos, level in zip(positions, chances):
        if level is None or not np.isfinite(level):
            continue
        ax.hlines(level, pos - width / 2, pos + width / 2, label="chance" if first else None, zorder=1, **CHANCE_STYLE)
        first = False
