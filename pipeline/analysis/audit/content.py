"""Check 1, content-only baselines: is the age label predictable from what the scene looks like?

Two scikit-learn classifiers that see scene content and global tone/colour but no sensor
trace are trained per device on the experiment's own splits (the splits ``python -m
pipeline.ml_age`` uses with the same seed, runs and test size):

* **colour statistics**: per-channel and luma percentiles, chromaticity, saturation and a
  luma histogram of a ~96-pixel-high block-averaged copy, standardised, logistic regression;
* **thumbnails**: the image block-averaged to 12 x 16 cells (every hot pixel diluted among
  thousands of pixels), standardised, PCA to at most 20 components, logistic regression.

Each is scored per test image over the runs that test it (the mean of its correct
predictions), then over the distinct test images of all devices. Chance is what always
guessing the majority class of each run's test set scores, averaged the same way (0.5 for
two balanced classes). A content-only accuracy above chance means the labels can be
told from content, and any learned age model's accuracy is suspect by that much.

Interval: Clopper–Pearson with the *distinct* test images as trials (an image tested in
several runs counts once, with its mean correctness): conservative where a run-by-run count
would treat overlapping test sets as independent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.analysis.audit.common import (
    AuditContext,
    CheckResult,
    content_model,
    majority_share,
    prediction_rows,
    single_threaded_blas,
)
from pipeline.analysis.audit.stats import proportion_figure

__all__ = ["N_FIGURES", "ContentResult", "content_check"]

N_FIGURES = 2
"""Judged figures of this check (the Bonferroni family counts them)."""
MODELS = {"colour": "colour/luminance statistics", "thumbnail": "12x16 thumbnails"}


@dataclass
class ContentResult(CheckResult):
    """Result of :func:`content_check`; ``per_device`` maps model -> device -> mean accuracy over runs."""

    per_device: dict = field(default_factory=dict)


def content_check(ctx: AuditContext) -> ContentResult:
    """Train the content-only baselines on the experiment's splits and judge their accuracy.

    Parameters
    ----------
    ctx : AuditContext
        Needs ``bank`` and ``content_splits`` (device -> [(train_idx, test_idx)]).

    Returns
    -------
    ContentResult
        Verdict-bearing figures ``colour_accuracy`` and ``thumbnail_accuracy``; per-device
        context figures ``<model>_accuracy_<device>``.
    """
    started = time.perf_counter()
    result = ContentResult("content", "Content-only baselines",
                           "Can the age label be predicted from scene content and global colour alone?")
    bank, splits = ctx.bank, ctx.content_splits or {}
    if not splits:
        result.notes.append("No device has two classes with at least two images each: nothing to split, "
                            "check skipped.")
        result.seconds = time.perf_counter() - started
        return result
    labels = bank.labels
    n = len(bank.samples)
    features = {"colour": bank.colour, "thumbnail": bank.thumbs}
    classes = sorted(set(labels.tolist()))
    main, context = [], []
    for kind, X in features.items():
        correct_sum, appearances, chance_sum = np.zeros(n), np.zeros(n), np.zeros(n)
        result.per_device[kind] = {}
        for device, pairs in splits.items():
            run_acc = []
            for run, (tr, te) in enumerate(pairs):
                if te.size == 0 or len(np.unique(labels[tr])) < 2:
                    continue
                with single_threaded_blas():
                    model = content_model(kind, tr.size, ctx.seed).fit(X[tr], labels[tr])
                proba = np.zeros((te.size, len(classes)))
                proba[:, [classes.index(c) for c in model.classes_]] = model.predict_proba(X[te])
                predicted = np.asarray(classes)[proba.argmax(axis=1)]
                ok = predicted == labels[te]
                correct_sum[te] += ok
                appearances[te] += 1
                chance_sum[te] += majority_share(labels[te])
                run_acc.append(float(ok.mean()))
                for row in prediction_rows("content", kind, bank, te, labels[te], proba, classes):
                    row["run"] = run
                    result.predictions.append(row)
            result.per_device[kind][device] = float(np.mean(run_acc)) if run_acc else None
        tested = appearances > 0
        per_image, per_image_chance = np.zeros(n), np.zeros(n)
        per_image[tested] = correct_sum[tested] / appearances[tested]
        per_image_chance[tested] = chance_sum[tested] / appearances[tested]
        devices = bank.devices
        for device in splits:
            members = tested & (devices == device)
            if members.any():
                context.append(proportion_figure(
                    f"{kind}_accuracy_{device}", f"{MODELS[kind]}: accuracy on {device}",
                    per_image[members].sum(), int(members.sum()), float(per_image_chance[members].mean()),
                    ctx.levels, role="context"))
        n_tested = int(tested.sum())
        main.append(proportion_figure(
            f"{kind}_accuracy", f"{MODELS[kind]}: accuracy over all devices", per_image[tested].sum(), n_tested,
            float(per_image_chance[tested].mean()) if n_tested else float("nan"), ctx.levels,
            note=f"{len(splits)} device(s), {len(next(iter(splits.values())))} run(s); each of the {n_tested} "
                 "distinct test images counts once with its mean correctness"))
    result.figures = main + context
    result.details = {"models": MODELS, "per_device_mean_accuracy": result.per_device,
                      "runs": len(next(iter(splits.values()))), "devices": list(splits)}
    result.settle()
    if result.verdict != "no bias found":
        result.notes.append("The labels are predictable from content: a learned model's accuracy may come from "
                            "scene content rather than sensor aging; compare it with these figures.")
    result.seconds = time.perf_counter() - started
    return result
