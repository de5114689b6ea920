"""The age-estimation experiment: every method, per device, on identical repeated splits.

Layout of an output folder::

    config.json                 resolved configuration, seeds, versions, manifest SHA-256, status
    splits/<device>/run_XX.csv  the splits every method read back
    parts/<device>/run_XX.json  one finished (device, run): predictions, metrics, defects, FG model,
                                each method's calibration table (score -> log10 LR, priors, ELUB bounds)
    defects/<device>/run_XX.csv the identified defects of that run
    predictions.csv             calibrated p_<class>, log10_lr_<class>, the method's raw_p_<class>
    metrics.csv                 accuracy, Cllr, Cllr_min, ECE, Brier, confident_wrong per device/run/method
    calibration.csv             the same figures pooled over every run's test images
    calibration/                reliability_<device> and tippett_<device> (PNG 300 dpi and PDF)
    summary.csv summary.md accuracy_boxplot.png
    failures.csv                unreadable or missing images: manifest line, device, image, reason
    excluded.csv                images and devices left out, with the manifest line and the reason:
                                rows outside every class, content duplicates ("same pixels as line N
                                (path)", "same file bytes as line N (path)"), and devices that could
                                not be analysed (line and image empty)
    read_notes.csv              images used with a note from their reader: line, device, image, note
                                (e.g. "the file holds 2 images (an MPO ...); only the first was read")

Each part is written atomically when its (device, run) is complete, so an interrupted run
resumes where it stopped and never recomputes finished work — with the same manifest, settings
and code: ``config.json`` records a fingerprint of the source (:func:`pipeline.analysis.provenance.code_fingerprint`),
and a folder holding parts made by other code is refused rather than mixed. The aggregate files (every file
above from ``predictions.csv`` on, and ``calibration/``) are written last, into ``.staging/``,
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
"""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from baselines.defects import DefectIdentifier, DefectTable
from baselines.fridrich_goljan import FridrichGoljanClassifier
from baselines.residual_classifiers import ResidualNaiveBayes, ResidualSVM
from pipeline.analysis.calibration import (EvidenceCalibrator, cross_fitted_scores, evidence_metrics, log_scores,
                                          reliability_figure, tippett_figure, top_label)
from pipeline.analysis.provenance import code_fingerprint, package_versions, read_json, utc_now, write_json
from pipeline.analysis.report import method_labels, plot_accuracy_boxes, summarise, summary_markdown, write_csv
from pipeline.data.atomic import FOLDER_ERRNOS, atomic_write, atomic_write_text, remove_stale_temporaries
from pipeline.data.errors import ImageReadError
from pipeline.data.imageio import read_image
from pipeline.data.manifest import Manifest
from pipeline.data.splits import Split, read_split, stratified_splits, write_split
from pipeline.features.cache import FeatureCache
from pipeline.features.executor import batched, make_pool, map_batches
from pipeline.features.extract import ScreenTask, SparseTask, probe_device, screen_batch, sparse_batch
from pipeline.features.screening import screen_candidates

__all__ = ["ExperimentConfig", "run_experiment", "ConfigMismatchError", "OutputFolderError", "DEFECT_METHODS",
           "ALL_METHODS", "STATUS_COMPLETE", "STATUS_NOTHING_ANALYSED", "device_features"]

logger = logging.getLogger(__name__)

#: ``config.json`` status of a finished run, and of one in which no device could be analysed
STATUS_COMPLETE = "complete"
STATUS_NOTHING_ANALYSED = "no-device-analysed"

DEFECT_METHODS = ("fg", "nb", "svm")
ALL_METHODS = DEFECT_METHODS + ("srnet",)


def parse_methods(text: str) -> tuple[str, ...]:
    """Methods from a comma-separated list (the command lines' ``--methods``)."""
    import argparse

    methods = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad or not methods:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad}; choose from {','.join(ALL_METHODS)}")
    return methods

# configuration keys that do not change any result (so a resumed run may differ in them)
_NON_RESULT_KEYS = {"methods", "workers", "progress", "strict", "batch_size", "srnet_runs", "pooled",
                    "executor", "scheduler", "cache_dir"}


class ConfigMismatchError(RuntimeError):
    """The output folder holds a run made with a different configuration or manifest."""


class OutputFolderError(OSError):
    """The run's output folder cannot be written (full, over quota, read-only, no permission).

    The ``errno`` and the file are those of the failed write; the message names the folder and
    says what to do.
    """

    def __init__(self, code: int, path: str, reason: str, folder: str):
        super().__init__(code, reason, path)
        self.folder = folder

    def __str__(self) -> str:
        return (f"cannot write to the output folder {self.folder} ({self.strerror}, writing {self.filename}): "
                "free space or fix permissions there, or give another --out; started again with the same "
                "--out, the run resumes where it stopped")

    def __reduce__(self):
        return (type(self), (self.errno, self.filename, self.strerror, self.folder))


@dataclass
class ExperimentConfig:
    """Parameters of an experiment (all recorded in ``config.json``).

    Parameters
    ----------
    methods : tuple of str
        Any of ``fg``, ``nb``, ``svm``, ``srnet``.
    runs : int
        Repetitions of the stratified split (the papers use 10).
    test_size : float
        Fraction of each class held out per run.
    seed : int
        Root seed; each device's split seed derives from it and the device id.
    n_blocks : int
        Contiguous time blocks of trusted images for defect screening.
    candidate_false_alarm, onset_false_alarm : float
        See :class:`baselines.defects.DefectIdentifier`. The screening level only decides
        which pixels the onset test examines (thousands of candidates per device on the
        synthetic default); the false alarms of the result are controlled by the onset test.
        On the synthetic default, 5e-2 screens ~3,000–7,000 candidates per device and run
        and raises recall from 0.86 (at 1e-3) to 0.93 at the same precision.
    fg_false_alarm : float
        See :class:`baselines.fridrich_goljan.FridrichGoljanClassifier`.
    svm_inner_folds : int
        Inner cross-validation folds for the SVM's C and γ.
    calibration_folds : int
        Folds of the cross-fitting inside each training split from which every defect-based
        method's scores are calibrated (:mod:`pipeline.analysis.calibration`).
    calibration_method : {'logistic', 'isotonic'}
        Calibrator of the scores (ELUB-bounded either way).
    srnet_calibration_fraction : float
        Share of each training split (stratified) that SRNet does not train on and that calibrates
        its scores instead: cross-fitting would train the five crop networks several times over.
        0 trains on the whole split and claims no evidence (LR 1, probabilities = training priors):
        for studies of what SRNet learns, never for evidence.
    srnet_preset : str
        ``cpu`` or ``paper`` (see :mod:`pipeline.srnet.presets`).
    srnet_runs : int or None
        Train SRNet on the first k runs only (None: the preset's choice).
    srnet_overrides : dict
        Fields of the SRNet preset to override (e.g. ``{"epochs": 2}``); recorded.
    strict : bool
        Stop at the first unreadable image instead of recording it and going on.
    workers, batch_size, progress, pooled
        Execution and reporting only.
    executor : {'local', 'dask'}
        Where per-image work runs: local worker processes, or a Dask cluster.
    scheduler : str, optional
        Address of a Dask scheduler (``executor='dask'``); None starts a ``LocalCluster``
        of ``workers`` single-threaded worker processes.
    cache_dir : str, optional
        Folder of the per-image feature cache (default ``<out>/cache``); may be shared
        between runs, since entries are keyed by file content and parameters.
    """

    methods: tuple = ("fg", "nb", "svm")
    runs: int = 10
    test_size: float = 0.1
    seed: int = 0
    n_blocks: int = 8
    candidate_false_alarm: float = 5e-2
    onset_false_alarm: float = 1e-3
    fg_false_alarm: float = 1e-3
    svm_inner_folds: int = 3
    calibration_folds: int = 5
    calibration_method: str = "logistic"
    srnet_calibration_fraction: float = 0.2
    srnet_preset: str = "cpu"
    srnet_runs: int | None = None
    srnet_overrides: dict = field(default_factory=dict)
    strict: bool = False
    workers: int | None = None
    batch_size: int = 8
    progress: bool = True
    pooled: bool = False
    executor: str = "local"
    scheduler: str | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        self.methods = tuple(self.methods)
        if self.executor not in ("local", "dask"):
            raise ValueError(f"executor must be 'local' or 'dask', got {self.executor!r}")
        if self.scheduler is not None and self.executor != "dask":
            raise ValueError("a scheduler address needs executor='dask'")
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown}: choose from {', '.join(ALL_METHODS)}")
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1), got {self.test_size}")
        if self.n_blocks < 2:
            raise ValueError(f"n_blocks must be >= 2, got {self.n_blocks}")
        if self.calibration_folds < 2:
            raise ValueError(f"calibration_folds must be >= 2, got {self.calibration_folds}")
        if self.calibration_method not in ("logistic", "isotonic"):
            raise ValueError(f"calibration_method must be 'logistic' or 'isotonic', got {self.calibration_method!r}")
        if not 0 <= self.srnet_calibration_fraction < 0.5:
            raise ValueError(f"srnet_calibration_fraction must be in [0, 0.5), got {self.srnet_calibration_fraction}")


@dataclass
class _DeviceData:
    device: str
    rows: dict            # absolute path -> ManifestRow
    order: list           # paths in time order
    seed: int
    frame: tuple | None = None
    kind: str | None = None
    bit_depth: int | None = None
    cache_stats: Counter = field(default_factory=Counter)  # images taken from / added to the cache
    failures: dict = field(default_factory=dict)  # path -> reason
    duplicates: dict = field(default_factory=dict)  # path -> reason (a copy of an earlier row's content)
    read_notes: dict = field(default_factory=dict)  # path -> what reading it noted (e.g. first of 2 frames)
    source: Path | None = None  # the manifest, named in --strict errors
    root: Path | None = None    # the manifest's folder, paths are shown relative to it

    def line(self, path: str) -> int:
        """The manifest line of one of the device's images."""
        return self.rows[path].line

    def shown(self, path: str) -> str:
        """The image's path as the outputs show it (relative to the manifest's folder when inside it)."""
        return _shown(path, self.root)


def device_seed(root_seed: int, device: str) -> int:
    """Split seed of one device: independent of the other devices and of their order."""
    return int(np.random.SeedSequence([root_seed, zlib.crc32(device.encode())]).generate_state(1)[0])


def _split_paths(out: Path, device: str, run: int) -> Path:
    return out / "splits" / device / f"run_{run:02d}.csv"


def _part_path(out: Path, device: str, run: int) -> Path:
    return out / "parts" / device / f"run_{run:02d}.json"


def _result_config(cfg: ExperimentConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in _NON_RESULT_KEYS}


def _shown(path: str, root: Path | None) -> str:
    if root is not None:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return path


#: the aggregate files of a run, written at the final commit only (and removed when a run starts)
_AGGREGATE_FILES = ("predictions.csv", "metrics.csv", "calibration.csv", "summary.csv", "summary.md",
                    "accuracy_boxplot.png", "failures.csv", "excluded.csv", "read_notes.csv")
_STAGING = ".staging"


def _remove_aggregates(out: Path) -> None:
    """Remove an earlier run's aggregate files, so that none sits beside a status that is not final."""
    for name in _AGGREGATE_FILES:
        (out / name).unlink(missing_ok=True)
    for figure in list((out / "calibration").glob("reliability_*")) + list((out / "calibration").glob("tippett_*")):
        figure.unlink(missing_ok=True)
    shutil.rmtree(out / _STAGING, ignore_errors=True)


def _prepare_output(out: Path, cfg: ExperimentConfig, manifest: Manifest, extra: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "tool": "pipeline.ml_age",
        "status": "running",
        "started": utc_now(),
        "config": asdict(cfg),
        "result_config": _result_config(cfg),
        "manifest": {"path": str(manifest.source), "sha256": manifest.sha256, "rows": len(manifest.rows),
                     "excluded": len(manifest.excluded)},
        "device_seeds": {d: device_seed(cfg.seed, d) for d in manifest.devices},
        "versions": package_versions(),
        "code": code_fingerprint(),
        **extra,
    }
    if "srnet" in cfg.methods:
        from pipeline.srnet.presets import preset_config

        record["srnet"] = preset_config(cfg.srnet_preset, **cfg.srnet_overrides).to_dict()
    config_path = out / "config.json"
    if config_path.exists():
        old = read_json(config_path)
        if old.get("manifest", {}).get("sha256") != manifest.sha256:
            raise ConfigMismatchError(
                f"{out} holds a run on another manifest (sha256 {old.get('manifest', {}).get('sha256')}); "
                "use a new --out folder")
        if old.get("code") != record["code"]:
            raise ConfigMismatchError(
                f"{out} holds a run made by another version of agetrace's code (source fingerprint "
                f"{str(old.get('code'))[:12]}, this one {record['code'][:12]}); resuming would mix results of the "
                "two: use a new --out folder")
        differing = sorted(k for k in record["result_config"]
                           if old.get("result_config", {}).get(k) != record["result_config"][k])
        if differing:
            raise ConfigMismatchError(
                f"{out} holds a run with different settings ({', '.join(differing)}); resuming would mix "
                "results: use a new --out folder or the same settings")
        record["started"] = old.get("started", record["started"])
        record["resumed"] = old.get("resumed", 0) + 1
    write_json(config_path, record)
    _remove_aggregates(out)
    return record


def _load_or_make_splits(out: Path, dev: _DeviceData, readable: list[str], cfg: ExperimentConfig) -> list[Split]:
    """Write each run's split of the readable images once, then always read it back from its file.

    Unreadable images are left out before splitting, so a bad file changes nothing but its
    own absence (the same splits as a manifest without it).
    """
    labels = [dev.rows[p].label for p in readable]
    runs = None
    splits = []
    for run in range(cfg.runs):
        path = _split_paths(out, dev.device, run)
        if not path.exists():
            if runs is None:
                runs = stratified_splits(labels, n_runs=cfg.runs, test_size=cfg.test_size, seed=dev.seed)
            train, test, run_seed = runs[run]
            write_split(path, Split(run, run_seed, tuple(readable[i] for i in train),
                                    tuple(labels[i] for i in train), tuple(readable[i] for i in test),
                                    tuple(labels[i] for i in test)))
        splits.append(read_split(path))
    return splits


def _record_failures(dev: _DeviceData, failures, strict: bool) -> None:
    for path, reason in failures:
        if strict:
            where = f"line {dev.line(path)} of the manifest" + (f" {dev.source}" if dev.source else "")
            raise ImageReadError(path, reason, f"It is {where}: fix the file or remove the row, or run without "
                                               "--strict to record it in failures.csv and go on.")
        dev.failures.setdefault(path, reason)


def _failure_rows(dev: _DeviceData) -> list[dict]:
    return [{"line": dev.line(p), "device": dev.device, "image": p, "reason": r}
            for p, r in sorted(dev.failures.items(), key=lambda item: dev.line(item[0]))]


def _duplicate_rows(dev: _DeviceData) -> list[dict]:
    return [{"line": dev.line(p), "image": dev.shown(p), "device": dev.device, "reason": r}
            for p, r in sorted(dev.duplicates.items(), key=lambda item: dev.line(item[0]))]


def _same_pixels(first: str, second: str, dev: _DeviceData) -> bool:
    """Whether two images decode to exactly the same pixels (the check behind a fingerprint match)."""
    try:
        a, b = (read_image(p, expected_shape=dev.frame, expected_kind=dev.kind,
                           expected_bit_depth=dev.bit_depth).pixels for p in (first, second))
    except ImageReadError:
        return False
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def _read_note_rows(dev: _DeviceData) -> list[dict]:
    return [{"line": dev.line(p), "device": dev.device, "image": dev.shown(p), "note": note}
            for p, notes in sorted(dev.read_notes.items(), key=lambda item: dev.line(item[0])) for note in notes]


def _find_duplicates(dev: _DeviceData, records: dict, digests: dict) -> None:
    """Record every readable image whose content an earlier manifest row already has.

    The same file bytes (SHA-256 of the file) or the same decoded pixels (a PNG copy of a JPEG, a
    renamed copy) would put one picture in both the training and the test images of a split. The
    row first in manifest order is kept; each later one is recorded in ``dev.duplicates`` with the
    line and path of the one kept, and takes no part in the experiment. Equal pixel fingerprints
    (a sample of the rows) are confirmed by decoding both images and comparing every pixel.
    """
    first_bytes, first_pixels = {}, {}
    for path in sorted((p for p in dev.order if p in records and p not in dev.failures), key=dev.line):
        by_bytes, by_pixels = digests.get(path), records[path].pixel_fingerprint
        if by_bytes is not None and by_bytes in first_bytes:
            kept = first_bytes[by_bytes]
            dev.duplicates[path] = f"same file bytes as line {dev.line(kept)} ({dev.shown(kept)})"
            continue
        kept = first_pixels.get(by_pixels) if by_pixels is not None else None
        if kept is not None and _same_pixels(kept, path, dev):
            dev.duplicates[path] = f"same pixels as line {dev.line(kept)} ({dev.shown(kept)})"
            continue
        if by_bytes is not None:
            first_bytes[by_bytes] = path
        if by_pixels is not None:
            first_pixels.setdefault(by_pixels, path)


def _exposure(dev: _DeviceData, path: str, from_exif: dict) -> float:
    value = dev.rows[path].exposure_s
    if value is None:
        value = from_exif.get(path)
    return float(value) if value else np.nan


def _iso(dev: _DeviceData, path: str, from_exif: dict) -> float:
    value = dev.rows[path].iso
    if value is None:
        value = from_exif.get(path)
    return float(value) if value else np.nan


def capture_times(rows) -> np.ndarray:
    """Capture time of each manifest row as a number: days since 1970 when every row has a
    ``captured_at``, else the acquisition slot (the axis the rows are ordered on)."""
    if all(r.captured_at is not None for r in rows):
        epoch = datetime(1970, 1, 1)
        return np.array([(r.captured_at - epoch).total_seconds() / 86400.0 for r in rows])
    if all(r.timeslot is not None for r in rows):
        return np.array([float(r.timeslot) for r in rows])
    return np.array([float(i) for i in range(len(rows))])


def _cache_write_failed(cache: FeatureCache, results) -> None:
    """Switch the cache's writing off after the first failed write, with one warning naming the folder."""
    reason = next((r.cache_error for r in results if r.cache_error), None)
    if reason is None or cache.write_error_reported:
        return
    cache.stop_writing(reason)
    cache.write_error_reported = True
    logger.warning("%s: the run goes on without caching per-image features (the results are the same; "
                   "a rerun computes them again). Free space or fix permissions there, or pass --cache "
                   "with another folder.", cache.write_error)


def _screen_device(dev: _DeviceData, cfg: ExperimentConfig, pool, cache: FeatureCache) -> tuple[dict, dict]:
    """Pass 1: the screening record and file digest of every image of the device (unreadable ones recorded)."""
    tasks = [ScreenTask(tuple(chunk), dev.frame, cache, dev.kind, dev.bit_depth)
             for chunk in batched(dev.order, cfg.batch_size)]
    results = map_batches(screen_batch, tasks, pool=pool, weights=[len(t.paths) for t in tasks], unit="img",
                          desc=f"{dev.device}: residual screening (pass 1 of 2)", progress=cfg.progress)
    _cache_write_failed(cache, results)
    records, digests = {}, {}
    for res in results:
        _record_failures(dev, res.failures, cfg.strict)
        records.update(res.records)
        digests.update(res.digests)
        dev.read_notes.update(res.notes)
        dev.cache_stats["screening_cached"] += res.cache_hits
        dev.cache_stats["screening_computed"] += len(res.records) - res.cache_hits
    return records, digests


def _device_defect_features(dev: _DeviceData, splits: list[Split], records: dict, cfg: ExperimentConfig, pool,
                            cache: FeatureCache) -> dict:
    """Identify each run's defects from its trusted images; measure them in every image.

    Each run screens candidates from the screening records (pass 1) of its own training
    images only; then one pass over the images measures residuals at the union of all runs'
    candidates (pass 2), from which each run takes its own columns. Returns ``run -> features``.
    """
    order_index = {p: i for i, p in enumerate(dev.order)}
    trains = {s.run: sorted(s.train_paths, key=order_index.__getitem__) for s in splits}
    exif_exposure = {path: record.exposure for path, record in records.items()}
    exif_iso = {path: record.iso for path, record in records.items()}
    identifier = DefectIdentifier(candidate_false_alarm=cfg.candidate_false_alarm,
                                  onset_false_alarm=cfg.onset_false_alarm)
    shape = next(iter(records.values())).shape if records else None
    candidates = {}
    for split in splits:
        usable = [records[p] for p in trains[split.run] if p in records]
        empty = np.zeros(0, dtype=np.int64)
        candidates[split.run] = (screen_candidates(usable, cfg.n_blocks, shape, identifier) if shape
                                 else (empty, empty, empty))
    # pass 2 at the union of the runs' candidates
    keys = sorted({(int(r), int(c), int(ch)) for rows, cols, chans in candidates.values()
                   for r, c, ch in zip(rows, cols, chans)})
    column = {k: i for i, k in enumerate(keys)}
    urows, ucols, uchans = (np.array([k[i] for k in keys], dtype=np.int64) for i in range(3))
    every = sorted(set().union(*trains.values(), *(s.test_paths for s in splits)), key=order_index.__getitem__)
    tasks = [SparseTask(tuple(chunk), urows, ucols, uchans, dev.frame, cache, dev.kind, dev.bit_depth)
             for chunk in batched(every, cfg.batch_size)]
    results = map_batches(sparse_batch, tasks, pool=pool, weights=[len(t.paths) for t in tasks], unit="img",
                          desc=f"{dev.device}: residuals at {len(keys)} candidates (pass 2 of 2)",
                          progress=cfg.progress)
    _cache_write_failed(cache, results)
    W_all = np.concatenate([r.residuals for r in results]) if results else np.zeros((0, len(keys)), np.float32)
    S_all = np.concatenate([r.sigma for r in results]) if results else np.zeros((0, len(keys)), np.float32)
    for res in results:
        _record_failures(dev, res.failures, cfg.strict)
        for path, value in res.exposures.items():
            exif_exposure.setdefault(path, value)
        for path, value in res.isos.items():
            exif_iso.setdefault(path, value)
        dev.cache_stats["residuals_cached"] += res.cache_hits
        dev.cache_stats["residuals_computed"] += len(res.exposures) - res.cache_hits
    row_of = {p: i for i, p in enumerate(every)}
    out = {}
    for split in splits:
        train, test = trains[split.run], list(split.test_paths)
        rows, cols, chans = candidates[split.run]
        take = np.array([column[(int(r), int(c), int(ch))] for r, c, ch in zip(rows, cols, chans)], dtype=np.int64)
        images = np.array([row_of[p] for p in train + test], dtype=np.int64)
        W, S = W_all[np.ix_(images, take)], S_all[np.ix_(images, take)]
        out[split.run] = _identify_run(dev, train, test, W, S, rows, cols, chans, exif_exposure, exif_iso,
                                       identifier)
    return out


def device_features(rows, splits: list[Split], cfg: ExperimentConfig, *, pool=None,
                    cache: FeatureCache | None = None) -> tuple[dict, dict]:
    """The two extraction passes of an experiment for one device, on splits the caller chose.

    Dating uses it with folds of all trusted images (and one split training on all of them);
    ``run_experiment`` does the same internally with its repeated stratified splits.

    Parameters
    ----------
    rows : list of ManifestRow
        The device's images (one device).
    splits : list of Split
        Each split's training images identify its defects; its training and test images are
        measured at them. Run numbers must be distinct.
    cfg : ExperimentConfig
        Detection parameters, workers, batch size, progress.
    pool : executor, optional
        From :func:`pipeline.features.executor.make_pool`; a local one of ``cfg.workers`` if None.
    cache : FeatureCache, optional
        Per-image cache (none by default).

    Returns
    -------
    features : dict
        ``run -> {"train", "test", "W", "S", "tau", "iso", "time", "ok", "table", "onset_paths",
        "n_candidates"}``; ``W`` and ``S`` hold the residuals and noise levels at the split's
        identified defects for its training then test images.
    device : dict
        ``frame``, ``kind``, ``bit_depth`` of the device, ``failures`` (path -> reason) and
        ``sha256`` (path -> SHA-256 of the file, from the screening pass).

    Raises
    ------
    ValueError
        If none of the images can be read.
    """
    if len({r.device for r in rows}) != 1:
        raise ValueError("device_features needs the rows of exactly one device")
    rows = sorted(rows, key=lambda r: r.time_key)
    dev = _DeviceData(rows[0].device, {str(r.path): r for r in rows}, [str(r.path) for r in rows], seed=0)
    cache = cache or FeatureCache(None)
    if pool is None:
        with make_pool(cfg.executor, workers=cfg.workers, scheduler=cfg.scheduler) as own:
            return device_features(rows, splits, cfg, pool=own, cache=cache)
    if not _probe(dev, cfg):
        raise ValueError(f"none of the {len(rows)} image(s) of {dev.device} could be read: "
                         + "; ".join(f"{p}: {r}" for p, r in list(dev.failures.items())[:3]))
    records, digests = _screen_device(dev, cfg, pool, cache)
    features = _device_defect_features(dev, splits, records, cfg, pool, cache)
    return features, {"frame": dev.frame, "kind": dev.kind, "bit_depth": dev.bit_depth,
                      "failures": dict(dev.failures), "sha256": digests}


def _identify_run(dev, train, test, W, S, rows, cols, chans, exif_exposure, exif_iso, identifier):
    every = train + test
    tau = np.array([_exposure(dev, p, exif_exposure) for p in every])
    iso = np.array([_iso(dev, p, exif_iso) for p in every])
    times = capture_times([dev.rows[p] for p in every])
    ok = np.array([p not in dev.failures for p in every])
    n_train = len(train)
    tr_ok = ok[:n_train]
    # the onset test sees the effective exposure g·τ: defect amplitudes scale with analogue gain
    effective = tau * iso / np.nanmin(iso) if np.isfinite(iso).any() else tau
    table = identifier.identify(W[:n_train][tr_ok], S[:n_train][tr_ok], effective[:n_train][tr_ok], rows, cols,
                                chans, demosaiced=dev.kind != "cfa")
    # candidate column of each identified defect
    key = {(int(r), int(c), int(ch)): i for i, (r, c, ch) in enumerate(zip(rows, cols, chans))}
    columns = np.array([key[(int(r), int(c), int(ch))] for r, c, ch in zip(table.rows, table.cols, table.channels)],
                       dtype=np.int64)
    onset_paths = [train[np.flatnonzero(tr_ok)[k]] for k in table.onset_index]
    return {"train": train, "test": test, "W": W[:, columns], "S": S[:, columns], "tau": tau, "iso": iso,
            "time": times, "ok": ok,
            "table": table, "onset_paths": onset_paths, "n_candidates": int(rows.size)}


def fg_from_params(params: dict) -> FridrichGoljanClassifier:
    """Rebuild a fitted :class:`FridrichGoljanClassifier` from the parameters a run stored."""
    if "params" not in params:
        raise ValueError("this run's Fridrich–Goljan model was written by an older agetrace (before the "
                         "ISO-aware, robust likelihood); run the experiment again in a new --out folder")
    return FridrichGoljanClassifier.from_params(params)


def fg_side_arrays(feats: dict) -> dict:
    """The keyword arguments of the Fridrich–Goljan model for a run's images: local noise levels,
    and exposure times and ISO where any image of the run has them (NaN where unknown)."""
    side = {"sigma": feats["S"]}
    if np.isfinite(feats["tau"]).any():
        side["exposure"] = feats["tau"]
    if np.isfinite(feats["iso"]).any():
        side["iso"] = feats["iso"]
    return side


def _prior_prediction(y_train, n_test, classes):
    """What a method says when it has nothing to go on: the training class frequencies."""
    freq = np.array([np.mean(np.asarray(y_train) == c) for c in classes])
    return np.tile(freq, (n_test, 1))


def _fit_defect_method(method, cfg, seed, X, y, side, time, svm_grid=None):
    if method == "fg":
        return FridrichGoljanClassifier(false_alarm=cfg.fg_false_alarm).fit(X, y, **side, time=time)
    if method == "nb":
        return ResidualNaiveBayes().fit(X, y)
    return ResidualSVM(inner_folds=cfg.svm_inner_folds, param_grid=svm_grid, random_state=seed).fit(X, y)


def _defect_scores(model, method, X, side):
    """The method's natural-log scores, one column per fitted class."""
    if method == "fg":
        return model.predict_log_proba(X, **side)
    return log_scores(model.predict_proba(X))


def calibration_table(calibrator: EvidenceCalibrator, scores: np.ndarray) -> dict:
    """A calibrator as a JSON table: for each class, its one-vs-rest score on a grid and the log10 LR
    there (a monotone map, interpolated by :func:`calibrated_lr_from_table`)."""
    k = calibrator.classes_.size
    s = scores[:, 1] - scores[:, 0] if k == 2 else None
    tables = []
    for j in range(1 if k == 2 else k):
        col = 1 if k == 2 else j
        if k == 2:
            ovr = s
        else:
            others = np.delete(scores, j, axis=1)
            ovr = scores[:, j] - logsumexp(others, axis=1)
        finite = ovr[np.isfinite(ovr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
        grid = np.unique(np.concatenate([np.linspace(lo - 5 - 0.5 * (hi - lo), hi + 5 + 0.5 * (hi - lo), 400),
                                         finite]))
        probe = np.zeros((grid.size, k))
        probe[:, col] = grid + (np.log(k - 1) if k > 2 else 0.0)
        tables.append({"class": calibrator.classes_[col].item(), "score": grid.tolist(),
                       "log10_lr": calibrator.log10_lr(probe)[:, col].tolist()})
    return {"classes": calibrator.classes_.tolist(), "priors": calibrator.priors_.tolist(),
            "bounds": calibrator.bounds_.tolist(), "n_calibration": int(calibrator.n_calibration_),
            "method": calibrator.method, "tables": tables}


def calibrated_lr_from_table(table: dict, scores: np.ndarray) -> np.ndarray:
    """log10 LR of each class (one-vs-rest) from a :func:`calibration_table`, for (n, K) log-scores."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    k = len(table["classes"])
    out = np.zeros((scores.shape[0], k))
    if k == 2:
        t = table["tables"][0]
        out[:, 1] = np.interp(scores[:, 1] - scores[:, 0], t["score"], t["log10_lr"])
        out[:, 0] = -out[:, 1]
        return out
    for j, t in enumerate(table["tables"]):
        ovr = scores[:, j] - logsumexp(np.delete(scores, j, axis=1), axis=1)
        out[:, j] = np.interp(ovr, t["score"], t["log10_lr"])
    return out


def _align(values, fitted_classes, classes, fill=0.0):
    """Columns of ``values`` (one per fitted class) placed at the experiment's classes."""
    full = np.full((values.shape[0], len(classes)), fill, dtype=float)
    for j, c in enumerate(fitted_classes):
        full[:, classes.index(c)] = values[:, j]
    return full


def _run_defect_methods(feats, split, cfg, classes, methods):
    """Fit each defect-based method on the run's training images and calibrate its scores by
    cross-fitting inside them; returns calibrated probabilities, log10 LRs and raw probabilities."""
    train, test, ok = feats["train"], feats["test"], feats["ok"]
    n_train = len(train)
    label = {p: y for p, y in zip(split.train_paths + split.test_paths, split.train_labels + split.test_labels)}
    tr_idx = np.flatnonzero(ok[:n_train])
    te_idx = n_train + np.flatnonzero(ok[n_train:])
    y_tr = np.array([label[train[i]] for i in tr_idx])
    X = feats["W"]
    side = fg_side_arrays(feats)
    time = feats["time"]
    n_defects = X.shape[1]
    seed = split.seed % (2 ** 31)
    outputs, notes, fg_params, calibration = {}, {}, None, {}
    fitted_classes = list(np.unique(y_tr))
    counts = np.unique(y_tr, return_counts=True)[1]
    for method in methods:
        if n_defects == 0 or len(fitted_classes) < 2 or counts.min() < 2:
            prior = _prior_prediction(y_tr, te_idx.size, classes)
            outputs[method] = {"proba": prior, "raw": prior, "log10_lr": np.zeros_like(prior)}
            notes[method] = ("no defects identified: predicts the training class frequencies, LR 1"
                             if n_defects == 0 else "too few training images per class: predicts the "
                             "training class frequencies, LR 1")
            continue

        model = _fit_defect_method(method, cfg, seed, X[tr_idx], y_tr, {k: v[tr_idx] for k, v in side.items()},
                                   time[tr_idx])
        # the folds refit the SVM at the C and γ its inner CV chose on the whole training split
        # (a grid search in every fold would cost 16 times as much for the calibration alone)
        grid = ({k: [v] for k, v in model.best_params_.items()} or None) if method == "svm" else None

        def fit_score(inner_train, inner_test, method=method, grid=grid):
            rows_tr, rows_te = tr_idx[inner_train], tr_idx[inner_test]
            fold_model = _fit_defect_method(method, cfg, seed, X[rows_tr], y_tr[inner_train],
                                            {k: v[rows_tr] for k, v in side.items()}, time[rows_tr], grid)
            return _defect_scores(fold_model, method, X[rows_te], {k: v[rows_te] for k, v in side.items()})

        oof = cross_fitted_scores(fit_score, y_tr, n_folds=cfg.calibration_folds, random_state=seed)
        calibrator = EvidenceCalibrator(method=cfg.calibration_method, random_state=seed).fit(oof, y_tr)
        test_side = {k: v[te_idx] for k, v in side.items()}
        scores = _defect_scores(model, method, X[te_idx], test_side)
        outputs[method] = {"proba": _align(calibrator.predict_proba(scores), fitted_classes, classes),
                           "raw": _align(np.exp(scores - logsumexp(scores, axis=1, keepdims=True)),
                                         fitted_classes, classes),
                           "log10_lr": _align(calibrator.log10_lr(scores), fitted_classes, classes)}
        calibration[method] = calibration_table(calibrator, oof)
        if method == "fg":
            fg_params = model.to_params()
        elif method == "svm":
            notes[method] = f"inner-CV choice {model.best_params_}" if model.best_params_ else "default C, gamma"
    test_paths = [test[i - n_train] for i in te_idx]
    table: DefectTable = feats["table"]
    defects = table.as_dict()
    defects["onset_path"] = feats["onset_paths"]
    return (outputs, notes, test_paths, [label[p] for p in test_paths], defects, fg_params, feats["n_candidates"],
            calibration)


def _run_srnet(dev, split, cfg, classes, out: Path):
    """Train SRNet on the split's training images less a stratified calibration part, and
    calibrate its fused scores on that part (the five crop networks are too costly to cross-fit)."""
    from sklearn.model_selection import train_test_split

    from pipeline.srnet.fusion import fit_predict
    from pipeline.srnet.presets import preset_config

    usable_train = [(p, y) for p, y in zip(split.train_paths, split.train_labels) if p not in dev.failures]
    usable_test = [(p, y) for p, y in zip(split.test_paths, split.test_labels) if p not in dev.failures]
    seed = split.seed % (2 ** 31)
    labels = [y for _, y in usable_train]
    if cfg.srnet_calibration_fraction > 0:
        fit_part, cal_part = train_test_split(usable_train, test_size=cfg.srnet_calibration_fraction,
                                              stratify=labels, random_state=seed)
    else:
        fit_part, cal_part = usable_train, []
    srnet_cfg = preset_config(cfg.srnet_preset, **{**cfg.srnet_overrides, "seed": seed})
    result = fit_predict([p for p, _ in fit_part], [y for _, y in fit_part],
                         [p for p, _ in cal_part] + [p for p, _ in usable_test],
                         srnet_cfg, out / "srnet" / dev.device / f"run_{split.run:02d}", classes=classes,
                         progress=cfg.progress)
    fitted = list(result["classes"])
    scores = log_scores(np.asarray(result["proba"]))
    cal_scores, test_scores = scores[:len(cal_part)], scores[len(cal_part):]
    raw = _align(np.exp(test_scores - logsumexp(test_scores, axis=1, keepdims=True)), fitted, classes)
    if not cal_part:  # no calibration images: no evidence claimed (LR 1, the training priors)
        prior = _prior_prediction(labels, len(usable_test), classes)
        output = {"proba": prior, "raw": raw, "log10_lr": np.zeros_like(prior)}
        return output, [p for p, _ in usable_test], [y for _, y in usable_test], result["config"], None
    calibrator = EvidenceCalibrator(method=cfg.calibration_method, random_state=seed).fit(
        cal_scores, np.array([y for _, y in cal_part]), classes=fitted)
    output = {"proba": _align(calibrator.predict_proba(test_scores), fitted, classes),
              "raw": _align(np.exp(test_scores - logsumexp(test_scores, axis=1, keepdims=True)), fitted, classes),
              "log10_lr": _align(calibrator.log10_lr(test_scores), fitted, classes)}
    return (output, [p for p, _ in usable_test], [y for _, y in usable_test], result["config"],
            calibration_table(calibrator, cal_scores))


def _prediction_rows(device, run, method, paths, labels, output, classes, root: Path | None):
    """Rows of predictions.csv: the method's own decision ``predicted`` (the argmax of its own
    ``raw_p_<class>``; accuracy is of these decisions, as in the papers), and the evidence: the
    calibrated probabilities ``p_<class>`` (training priors) and one-vs-rest ``log10_lr_<class>``."""
    rows = []
    for i, (p, y) in enumerate(zip(paths, labels)):
        shown = p
        if root is not None:
            try:
                shown = str(Path(p).relative_to(root))
            except ValueError:
                pass
        pr = output["proba"][i]
        row = {"image": shown, "device": device, "run": run, "method": method, "true": int(y),
               "predicted": int(classes[int(np.argmax(output["raw"][i]))])}
        row.update({f"p_{c}": float(v) for c, v in zip(classes, pr)})
        row.update({f"log10_lr_{c}": float(v) for c, v in zip(classes, output["log10_lr"][i])})
        row.update({f"raw_p_{c}": float(v) for c, v in zip(classes, output["raw"][i])})
        rows.append(row)
    return rows


def _srnet_crops(cfg: ExperimentConfig) -> tuple[str, ...] | None:
    if "srnet" not in cfg.methods:
        return None
    from pipeline.srnet.presets import preset_config

    return preset_config(cfg.srnet_preset, **cfg.srnet_overrides).crops


def _srnet_runs(cfg: ExperimentConfig) -> int:
    if "srnet" not in cfg.methods:
        return 0
    if cfg.srnet_runs is not None:
        return min(cfg.srnet_runs, cfg.runs)
    from pipeline.srnet.presets import preset_config

    preset_runs = preset_config(cfg.srnet_preset).max_runs
    return cfg.runs if preset_runs is None else min(preset_runs, cfg.runs)


def run_experiment(manifest: Manifest, out_dir: str | Path, cfg: ExperimentConfig, *, extra_record: dict | None = None,
                   log=print) -> dict:
    """Run every method of ``cfg`` on every device of ``manifest``; write and return the results.

    Returns
    -------
    dict
        ``summary`` (list of dicts), ``summary_text`` (markdown), ``metrics``, ``out``, ``failures``
        (rows of failures.csv), ``excluded`` (rows of excluded.csv), ``skipped`` (the devices that
        could not be analysed, each with its reason), ``status`` (:data:`STATUS_COMPLETE`, or
        :data:`STATUS_NOTHING_ANALYSED` when no device could be analysed) and ``written`` (the names
        of the files and folders of ``out_dir`` that the run wrote, folders ending in ``/``).

    Raises
    ------
    OutputFolderError
        When the output folder cannot be written (full disk, quota, read-only, no permission);
        the message names the folder. A feature cache that cannot be written is not an error.
    ImageReadError
        With ``cfg.strict``, at the first unreadable or missing image, naming its manifest line.
    ConfigMismatchError
        When ``out_dir`` holds a run with another manifest or other result settings.
    """
    out = Path(out_dir)
    try:
        return _run(manifest, out, cfg, extra_record or {}, log)
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


def _run(manifest: Manifest, out: Path, cfg: ExperimentConfig, extra: dict, log) -> dict:
    record = _prepare_output(out, cfg, manifest, extra)
    cache = FeatureCache(Path(cfg.cache_dir) if cfg.cache_dir else out / "cache")
    for folder in [out] + ([] if _inside(cache.root, out) else [cache.root]):
        removed = remove_stale_temporaries(folder)
        if removed:
            logger.info("removed %d temporary file(s) that interrupted writes left in %s", len(removed), folder)
    classes = sorted({r.label for r in manifest.rows})
    root = manifest.source.parent.resolve()
    srnet_k = _srnet_runs(cfg)
    defect_methods = [m for m in cfg.methods if m in DEFECT_METHODS]
    all_predictions, all_metrics, failures, cache_totals = [], [], [], Counter()
    excluded = [{"line": e.line, "image": e.path, "device": e.device, "reason": e.reason} for e in manifest.excluded]
    skipped, read_notes = [], []
    with make_pool(cfg.executor, workers=cfg.workers, scheduler=cfg.scheduler) as pool:
        for device in manifest.devices:
            _run_device(out, cfg, manifest, device, classes, root, srnet_k, defect_methods, pool, cache,
                        all_predictions, all_metrics, failures, excluded, skipped, read_notes, cache_totals, log)
    excluded.sort(key=lambda e: e["line"])
    excluded += [{"line": "", "image": "", "device": s["device"], "reason": f"device not analysed: {s['reason']}"}
                 for s in skipped]
    record["feature_cache"] = {"folder": str(cache.root), **{k: cache_totals[k] for k in sorted(cache_totals)
                                                              if not k.startswith(("parts_", "devices_"))}}
    if cache.write_error:
        record["feature_cache"]["not_written"] = cache.write_error
    record["reuse"] = {
        "parts_reused": cache_totals["parts_reused"], "parts_computed": cache_totals["parts_computed"],
        "devices_reused": cache_totals["devices_reused"],
        "images_from_cache": {"screening": cache_totals["screening_cached"],
                              "residuals": cache_totals["residuals_cached"]},
        "images_computed": {"screening": cache_totals["screening_computed"],
                            "residuals": cache_totals["residuals_computed"]}}
    return _finish(out, cfg, record, manifest, classes, all_predictions, all_metrics, failures, excluded, skipped,
                   read_notes, srnet_k, log)


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


def _run_device(out, cfg, manifest, device, classes, root, srnet_k, defect_methods, pool, cache,
                all_predictions, all_metrics, failures, excluded, skipped, read_notes, cache_totals, log):
    """Every run of one device: split files, defect methods, SRNet; one part file per run.

    A device that cannot be analysed (no readable image, one class, too few images to split) is
    added to ``skipped`` with its reason; its unreadable images go to ``failures`` and its content
    duplicates to ``excluded`` either way.
    """
    rows = manifest.for_device(device)
    dev = _DeviceData(device, {str(r.path): r for r in rows}, [str(r.path) for r in rows],
                      device_seed(cfg.seed, device), source=manifest.source, root=root)

    def skip(reason: str) -> None:
        reason += f" (manifest line(s) {_line_ranges(sorted(r.line for r in rows))})"
        log(f"{device}: not analysed — {reason}")
        skipped.append({"device": device, "images": len(dev.order), "reason": reason})
        failures.extend(_failure_rows(dev))
        excluded.extend(_duplicate_rows(dev))
        read_notes.extend(_read_note_rows(dev))
        cache_totals.update(dev.cache_stats)

    if _all_parts_complete(out, dev, cfg, srnet_k, defect_methods):
        splits, records = [read_split(_split_paths(out, device, run)) for run in range(cfg.runs)], {}
        cache_totals["devices_reused"] += 1
    else:
        if not _probe(dev, cfg):
            return skip(f"none of its {len(dev.order)} image(s) could be read (see failures.csv)")
        records, digests = _screen_device(dev, cfg, pool, cache)
        _find_duplicates(dev, records, digests)
        readable = [p for p in dev.order if p not in dev.failures and p not in dev.duplicates]
        labels = sorted({dev.rows[p].label for p in readable})
        if not readable:
            return skip(f"none of its {len(dev.order)} image(s) could be read (see failures.csv)")
        if len(labels) < 2:
            return skip(f"all its {len(readable)} readable image(s) are in one class ({labels[0]}): "
                        "nothing to tell apart; give it images of at least two classes")
        try:
            splits = _load_or_make_splits(out, dev, readable, cfg)
        except ValueError as exc:
            return skip(f"too few readable images to split: {exc}")
    parts, pending = {}, []
    for split in splits:
        part_path = _part_path(out, device, split.run)
        wanted = defect_methods + (["srnet"] if split.run < srnet_k else [])
        part = read_json(part_path) if part_path.exists() else None
        parts[split.run] = part
        if part and set(wanted) <= set(part["methods"]):
            for path, reason in part["failures"]:
                dev.failures.setdefault(path, reason)
            for path, reason in part.get("duplicates", []):
                dev.duplicates.setdefault(path, reason)
            for path, notes in part.get("read_notes", []):
                dev.read_notes.setdefault(path, tuple(notes))
            cache_totals["parts_reused"] += 1
        else:
            pending.append((split, wanted))
    need_defects = [split for split, _ in pending
                    if any(m not in (parts[split.run] or {}).get("methods", []) for m in defect_methods)]
    features = _device_defect_features(dev, need_defects, records, cfg, pool, cache) if need_defects else {}
    for split, wanted in pending:
        part = parts[split.run] or {"device": device, "run": split.run, "seed": split.seed, "methods": [],
                                    "predictions": [], "metrics": [], "failures": []}
        done = set(part["methods"])
        missing_defect = [m for m in defect_methods if m not in done]
        if missing_defect:
            outputs, notes, test_paths, test_labels, defects, fg_params, n_cand, calibration = \
                _run_defect_methods(features[split.run], split, cfg, classes, missing_defect)
            for method, output in outputs.items():
                part["predictions"] += _prediction_rows(device, split.run, method, test_paths, test_labels,
                                                        output, classes, root)
                part["metrics"].append(_metric(device, split, method, output, test_labels, classes,
                                               len(defects["rows"]), notes.get(method, "")))
            part.setdefault("calibration", {}).update(calibration)
            part["defects"], part["n_candidates"] = defects, n_cand
            if fg_params is not None:
                part["fg_model"] = fg_params
            part["frame"], part["kind"] = list(dev.frame), dev.kind
            _write_defect_csv(out, device, split.run, defects, root)
        if "srnet" in wanted and "srnet" not in done:
            output, test_paths, test_labels, srnet_config, table = _run_srnet(dev, split, cfg, classes, out)
            part["srnet_config"] = srnet_config
            if table is not None:
                part.setdefault("calibration", {})["srnet"] = table
            part["predictions"] += _prediction_rows(device, split.run, "srnet", test_paths, test_labels,
                                                    output, classes, root)
            part["metrics"].append(_metric(device, split, "srnet", output, test_labels, classes, None,
                                           f"trained on {len(split.train_paths) - table['n_calibration']} "
                                           f"training images, calibrated on the other {table['n_calibration']}"
                                           if table else "not calibrated (srnet_calibration_fraction 0): LR 1"))
        part["methods"] = sorted(done | set(wanted))
        part["failures"] = sorted(dev.failures.items())
        part["duplicates"] = sorted(dev.duplicates.items())
        part["read_notes"] = sorted((path, list(notes)) for path, notes in dev.read_notes.items())
        write_json(_part_path(out, device, split.run), part)
        cache_totals["parts_computed"] += 1
        parts[split.run] = part
        accs = ", ".join(f"{m['method']} {m['accuracy']:.3f}" for m in part["metrics"])
        log(f"{device} run {split.run}: {accs}")
    for split in splits:
        part = parts[split.run]
        all_predictions += [p for p in part["predictions"] if p["method"] in cfg.methods]
        all_metrics += [m for m in part["metrics"] if m["method"] in cfg.methods]
    failures.extend(_failure_rows(dev))
    excluded.extend(_duplicate_rows(dev))
    read_notes.extend(_read_note_rows(dev))
    cache_totals.update(dev.cache_stats)


def _probe(dev: _DeviceData, cfg: ExperimentConfig, samples: int = 7) -> bool:
    """Set the device's frame, kind and bit depth: those most of a few images spread over time share.

    A single foreign first image (rotated, resized, grayscale) must not condemn the rest of
    the device. Returns False when no image could be read at all (each recorded as a failure).
    """
    picks = [dev.order[i] for i in np.unique(np.linspace(0, len(dev.order) - 1, samples).round().astype(int))]
    chosen = set(picks)
    seen = Counter()
    for path in picks + [p for p in dev.order if p not in chosen]:
        if seen and path not in chosen:
            break  # look further only while none of the picks was readable
        try:
            seen[probe_device(path)] += 1
        except ImageReadError as exc:
            _record_failures(dev, [(path, exc.reason)], cfg.strict)
    if not seen:
        return False
    (frame, kind, bit_depth), _ = seen.most_common(1)[0]
    dev.frame, dev.kind, dev.bit_depth = frame, kind, bit_depth
    # the screening pass reads every image again and records its own reason for each
    dev.failures.clear()
    return True


def _all_parts_complete(out: Path, dev: _DeviceData, cfg: ExperimentConfig, srnet_k: int, defect_methods) -> bool:
    for run in range(cfg.runs):
        if not _split_paths(out, dev.device, run).exists():
            return False
        part_path = _part_path(out, dev.device, run)
        if not part_path.exists():
            return False
        wanted = set(defect_methods) | ({"srnet"} if run < srnet_k else set())
        if not wanted <= set(read_json(part_path)["methods"]):
            return False
    return True


#: calibration columns of metrics.csv and the calibration table, in order
EVIDENCE_COLUMNS = ("cllr", "cllr_min", "ece", "brier", "confident_wrong")


def _metric(device, split, method, output, labels, classes, n_defects, note):
    row = {"device": device, "run": split.run, "method": method, "n_test": len(labels),
           "n_train": len(split.train_paths), "n_defects": n_defects, "note": note}
    ev = evidence_metrics(output["proba"], output["log10_lr"], np.asarray(labels), classes)
    decided = np.asarray(classes)[np.argmax(output["raw"], axis=1)] if len(labels) else np.zeros(0)
    row["accuracy"] = float(np.mean(decided == np.asarray(labels))) if len(labels) else float("nan")
    row.update({k: ev[k] for k in EVIDENCE_COLUMNS})
    return row


def _write_defect_csv(out, device, run, defects, root):
    cols = ["rows", "cols", "channels", "onset_index", "onset_path", "dark_current", "offset", "llr", "spread"]
    rows = []
    for i in range(len(defects["rows"])):
        row = {c: defects[c][i] for c in cols}
        try:
            row["onset_path"] = str(Path(row["onset_path"]).relative_to(root))
        except ValueError:
            pass
        rows.append(row)
    write_csv(out / "defects" / device / f"run_{run:02d}.csv",
              [{"row": r["rows"], "col": r["cols"], "channel": r["channels"], **{k: r[k] for k in cols[3:]}}
               for r in rows],
              ["row", "col", "channel", "onset_index", "onset_path", "dark_current", "offset", "llr", "spread"])


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
            name = f"{labels.get(method, method)}, {len({p['run'] for p in preds})} runs"
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
            for fmt, dpi in (("png", 300), ("pdf", None)):
                path = folder / f"{kind}_{device}.{fmt}"
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path, "wb") as fh:
                    fig.savefig(fh, format=fmt, dpi=dpi)
                written.append(path)
    return written


def skipped_markdown(skipped: list[dict]) -> str:
    """The table of devices that could not be analysed, with their reasons (summary.md)."""
    lines = ["| device | images | reason |", "|---|---|---|"]
    lines += [f"| {s['device']} | {s['images']} | {s['reason']} |" for s in skipped]
    return "\n".join(lines)


def _commit(stage: Path, out: Path) -> None:
    """Move every staged file into the output folder (same file system: each move is a rename)."""
    for base, _dirs, files in os.walk(stage):
        for name in sorted(files):
            source = Path(base) / name
            target = out / source.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    shutil.rmtree(stage, ignore_errors=True)


def _finish(out, cfg, record, manifest, classes, predictions, metrics, failures, excluded, skipped, read_notes,
            srnet_k, log):
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
    stage = out / _STAGING
    shutil.rmtree(stage, ignore_errors=True)
    pcols = (["image", "device", "run", "method", "true", "predicted"] + [f"p_{c}" for c in classes]
             + [f"log10_lr_{c}" for c in classes] + [f"raw_p_{c}" for c in classes])
    write_csv(stage / "predictions.csv", predictions, pcols)
    write_csv(stage / "metrics.csv", metrics, ["device", "run", "method", "accuracy", *EVIDENCE_COLUMNS, "n_test",
                                               "n_train", "n_defects", "note"])
    evidence = pooled_evidence(predictions, methods, classes)
    write_csv(stage / "calibration.csv", evidence, ["device", "method", "runs", "n", "accuracy", *EVIDENCE_COLUMNS])
    figures = write_calibration_figures(stage / "calibration", predictions, methods, classes,
                                        method_labels(_srnet_crops(cfg)))
    write_csv(stage / "failures.csv", failures, ["line", "device", "image", "reason"])
    write_csv(stage / "excluded.csv", excluded, ["line", "image", "device", "reason"])
    write_csv(stage / "read_notes.csv", read_notes, ["line", "device", "image", "note"])
    chance = {}
    for device in {p["device"] for p in predictions}:
        truths = [p["true"] for p in predictions if p["device"] == device and p["method"] == methods[0]]
        if truths:
            chance[device] = max(np.mean(np.asarray(truths) == c) for c in classes)
    labels = method_labels(_srnet_crops(cfg))
    sections = []
    if not analysed:
        sections.append("No device could be analysed, so there are no results. Each device's reason (also in "
                        "excluded.csv):\n\n" + skipped_markdown(skipped))
        summary_rows = []
    elif srnet_k and srnet_k < cfg.runs:
        common = [m for m in metrics if m["run"] < srnet_k]
        summary = summarise(common)
        sections.append(f"All methods side by side on the same first {srnet_k} of {cfg.runs} splits "
                        f"(SRNet was trained on those only, preset {cfg.srnet_preset!r}):\n\n"
                        + summary_markdown(summary, methods, chance, labels))
        classical = [m for m in metrics if m["method"] != "srnet"]
        full = summarise(classical) if classical else []
        if classical:
            sections.append(f"Defect-based methods on all {cfg.runs} splits:\n\n"
                            + summary_markdown(full, [m for m in methods if m != "srnet"], chance, labels))
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
    atomic_write_text(stage / "summary.md", text + "\n")
    if metrics:
        plot_accuracy_boxes(metrics, methods, stage / "accuracy_boxplot.png",
                            title=f"Per-run accuracy ({cfg.runs} stratified splits)")
    # the commit: "committing" while the files move in, the final status once they are all there
    status = STATUS_COMPLETE if analysed else STATUS_NOTHING_ANALYSED
    record.update(status="committing", n_failures=len(failures), n_excluded=len(excluded), skipped_devices=skipped,
                  calibration_figures=[str(f.relative_to(stage)) for f in figures])
    write_json(out / "config.json", record)
    _commit(stage, out)
    record.update(status=status, finished=utc_now())
    write_json(out / "config.json", record)
    written = ["config.json"] + [name for name in ("parts/", "splits/", "defects/", "calibration/", "srnet/",
                                                   "cache/")
                                 if (out / name).is_dir() and any((out / name).iterdir())]
    written += [name for name in _AGGREGATE_FILES if (out / name).is_file()]
    return {"summary": summary_rows, "summary_text": text, "metrics": metrics, "out": out, "failures": failures,
            "excluded": excluded, "skipped": skipped, "status": status, "written": written}

