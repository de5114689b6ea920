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

With the CNN checks on, a third verdict-bearing figure asks the same of the **audited learned
model** (SRNet, or the variant of ``--methods``): its Balanced model (the camera check's; trained
once) is scored on the balanced test crops with every isolated-pixel trace scrubbed -- each pixel
whose 3x3 median residual exceeds :data:`SCRUB_SIGMAS` robust standard deviations of its crop and
channel is replaced by its 3x3 median, which removes hot pixels (the age trace) and leaves scene
content, tone and colour nearly untouched. A model that still scores above chance without those
traces reads something else: scene content or processing. A model that reads only defects falls
to chance. The scrubbed share of pixels is reported with the figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from kernels import median_residual
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
"""Judged figures of this check without the CNN checks (the Bonferroni family counts them)."""
N_FIGURES_CNN = 1
"""Further judged figures with the CNN checks on: the audited learned model without isolated-pixel traces."""
SCRUB_SIGMAS = 4.0
"""Residuals beyond this many robust (MAD) standard deviations of their crop and channel are scrubbed."""
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
    if ctx.cnn is not None and ctx.cnn_split is not None:
        main.append(_learned_without_traces(ctx, result))
    result.figures = main + context
    result.details.update({"models": MODELS, "per_device_mean_accuracy": result.per_device,
                           "runs": len(next(iter(splits.values()))), "devices": list(splits)})
    result.settle()
    if result.verdict != "no bias found":
        result.notes.append("The labels are predictable from content: a learned model's accuracy may come from "
                            "scene content rather than sensor aging; compare it with these figures.")
    result.seconds = time.perf_counter() - started
    return result


def scrub_isolated_pixels(inputs: np.ndarray, sigmas: float = SCRUB_SIGMAS) -> tuple[np.ndarray, float]:
    """Replace every outlying pixel of crops (N, C, P, P) by its 3x3 median; return them and the scrubbed share.

    A pixel is outlying when its 3x3 median residual exceeds ``sigmas`` times the robust standard
    deviation (1.4826 x the median absolute residual) of its crop and channel.
    """
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    out = inputs.copy()
    scrubbed = 0
    for index, crop in enumerate(inputs):
        pixels = np.ascontiguousarray(np.moveaxis(crop, 0, 2))
        residual = median_residual(pixels)
        scale = 1.4826 * np.median(np.abs(residual), axis=(0, 1), keepdims=True)
        outlying = np.abs(residual) > sigmas * np.maximum(scale, 1e-6)
        cleaned = np.where(outlying, pixels - residual, pixels)
        out[index] = np.moveaxis(cleaned, 2, 0)
        scrubbed += int(outlying.sum())
    return out, scrubbed / max(inputs.size, 1)


def _learned_without_traces(ctx: AuditContext, result: ContentResult):
    """The audited learned model's accuracy on the balanced test crops with isolated-pixel traces scrubbed."""
    from pipeline.analysis.audit.cnn import balanced_model, predict_proba

    bank, split = ctx.bank, ctx.cnn_split
    test = split.test
    model = balanced_model(ctx)
    method = ctx.cnn.method
    x_test = bank.crop_input(test, ctx.cnn.main_crop)
    truth = bank.labels[test]
    as_is = np.asarray(model.classes)[predict_proba(model, x_test).argmax(axis=1)] == truth
    scrubbed_inputs, share = scrub_isolated_pixels(x_test)
    scrubbed = np.asarray(model.classes)[predict_proba(model, scrubbed_inputs).argmax(axis=1)] == truth
    result.details["learned_model"] = {"method": method, "accuracy_as_is": float(as_is.mean()),
                                       "accuracy_scrubbed": float(scrubbed.mean()), "scrubbed_share": share,
                                       "test_images": int(test.size), "sigmas": SCRUB_SIGMAS}
    return proportion_figure(
        "learned_without_traces", f"{method} (Balanced model) without isolated-pixel traces: accuracy",
        int(scrubbed.sum()), int(test.size), majority_share(truth), ctx.levels,
        note=f"{100 * share:.3f} % of pixels scrubbed (> {SCRUB_SIGMAS:g} robust SD); as is: "
             f"{100 * as_is.mean():.1f} %; above chance means the model reads content or processing, not defects")
