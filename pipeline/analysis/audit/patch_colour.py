"""Check 4, patch size and colour: random small crops (Table V), colour jitter and grayscale (Table IV).

Three more networks are trained on the images of the Balanced training set:

* **random crops**: ``n_random_train`` crops of ``random_patch`` pixels (32 by default) at
  random, CFA-aligned positions of every training image; tested with ``n_random_test``
  random crops per test image, their softmax outputs averaged. Random positions leave no
  sensor position to learn, so a defect signal cannot be learned this way (barring a
  position-free density of defects, which a 32 x 32 crop almost never samples); accuracy
  above chance (verdict) means the label shows in local texture anywhere in the frame.
* **colour jitter**: the Balanced crops with brightness, contrast, saturation and a hue
  rotation drawn at random per crop (:func:`pipeline.analysis.audit.cnn.colour_jitter`),
  tested on the plain test crops.
* **grayscale**: the Balanced crops as BT.601 luma, trained and tested.

For colour the figures are the *drops*: Balanced accuracy minus jittered (verdict) and
minus grayscale (verdict) accuracy on the same test images, chance 0. A drop means the
Balanced model read global colour (white balance, tint, saturation: scene light or camera
processing); a defect stays a local outlier under both transforms.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from pipeline.analysis.audit.cnn import (
    balanced_model,
    colour_jitter,
    predict_proba,
    random_crop_model,
)
from pipeline.analysis.audit.common import (
    AuditContext,
    CheckResult,
    held_out,
    model_seed,
    prediction_rows,
)
from pipeline.analysis.audit.stats import paired_difference_figure, proportion_figure

__all__ = ["N_FIGURES", "PatchColourResult", "patch_colour_check"]

N_FIGURES = 3
"""Judged figures of this check (the Bonferroni family counts them)."""


@dataclass
class PatchColourResult(CheckResult):
    """Result of :func:`patch_colour_check`; ``accuracies`` maps model -> balanced-test accuracy."""

    accuracies: dict = field(default_factory=dict)


def patch_colour_check(ctx: AuditContext) -> PatchColourResult:
    """Train the random-crop, colour-jittered and grayscale models and compare them with Balanced.

    Returns
    -------
    PatchColourResult
        Verdict-bearing ``random_crop_accuracy``, ``jitter_drop`` and ``grayscale_drop``;
        context accuracies of the three models.
    """
    started = time.perf_counter()
    result = PatchColourResult("patch", "Patch size and colour",
                               "Does the label show in small random patches, and does the model need global colour?")
    if ctx.cnn is None:
        return result.skip("the patch-size and colour check needs the CNN (run without --no-cnn).", started)
    bank, levels, cnn = ctx.bank, ctx.levels, ctx.cnn
    test, truth, chance = held_out(ctx)
    base = balanced_model(ctx)
    index = base.train_index
    labels = bank.labels[index]
    classes = base.classes
    crop = cnn.main_crop

    def build_jitter():
        rng = np.random.default_rng([ctx.seed, zlib.crc32(b"jitter")])
        inputs = colour_jitter(bank.crop_input(index, crop), rng)
        return inputs, labels, cnn.srnet_config(seed=model_seed(ctx.seed, "jitter")), index, classes

    def build_gray():
        return (bank.crop_input(index, crop, "luma"), labels,
                cnn.srnet_config(channels="luma", seed=model_seed(ctx.seed, "grayscale")), index, classes)

    models = {"random_crops": random_crop_model(ctx),
              "jitter": ctx.store.get("jitter", build_jitter),
              "grayscale": ctx.store.get("grayscale", build_gray)}
    proba = {"balanced": predict_proba(base, bank.crop_input(test, crop))}
    tests = bank.random_input(test)[:, :cnn.n_random_test]
    flat = predict_proba(models["random_crops"], tests.reshape((-1,) + tests.shape[2:]))
    proba["random_crops"] = flat.reshape(tests.shape[0], tests.shape[1], -1).mean(axis=1)
    proba["jitter"] = predict_proba(models["jitter"], bank.crop_input(test, crop))
    proba["grayscale"] = predict_proba(models["grayscale"], bank.crop_input(test, crop, "luma"))
    correct = {}
    for name, p in proba.items():
        correct[name] = np.asarray(classes)[p.argmax(axis=1)] == truth
        result.accuracies[name] = float(correct[name].mean())
        if name != "balanced":
            result.predictions += prediction_rows("patch", name, bank, test, truth, p, classes)
    result.figures = [
        proportion_figure("random_crop_accuracy", f"random {cnn.random_patch}x{cnn.random_patch} crops "
                          f"({cnn.n_random_train} per training image, {cnn.n_random_test} averaged per test image; "
                          "Table V)", int(correct["random_crops"].sum()), test.size, chance, levels),
        paired_difference_figure("jitter_drop", "Balanced minus colour-jittered accuracy (Table IV)",
                                 correct["balanced"], correct["jitter"], levels),
        paired_difference_figure("grayscale_drop", "Balanced minus grayscale accuracy (Table IV)",
                                 correct["balanced"], correct["grayscale"], levels),
        proportion_figure("balanced_accuracy", f"Balanced model (crop '{crop}')", int(correct["balanced"].sum()),
                          test.size, chance, levels, role="context"),
        proportion_figure("jitter_accuracy", "colour-jittered training", int(correct["jitter"].sum()), test.size,
                          chance, levels, role="context"),
        proportion_figure("grayscale_accuracy", "grayscale training and test", int(correct["grayscale"].sum()),
                          test.size, chance, levels, role="context"),
    ]
    result.details = {"accuracies": result.accuracies, "models": {k: m.summary() for k, m in models.items()},
                      "test_images": int(test.size)}
    result.settle()
    if result.figure("random_crop_accuracy").verdict != "no bias found":
        result.notes.append("The label shows in small patches at random positions: the model can read texture "
                            "or processing anywhere in the frame, not only defects at fixed positions.")
    if any(result.figure(k).verdict != "no bias found" for k in ("jitter_drop", "grayscale_drop")):
        result.notes.append("Removing global colour costs accuracy: the Balanced model used colour (scene light "
                            "or camera processing), which is no age trace.")
    result.seconds = time.perf_counter() - started
    return result
