"""Cross-device cells: one trained model of one device applied to every device's test split.

The cells of :mod:`pipeline.analysis.cross_device` (which reads the experiment, aggregates and
reports): the defect-based methods measured at the training device's defect positions, the
SRNet-family crop networks applied unchanged, and defect-cnn at the training device's defects,
each recorded with the training run's calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from baselines.residual_classifiers import ResidualNaiveBayes, ResidualSVM
from pipeline.analysis.calibration import calibrated_lr_from_table, log_scores, posterior_from_lr
from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.runfolder import Part, RunFolder
from pipeline.data.errors import ImageReadError
from pipeline.data.imageio import read_image
from pipeline.data.splits import Split
from pipeline.features.executor import WorkerPool, batched, map_batches
from pipeline.features.extract import SparseTask, sparse_batch
from pipeline.logs import get_logger
from pipeline.srnet.presets import SRNetConfig

__all__ = ["DEFECT_TRANSFER_NOTE", "SRNET_TRANSFER_NOTE", "Device", "ExperimentIncompleteError", "defect_cells",
           "defect_cnn_cells", "srnet_cells", "test_set"]

logger = get_logger(__name__)

#: What a defect-based method does on another device (CSV notes and the report).
DEFECT_TRANSFER_NOTE = ("defect map of the training device applied to another sensor: the test device's residuals "
                        "are measured at the training device's defect positions, where its pixels are healthy; "
                        "expect chance")
#: What SRNet does on another device.
SRNET_TRANSFER_NOTE = ("training device's crop networks applied unchanged: transfers only as far as what they "
                       "learned (content, processing) is shared between the devices")


class ExperimentIncompleteError(RuntimeError):
    """The experiment folder lacks something the cross evaluation needs (a part, a checkpoint)."""


@dataclass
class Device:
    """One device of the cross evaluation: its manifest rows, time order, splits, parts, failures, frame."""

    name: str
    rows: dict                  # absolute path -> ManifestRow
    order: dict                 # absolute path -> index in time order
    splits: dict = field(default_factory=dict)    # run -> Split
    parts: dict = field(default_factory=dict)     # run -> Part
    failures: dict = field(default_factory=dict)  # path -> reason
    frame: tuple | None = None
    kind: str | None = None


def _test_cells(devices: list[Device], run: int):
    """``(device, test paths, labels)`` of every device with a non-empty test split in ``run``."""
    for test_dev in devices:
        if run in test_dev.splits:
            test, y_te = test_set(test_dev, run)
            if test:
                yield test_dev, test, y_te


def test_set(dev: Device, run: int) -> tuple[list[str], list[int]]:
    split: Split = dev.splits[run]
    kept = [(p, y) for p, y in zip(split.test_paths, split.test_labels) if p not in dev.failures]
    return [p for p, _ in kept], [int(y) for _, y in kept]


def _exposure(dev: Device, path: str, from_exif: dict, field: str = "exposure_s") -> float:
    value = getattr(dev.rows[path], field) if path in dev.rows else None
    if value is None:
        value = from_exif.get(path)
    return float(value) if value else np.nan


# ---------------------------------------------------------------- defect-based methods

def _measure(dev: Device, paths: list[str], rows, cols, chans, cfg: ExperimentConfig, pool: WorkerPool,
             desc: str) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Residual, local sigma, exposure and ISO of ``paths`` of ``dev`` at the given positions.

    Positions outside the device's frame, or in a colour channel its images lack, stay NaN.
    """
    n, m = len(paths), rows.size
    W = np.full((n, m), np.nan, dtype=np.float32)
    S = np.full((n, m), np.nan, dtype=np.float32)
    valid = np.ones(m, dtype=bool)
    if dev.frame is not None:
        valid &= (rows >= 0) & (cols >= 0) & (rows < dev.frame[0]) & (cols < dev.frame[1])
    if dev.kind == "rgb":
        valid &= (chans >= 0) & (chans < 3)
    index = np.flatnonzero(valid)
    chunks = batched(paths, cfg.batch_size)
    tasks = [SparseTask(tuple(chunk), rows[index], cols[index], np.maximum(chans[index], 0), dev.frame)
             for chunk in chunks]
    results = map_batches(sparse_batch, tasks, pool=pool, weights=[len(t.paths) for t in tasks], unit="img",
                          desc=desc, progress=cfg.progress)
    exif, exif_iso = {}, {}
    start = 0
    for res in results:
        k = res.residuals.shape[0]
        W[start:start + k, index] = res.residuals
        S[start:start + k, index] = res.sigma
        start += k
        exif.update(res.exposures)
        exif_iso.update(res.isos)
        for path, reason in res.failures:
            if cfg.strict:
                raise ImageReadError(path, reason, "Fix or remove it, or run without --strict to skip it.")
            dev.failures.setdefault(path, reason)
    tau = np.array([_exposure(dev, p, exif) for p in paths])
    iso = np.array([_exposure(dev, p, exif_iso, "iso") for p in paths])
    return {p: i for i, p in enumerate(paths)}, W, S, tau, iso


def defect_cells(train_dev: Device, devices: list[Device], methods: list[str], cfg: ExperimentConfig,
                  classes: list, pool: WorkerPool, metrics: list, predictions: list) -> None:
    """Every run's defect-based models of ``train_dev`` on every device's test split of that run."""
    runs = [r for r in sorted(train_dev.parts) if train_dev.parts[r].defects is not None
            and any(m in train_dev.parts[r].methods for m in methods)]
    if not runs:
        logger.info("%s: no defect-based result in the experiment; nothing to cross", train_dev.name)
        return
    # every defect position of any run of this device, measured once per image
    position = {}
    for r in runs:
        d = train_dev.parts[r].defects
        for key in zip(d.rows, d.cols, d.channels):
            position.setdefault(tuple(int(v) for v in key), len(position))
    keys = np.array(list(position) or np.zeros((0, 3)), dtype=np.int64).reshape(-1, 3)
    rows, cols, chans = keys[:, 0], keys[:, 1], keys[:, 2]
    measured = {}
    for dev in devices:
        needed = set()
        for r in runs:
            if r not in dev.splits:
                continue
            needed.update(dev.splits[r].test_paths)
            if dev is train_dev:
                needed.update(dev.splits[r].train_paths)
        paths = sorted(needed, key=lambda p: dev.order.get(p, -1))
        measured[dev.name] = _measure(dev, paths, rows, cols, chans, cfg, pool,
                                      f"{train_dev.name} defects in {dev.name}")
    logger.info("%s: %s trained on %d run(s), tested on %d devices (%d distinct defect positions)", train_dev.name,
                ", ".join(methods), len(runs), len(devices), len(position))
    for r in runs:
        part = train_dev.parts[r]
        split = train_dev.splits[r]
        d = part.defects
        columns = np.array([position[(int(a), int(b), int(c))] for a, b, c in zip(d.rows, d.cols, d.channels)],
                           dtype=np.int64)
        label = dict(zip(split.train_paths, split.train_labels))
        train = [p for p in sorted(split.train_paths, key=train_dev.order.__getitem__) if p not in train_dev.failures]
        y_tr = np.array([label[p] for p in train])
        idx_tr, W_tr, _, _, _ = measured[train_dev.name]
        X_tr = W_tr[[idx_tr[p] for p in train]][:, columns]
        models = _fit_models(methods, part, split, X_tr, y_tr, cfg)
        for test_dev, test, y_te in _test_cells(devices, r):
            idx, W, S, tau, iso = measured[test_dev.name]
            rows_te = [idx[p] for p in test]
            X, Sg, tt = W[rows_te][:, columns], S[rows_te][:, columns], (tau[rows_te], iso[rows_te])
            outside = int(np.sum(~np.isfinite(W[:, columns]).any(axis=0))) if W.shape[0] else 0
            for method in methods:
                if method not in part.methods:
                    continue
                (proba, calibrated), note = _predict(models[method], method, X, Sg, tt, classes, y_tr)
                own = test_dev is train_dev
                if not own:
                    note = "; ".join(filter(None, [DEFECT_TRANSFER_NOTE, note,
                                                   f"{outside} of {columns.size} positions never measurable in "
                                                   f"{test_dev.name}" if outside else ""]))
                _record(metrics, predictions, method, train_dev.name, test_dev.name, r, test, y_te, proba, classes,
                        note, calibrated)


def _fit_models(methods, part: Part, split, X_tr, y_tr, cfg: ExperimentConfig) -> dict:
    """The run's models, refitted exactly as the experiment fitted them (None: no evidence)."""
    models = {}
    n_defects = X_tr.shape[1]
    trivial = n_defects == 0 or len(np.unique(y_tr)) < 2
    for method in methods:
        if method not in part.methods:
            continue
        table = part.calibration.get(method)
        if trivial or table is None:
            models[method] = None
        elif method == "fg":
            models[method] = (part.fg_classifier(), table) if part.fg_model is not None else None
        elif method == "nb":
            models[method] = (ResidualNaiveBayes().fit(X_tr, y_tr), table)
        else:
            models[method] = (ResidualSVM(inner_folds=cfg.svm_inner_folds,
                                          random_state=split.seed % (2 ** 31)).fit(X_tr, y_tr), table)
    return models


def _predict(model, method, X, S, tau, classes, y_tr) -> tuple[np.ndarray, str]:
    if model is None:
        freq = np.array([np.mean(np.asarray(y_tr) == c) for c in classes])
        prior = np.tile(freq, (X.shape[0], 1))
        return (prior, prior), "no defects identified: predicts the training class frequencies"
    model, table = model
    if method == "fg":
        exposure, iso = tau
        scores = model.predict_log_proba(X, sigma=S, exposure=exposure if model.uses_exposure_ else None,
                                         iso=iso if model.uses_iso_ else None)
    else:
        scores = log_scores(model.predict_proba(X))
    # the run's own calibration, fitted on its training images only
    calibrated = posterior_from_lr(calibrated_lr_from_table(table, scores), table["priors"])
    raw = np.exp(scores - logsumexp(scores, axis=1, keepdims=True))
    out = []
    for proba in (raw, calibrated):
        full = np.zeros((X.shape[0], len(classes)))
        for j, c in enumerate(model.classes_):
            full[:, classes.index(c)] = proba[:, j]
        out.append(full)
    return tuple(out), ""


def _record(metrics, predictions, method, train, test_name, run, paths, labels, proba, classes, note,
            calibrated=None) -> None:
    """One cell: accuracy of the method's own decisions (``proba``, its own probabilities) and, per image,
    the probabilities calibrated on the training device's training images (``p_``; the method's own where
    the run has no calibration)."""
    pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    shown = proba if calibrated is None else calibrated
    acc = float(np.mean(pred == np.asarray(labels)))
    chance = max(float(np.mean(np.asarray(labels) == c)) for c in classes)
    metrics.append({"method": method, "train_device": train, "test_device": test_name, "run": run, "accuracy": acc,
                    "n_test": len(labels), "chance": chance, "note": note})
    for p, y, yhat, pr in zip(paths, labels, pred, shown):
        row = {"method": method, "train_device": train, "run": run, "test_device": test_name, "image": p,
               "true": int(y), "predicted": int(yhat)}
        row.update({f"p_{c}": float(v) for c, v in zip(classes, pr)})
        predictions.append(row)


# ---------------------------------------------------------------- SRNet

def srnet_cells(train_dev: Device, devices: list[Device], exp_dir: Path, classes: list, cfg: ExperimentConfig,
                 crop_cache: dict, metrics: list, predictions: list, method: str = "srnet") -> None:
    """The crop networks of each run an SRNet-family ``method`` was trained on, on every device's test
    split of that run."""
    runs = [r for r in sorted(train_dev.parts) if method in train_dev.parts[r].methods]
    if not runs:
        return
    # torch is imported by these, and only when a cell needs SRNet
    from pipeline.srnet.fusion import fuse_probabilities, stack_crops
    from pipeline.srnet.runtime import resolve_device, torch_runtime
    from pipeline.srnet.train import load_crop_model, predict_crop_proba

    logger.info("%s: %s trained on %d run(s), tested on %d devices", train_dev.name, method, len(runs), len(devices))
    for r in runs:
        part = train_dev.parts[r]
        recorded = part.srnet_config if method == "srnet" else (part.learned_configs or {}).get(method)
        if recorded is None:
            raise ExperimentIncompleteError(f"{exp_dir}/parts/{train_dev.name}/run_{r:02d}.json says {method} ran but "
                                            "records no configuration for it; rerun the experiment into a new folder")
        config = SRNetConfig.from_dict(recorded)
        workdir = RunFolder(exp_dir).learned_dir(method, train_dev.name, r)
        models = {}
        for crop in config.crops:
            path = workdir / f"srnet_{crop}.pt"
            if not path.is_file():
                raise ExperimentIncompleteError(
                    f"{path} is missing: the {method} checkpoint of crop {crop} of {train_dev.name} run {r}. Delete "
                    f"{exp_dir}/parts/{train_dev.name}/run_{r:02d}.json and rerun (it retrains that run only)")
            models[crop] = load_crop_model(path, config.device)
        device = resolve_device(config.device)
        for test_dev, test, y_te in _test_cells(devices, r):
            key = (test_dev.name, r, config.patch, config.channels, config.crops, config.input)
            if key not in crop_cache:
                crop_cache[key] = stack_crops((read_image(p).pixels for p in test), config,
                                              describe=lambda i, t=test: str(t[i]), progress=cfg.progress)
            crops = crop_cache[key]
            with torch_runtime(config.num_threads, device, config.deterministic):
                crop_proba = {name: predict_crop_proba(model, crops[name], config.eval_batch_size)
                              for name, model in models.items()}
            proba = fuse_probabilities(crop_proba, config.fusion)
            if proba.shape[1] != len(classes):
                raise ExperimentIncompleteError(f"{workdir}: the networks have {proba.shape[1]} outputs but the "
                                                f"manifest has {len(classes)} classes; rerun the experiment")
            _record_learned(metrics, predictions, method, part, train_dev, test_dev, r, test, y_te, proba, classes)


def _record_learned(metrics, predictions, method, part, train_dev, test_dev, r, test, y_te, proba, classes) -> None:
    """Record one learned-method cell, with the run's calibration (fitted on its training images)."""
    table = part.calibration.get(method)
    calibrated = (posterior_from_lr(calibrated_lr_from_table(table, log_scores(proba)), table["priors"])
                  if table is not None else None)
    note = "" if test_dev is train_dev else SRNET_TRANSFER_NOTE
    _record(metrics, predictions, method, train_dev.name, test_dev.name, r, test, y_te, proba, classes, note,
            calibrated)


def defect_cnn_cells(train_dev: Device, devices: list[Device], exp_dir: Path, classes: list,
                      cfg: ExperimentConfig, metrics: list, predictions: list) -> None:
    """defect-cnn of each run it was trained on, on every device's test split of that run, with its
    patches at the training device's defects (where a defect of another sensor is not)."""
    runs = [r for r in sorted(train_dev.parts) if "defect-cnn" in train_dev.parts[r].methods]
    if not runs:
        return
    from pipeline.srnet.defect_cnn import predict_defect_cnn  # torch
    from pipeline.srnet.defect_presets import DefectCNNConfig

    logger.info("%s: defect-cnn trained on %d run(s), tested on %d devices", train_dev.name, len(runs), len(devices))
    for r in runs:
        part = train_dev.parts[r]
        recorded = dict((part.learned_configs or {}).get("defect-cnn") or {})
        if not recorded:
            raise ExperimentIncompleteError(f"{exp_dir}/parts/{train_dev.name}/run_{r:02d}.json says defect-cnn ran "
                                            "but records no configuration for it; rerun the experiment into a new folder")
        recorded.pop("n_defects", None)
        recorded.pop("note", None)
        config = DefectCNNConfig.from_dict(recorded)
        defects = part.defects
        rows = list(defects.rows) if defects is not None else []
        cols = list(defects.cols) if defects is not None else []
        llr = list(defects.llr) if defects is not None else None
        workdir = RunFolder(exp_dir).learned_dir("defect-cnn", train_dev.name, r)
        for test_dev, test, y_te in _test_cells(devices, r):
            proba = predict_defect_cnn(workdir, test, rows, cols, config, classes=classes, llr=llr,
                                       train_labels=list(train_dev.splits[r].train_labels))
            _record_learned(metrics, predictions, "defect-cnn", part, train_dev, test_dev, r, test, y_te, proba,
                            classes)
