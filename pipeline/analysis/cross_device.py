"""Cross-device evaluation: every method trained on one device, tested on every device.

The device-independence paper trains SRNet on one camera and tests it on the others to see
whether what it learned is an age trace of *that* sensor or something the devices share. This
module does the same for every method of the age experiment, on the experiment's own repeated
splits: the model of device A in split run r (trained on A's training split of run r) predicts
the test split of run r of every device B.

What each method does on another device:

* **fg, nb, svm** (defect based) are tied to A's sensor. Their features are the residuals at
  the positions of *A's* identified defects, so on B they read B's residuals at A's defect
  positions. B's pixels there are healthy (a defect map belongs to one sensor; defects arrive
  uniformly over the sensor, so two sensors rarely share one), the image looks like one taken
  before A's first onset, and the method answers accordingly: chance, or the share of the
  class it then predicts. That is the expected, correct result, and the report shows it. A
  position outside B's frame (or a colour channel B does not have) is "not measured" (NaN):
  Fridrich–Goljan takes no evidence from it, Naive Bayes and SVM impute the healthy mean 0.
* **srnet** applies A's five crop networks to B's test images unchanged. It transfers exactly as
  far as what it learned is shared between the devices: scene content whose correlation with
  the age class holds for every device (in the simulator ``scenes.scene_bias`` and
  ``scenes.group_for_class`` are shared by all devices), or processing common to a model.
  SRNet is only evaluated for the split runs the experiment trained it on (the ``cpu`` preset
  trains the first run only); every cell says how many runs are behind it.

The own-device cells (A = B) repeat the experiment exactly (same split, same model, same
features) and are checked against its recorded accuracies; the result of that check is
written to ``config.json`` and the report.

Layout of an output folder::

    config.json             configuration, seeds, versions, manifest SHA-256, own-device check, status
    experiment/             the age experiment it builds on (or the folder given as experiment_dir)
    cross_metrics.csv       one row per method, training device, test device and run
    cross_summary.csv       one row per method and (training, test) device pair: mean, std, runs,
                            chance, binomial tail above chance, and a note saying what was done
    matrix_<method>.csv     the accuracy matrix: a row per training device and statistic
                            (mean, std, runs, chance), a column per test device
    heatmap_<method>.png    the matrix as a heat map (percent), each cell labelled with its runs; also .svg
    boxplot_<method>.png    per training device, per-run accuracy on every test device, own first; also .svg
                            (figures: PNG at 300 dpi and SVG)
    predictions.csv         every cross prediction with its probabilities
    cross_device.md         the report
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path


from pipeline.analysis import transfer_report
from pipeline.analysis.cross_device_cells import (DEFECT_TRANSFER_NOTE, SRNET_TRANSFER_NOTE, Device,
                                                  ExperimentIncompleteError, defect_cells, defect_cnn_cells,
                                                  srnet_cells)
from pipeline.analysis.config import (ALL_METHODS, SRNET_METHODS, DEFECT_METHODS, ConfigMismatchError, ExperimentConfig,
                                      result_config)
from pipeline.analysis.matrix_figures import plot_boxes, plot_heatmap
from pipeline.analysis.provenance import command_line, package_versions, read_json, utc_now, write_json
from pipeline.analysis.report import method_labels, write_csv
from pipeline.analysis.runfolder import STATUS_COMPLETE, STATUS_NOTHING_ANALYSED, RunFolder
from pipeline.data.atomic import atomic_write_text
from pipeline.data.manifest import Manifest
from pipeline.data.splits import device_seed
from pipeline.features.device import shown_path
from pipeline.features.executor import WorkerPool
from pipeline.logs import get_logger

__all__ = ["DEFECT_TRANSFER_NOTE", "SRNET_TRANSFER_NOTE", "ExperimentIncompleteError", "experiment_config_from",
           "experiment_run_config", "prepare_output", "run_cross_device"]

logger = get_logger(__name__)

_METRIC_COLUMNS = ["method", "train_device", "test_device", "run", "accuracy", "n_test", "chance", "note"]
_SUMMARY_COLUMNS = ["method", "train_device", "test_device", "own_device", "runs", "mean_accuracy", "std_accuracy",
                    "min_accuracy", "max_accuracy", "chance", "n_test_total", "p_above_chance", "note"]


def experiment_config_from(folder: str | Path | None, **explicit) -> ExperimentConfig:
    """An :class:`ExperimentConfig` that resumes the experiment in ``folder``.

    The result-changing settings recorded in ``folder/config.json`` (runs, seed, test size,
    thresholds, SRNet preset and overrides) are taken from there, so that reusing a finished
    ``python -m pipeline.ml_age`` output needs no repeated options; ``explicit`` keyword
    arguments (those the user gave) override them, and a real conflict is then reported by
    :func:`run_experiment`. Without a recorded configuration the defaults apply.

    Parameters
    ----------
    folder : str, Path or None
        An experiment output folder (may not exist yet).
    **explicit
        :class:`ExperimentConfig` fields; ``None`` values are ignored.

    Returns
    -------
    ExperimentConfig
    """
    names = {f.name for f in dataclasses.fields(ExperimentConfig)}
    values = {}
    if folder is not None and RunFolder(folder).exists():
        recorded = RunFolder(folder).record.result_config
        values.update({k: v for k, v in recorded.items() if k in names})
    values.update({k: v for k, v in explicit.items() if v is not None})
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown experiment setting(s) {unknown}; known: {sorted(names)}")
    return ExperimentConfig(**values)


def run_cross_device(manifest: Manifest, out_dir: str | Path, cfg: ExperimentConfig, *,
                     experiment_dir: str | Path | None = None, extra_record: dict | None = None) -> dict:
    """Train every method of ``cfg`` on each device and test it on every device; write the results.

    Builds on the finished age experiment in ``experiment_dir`` (default ``out_dir/experiment``),
    which the caller runs first (``python -m pipeline.cross_device`` runs, resumes or reuses it
    with :func:`experiment_run_config`): evaluates each trained model on the other devices' test
    splits of the same run.

    Parameters
    ----------
    manifest : Manifest
        The dated images of every device.
    out_dir : str or Path
        Output folder (see the module docstring for its files).
    cfg : ExperimentConfig
        Methods, runs, seeds and thresholds of the experiment.
    experiment_dir : str or Path, optional
        A finished experiment output folder (a ``python -m pipeline.ml_age`` output) with every
        method of ``cfg``. Its manifest and result settings must match.
    extra_record : dict, optional
        Recorded in ``config.json`` (e.g. the synthetic dataset's location).

    Returns
    -------
    dict
        ``out`` (Path), ``summary`` (rows of ``cross_summary.csv``), ``metrics`` (rows of
        ``cross_metrics.csv``), ``own_device_check`` (dict), ``report`` (the markdown text) and
        ``files`` (names written).

    Raises
    ------
    pipeline.analysis.config.ConfigMismatchError
        ``experiment_dir`` holds a run with other settings or another manifest.
    ExperimentIncompleteError
        The experiment is not finished, lacks a method of ``cfg``, or a file it should have written
        is missing.
    ValueError
        ``out_dir`` holds the output of another program.
    """
    out = Path(out_dir)
    exp_dir = Path(experiment_dir) if experiment_dir is not None else out / "experiment"
    methods = [m for m in ALL_METHODS if m in cfg.methods]
    record = {
        "tool": "pipeline.cross_device", "status": "running", "started": utc_now(), "config": asdict(cfg),
        "experiment_dir": str(exp_dir.resolve()),
        "manifest": {"path": str(manifest.source), "sha256": manifest.sha256, "rows": len(manifest.rows),
                     "excluded": len(manifest.excluded)},
        "device_seeds": {d: device_seed(cfg.seed, d) for d in manifest.devices},
        "versions": package_versions(), "command": command_line(), **(extra_record or {}),
    }
    prepare_output(out)
    experiment = _finished_experiment(exp_dir, manifest, cfg)
    record["experiment_config"] = experiment.record.config
    write_json(out / "config.json", record)
    classes = sorted({r.label for r in manifest.rows})
    devices = _load_devices(manifest, experiment, cfg)
    names = [d.name for d in devices]
    if not devices:
        raise ExperimentIncompleteError(f"no device of {manifest.source} could be evaluated (each needs two classes "
                                        "with at least two images each); nothing to cross")

    metrics, predictions = [], []
    defect_methods = [m for m in methods if m in DEFECT_METHODS]
    if defect_methods:
        with WorkerPool(cfg.workers) as pool:
            for train_dev in devices:
                defect_cells(train_dev, devices, defect_methods, cfg, classes, pool, metrics, predictions)
    crop_cache = {}
    for method in [m for m in methods if m in SRNET_METHODS]:
        for train_dev in devices:
            srnet_cells(train_dev, devices, exp_dir, classes, cfg, crop_cache, metrics, predictions, method)
    if "defect-cnn" in methods:
        for train_dev in devices:
            defect_cnn_cells(train_dev, devices, exp_dir, classes, cfg, metrics, predictions)

    check = transfer_report.own_device_check({d.name: d.parts for d in devices}, metrics)
    summary = transfer_report.summarise(metrics, names)
    root = manifest.source.parent.resolve()
    for p in predictions:  # image paths relative to the manifest's folder, as in every output
        p["image"] = shown_path(p["image"], root)
    files = ["config.json", "cross_metrics.csv", "cross_summary.csv", "predictions.csv", "cross_device.md"]
    write_csv(out / "cross_metrics.csv", metrics, _METRIC_COLUMNS)
    # one run has no spread: an empty std cell, as summary.csv of the experiment writes it, not "nan"
    write_csv(out / "cross_summary.csv",
              [{**row, "std_accuracy": "" if row["runs"] < 2 else row["std_accuracy"]} for row in summary],
              _SUMMARY_COLUMNS)
    write_csv(out / "predictions.csv", predictions,
              ["method", "train_device", "run", "test_device", "image", "true", "predicted"]
              + [f"p_{c}" for c in classes])
    evaluated = [m for m in methods if any(s["method"] == m for s in summary)]
    labels = _method_labels(devices)
    for method in evaluated:
        rows = [s for s in summary if s["method"] == method]
        transfer_report.write_matrix(out / f"matrix_{method}.csv", rows, names)
        plot_heatmap(out / f"heatmap_{method}.png", rows, names, labels[method])
        plot_boxes(out / f"boxplot_{method}.png", [m for m in metrics if m["method"] == method], rows, names,
                   labels[method])
        files += [f"matrix_{method}.csv", f"heatmap_{method}.png", f"heatmap_{method}.svg", f"boxplot_{method}.png",
                  f"boxplot_{method}.svg"]
    oldest = transfer_report.oldest_share(predictions, classes)
    report = transfer_report.report(summary, evaluated, names, cfg, check, exp_dir, manifest, oldest, labels)
    atomic_write_text(out / "cross_device.md", report + "\n")
    record.update(status="complete", finished=utc_now(), own_device_check=check, devices=names,
                  methods_evaluated=evaluated,
                  runs_per_cell={m: {s["train_device"]: s["runs"] for s in summary
                                     if s["method"] == m and s["own_device"]} for m in evaluated},
                  failures={d.name: [(shown_path(path, root), why) for path, why in sorted(d.failures.items())]
                            for d in devices if d.failures})
    write_json(out / "config.json", record)
    return {"out": out, "summary": summary, "metrics": metrics, "own_device_check": check, "report": report,
            "files": files}


_OUTPUT_FILES = ("cross_metrics.csv", "cross_summary.csv", "predictions.csv", "cross_device.md") + tuple(
    f"{kind}_{m}.{ext}" for m in ALL_METHODS for kind, ext in (("matrix", "csv"), ("heatmap", "png"),
                                                              ("heatmap", "svg"), ("boxplot", "png"),
                                                              ("boxplot", "svg")))


def prepare_output(out: str | Path) -> None:
    """Create ``out``; remove the results of an earlier cross-device run there (never anything else).

    Raises
    ------
    ValueError
        ``out`` holds the output of another program (its ``config.json``).
    """
    out = Path(out)
    config_path = out / "config.json"
    if config_path.is_file():
        tool = read_json(config_path).get("tool")
        if tool != "pipeline.cross_device":
            raise ValueError(f"{out} holds the output of {tool or 'another program'} (its config.json); the "
                             "cross-device results need a folder of their own: choose another --out")
        for name in _OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def experiment_run_config(cfg: ExperimentConfig, exp_dir: str | Path) -> ExperimentConfig:
    """``cfg`` for (re)running the experiment in ``exp_dir`` without narrowing what it already holds.

    Resuming rewrites the experiment's aggregate files (summary, metrics, box plot) from the
    methods it is asked for, so a folder that already holds more methods, more SRNet runs or
    pooled rows keeps them: the recorded methods are added to the requested ones, and the
    recorded ``srnet_runs`` and ``pooled`` are kept unless ``cfg`` asks for more.
    """
    folder = RunFolder(exp_dir)
    if not folder.exists():
        return cfg
    recorded = folder.record.config
    methods = tuple(m for m in ALL_METHODS if m in cfg.methods or m in recorded.get("methods", ()))
    srnet_runs = cfg.srnet_runs
    if recorded.get("srnet_runs") is not None:
        srnet_runs = max(srnet_runs or 0, recorded["srnet_runs"])
    return dataclasses.replace(cfg, methods=methods, srnet_runs=srnet_runs,
                               pooled=cfg.pooled or bool(recorded.get("pooled", False)))


# ---------------------------------------------------------------- reading the experiment's files

def _finished_experiment(exp_dir: Path, manifest: Manifest, cfg: ExperimentConfig) -> RunFolder:
    """The experiment folder, checked: finished, on ``manifest``, with ``cfg``'s result settings and methods."""
    folder = RunFolder(exp_dir)
    if not folder.exists():
        raise ExperimentIncompleteError(f"{exp_dir} holds no age experiment (no config.json): run `python -m "
                                        f"pipeline.ml_age --out {exp_dir}` first")
    record = folder.record
    if record.manifest.sha256 != manifest.sha256:
        raise ConfigMismatchError(f"{exp_dir} holds a run on another manifest (sha256 {record.manifest.sha256}); "
                                  "use a new experiment folder")
    differing = sorted(k for k, v in result_config(cfg).items() if record.result_config.get(k) != v)
    if differing:
        raise ConfigMismatchError(f"{exp_dir} holds a run with different settings ({', '.join(differing)}): use "
                                  "a new experiment folder or the same settings")
    missing = [m for m in cfg.methods if m not in record.config.get("methods", ())]
    if record.status not in (STATUS_COMPLETE, STATUS_NOTHING_ANALYSED) or missing:
        raise ExperimentIncompleteError(
            f"the age experiment in {exp_dir} is not finished" + (f" with {', '.join(missing)}" if missing else "")
            + f" (status {record.status!r}): rerun it (it resumes) and try again")
    return folder


def _load_devices(manifest: Manifest, experiment: RunFolder, cfg: ExperimentConfig) -> list[Device]:
    devices = []
    for name in manifest.devices:
        rows = manifest.for_device(name)
        dev = Device(name, {str(r.path): r for r in rows}, {str(r.path): i for i, r in enumerate(rows)})
        for run in range(cfg.runs):
            if not experiment.split_path(name, run).exists():
                continue
            dev.splits[run] = experiment.split(name, run)
            if not experiment.has_part(name, run):
                raise ExperimentIncompleteError(f"{experiment.part_path(name, run)} is missing although its split "
                                                f"exists; rerun the experiment in {experiment.path} (it resumes) "
                                                "and try again")
            part = experiment.part(name, run)
            dev.parts[run] = part
            for path, reason in part.failures:
                dev.failures.setdefault(path, reason)
            if part.frame and dev.frame is None:
                dev.frame, dev.kind = part.frame, part.kind
        if dev.splits:
            devices.append(dev)
        else:
            logger.info("%s: no split in the experiment (skipped there: see its log); left out of the matrix", name)
    return devices


# ---------------------------------------------------------------- aggregation


def _method_labels(devices: list[Device]) -> dict:
    """Display names of the methods; SRNet's says which crops it fused when not the usual five."""
    crops = {tuple(part.srnet_config["crops"]) for dev in devices for part in dev.parts.values()
             if part.srnet_config is not None}
    labels = method_labels(next(iter(crops)) if len(crops) == 1 else None)
    return {m: labels.get(m, m) for m in ALL_METHODS}


