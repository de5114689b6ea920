"""The age experiment's work on one split: fit each method on the training images, calibrate, predict.

The defect-based methods (:func:`run_defect_methods`) are fitted on the run's training images
at the run's identified defects and calibrated by cross-fitting inside those images; SRNet
(:func:`run_srnet`) trains on the training images less a stratified calibration part and is
calibrated on that part. Both return, per method, the calibrated probabilities, the one-vs-rest
log10 LRs and the method's own (raw) probabilities of the test images, which
:func:`prediction_rows` and :func:`metric_row` turn into rows of predictions.csv and metrics.csv.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import logsumexp
from sklearn.model_selection import train_test_split

from baselines.defects import DefectTable
from baselines.fridrich_goljan import FridrichGoljanClassifier
from baselines.residual_classifiers import ResidualNaiveBayes, ResidualSVM
from pipeline.analysis.calibration import EvidenceCalibrator, calibration_table, cross_fitted_scores, log_scores
from pipeline.analysis.metrics import evidence_metrics
from pipeline.analysis.report import write_csv
from pipeline.analysis.runfolder import PartDefects, RunFolder
from pipeline.data.splits import Split
from pipeline.features.device import DeviceData, fg_side_arrays, shown_path
from pipeline.srnet.presets import variant_config

__all__ = ["EVIDENCE_COLUMNS", "MethodOutputs", "DefectResults", "SRNetResults", "run_defect_methods", "run_srnet", "run_defect_cnn", "learned_config", "prediction_rows", "metric_row",
           "write_defect_csv", "DEFECT_CSV_COLUMNS"]

#: calibration columns of metrics.csv and the calibration table, in order
EVIDENCE_COLUMNS = ("cllr", "cllr_min", "ece", "brier", "confident_wrong")

#: what a method says about the test images: ``proba`` (calibrated probabilities), ``log10_lr``
#: (one-vs-rest) and ``raw`` (the method's own probabilities), each (n_test, n_classes)
MethodOutputs = dict


@dataclass
class DefectResults:
    """The defect-based methods of one split run.

    Attributes
    ----------
    outputs : dict
        Method -> :data:`MethodOutputs` of the test images.
    notes : dict
        Method -> a note for metrics.csv (why it predicts the priors, the SVM's inner-CV choice).
    test_paths, test_labels : list
        The readable test images and their classes, in the order of the outputs.
    defects : PartDefects
        The run's identified defects.
    n_candidates : int
        Candidates the onset test examined.
    fg_params : dict, optional
        The fitted Fridrich–Goljan model (None when fg did not run or had nothing to fit).
    calibration : dict
        Method -> calibration table (methods that predicted the priors have none).
    """

    outputs: dict
    notes: dict
    test_paths: list
    test_labels: list
    defects: PartDefects
    n_candidates: int
    fg_params: dict | None = None
    calibration: dict = field(default_factory=dict)


@dataclass
class SRNetResults:
    """SRNet on one split run: ``output`` (:data:`MethodOutputs`), the test images and classes, the
    SRNet configuration it trained with, and its calibration ``table`` (None without calibration images)."""

    output: dict
    test_paths: list
    test_labels: list
    config: dict
    table: dict | None


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


def _align(values, fitted_classes, classes, fill=0.0):
    """Columns of ``values`` (one per fitted class) placed at the experiment's classes."""
    full = np.full((values.shape[0], len(classes)), fill, dtype=float)
    for j, c in enumerate(fitted_classes):
        full[:, classes.index(c)] = values[:, j]
    return full


def run_defect_methods(feats: dict, split: Split, cfg, classes: list, methods) -> DefectResults:
    """Fit each defect-based method on the run's training images and calibrate its scores by
    cross-fitting inside them.

    Parameters
    ----------
    feats : dict
        The run's features (one entry of :func:`pipeline.features.device.defect_features`).
    split : Split
    cfg : ExperimentConfig
    classes : list
        Every class of the experiment (the columns of the outputs).
    methods : sequence of str
        Defect-based methods to run.

    Returns
    -------
    DefectResults
    """
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
    defects = PartDefects.from_json({**table.as_dict(), "onset_path": list(feats["onset_paths"])})
    return DefectResults(outputs, notes, test_paths, [label[p] for p in test_paths], defects, feats["n_candidates"],
                         fg_params, calibration)


def _learned_parts(dev: DeviceData, split: Split, cfg):
    """A learned method's training images less a stratified calibration part, that part, and the test images."""
    usable_train = [(p, y) for p, y in zip(split.train_paths, split.train_labels) if p not in dev.failures]
    usable_test = [(p, y) for p, y in zip(split.test_paths, split.test_labels) if p not in dev.failures]
    seed = split.seed % (2 ** 31)
    labels = [y for _, y in usable_train]
    if cfg.srnet_calibration_fraction > 0:
        fit_part, cal_part = train_test_split(usable_train, test_size=cfg.srnet_calibration_fraction,
                                              stratify=labels, random_state=seed)
    else:
        fit_part, cal_part = usable_train, []
    return fit_part, cal_part, usable_test, labels, seed


def _calibrated_learned(result: dict, fit_part, cal_part, usable_test, labels, seed, cfg, classes,
                        config: dict) -> SRNetResults:
    """Calibrate a learned method's fused probabilities on its calibration part (as SRNet's)."""
    fitted = list(result["classes"])
    scores = log_scores(np.asarray(result["proba"]))
    cal_scores, test_scores = scores[:len(cal_part)], scores[len(cal_part):]
    raw = _align(np.exp(test_scores - logsumexp(test_scores, axis=1, keepdims=True)), fitted, classes)
    test_paths, test_labels = [p for p, _ in usable_test], [y for _, y in usable_test]
    if not cal_part:  # no calibration images: no evidence claimed (LR 1, the training priors)
        prior = _prior_prediction(labels, len(usable_test), classes)
        output = {"proba": prior, "raw": raw, "log10_lr": np.zeros_like(prior)}
        return SRNetResults(output, test_paths, test_labels, config, None)
    calibrator = EvidenceCalibrator(method=cfg.calibration_method, random_state=seed).fit(
        cal_scores, np.array([y for _, y in cal_part]), classes=fitted)
    output = {"proba": _align(calibrator.predict_proba(test_scores), fitted, classes), "raw": raw,
              "log10_lr": _align(calibrator.log10_lr(test_scores), fitted, classes)}
    return SRNetResults(output, test_paths, test_labels, config, calibration_table(calibrator, cal_scores))


#: SRNet settings that also apply to defect-cnn when given as ``srnet_overrides``
_SHARED_LEARNED_FIELDS = ("device", "num_threads", "deterministic", "epochs")


def learned_config(method: str, cfg):
    """The resolved configuration of a learned method under ``cfg`` (before its run's seed is set):
    an :class:`~pipeline.srnet.presets.SRNetConfig` for the SRNet family, a
    :class:`~pipeline.srnet.defect_presets.DefectCNNConfig` for ``defect-cnn``."""
    if method == "defect-cnn":
        from pipeline.srnet.defect_presets import defect_cnn_preset

        shared = {k: v for k, v in cfg.srnet_overrides.items() if k in _SHARED_LEARNED_FIELDS}
        return defect_cnn_preset(cfg.srnet_preset, **shared)
    return variant_config(method, cfg.srnet_preset, **cfg.srnet_overrides)


def run_defect_cnn(dev: DeviceData, split: Split, cfg, classes: list, folder: RunFolder,
                   defects: PartDefects | None) -> SRNetResults:
    """Train defect-cnn on patches at the run's identified defects (from its training images), on the
    same images and calibration part as SRNet, and calibrate its fused scores the same way.

    With no defects it falls back to the training priors and says so in its configuration's ``note``.
    """
    from pipeline.srnet.defect_cnn import fit_predict_defect_cnn  # torch

    fit_part, cal_part, usable_test, labels, seed = _learned_parts(dev, split, cfg)
    config = learned_config("defect-cnn", cfg).replace(seed=seed)
    rows = list(defects.rows) if defects is not None else []
    cols = list(defects.cols) if defects is not None else []
    llr = list(defects.llr) if defects is not None else None
    result = fit_predict_defect_cnn([p for p, _ in fit_part], [y for _, y in fit_part],
                                    [p for p, _ in cal_part] + [p for p, _ in usable_test], rows, cols, config,
                                    folder.learned_dir("defect-cnn", dev.device, split.run), classes=classes,
                                    progress=cfg.progress, llr=llr)
    recorded = {**result["config"], "n_defects": int(result["n_defects"]), "note": result.get("note", "")}
    return _calibrated_learned(result, fit_part, cal_part, usable_test, labels, seed, cfg, classes, recorded)


def run_srnet(dev: DeviceData, split: Split, cfg, classes: list, folder: RunFolder,
              method: str = "srnet") -> SRNetResults:
    """Train an SRNet-family method (``srnet``, ``srnet-res``, ``srnet-cs``) on the split's training
    images less a stratified calibration part, and calibrate its fused scores on that part (the
    five crop networks are too costly to cross-fit).

    The checkpoints go to ``folder.learned_dir(method, device, run)``.
    """
    from pipeline.srnet.fusion import fit_predict  # torch

    fit_part, cal_part, usable_test, labels, seed = _learned_parts(dev, split, cfg)
    srnet_cfg = variant_config(method, cfg.srnet_preset, **{**cfg.srnet_overrides, "seed": seed})
    result = fit_predict([p for p, _ in fit_part], [y for _, y in fit_part],
                         [p for p, _ in cal_part] + [p for p, _ in usable_test],
                         srnet_cfg, folder.learned_dir(method, dev.device, split.run), classes=classes,
                         progress=cfg.progress)
    return _calibrated_learned(result, fit_part, cal_part, usable_test, labels, seed, cfg, classes, result["config"])


def prediction_rows(device, run, method, paths, labels, output, classes, root: Path | None):
    """Rows of predictions.csv: the method's own decision ``predicted`` (the argmax of its own
    ``raw_p_<class>``; accuracy is of these decisions, as in the papers), and the evidence: the
    calibrated probabilities ``p_<class>`` (training priors) and one-vs-rest ``log10_lr_<class>``."""
    rows = []
    for i, (p, y) in enumerate(zip(paths, labels)):
        pr = output["proba"][i]
        row = {"image": shown_path(p, root), "device": device, "run": run, "method": method, "true": int(y),
               "predicted": int(classes[int(np.argmax(output["raw"][i]))])}
        row.update({f"p_{c}": float(v) for c, v in zip(classes, pr)})
        row.update({f"log10_lr_{c}": float(v) for c, v in zip(classes, output["log10_lr"][i])})
        row.update({f"raw_p_{c}": float(v) for c, v in zip(classes, output["raw"][i])})
        rows.append(row)
    return rows


def metric_row(device, split, method, output, labels, classes, n_defects, note) -> dict:
    """The row of metrics.csv of one method on one split run: accuracy of its own decisions and the
    calibration figures (:data:`EVIDENCE_COLUMNS`) of its calibrated evidence."""
    row = {"device": device, "run": split.run, "method": method, "n_test": len(labels),
           "n_train": len(split.train_paths), "n_defects": n_defects, "note": note}
    ev = evidence_metrics(output["proba"], output["log10_lr"], np.asarray(labels), classes)
    decided = np.asarray(classes)[np.argmax(output["raw"], axis=1)] if len(labels) else np.zeros(0)
    row["accuracy"] = float(np.mean(decided == np.asarray(labels))) if len(labels) else float("nan")
    row.update({k: ev[k] for k in EVIDENCE_COLUMNS})
    return row


#: columns of ``defects/<device>/run_XX.csv``
DEFECT_CSV_COLUMNS = ["row", "col", "channel", "onset_index", "onset_path", "onset_date", "onset_timeslot",
                      "onset_class", "dark_current", "offset", "llr", "spread"]


def write_defect_csv(folder: RunFolder, device: str, run: int, defects: PartDefects, root: Path | None,
                     images: dict | None = None) -> None:
    """Write ``defects/<device>/run_XX.csv``: the run's identified defects and when each appeared.

    Each defect's onset is the first training image (in time order) that shows it: its index
    among the training images (``onset_index``), its path (``onset_path``, relative to ``root``,
    the manifest's folder, when inside it), and, from its manifest row, its capture time
    (``onset_date``, ISO 8601; empty when the manifest gives none), its time slot
    (``onset_timeslot``, for slot-based manifests) and its age class (``onset_class``).

    Parameters
    ----------
    folder : RunFolder
    device : str
    run : int
    defects : PartDefects
        The run's identified defects (``onset_path``: the onset images' paths as the manifest rows hold them).
    root : Path or None
        The manifest's folder.
    images : dict, optional
        Image path (as in ``defects.onset_path``) -> its :class:`~pipeline.data.manifest.ManifestRow`
        (``DeviceData.rows``); without it the date, slot and class are left empty.
    """
    images = images or {}
    out = []
    for i in range(len(defects)):
        path = defects.onset_path[i] if defects.onset_path else ""
        found = images.get(str(path))
        out.append({
            "row": defects.rows[i], "col": defects.cols[i], "channel": defects.channels[i],
            "onset_index": defects.onset_index[i], "onset_path": shown_path(str(path), root) if path else "",
            "onset_date": found.captured_at.isoformat() if found is not None and found.captured_at else "",
            "onset_timeslot": "" if found is None or found.timeslot is None else found.timeslot,
            "onset_class": "" if found is None or found.label is None else found.label,
            **{c: getattr(defects, c)[i] for c in ("dark_current", "offset", "llr", "spread")}})
    write_csv(folder.defects_path(device, run), out, DEFECT_CSV_COLUMNS)
