"""The age-estimation experiment: every method, per device, on identical repeated splits.

:func:`run_experiment` writes a run folder (its layout and records: :mod:`pipeline.analysis.runfolder`):
per device, the split files, then one part per finished (device, run) with the predictions,
metrics, defects, FG model and calibration tables of each method
(:mod:`pipeline.analysis.experiment_methods`), and at the end the aggregate files
(:mod:`pipeline.analysis.experiment_aggregates`).

Each part is written atomically when its (device, run) is complete, so an interrupted run
resumes where it stopped and never recomputes finished work — with the same manifest, settings
and code: ``config.json`` records a fingerprint of the source (:func:`pipeline.analysis.provenance.code_fingerprint`),
and a folder holding parts made by other code is refused rather than mixed. The aggregate files
(``predictions.csv`` and the other tables, ``calibration/``) are written last, into ``.staging/``,
and moved into the folder only at the final commit: ``config.json``'s ``status`` is
``"running"`` while they are absent (a rerun first removes those of an earlier run),
``"committing"`` while they are moved in, and ``"complete"`` (or ``"no-device-analysed"``, when
no device had enough readable images in two classes: the reasons are in ``summary.md`` and
``excluded.csv``) only when they are all there. ``config.json`` also records what a resumed run
reused (``reuse``: parts kept from an earlier run, images taken from the feature cache).

Files the run writes into the output folder that cannot be written (full disk, quota, read-only)
stop it with an error naming the folder; a feature cache that cannot be written does not: the
run goes on without writing it, with one warning. Temporary files left by killed writers
(``.*.tmp``) are removed from both folders at the start of a run.

Progress goes to the ``agetrace.analysis.experiment`` logger (INFO): one line per finished
(device, run) and one per device that could not be analysed.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.analysis.config import (DEFECT_METHODS, ConfigMismatchError, ExperimentConfig, learned_methods,
                                      result_config, srnet_run_count)
from pipeline.analysis.experiment_aggregates import Collected, finish
from pipeline.analysis.experiment_methods import (learned_config, metric_row, prediction_rows, run_defect_cnn,
                                                  run_defect_methods, run_srnet, write_defect_csv)
from pipeline.analysis.provenance import code_fingerprint, command_line, package_versions, utc_now
from pipeline.analysis.runfolder import (AGGREGATE_FILES, CONFIG, STATUS_RUNNING, ManifestRecord, OutputFolderError,
                                         Part, PartDefects, RunFolder, RunRecord, read_record, write_part,
                                         write_record)
from pipeline.data.atomic import FOLDER_ERRNOS, remove_stale_temporaries
from pipeline.data.manifest import Manifest
from pipeline.data.splits import Split, device_seed, read_split, stratified_splits, write_split
from pipeline.features.cache import FeatureCache
from pipeline.features.device import (DeviceData, defect_features, duplicate_rows, failure_rows, find_duplicates,
                                      probe_images, read_note_rows, screen_device, shown_path)
from pipeline.features.executor import make_pool, map_batches
from pipeline.logs import get_logger
from pipeline.srnet.presets import preset_config

__all__ = ["run_experiment", "DeviceResult"]

logger = get_logger(__name__)


@dataclass
class DeviceResult:
    """What one device gave a run (:func:`_run_device`).

    Attributes
    ----------
    predictions, metrics : list of dict
        Rows of predictions.csv and metrics.csv of every split run (the run's methods only).
    failures : list of dict
        Rows of failures.csv: the device's unreadable images.
    duplicates : list of dict
        Rows of excluded.csv: the device's content duplicates.
    read_notes : list of dict
        Rows of read_notes.csv.
    skipped : dict, optional
        ``device``, ``images``, ``reason`` when the device could not be analysed.
    cache_stats : Counter
        Images taken from and added to the feature cache per pass, parts and devices reused.
    """

    predictions: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    read_notes: list = field(default_factory=list)
    skipped: dict | None = None
    cache_stats: Counter = field(default_factory=Counter)


@dataclass
class _Run:
    """What every device of one run shares."""

    folder: RunFolder
    cfg: ExperimentConfig
    manifest: Manifest
    classes: list
    root: Path                # the manifest's folder: outputs show image paths relative to it
    srnet_k: int              # the learned methods train on the first srnet_k split runs
    defect_methods: list
    learned: list = field(default_factory=list)
    pool: object = None
    cache: FeatureCache | None = None


def run_experiment(manifest: Manifest, out_dir: str | Path, cfg: ExperimentConfig, *,
                   extra_record: dict | None = None) -> dict:
    """Run every method of ``cfg`` on every device of ``manifest``; write and return the results.

    Parameters
    ----------
    manifest : Manifest
        The dated images of every device.
    out_dir : str or Path
        The run folder (:mod:`pipeline.analysis.runfolder`); a folder holding an unfinished run of
        the same manifest, settings and code is resumed.
    cfg : ExperimentConfig
    extra_record : dict, optional
        Recorded at the top level of ``config.json`` (e.g. the synthetic dataset's location).

    Returns
    -------
    dict
        ``summary`` (list of dicts), ``summary_text`` (markdown), ``metrics``, ``out``, ``failures``
        (rows of failures.csv), ``excluded`` (rows of excluded.csv), ``skipped`` (the devices that
        could not be analysed, each with its reason), ``status`` (``"complete"``, or
        ``"no-device-analysed"`` when no device could be analysed) and ``written`` (the names
        of the files and folders of ``out_dir`` that the run wrote, folders ending in ``/``).

    Raises
    ------
    OutputFolderError
        When the output folder cannot be written (full disk, quota, read-only, no permission);
        the message names the folder. A feature cache that cannot be written is not an error.
    ImageReadError
        With ``cfg.strict``, at the first unreadable or missing image, naming its manifest line.
    ConfigMismatchError
        When ``out_dir`` holds a run with another manifest or other result settings
        (:class:`~pipeline.analysis.runfolder.RunFolderSchemaError` when it was written by an older
        version of agetrace).
    """
    out = Path(out_dir)
    try:
        return _run(manifest, RunFolder(out), cfg, extra_record or {})
    except OSError as exc:
        if exc.errno in FOLDER_ERRNOS and not isinstance(exc, OutputFolderError) and _inside(exc.filename, out):
            raise OutputFolderError(exc.errno, exc.filename, exc.strerror or str(exc), str(out)) from exc
        raise


def _inside(path, folder: Path) -> bool:
    if path is None:
        return False
    try:
        return Path(os.path.abspath(os.fspath(path))).is_relative_to(os.path.abspath(folder))
    except (TypeError, ValueError):
        return False


def _run(manifest: Manifest, folder: RunFolder, cfg: ExperimentConfig, extra: dict) -> dict:
    out = folder.path
    record = _prepare_output(folder, cfg, manifest, extra)
    cache = FeatureCache(Path(cfg.cache_dir) if cfg.cache_dir else out / "cache")
    for where in [out] + ([] if _inside(cache.root, out) else [cache.root]):
        removed = remove_stale_temporaries(where)
        if removed:
            logger.info("removed %d temporary file(s) that interrupted writes left in %s", len(removed), where)
    run = _Run(folder, cfg, manifest, classes=sorted({r.label for r in manifest.rows}),
               root=manifest.source.parent.resolve(), srnet_k=srnet_run_count(cfg),
               defect_methods=[m for m in cfg.methods if m in DEFECT_METHODS], cache=cache,
               learned=learned_methods(cfg))
    collected, cache_totals = Collected(), Counter()
    collected.excluded = [{"line": e.line, "image": _shown_row_path(e.path, run.root), "device": e.device,
                           "reason": e.reason} for e in manifest.excluded]
    with make_pool(cfg.executor, workers=cfg.workers, scheduler=cfg.scheduler) as pool:
        run.pool = pool
        for device in manifest.devices:
            result = _run_device(run, device)
            collected.predictions += result.predictions
            collected.metrics += result.metrics
            collected.failures += result.failures
            collected.excluded += result.duplicates
            collected.read_notes += result.read_notes
            if result.skipped is not None:
                collected.skipped.append(result.skipped)
            cache_totals.update(result.cache_stats)
    collected.excluded.sort(key=lambda e: e["line"])
    collected.excluded += [{"line": "", "image": "", "device": s["device"],
                            "reason": f"device not analysed: {s['reason']}"} for s in collected.skipped]
    record.feature_cache = {"folder": str(cache.root), **{k: cache_totals[k] for k in sorted(cache_totals)
                                                          if not k.startswith(("parts_", "devices_"))}}
    if cache.write_error:
        record.feature_cache["not_written"] = cache.write_error
    record.reuse = {
        "parts_reused": cache_totals["parts_reused"], "parts_computed": cache_totals["parts_computed"],
        "devices_reused": cache_totals["devices_reused"],
        "images_from_cache": {"screening": cache_totals["screening_cached"],
                              "residuals": cache_totals["residuals_cached"]},
        "images_computed": {"screening": cache_totals["screening_computed"],
                            "residuals": cache_totals["residuals_computed"]}}
    return finish(folder, cfg, record, manifest, run.classes, collected, run.srnet_k)


def _shown_row_path(raw: str, root: Path) -> str:
    """A manifest row's path as written, as the outputs show image paths (relative to the manifest's folder)."""
    path = Path(raw)
    return shown_path(str(path if path.is_absolute() else (root / path).resolve()), root)


def _remove_aggregates(folder: RunFolder) -> None:
    """Remove an earlier run's aggregate files, so that none sits beside a status that is not final."""
    out = folder.path
    for name in AGGREGATE_FILES:
        (out / name).unlink(missing_ok=True)
    for figure in list(folder.calibration_dir.glob("reliability_*")) + list(folder.calibration_dir.glob("tippett_*")):
        figure.unlink(missing_ok=True)
    shutil.rmtree(folder.staging_dir, ignore_errors=True)


def _prepare_output(folder: RunFolder, cfg: ExperimentConfig, manifest: Manifest, extra: dict) -> RunRecord:
    """Create the folder and write its run record; a resumed run must match the recorded one."""
    out = folder.path
    out.mkdir(parents=True, exist_ok=True)
    record = RunRecord(
        tool="pipeline.ml_age", status=STATUS_RUNNING, started=utc_now(), config=asdict(cfg),
        result_config=result_config(cfg),
        manifest=ManifestRecord(str(manifest.source), manifest.sha256, len(manifest.rows), len(manifest.excluded),
                                str(manifest.source.parent.resolve())),
        device_seeds={d: device_seed(cfg.seed, d) for d in manifest.devices}, versions=package_versions(),
        code=code_fingerprint(), command=command_line(), extra=dict(extra))
    if "srnet" in cfg.methods:
        record.srnet = preset_config(cfg.srnet_preset, **cfg.srnet_overrides).to_dict()
    constrained = [m for m in learned_methods(cfg) if m != "srnet"]
    if constrained:
        record.learned = {m: learned_config(m, cfg).to_dict() for m in constrained}
    if (out / CONFIG).exists():
        old = read_record(out)
        if old.manifest.sha256 != manifest.sha256:
            raise ConfigMismatchError(
                f"{out} holds a run on another manifest (sha256 {old.manifest.sha256}); use a new --out folder")
        if old.code != record.code:
            raise ConfigMismatchError(
                f"{out} holds a run made by another version of agetrace's code (source fingerprint "
                f"{str(old.code)[:12]}, this one {record.code[:12]}); resuming would mix results of the "
                "two: use a new --out folder")
        differing = sorted(k for k in record.result_config if old.result_config.get(k) != record.result_config[k])
        if differing:
            raise ConfigMismatchError(
                f"{out} holds a run with different settings ({', '.join(differing)}); resuming would mix "
                "results: use a new --out folder or the same settings")
        record.started = old.started or record.started
        record.resumed = (old.resumed or 0) + 1
    write_record(out, record)
    _remove_aggregates(folder)
    return record


def _load_or_make_splits(folder: RunFolder, dev: DeviceData, readable: list[str], cfg: ExperimentConfig) -> list[Split]:
    """Write each run's split of the readable images once, then always read it back from its file.

    Unreadable images are left out before splitting, so a bad file changes nothing but its
    own absence (the same splits as a manifest without it).
    """
    labels = [dev.rows[p].label for p in readable]
    runs = None
    splits = []
    for run in range(cfg.runs):
        path = folder.split_path(dev.device, run)
        if not path.exists():
            if runs is None:
                runs = stratified_splits(labels, n_runs=cfg.runs, test_size=cfg.test_size, seed=dev.seed)
            train, test, run_seed = runs[run]
            write_split(path, Split(run, run_seed, tuple(readable[i] for i in train),
                                    tuple(labels[i] for i in train), tuple(readable[i] for i in test),
                                    tuple(labels[i] for i in test)))
        splits.append(read_split(path))
    return splits


def _wanted(run: _Run, split_run: int) -> list[str]:
    """The methods a split run must hold."""
    return run.defect_methods + (list(run.learned) if split_run < run.srnet_k else [])


def _all_parts_complete(run: _Run, device: str) -> bool:
    for split_run in range(run.cfg.runs):
        if not run.folder.split_path(device, split_run).exists() or not run.folder.has_part(device, split_run):
            return False
        if not set(_wanted(run, split_run)) <= set(run.folder.part(device, split_run).methods):
            return False
    return True


def _line_ranges(lines: list[int]) -> str:
    """``[2, 3, 4, 9]`` as ``"2–4, 9"``."""
    parts, start = [], None
    for i, line in enumerate(lines):
        if start is None:
            start = line
        if i + 1 == len(lines) or lines[i + 1] != line + 1:
            parts.append(str(start) if start == line else f"{start}–{line}")
            start = None
    return ", ".join(parts)


def _device_rows(dev: DeviceData, result: DeviceResult) -> DeviceResult:
    """Add the device's failures, duplicates, read notes and cache figures to ``result``."""
    result.failures += failure_rows(dev)
    result.duplicates += duplicate_rows(dev)
    result.read_notes += read_note_rows(dev)
    result.cache_stats.update(dev.cache_stats)
    return result


def _run_device(run: _Run, device: str) -> DeviceResult:
    """Every split run of one device: split files, defect methods, SRNet; one part file per run.

    A device that cannot be analysed (no readable image, one class, too few images to split)
    comes back with ``skipped`` and its reason; its unreadable images and content duplicates are
    in the result either way.
    """
    folder, cfg, root = run.folder, run.cfg, run.root
    rows = run.manifest.for_device(device)
    dev = DeviceData(device, {str(r.path): r for r in rows}, [str(r.path) for r in rows],
                     device_seed(cfg.seed, device), source=run.manifest.source, root=root)
    result = DeviceResult()

    def skip(reason: str) -> DeviceResult:
        reason += f" (manifest line(s) {_line_ranges(sorted(r.line for r in rows))})"
        logger.info("%s: not analysed — %s", device, reason)
        result.skipped = {"device": device, "images": len(dev.order), "reason": reason}
        return _device_rows(dev, result)

    if _all_parts_complete(run, device):
        splits, records = [folder.split(device, split_run) for split_run in range(cfg.runs)], {}
        result.cache_stats["devices_reused"] += 1
    else:
        if not probe_images(dev, cfg):
            return skip(f"none of its {len(dev.order)} image(s) could be read (see failures.csv)")
        records, digests = screen_device(dev, cfg, run.pool, run.cache)
        find_duplicates(dev, records, digests)
        readable = [p for p in dev.order if p not in dev.failures and p not in dev.duplicates]
        labels = sorted({dev.rows[p].label for p in readable})
        if not readable:
            return skip(f"none of its {len(dev.order)} image(s) could be read (see failures.csv)")
        if len(labels) < 2:
            return skip(f"all its {len(readable)} readable image(s) are in one class ({labels[0]}): "
                        "nothing to tell apart; give it images of at least two classes")
        try:
            splits = _load_or_make_splits(folder, dev, readable, cfg)
        except ValueError as exc:
            return skip(f"too few readable images to split: {exc}")
    parts: dict[int, Part | None] = {}
    pending = []
    for split in splits:
        part = folder.part(device, split.run) if folder.has_part(device, split.run) else None
        parts[split.run] = part
        if part and set(_wanted(run, split.run)) <= set(part.methods):
            for path, reason in part.failures:
                dev.failures.setdefault(path, reason)
            for path, reason in part.duplicates:
                dev.duplicates.setdefault(path, reason)
            for path, notes in part.read_notes:
                dev.read_notes.setdefault(path, tuple(notes))
            result.cache_stats["parts_reused"] += 1
        else:
            pending.append(split)
    def needs_defects(split: Split) -> bool:
        part = parts[split.run]
        done = part.methods if part else []
        if any(m not in done for m in run.defect_methods):
            return True
        # defect-cnn takes its patches at the run's identified defects
        return "defect-cnn" in _wanted(run, split.run) and "defect-cnn" not in done and (part is None or part.defects is None)

    need_defects = [split for split in pending if needs_defects(split)]
    features = defect_features(dev, need_defects, records, cfg, run.pool, run.cache) if need_defects else {}
    fitted = _fit_defect_methods(run, dev, pending, parts, features)
    for split in pending:
        part = parts[split.run] or Part(device, split.run, split.seed)
        _complete_part(run, dev, split, part, features, fitted.get(split.run))
        write_part(folder.path, part)
        result.cache_stats["parts_computed"] += 1
        parts[split.run] = part
        accs = ", ".join(f"{m['method']} {m['accuracy']:.3f}" for m in part.metrics)
        logger.info("%s run %s: %s", device, split.run, accs)
    for split in splits:
        part = parts[split.run]
        result.predictions += [p for p in part.predictions if p["method"] in cfg.methods]
        result.metrics += [m for m in part.metrics if m["method"] in cfg.methods]
    return _device_rows(dev, result)


def _missing_defect_methods(run: _Run, part: Part | None) -> list[str]:
    done = set(part.methods) if part else set()
    return [m for m in run.defect_methods if m not in done]


def _defect_methods_task(task: tuple):
    """One run's defect-based methods (a picklable task for the worker pool)."""
    return run_defect_methods(*task)


def _fit_defect_methods(run: _Run, dev: DeviceData, pending: list[Split], parts: dict, features: dict) -> dict:
    """The defect-based methods of every pending run of a device, fitted over the run's worker pool.

    Each run's fits depend only on its features, split and seeds, so where they run changes no
    result; in a pool the runs of a device are fitted side by side instead of one after another
    (the grid search and the cross-fitted calibration are most of an experiment's time).
    """
    todo = [(split, missing) for split in pending if (missing := _missing_defect_methods(run, parts[split.run]))]
    if not todo:
        return {}
    tasks = [(features[split.run], split, run.cfg, run.classes, missing) for split, missing in todo]
    results = map_batches(_defect_methods_task, tasks, pool=run.pool, unit="run",
                          desc=f"{dev.device}: defect-based methods", progress=run.cfg.progress)
    return {split.run: res for (split, _), res in zip(todo, results)}


def _complete_part(run: _Run, dev: DeviceData, split: Split, part: Part, features: dict, res=None) -> None:
    """Add the methods ``part`` lacks on ``split`` and their results (and the device's findings) to it.

    ``res`` holds the run's defect-based methods, fitted by :func:`_fit_defect_methods` (None when
    the part lacks none of them).
    """
    cfg, classes, root, device = run.cfg, run.classes, run.root, dev.device
    wanted = _wanted(run, split.run)
    done = set(part.methods)
    if res is not None:
        for method, output in res.outputs.items():
            part.predictions += prediction_rows(device, split.run, method, res.test_paths, res.test_labels, output,
                                                classes, root)
            part.metrics.append(metric_row(device, split, method, output, res.test_labels, classes,
                                           len(res.defects), res.notes.get(method, "")))
        part.calibration.update(res.calibration)
        part.defects, part.n_candidates = res.defects, res.n_candidates
        if res.fg_params is not None:
            part.fg_model = res.fg_params
        part.frame, part.kind = tuple(dev.frame), dev.kind
        write_defect_csv(run.folder, device, split.run, res.defects, root, dev.rows)
    for method in [m for m in run.learned if m in wanted and m not in done]:
        if method == "defect-cnn":
            if part.defects is None:  # no defect-based method ran: take the run's identified defects here
                table = features[split.run]["table"]
                part.defects = PartDefects.from_json({**table.as_dict(),
                                                      "onset_path": list(features[split.run]["onset_paths"])})
            res = run_defect_cnn(dev, split, cfg, classes, run.folder, part.defects)
        else:
            res = run_srnet(dev, split, cfg, classes, run.folder, method)
        if method == "srnet":
            part.srnet_config = res.config
        else:
            part.learned_configs = {**(part.learned_configs or {}), method: res.config}
        if res.table is not None:
            part.calibration[method] = res.table
        part.predictions += prediction_rows(device, split.run, method, res.test_paths, res.test_labels, res.output,
                                            classes, root)
        note = (f"trained on {len(split.train_paths) - res.table['n_calibration']} training images, calibrated on "
                f"the other {res.table['n_calibration']}" if res.table
                else "not calibrated (srnet_calibration_fraction 0): LR 1")
        if res.config.get("note"):
            note = f"{res.config['note']}; {note}"
        part.metrics.append(metric_row(device, split, method, res.output, res.test_labels, classes,
                                       len(part.defects) if method == "defect-cnn" and part.defects else None, note))
    part.methods = sorted(done | set(wanted))
    part.failures = sorted(dev.failures.items())
    part.duplicates = sorted(dev.duplicates.items())
    part.read_notes = sorted((path, list(notes)) for path, notes in dev.read_notes.items())
