"""Check 2, camera-identity leakage: does a learned model read the device instead of the age?

The camera-bias paper's protocol with devices in the role of cameras, on the balanced CNN
split (every device and class equally represented in the test set):

* **Disjoint**: each age class is trained from its own group of devices; the groups are
  formed from whole camera *models* where the manifest (or EXIF) names enough of them, so
  that the groups differ in sensor and processing as the paper's cameras did (the default
  synthetic dataset: class 0 from the two SIM Alpha bodies, class 1 from SIM Beta and
  VI Gamma).
* **Partial**: both classes, but only the devices of the first group.
* **Balanced**: both classes from every device.

All three are trained on the same number of images per class (Balanced and Partial are
subsampled to the Disjoint set's class counts, spread evenly over their devices), so that a
difference between them comes from *which* devices teach each class, not from how many
images.

The check answers two questions, and keeps them apart:

1. **Verdict — is the label tied to the device in these data?** ``device_label_association``:
   accuracy of guessing an image's class as the majority class of its device in the other
   folds (5-fold, stratified by device and class), against the majority share ignoring the
   device. Above it, a model pooled over devices can score by recognising them.
2. **Susceptibility — would a model read the device if the data let it?** The Disjoint
   protocol *creates* a device-class correlation on purpose, so its figures measure the
   model and the devices, not a bias of the data: they make the check's separate
   ``susceptibility`` verdict (a stress test), judged by the same intervals:

   * ``disjoint_drop``: Balanced accuracy minus Disjoint accuracy on the same test images
     (Table II's drop); chance 0.
   * ``disjoint_following``: how often the Disjoint model predicts the class its training
     assigned to the test image's device group, averaged with equal weight over the groups
     (Fig. 3 in one number). Chance is ``1 / n_classes`` for any prediction that does not
     depend on the device, since every device's test images are class-balanced.
   * ``colour_following``: the same rate for a logistic regression on colour statistics (a
     cheap model that sees global tone and colour, i.e. camera processing).

   A susceptible model is a warning for any use where devices and ages go together (old
   photographs from an old camera): its accuracy there would come from the camera.

Context: Balanced, Partial and Disjoint accuracies, the Disjoint model's training accuracy,
the per-device prediction shares (the paper's Fig. 3), and, with ``CnnSettings.device_id``,
device identification (Table I): can the CNN tell the devices apart at all? Devices of different models differ in sensor
(colour filter layout, noise, black level) even when they process alike, and SRNet — a
network made for pixel-level noise — can learn those differences.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.analysis.audit.cnn import (
    balanced_model,
    cnn_builder,
    disjoint_groups,
    predict_proba,
    protocol_sets,
    seeded_rng,
)
from pipeline.analysis.audit.common import (
    AuditContext,
    CheckResult,
    content_model,
    majority_share,
    prediction_rows,
    single_threaded_blas,
)
from pipeline.analysis.audit.stats import (
    mean_of_proportions_figure,
    paired_difference_figure,
    proportion_figure,
)

__all__ = ["N_SUSCEPTIBILITY", "N_SUSCEPTIBILITY_CNN", "N_VERDICT", "CameraResult", "camera_check"]

N_VERDICT = 1
"""Verdict figures (the data-level association)."""
N_SUSCEPTIBILITY = 1
"""Susceptibility figures without the CNN (colour statistics, Disjoint)."""
N_SUSCEPTIBILITY_CNN = 2
"""Further susceptibility figures with the CNN (drop and following rate)."""
WEAK_FIT = 0.8
"""Below this training accuracy the Disjoint network gets a "learned too little" note."""


@dataclass
class CameraResult(CheckResult):
    """Result of :func:`camera_check`.

    ``groups`` maps each class to the devices that teach it in Disjoint; ``shares`` maps
    model -> device -> class -> share of that device's test images predicted as the class.
    """

    groups: dict = field(default_factory=dict)
    shares: dict = field(default_factory=dict)


def _shares(bank, index, predicted, classes) -> dict:
    devices = bank.devices[index]
    out = {}
    for d in dict.fromkeys(devices.tolist()):
        mine = predicted[devices == d]
        out[d] = {str(c): float(np.mean(mine == c)) for c in classes}
    return out


def _following(key, label, bank, index, predicted, groups, levels, note="", role="susceptibility"):
    devices = bank.devices[index]
    ks, ns, names = [], [], []
    for c, members in groups.items():
        mask = np.isin(devices, members)
        ks.append(int(np.sum(predicted[mask] == c)))
        ns.append(int(mask.sum()))
        names.append(f"class {c}: {', '.join(members)}")
    return mean_of_proportions_figure(key, label, ks, ns, 1.0 / len(groups), levels, note=note, groups=names,
                                      role=role)


def _device_label_association(ctx: AuditContext, folds: int = 5):
    bank = ctx.bank
    labels, devices = bank.labels, bank.devices
    rng = seeded_rng(ctx.seed, "association")
    fold = np.zeros(labels.size, dtype=np.int64)
    for d in dict.fromkeys(devices.tolist()):
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero((devices == d) & (labels == c)))
            fold[members] = np.arange(members.size) % folds
    predicted = np.empty_like(labels)
    for f in range(folds):
        held = fold == f
        train = ~held
        global_major = np.bincount(labels[train]).argmax() if train.any() else 0
        for d in np.unique(devices[held]):
            mine = train & (devices == d)
            guess = np.bincount(labels[mine]).argmax() if mine.any() else global_major
            predicted[held & (devices == d)] = guess
    k = int(np.sum(predicted == labels))
    return proportion_figure("device_label_association", "label guessed from the device alone (5-fold)", k,
                             labels.size, majority_share(labels), ctx.levels,
                             note="chance: the majority share ignoring the device; above it, the classes are "
                                  "unevenly spread over the devices and a model pooled over devices can score "
                                  "by recognising them")


def _device_identification(ctx: AuditContext, result, index: np.ndarray, x_test: np.ndarray):
    """Table I: the Balanced training images labelled by device; accuracy on the balanced test set."""
    bank, split, test = ctx.bank, ctx.cnn_split, ctx.cnn_split.test
    model = ctx.store.get("device_id", cnn_builder(ctx, "device_id", index, bank.devices[index].astype(str),
                                                     np.asarray(split.devices, dtype=str)))
    proba = predict_proba(model, x_test)
    guess = np.asarray(model.classes)[proba.argmax(axis=1)]
    truth = bank.devices[test].astype(str)
    result.predictions += prediction_rows("camera", "cnn-device_id", bank, test, truth, proba, model.classes)
    result.details["device_id_confusion"] = {
        t: {g: int(np.sum((truth == t) & (guess == g))) for g in split.devices} for t in split.devices}
    result.details["models"]["device_id"] = model.summary()
    return proportion_figure("device_id_accuracy", "CNN: device identification accuracy (Table I)",
                             int(np.sum(guess == truth)), test.size, majority_share(truth), ctx.levels,
                             role="context", note="above chance: the devices can be told apart, so a camera "
                                                  "shortcut exists wherever devices and classes go together")


def _protocol_summary(figures, prefix: str, key_prefix: str) -> dict:
    """Drop and following rate (value and screening interval) of one architecture, for the side-by-side table."""
    out = {}
    for f in figures:
        for what in ("disjoint_drop", "disjoint_following", "balanced_accuracy", "disjoint_accuracy"):
            if f.key in (f"{key_prefix}{what}", f"{prefix}_{what}"):
                out[what] = {"value": f.value, "ci": list(f.ci)}
    return out


def _resnet_protocols(ctx: AuditContext, result, sets, groups, x_test, y_test, srnet_balanced) -> list:
    """Balanced and Disjoint trained with ResNet-34 (randomly initialised): context figures beside SRNet's."""
    bank, levels = ctx.bank, ctx.levels
    classes = list(ctx.cnn_split.classes)
    test = ctx.cnn_split.test
    figures, predicted = [], {}
    for name in ("balanced", "disjoint"):
        idx = sets[name]
        model = ctx.store.get(f"{name}-resnet34", cnn_builder(ctx, f"{name}-resnet34", idx, bank.labels[idx], classes,
                                                              architecture="resnet34"))
        proba = predict_proba(model, x_test)
        predicted[name] = np.asarray(model.classes)[proba.argmax(axis=1)]
        result.predictions += prediction_rows("camera", f"resnet34-{name}", bank, test, y_test, proba, model.classes)
        result.shares[f"resnet34-{name}"] = _shares(bank, test, predicted[name], classes)
        result.details["models"][f"{name}-resnet34"] = model.summary()
        figures.append(proportion_figure(f"resnet34_{name}_accuracy", f"ResNet-34, {name.title()}: balanced-test "
                                         "accuracy", int(np.sum(predicted[name] == y_test)), test.size,
                                         majority_share(y_test), levels, role="context",
                                         note=f"training accuracy {model.train_accuracy:.3f}; randomly initialised "
                                              "(pretrained weights cannot be fetched here)"))
    figures.append(paired_difference_figure(
        "resnet34_disjoint_drop", "ResNet-34: Balanced minus Disjoint balanced-test accuracy (Table II)",
        predicted["balanced"] == y_test, predicted["disjoint"] == y_test, levels, role="context"))
    figures.append(_following("resnet34_disjoint_following", "ResNet-34, Disjoint: predictions following the device "
                              "group (Fig. 3)", bank, test, predicted["disjoint"], groups, levels, role="context"))
    result.details["architectures"]["resnet34"] = _protocol_summary(figures, "resnet34", "resnet34_")
    result.notes.append("ResNet-34 (randomly initialised, 3x3 stem for small crops) was trained on the same Balanced "
                        "and Disjoint sets as a second architecture family (the paper finds the propensity to read "
                        "the camera depends on the architecture); its figures are context, beside SRNet's "
                        "disjoint_drop and disjoint_following. Compare them in details.architectures.")
    return figures


def camera_check(ctx: AuditContext) -> CameraResult:
    """Run the camera-identity checks (the CNN parts only when ``ctx.cnn`` is set).

    Returns
    -------
    CameraResult
    """
    started = time.perf_counter()
    result = CameraResult("camera", "Camera-identity leakage",
                          "Does a model read which device took the image instead of its age?")
    bank, split, levels = ctx.bank, ctx.cnn_split, ctx.levels
    main, context = [_device_label_association(ctx)], []
    groups, by_model = disjoint_groups(split, bank) if split is not None else ({}, False)
    result.groups = {str(c): list(v) for c, v in groups.items()}
    if not groups:
        result.notes.append("Disjoint protocol skipped: it needs at least as many devices with both classes "
                            "as there are classes.")
        result.figures = main
        result.settle()
        result.seconds = time.perf_counter() - started
        return result
    if not by_model:
        result.notes.append("Fewer camera models than classes: the Disjoint groups share a camera model, so "
                            "only body-level differences (PRNU, defects) separate them.")
    sets = protocol_sets(split, groups, ctx.seed, ctx.cnn.max_train if ctx.cnn else None)
    test = split.test
    y_test = bank.labels[test]
    classes = list(split.classes)
    result.details["training_sets"] = {k: int(v.size) for k, v in sets.items() if isinstance(v, np.ndarray)}
    result.details["class_counts"] = {str(c): int(n) for c, n in sets["counts"].items()}
    result.details["partial_devices"] = sets["partial_devices"]
    result.details["test_images"] = int(test.size)
    result.details["test_per_cell"] = int(split.per_cell)

    # cheap model: colour statistics, logistic regression
    colour_pred = {}
    for name in ("balanced", "disjoint"):
        idx = sets[name]
        with single_threaded_blas():
            model = content_model("colour", idx.size, ctx.seed).fit(bank.colour[idx], bank.labels[idx])
        proba = np.zeros((test.size, len(classes)))
        proba[:, [classes.index(c) for c in model.classes_]] = model.predict_proba(bank.colour[test])
        colour_pred[name] = np.asarray(classes)[proba.argmax(axis=1)]
        result.predictions += prediction_rows("camera", f"colour-{name}", bank, test, y_test, proba, classes)
        context.append(proportion_figure(f"colour_{name}_accuracy", f"colour statistics, {name.title()}: accuracy",
                                         int(np.sum(colour_pred[name] == y_test)), test.size,
                                         majority_share(y_test), levels, role="context"))
    main.append(_following("colour_following", "colour statistics, Disjoint: predictions following the device "
                           "group", bank, test, colour_pred["disjoint"], groups, levels))
    result.shares["colour-disjoint"] = _shares(bank, test, colour_pred["disjoint"], classes)

    if ctx.cnn is not None:
        crop = ctx.cnn.main_crop
        x_test = bank.crop_input(test, crop)
        predicted, trained = {}, {}
        for name in ("balanced", "partial", "disjoint") if ctx.cnn.camera_extras else ("balanced", "disjoint"):
            if name == "balanced":
                model = balanced_model(ctx)
            else:
                idx = sets[name]
                model = ctx.store.get(name, cnn_builder(ctx, name, idx, bank.labels[idx], classes))
            proba = predict_proba(model, x_test)
            predicted[name] = np.asarray(model.classes)[proba.argmax(axis=1)]
            trained[name] = model
            result.predictions += prediction_rows("camera", f"cnn-{name}", bank, test, y_test, proba, model.classes)
            result.shares[f"cnn-{name}"] = _shares(bank, test, predicted[name], classes)
            context.append(proportion_figure(f"cnn_{name}_accuracy", f"CNN, {name.title()}: balanced-test accuracy",
                                             int(np.sum(predicted[name] == y_test)), test.size,
                                             majority_share(y_test), levels, role="context",
                                             note=f"training accuracy {model.train_accuracy:.3f} on "
                                                  f"{model.train_index.size} images"))
        d = trained["disjoint"]
        if d.train_accuracy < WEAK_FIT:
            result.notes.append(f"The Disjoint network fits only {100 * d.train_accuracy:.0f} % of its own training "
                                "images: it learned too little for the stress test to show whether it would read the "
                                "camera. Train longer (--epochs) or on larger crops (--patch) for a conclusive test.")
        context.append(proportion_figure("cnn_disjoint_train_accuracy", "CNN, Disjoint: training accuracy",
                                         round(float(d.train_accuracy * d.train_index.size)), d.train_index.size,
                                         majority_share(bank.labels[d.train_index]), levels, role="context"))
        main.insert(1, paired_difference_figure(
            "disjoint_drop", "CNN: Balanced minus Disjoint balanced-test accuracy (Table II)",
            predicted["balanced"] == y_test, predicted["disjoint"] == y_test, levels, role="susceptibility"))
        main.insert(2, _following("disjoint_following", "CNN, Disjoint: predictions following the device group "
                                  "(Fig. 3)", bank, test, predicted["disjoint"], groups, levels))
        context.append(_following("balanced_following", "CNN, Balanced: predictions following the Disjoint "
                                  "groups", bank, test, predicted["balanced"], groups, levels, role="context"))
        result.details["models"] = {k: v.summary() for k, v in trained.items()}
        result.details["architectures"] = {ctx.cnn.method: _protocol_summary(context + main, "cnn", "")}
        if ctx.cnn.resnet:
            context += _resnet_protocols(ctx, result, sets, groups, x_test, y_test, predicted["balanced"])
        if ctx.cnn.device_id:
            context.append(_device_identification(ctx, result, sets["balanced"], x_test))
        skipped = [what for what, on in (("the Partial protocol (--no-camera-extras)", ctx.cnn.camera_extras),
                                         ("device identification (add --device-id)", ctx.cnn.device_id)) if not on]
        if skipped:
            result.notes.append(f"Not run: {' and '.join(skipped)}; context figures only.")
    else:
        result.notes.append("CNN parts skipped (--no-cnn): only the data-level association and the colour "
                            "statistics model were run.")
    result.figures = main + context
    result.settle()
    if result.verdict not in (None, "no bias found"):
        result.notes.append("The classes are unevenly spread over the devices: a model pooled over devices can "
                            "score by recognising the device. Compare per-device accuracies, or balance the data.")
    if result.susceptibility not in (None, "no bias found"):
        result.notes.append("Stress test: trained where each age class comes from its own devices, the model's "
                            "predictions follow the device rather than the age — it reads camera identity when the "
                            "data let it (the paper's Table II / Fig. 3 effect). Harmless while every device has "
                            "every class in balance; a warning wherever devices and ages go together.")
    result.seconds = time.perf_counter() - started
    return result
