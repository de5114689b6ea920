"""The age experiment's aggregate files, written at the run's final commit.

Every file below is written into ``.staging/`` of the run folder and moved in only at the commit
(:func:`finish`): ``config.json``'s status is ``"committing"`` while they are moved, and the final
status once they are all there, so that no table of a half-finished run looks complete::

    predictions.csv             calibrated p_<class>, log10_lr_<class>, the method's raw_p_<class>
    metrics.csv                 accuracy, Cllr, Cllr_min, ECE, Brier, confident_wrong per device/run/method
    calibration.csv             the same figures pooled over every run's test images
    calibration/                reliability_<device> and tippett_<device> (PNG 300 dpi and PDF)
    summary.csv summary.md
    accuracy_boxplot.png/.svg   per-run test accuracy per device and method (PNG 300 dpi and SVG)
    failures.csv                unreadable or missing images: manifest line, device, image, reason
    excluded.csv                images and devices left out, with the manifest line and the reason
    read_notes.csv              images used with a note from their reader
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.analysis.calibration_figures import reliability_figure, tippett_figure
from pipeline.analysis.config import ALL_METHODS, LEARNED_METHODS, ExperimentConfig, srnet_crops
from pipeline.analysis.experiment_methods import EVIDENCE_COLUMNS
from pipeline.analysis.figures import save_figure
from pipeline.analysis.metrics import evidence_metrics, top_label
from pipeline.analysis.provenance import agetrace_version, utc_now
from pipeline.analysis.report import method_labels, plot_accuracy_boxes, summarise, summary_markdown, write_csv
from pipeline.analysis.runfolder import (AGGREGATE_FILES, CACHE, CALIBRATION, DEFECTS, PARTS, SPLITS, SRNET,
                                         STATUS_COMMITTING, STATUS_COMPLETE, STATUS_NOTHING_ANALYSED, RunFolder,
                                         RunRecord, write_record)
from pipeline.data.atomic import atomic_write_text
from pipeline.data.manifest import Manifest

__all__ = ["Collected", "pooled_evidence", "evidence_markdown", "write_calibration_figures", "boxplot_title",
           "skipped_markdown", "summary_header", "finish"]


@dataclass
class Collected:
    """What every device of a run gave, in manifest order of the devices.

    Attributes
    ----------
    predictions, metrics : list of dict
        Rows of predictions.csv and metrics.csv (methods of this run only).
    failures : list of dict
        Rows of failures.csv.
    excluded : list of dict
        Rows of excluded.csv: rows outside every class, content duplicates, devices not analysed.
    skipped : list of dict
        Devices that could not be analysed: ``device``, ``images``, ``reason``.
    read_notes : list of dict
        Rows of read_notes.csv.
    """

    predictions: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    excluded: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    read_notes: list = field(default_factory=list)


def pooled_evidence(predictions: list[dict], methods: list[str], classes: list) -> list[dict]:
    """Calibration metrics per device and method, over every test image of every run (pooled:
    one run's dozen test images are too few for a Cllr or an ECE)."""
    rows = []
    for device in dict.fromkeys(p["device"] for p in predictions):
        for method in methods:
            preds = [p for p in predictions if p["device"] == device and p["method"] == method]
            if not preds:
                continue
            proba = np.array([[p[f"p_{c}"] for c in classes] for p in preds], dtype=float)
            llr = np.array([[p[f"log10_lr_{c}"] for c in classes] for p in preds], dtype=float)
            ev = evidence_metrics(proba, llr, np.array([p["true"] for p in preds]), classes)
            accuracy = float(np.mean([p["predicted"] == p["true"] for p in preds]))
            rows.append({"device": device, "method": method, "runs": len({p["run"] for p in preds}),
                         "n": ev["n"], "accuracy": accuracy, **{k: ev[k] for k in EVIDENCE_COLUMNS}})
    return rows


def evidence_markdown(evidence: list[dict], methods: list[str], labels: dict) -> str:
    """The calibration table of summary.md."""
    lines = ["Calibrated evidence, pooled over every run's test images (likelihood ratios and probabilities "
             "calibrated on training images only; Cllr in bits: 0 perfect, 1 says nothing, above 1 misleads; "
             "Cllr_min is what a perfect recalibration would reach; ECE and the share of test images wrong "
             "with probability ≥ 0.99 in percent):", "",
             "| device | method | runs | n | accuracy % | Cllr | Cllr_min | ECE % | Brier | wrong at p ≥ 0.99 % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(methods)}
    for e in sorted(evidence, key=lambda e: (e["device"], order.get(e["method"], 99))):
        lines.append(f"| {e['device']} | {labels.get(e['method'], e['method'])} | {e['runs']} | {e['n']} | "
                     f"{100 * e['accuracy']:.1f} | {e['cllr']:.3f} | {e['cllr_min']:.3f} | {100 * e['ece']:.1f} | "
                     f"{e['brier']:.3f} | {100 * e['confident_wrong']:.1f} |")
    return "\n".join(lines)


def write_calibration_figures(folder: Path, predictions: list[dict], methods: list[str], classes: list,
                              labels: dict) -> list[Path]:
    """A reliability diagram per device and, for two classes, a Tippett plot: PNG (300 dpi) and PDF."""
    written = []
    for device in dict.fromkeys(p["device"] for p in predictions):
        curves, llrs = {}, {}
        for method in methods:
            preds = [p for p in predictions if p["device"] == device and p["method"] == method]
            if not preds:
                continue
            proba = np.array([[p[f"p_{c}"] for c in classes] for p in preds], dtype=float)
            truth = np.array([p["true"] for p in preds])
            n_runs = len({p['run'] for p in preds})
            name = f"{labels.get(method, method)}, {n_runs} run{'s' if n_runs != 1 else ''}"
            curves[name] = top_label(proba, truth, classes)
            if len(classes) == 2:
                llrs[name] = (np.array([p[f"log10_lr_{classes[1]}"] for p in preds], dtype=float),
                              truth == classes[1])
        figs = [("reliability", reliability_figure(curves, f"{device}: calibrated probability vs accuracy"))]
        if llrs:
            figs.append(("tippett", tippett_figure(
                llrs, f"{device}: Tippett plot of the calibrated LRs", xlabel=f"log10 LR (class {classes[1]} "
                f"vs class {classes[0]}; > 0 supports the newer class)", h1_name=f"class {classes[1]}",
                h2_name=f"class {classes[0]}")))
        for kind, fig in figs:
            written += save_figure(fig, folder / f"{kind}_{device}.png", vector="pdf")
    return written


def boxplot_title(metrics: list[dict], methods: list[str], labels: dict, test_size: float) -> str:
    """The accuracy box plot's title: how many splits each method was really run on.

    One count for all methods ("3 stratified 75/25 splits"), or each method's own when they differ
    (SRNet trained on the first splits only).
    """
    runs = {m: len({r["run"] for r in metrics if r["method"] == m}) for m in methods}
    runs = {m: n for m, n in runs.items() if n}
    split = f"stratified {100 * (1 - test_size):.0f}/{100 * test_size:.0f}"
    counts = set(runs.values())
    if len(counts) == 1:
        n = counts.pop()
        return f"Test accuracy per split run ({n} {split} split{'s' if n != 1 else ''}, every method)"
    parts = "; ".join(f"{labels.get(m, m)} on {n} split{'s' if n != 1 else ''}" for m, n in runs.items())
    return f"Test accuracy per split run ({split})\n{parts}"


def skipped_markdown(skipped: list[dict]) -> str:
    """The table of devices that could not be analysed, with their reasons (summary.md)."""
    lines = ["| device | images | reason |", "|---|---|---|"]
    lines += [f"| {s['device']} | {s['images']} | {s['reason']} |" for s in skipped]
    return "\n".join(lines)


def summary_header(record: RunRecord, out: Path, date: str) -> str:
    """The header summary.md opens with: the dataset, its manifest's SHA-256, agetrace's version and the date.

    Parameters
    ----------
    record : RunRecord
        The run record (its manifest, versions and, for the embedded dataset, ``extra["synthetic"]``).
    out : Path
        The run folder: the manifest's path is given relative to it (absolute when no relative
        path leads there, e.g. on another drive).
    date : str
        The UTC time the summary was made (ISO 8601).
    """
    source = Path(record.manifest.path)
    try:
        shown = Path(os.path.relpath(source.resolve(), Path(out).resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        shown = source.resolve().as_posix()
    if "synthetic" in record.extra:
        dataset = f"the embedded synthetic dataset (the default; manifest `{shown}`, relative to this folder)"
    else:
        dataset = f"manifest `{shown}` (relative to this folder)"
    version = agetrace_version() or "unknown"
    if record.versions.get("git_commit"):
        version += (f" (git commit {record.versions['git_commit'][:12]}"
                    + (", with uncommitted changes)" if record.versions.get("git_dirty") else ")"))
    started = "" if not record.started or record.started == date else f"; started {record.started}"
    return "\n".join(["# Age experiment", "",
                      f"- Dataset: {dataset}",
                      f"- Manifest SHA-256: `{record.manifest.sha256}`",
                      f"- agetrace: {version}",
                      f"- Date (UTC): {date}{started}"])


def _commit(stage: Path, out: Path) -> None:
    """Move every staged file into the output folder (same file system: each move is a rename)."""
    for base, _dirs, files in os.walk(stage):
        for name in sorted(files):
            source = Path(base) / name
            target = out / source.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    shutil.rmtree(stage, ignore_errors=True)


def finish(folder: RunFolder, cfg: ExperimentConfig, record: RunRecord, manifest: Manifest, classes: list,
           collected: Collected, srnet_k: int) -> dict:
    """Write the aggregate files into the staging folder, then commit them and the final status.

    Parameters
    ----------
    folder : RunFolder
    cfg : ExperimentConfig
    record : RunRecord
        The run record; updated with the commit's figures and written.
    manifest : Manifest
    classes : list
        Every class of the experiment.
    collected : Collected
        What the devices gave (``metrics`` gains the pooled rows with ``cfg.pooled``).
    srnet_k : int
        The first split runs SRNet was trained on (0: none).

    Returns
    -------
    dict
        What :func:`pipeline.analysis.experiment.run_experiment` returns.
    """
    out = folder.path
    predictions, metrics, failures = collected.predictions, collected.metrics, collected.failures
    excluded, skipped, read_notes = collected.excluded, collected.skipped, collected.read_notes
    methods = [m for m in ALL_METHODS if m in cfg.methods]
    analysed = bool(metrics)
    if cfg.pooled and metrics:
        for run in sorted({m["run"] for m in metrics}):
            for method in methods:
                preds = [p for p in predictions if p["run"] == run and p["method"] == method]
                if preds:
                    acc = float(np.mean([p["true"] == p["predicted"] for p in preds]))
                    metrics.append({"device": "pooled", "run": run, "method": method, "accuracy": acc,
                                    "n_test": len(preds), "n_train": None, "n_defects": None,
                                    "note": "all devices' test images of this run"})
    # every aggregate file is written into the staging folder, and moved in at the final commit
    stage = folder.staging_dir
    shutil.rmtree(stage, ignore_errors=True)
    pcols = (["image", "device", "run", "method", "true", "predicted"] + [f"p_{c}" for c in classes]
             + [f"log10_lr_{c}" for c in classes] + [f"raw_p_{c}" for c in classes])
    write_csv(stage / "predictions.csv", predictions, pcols)
    write_csv(stage / "metrics.csv", metrics, ["device", "run", "method", "accuracy", *EVIDENCE_COLUMNS, "n_test",
                                               "n_train", "n_defects", "note"])
    evidence = pooled_evidence(predictions, methods, classes)
    write_csv(stage / "calibration.csv", evidence, ["device", "method", "runs", "n", "accuracy", *EVIDENCE_COLUMNS])
    figures = write_calibration_figures(stage / "calibration", predictions, methods, classes,
                                        method_labels(srnet_crops(cfg)))
    write_csv(stage / "failures.csv", failures, ["line", "device", "image", "reason"])
    write_csv(stage / "excluded.csv", excluded, ["line", "image", "device", "reason"])
    write_csv(stage / "read_notes.csv", read_notes, ["line", "device", "image", "note"])
    chance = {}
    for device in {p["device"] for p in predictions}:
        truths = [p["true"] for p in predictions if p["device"] == device and p["method"] == methods[0]]
        if truths:
            chance[device] = max(np.mean(np.asarray(truths) == c) for c in classes)
    labels = method_labels(srnet_crops(cfg))
    sections = []
    if not analysed:
        sections.append("No device could be analysed, so there are no results. Each device's reason (also in "
                        "excluded.csv):\n\n" + skipped_markdown(skipped))
        summary_rows = []
    elif srnet_k and srnet_k < cfg.runs:
        common = [m for m in metrics if m["run"] < srnet_k]
        summary = summarise(common)
        learned = [m for m in methods if m in LEARNED_METHODS]
        trained = ("SRNet was" if learned == ["srnet"]
                   else f"the learned methods ({', '.join(labels.get(m, m) for m in learned)}) were")
        sections.append(f"All methods side by side on the same first {srnet_k} of {cfg.runs} splits "
                        f"({trained} trained on those only, preset {cfg.srnet_preset!r}):\n\n"
                        + summary_markdown(summary, methods, chance, labels))
        classical = [m for m in metrics if m["method"] not in LEARNED_METHODS]
        full = summarise(classical) if classical else []
        if classical:
            sections.append(f"Defect-based methods on all {cfg.runs} splits:\n\n"
                            + summary_markdown(full, [m for m in methods if m not in LEARNED_METHODS], chance,
                                               labels))
        summary_rows = [{**s, "splits": f"first {srnet_k}"} for s in summary] + \
                       [{**s, "splits": f"all {cfg.runs}"} for s in full]
    else:
        summary = summarise(metrics)
        sections.append(f"Accuracy (mean ± std over {cfg.runs} repeated {100 * (1 - cfg.test_size):.0f}/"
                        f"{100 * cfg.test_size:.0f} stratified splits, percent):\n\n"
                        + summary_markdown(summary, methods, chance, labels))
        summary_rows = [{**s, "splits": f"all {cfg.runs}"} for s in summary]
    if evidence:
        sections.append(evidence_markdown(evidence, methods, labels))
    if skipped and analysed:
        sections.append(f"{len(skipped)} device(s) could not be analysed (also in excluded.csv):\n\n"
                        + skipped_markdown(skipped))
    if failures:
        sections.append(f"{len(failures)} image(s) could not be read and were left out: see failures.csv.")
    duplicates = [e for e in excluded if str(e["reason"]).startswith(("same pixels", "same file bytes"))]
    if duplicates:
        sections.append(f"{len(duplicates)} image(s) have the content of an earlier manifest row (the same file "
                        "bytes or the same pixels) and were left out, so that no picture is both trained on "
                        "and tested: see excluded.csv.")
    if manifest.excluded:
        sections.append(f"{len(manifest.excluded)} manifest row(s) lie outside every class: see excluded.csv.")
    if read_notes:
        sections.append(f"{len({(n['device'], n['image']) for n in read_notes})} image(s) were used with a note "
                        "from their reader (e.g. a file holding several images, of which the first was read): "
                        "see read_notes.csv.")
    text = "\n\n".join(sections)
    write_csv(stage / "summary.csv", summary_rows, ["device", "method", "splits", "runs", "mean_accuracy",
                                                    "std_accuracy", "min_accuracy", "max_accuracy"])
    finished = utc_now()
    atomic_write_text(stage / "summary.md", summary_header(record, out, finished) + "\n\n" + text + "\n")
    if metrics:
        figure_chance = dict(chance)
        if cfg.pooled:
            truths = [p["true"] for p in predictions if p["method"] == methods[0]]
            figure_chance["pooled"] = max(np.mean(np.asarray(truths) == c) for c in classes) if truths else None
        plot_accuracy_boxes(metrics, methods, stage / "accuracy_boxplot.png", chance=figure_chance, labels=labels,
                            title=boxplot_title(metrics, methods, labels, cfg.test_size))
    # the commit: "committing" while the files move in, the final status once they are all there
    status = STATUS_COMPLETE if analysed else STATUS_NOTHING_ANALYSED
    record.status, record.n_failures, record.n_excluded = STATUS_COMMITTING, len(failures), len(excluded)
    record.skipped_devices = skipped
    record.calibration_figures = [str(f.relative_to(stage)) for f in figures]
    write_record(out, record)
    _commit(stage, out)
    record.status, record.finished = status, finished
    write_record(out, record)
    written = ["config.json"] + [f"{name}/" for name in (PARTS, SPLITS, DEFECTS, CALIBRATION, SRNET, CACHE)
                                 if (out / name).is_dir() and any((out / name).iterdir())]
    written += [name for name in AGGREGATE_FILES if (out / name).is_file()]
    return {"summary": summary_rows, "summary_text": text, "metrics": metrics, "out": out, "failures": failures,
            "excluded": excluded, "skipped": skipped, "status": status, "written": written}
