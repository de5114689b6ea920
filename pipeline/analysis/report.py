"""Summary tables and box plots of per-run accuracies, in the style of the papers' figures."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.data.atomic import atomic_write, atomic_write_text

__all__ = ["summarise", "summary_markdown", "write_csv", "plot_accuracy_boxes", "method_labels"]

METHOD_NAMES = {"fg": "Fridrich–Goljan", "nb": "Naive Bayes", "svm": "SVM", "srnet": "SRNet (5-crop)"}


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
    """Mean, standard deviation and count of accuracy per (device, method), in input order."""
    groups = defaultdict(list)
    for m in metrics:
        groups[(m["device"], m["method"])].append(float(m["accuracy"]))
    out = []
    for (device, method), acc in groups.items():
        arr = np.asarray(acc)
        out.append({"device": device, "method": method, "runs": arr.size, "mean_accuracy": float(arr.mean()),
                    "std_accuracy": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
                    "min_accuracy": float(arr.min()), "max_accuracy": float(arr.max())})
    return out


def summary_markdown(summary: list[dict], methods: list[str], chance: dict | None = None,
                     labels: dict | None = None) -> str:
    """A devices × methods table of ``mean ± std`` accuracy (percent), with the number of runs.

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
            cells.append("—" if s is None else
                         f"{100 * s['mean_accuracy']:.1f} ± {100 * s['std_accuracy']:.1f} (n={s['runs']})")
        ch = "" if not chance or device not in chance else f"{100 * chance[device]:.1f}"
        lines.append(f"| {device} | " + " | ".join(cells) + f" | {ch} |")
    return "\n".join(lines)


def plot_accuracy_boxes(metrics: list[dict], methods: list[str], path: str | Path, *,
                        title: str = "Accuracy over repeated splits") -> None:
    """One panel per device, one box per method (accuracy per run), saved atomically as PNG."""
    devices = list(dict.fromkeys(m["device"] for m in metrics))
    ncols = min(4, max(1, len(devices)))
    nrows = int(np.ceil(len(devices) / ncols))
    # a Figure of its own, not pyplot: drawing never touches the caller's backend or open figures
    fig = Figure(figsize=(3.2 * ncols, 3.0 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, device in zip(axes.flat, devices):
        data = [[float(m["accuracy"]) for m in metrics if m["device"] == device and m["method"] == method]
                for method in methods]
        present = [i for i, d in enumerate(data) if d]
        ax.boxplot([data[i] for i in present], tick_labels=[methods[i] for i in present], widths=0.6)
        ax.set_title(device, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.axhline(0.5, color="0.7", lw=0.8, ls="--")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(devices):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("accuracy")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
