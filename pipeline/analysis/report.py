"""Summary tables and box plots of per-run accuracies, in the style of the papers' figures."""

from __future__ import annotations

import csv
import io
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.analysis.figures import CHANCE_STYLE, n_label, per_run_boxes, percent, percent_axis, save_figure
from pipeline.data.atomic import atomic_write_text

__all__ = ["summarise", "summary_markdown", "write_csv", "plot_accuracy_boxes", "method_labels"]

METHOD_NAMES = {"fg": "Fridrich–Goljan", "nb": "Naive Bayes", "svm": "SVM", "srnet": "SRNet (5-crop)",
                "srnet-res": "SRNet on median residual", "srnet-cs": "SRNet, constrained layer",
                "defect-cnn": "Defect-patch CNN"}


def method_labels(srnet_crops=None) -> dict:
    """Display names of the methods; SRNet's says which crops it fused when not the usual five."""
    labels = dict(METHOD_NAMES)
    if srnet_crops is not None and len(srnet_crops) != 5:
        used = list(srnet_crops)
        labels["srnet"] = f"SRNet ({len(used)} crop{'s' if len(used) > 1 else ''}: {', '.join(used)})"
    return labels


def write_csv(path, rows: list[dict], columns: list[str]) -> None:
    """Write dict rows as CSV, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def summarise(metrics: list[dict]) -> list[dict]:
    """Mean, standard deviation and count of accuracy per (device, method), in input order.

    The standard deviation (``ddof=1``) of a single run is undefined: ``std_accuracy`` is None
    then (an empty cell in summary.csv, ``—`` in :func:`summary_markdown`), never 0.
    """
    groups = defaultdict(list)
    for m in metrics:
        groups[(m["device"], m["method"])].append(float(m["accuracy"]))
    out = []
    for (device, method), acc in groups.items():
        arr = np.asarray(acc)
        out.append({"device": device, "method": method, "runs": arr.size, "mean_accuracy": float(arr.mean()),
                    "std_accuracy": float(arr.std(ddof=1)) if arr.size > 1 else None,
                    "min_accuracy": float(arr.min()), "max_accuracy": float(arr.max())})
    return out


def summary_markdown(summary: list[dict], methods: list[str], chance: dict | None = None,
                     labels: dict | None = None) -> str:
    """A devices × methods table of ``mean ± std`` accuracy (percent), with the number of runs.

    A cell of one run shows ``mean — (n=1)``: one run has no spread to show (not ``± 0.0``).
    ``labels`` maps methods to column titles (default :data:`METHOD_NAMES`).
    """
    devices = list(dict.fromkeys(s["device"] for s in summary))
    cell = {(s["device"], s["method"]): s for s in summary}
    labels = METHOD_NAMES if labels is None else labels
    header = "| device | " + " | ".join(labels.get(m, m) for m in methods) + " | chance |"
    lines = [header, "|" + "---|" * (len(methods) + 2)]
    for device in devices:
        cells = []
        for method in methods:
            s = cell.get((device, method))
            cells.append("—" if s is None else f"{100 * s['mean_accuracy']:.1f} {_spread(s)} (n={s['runs']})")
        ch = "" if not chance or device not in chance else f"{100 * chance[device]:.1f}"
        lines.append(f"| {device} | " + " | ".join(cells) + f" | {ch} |")
    return "\n".join(lines)


def _spread(s: dict) -> str:
    """``± std`` in percent, or ``—`` for a single run (or a missing std)."""
    std = s.get("std_accuracy")
    if s["runs"] < 2 or std is None or not np.isfinite(std):
        return "—"
    return f"± {100 * std:.1f}"


def plot_accuracy_boxes(metrics: list[dict], methods: list[str], path: str | Path, *,
                        title: str = "Per-run test accuracy", chance: dict | None = None,
                        labels: dict | None = None) -> list[Path]:
    """One panel per device, one box per method (test accuracy per split run, percent).

    Parameters
    ----------
    metrics : list of dict
        Rows with ``device``, ``method`` and ``accuracy`` (a fraction), one per split run.
    methods : list of str
        The methods, in panel order; one missing on a device leaves its place empty.
    path : str or Path
        The PNG file; an SVG of the same name is written beside it
        (:func:`pipeline.analysis.figures.save_figure`).
    title : str
        The figure's title: say what was run (e.g. how many splits each method had).
    chance : dict, optional
        Device -> chance accuracy (fraction), drawn as a dashed line labelled with its value.
    labels : dict, optional
        Method -> display name on the ticks (default :data:`METHOD_NAMES`).

    Returns
    -------
    list of Path
        The PNG and the SVG.

    Notes
    -----
    Each tick says how many runs its box holds (``n=``); up to 15 runs are drawn as points too, and
    fewer than three get their points and mean but no box. Drawn on a :class:`~matplotlib.figure.Figure`
    of its own (never pyplot): the caller's backend and open figures are left as they were.
    """
    labels = METHOD_NAMES if labels is None else labels
    devices = list(dict.fromkeys(m["device"] for m in metrics))
    panel_w = max(3.2, 1.15 * len(methods) + 0.6)
    ncols = max(1, min(len(devices), int(10.0 // panel_w)))
    nrows = int(np.ceil(len(devices) / ncols))
    fig = Figure(figsize=(panel_w * ncols + 0.4, 3.1 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for k, (ax, device) in enumerate(zip(axes.flat, devices)):
        data = [percent([m["accuracy"] for m in metrics if m["device"] == device and m["method"] == method])
                for method in methods]
        present = [i for i, d in enumerate(data) if d.size]  # a method without runs here gets no place
        positions = list(range(1, len(present) + 1))
        per_run_boxes(ax, [data[i] for i in present], positions)
        ax.set_xticks(positions, [n_label(labels.get(methods[i], methods[i]), data[i].size) for i in present],
                      fontsize=8)
        half = max(len(present), len(methods)) / 2 + 0.1  # the same box width in every panel
        ax.set_xlim((1 + len(present)) / 2 - half, (1 + len(present)) / 2 + half)
        level = None if chance is None else chance.get(device)
        if level is not None and np.isfinite(level):
            ax.axhline(100 * level, **CHANCE_STYLE)
            ax.text(0.99, 100 * level + 1.5, f"chance {100 * level:.0f} %", ha="right", va="bottom", fontsize=7,
                    color=CHANCE_STYLE["color"], transform=ax.get_yaxis_transform())
        ax.set_title(device, fontsize=9)
        percent_axis(ax, "test accuracy (%)" if k % ncols == 0 else "")
    for ax in list(axes.flat)[len(devices):]:
        ax.axis("off")
    width = int(13 * fig.get_figwidth())  # characters of the title per line: about 13 an inch
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()), fontsize=10)
    return save_figure(fig, path, vector="svg")
