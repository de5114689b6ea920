"""The tables and the report of the cross-device evaluation, from its per-run accuracies.

:func:`own_device_check` compares the own-device cells with the experiment's recorded accuracies;
:func:`summarise` pools the rows of ``cross_metrics.csv`` per (method, training device, test
device) with a one-sided binomial test above chance; :func:`write_matrix` writes a method's
matrix as CSV; :func:`report` writes ``cross_device.md``, which explains what each method does on
another device. The evaluation itself is :mod:`pipeline.analysis.cross_device`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import binom

from pipeline.analysis.config import ALL_METHODS, DEFECT_METHODS, ExperimentConfig
from pipeline.analysis.report import write_csv
from pipeline.data.manifest import Manifest

__all__ = ["own_device_check", "summarise", "write_matrix", "oldest_share", "report"]


def own_device_check(parts: dict, metrics: list) -> dict:
    """Compare the own-device cells with the accuracies the experiment recorded.

    Parameters
    ----------
    parts : dict
        Device -> {run -> :class:`~pipeline.analysis.runfolder.Part`} of the experiment.
    metrics : list of dict
        Rows of cross_metrics.csv.

    Returns
    -------
    dict
        ``compared`` (cells), ``mismatches`` (list), ``reproduced`` (bool).
    """
    recorded = {}
    for device, runs in parts.items():
        for r, part in runs.items():
            for m in part.metrics:
                recorded[(m["method"], device, r)] = float(m["accuracy"])
    compared, mismatches = 0, []
    for m in metrics:
        if m["train_device"] != m["test_device"]:
            continue
        key = (m["method"], m["train_device"], m["run"])
        if key not in recorded:
            continue
        compared += 1
        if abs(recorded[key] - m["accuracy"]) > 1e-12:
            mismatches.append({"method": key[0], "device": key[1], "run": key[2], "experiment": recorded[key],
                               "cross_device": m["accuracy"]})
    return {"compared": compared, "mismatches": mismatches, "reproduced": compared > 0 and not mismatches}


def summarise(metrics: list, names: list[str]) -> list[dict]:
    """Rows of cross_summary.csv: per (method, training device, test device), the runs' accuracies pooled,
    chance, and P(at least this many right | each image right with probability chance)."""
    cells = {}
    for m in metrics:
        cells.setdefault((m["method"], m["train_device"], m["test_device"]), []).append(m)
    order = {n: i for i, n in enumerate(names)}
    rows = []
    for (method, train, test), group in sorted(cells.items(), key=lambda kv: (ALL_METHODS.index(kv[0][0]),
                                                                             order[kv[0][1]], order[kv[0][2]])):
        acc = np.array([g["accuracy"] for g in group])
        n_total = int(sum(g["n_test"] for g in group))
        correct = int(round(sum(g["accuracy"] * g["n_test"] for g in group)))
        chance = float(np.mean([g["chance"] for g in group]))
        # P(at least this many right | each image right with probability `chance`)
        p_above = float(binom.sf(correct - 1, n_total, chance)) if n_total else float("nan")
        rows.append({"method": method, "train_device": train, "test_device": test, "own_device": train == test,
                     "runs": acc.size, "mean_accuracy": float(acc.mean()),
                     "std_accuracy": float(acc.std(ddof=1)) if acc.size > 1 else float("nan"),
                     "min_accuracy": float(acc.min()), "max_accuracy": float(acc.max()), "chance": chance,
                     "n_test_total": n_total, "p_above_chance": p_above, "note": group[0]["note"]})
    return rows


def write_matrix(path: Path, rows: list[dict], names: list[str]) -> None:
    """``matrix_<method>.csv``: a row per training device and statistic, a column per test device."""
    cell = {(s["train_device"], s["test_device"]): s for s in rows}
    out = []
    for train in names:
        if not any((train, t) in cell for t in names):
            continue
        for stat, key in (("mean", "mean_accuracy"), ("std", "std_accuracy"), ("runs", "runs"), ("chance", "chance")):
            row = {"train_device": train, "statistic": stat}
            for test in names:
                s = cell.get((train, test))
                row[test] = "" if s is None or (isinstance(s[key], float) and np.isnan(s[key])) else s[key]
            out.append(row)
    write_csv(path, out, ["train_device", "statistic"] + names)


def _fmt_cell(s: dict | None) -> str:
    if s is None:
        return "—"
    spread = "—" if s["runs"] < 2 else f"± {100 * s['std_accuracy']:.1f}"  # one run has no spread
    return f"{100 * s['mean_accuracy']:.1f} {spread} (n={s['runs']})"


def oldest_share(predictions: list, classes: list) -> dict:
    """Per method: (share of off-device predictions that are the oldest class, their number)."""
    counts = {}
    for p in predictions:
        if p["train_device"] != p["test_device"]:
            n_old, n = counts.get(p["method"], (0, 0))
            counts[p["method"]] = (n_old + (p["predicted"] == classes[0]), n + 1)
    return {m: (n_old / n, n) for m, (n_old, n) in counts.items() if n}


def report(summary, methods, names, cfg: ExperimentConfig, check: dict, exp_dir: Path, manifest: Manifest,
           oldest: dict, labels: dict) -> str:
    """The markdown of ``cross_device.md``."""
    lines = ["# Cross-device evaluation", "",
             f"Manifest `{manifest.source}` (SHA-256 `{manifest.sha256[:16]}…`), {len(names)} devices; the models "
             f"of the age experiment in `{exp_dir}` ({cfg.runs} repeated {100 * (1 - cfg.test_size):.0f}/"
             f"{100 * cfg.test_size:.0f} stratified splits, seed {cfg.seed}). The model of device A in split run r "
             "(trained on A's training images of run r) predicts the test images of run r of every device. "
             "Accuracy in percent, mean ± std over runs, with the number of runs n behind each cell; rows: "
             "training device, columns: test device; chance is the largest class share of the test images.", ""]
    if check["compared"]:
        if check["reproduced"]:
            lines += [f"Own-device check: the {check['compared']} own-device cells (device, run, method) reproduce "
                      "the experiment's recorded accuracies exactly.", ""]
        else:
            lines += [f"**Own-device check failed**: {len(check['mismatches'])} of {check['compared']} own-device "
                      "cells differ from the experiment's recorded accuracies (listed in config.json). The models "
                      "were not rebuilt faithfully; do not trust the off-diagonal cells.", ""]
    if any(m in DEFECT_METHODS for m in methods):
        lines += ["## What a defect-based method does on another device", "",
                  "Fridrich–Goljan, Naive Bayes and SVM read the residuals at the positions of the defects "
                  "identified on the *training* device. A defect map belongs to one sensor: defects appear "
                  "uniformly at random over each sensor, so another device's pixels at those positions are "
                  "healthy (a position outside its frame is not measured). The test image therefore looks like "
                  "one taken before the training device's first defect onset, and the method predicts from "
                  "that: Fridrich–Goljan finds no defect present and dates every image to the oldest class, "
                  "Naive Bayes and SVM answer much as for an early image of the training device. **Chance "
                  "off the own device is the expected result**, not a failure: defect-based dating needs "
                  "trusted images of the very device that took the questioned image. An off-diagonal cell "
                  "clearly above chance (see `p_above_chance` in cross_summary.csv) would mean the devices "
                  "share defect positions or the features caught something other than defects.", ""]
    if "srnet" in methods:
        lines += ["## What SRNet does on another device", "",
                  "SRNet's crop networks are applied unchanged to the other devices' test images. A network "
                  "that learned age traces of its own sensor (its defects) falls to chance on another device; "
                  "one that learned something shared by the devices — scene content correlated with the age "
                  "class, weather, season, or a processing style common to a camera model — transfers as far "
                  "as that is shared. In the synthetic camera the scene bias (`scenes.scene_bias`, "
                  "`scenes.group_for_class`) is the same for every device, so SRNet's off-diagonal accuracy "
                  "measures how much it reads content. SRNet is evaluated on the split runs it was trained on "
                  f"only (preset {cfg.srnet_preset!r}): see n in each cell.", ""]
    if any(m in methods for m in ("srnet-res", "srnet-cs", "defect-cnn")):
        lines += ["## What the constrained learned models do on another device", "",
                  "`srnet-res` (SRNet on the 3x3 median-filter residual) and `srnet-cs` (SRNet behind a "
                  "constrained prediction-error layer) are meant to see noise and defects rather than scene "
                  "content; `defect-cnn` sees only 32x32 patches at the training device's defects, so on another "
                  "sensor it looks at healthy pixels, like the defect-based methods, and should fall to chance. "
                  "An off-diagonal cell above chance for any of them means it still reads something the devices "
                  "share (content, or noise statistics that follow content), and its on-device accuracy "
                  "is not evidence of age traces alone.", ""]
    for method in methods:
        rows = [s for s in summary if s["method"] == method]
        cell = {(s["train_device"], s["test_device"]): s for s in rows}
        lines += [f"## {labels[method]}", "",
                  "| trained on \\ tested on | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for train in names:
            if any((train, t) in cell for t in names):
                lines.append(f"| **{train}** | " + " | ".join(
                    (f"**{_fmt_cell(cell.get((train, t)))}**" if t == train else _fmt_cell(cell.get((train, t))))
                    for t in names) + " |")
        own = [s["mean_accuracy"] for s in rows if s["own_device"]]
        other = [s["mean_accuracy"] for s in rows if not s["own_device"]]
        chance = [s["chance"] for s in rows if not s["own_device"]]
        if own and other:
            above = sum(s["p_above_chance"] < 0.01 / len(other) for s in rows if not s["own_device"])
            lines += ["", f"Mean over cells: own device {100 * np.mean(own):.1f}, other devices "
                          f"{100 * np.mean(other):.1f} (chance {100 * np.mean(chance):.1f}); {above} of the "
                          f"{len(other)} off-diagonal cells are above chance at the 1 % level (one-sided binomial "
                          f"test of the pooled runs, Bonferroni-corrected over the {len(other)} cells)."]
        if method in oldest:
            share, n = oldest[method]
            lines += ["", f"Off the own device, {100 * share:.1f} % of its {n} predictions are the oldest class"
                          + (" (what an image without the training device's defects looks like)."
                             if method in DEFECT_METHODS else ".")]
        lines += ["", f"Files: `matrix_{method}.csv`, `heatmap_{method}.png|svg`, `boxplot_{method}.png|svg`.", ""]
    lines += ["Per-run accuracies: `cross_metrics.csv`; per cell with notes and binomial tail above chance: "
              "`cross_summary.csv`; every prediction: `predictions.csv`; configuration, seeds, versions and the "
              "manifest's SHA-256: `config.json`."]
    return "\n".join(lines)
