"""Check 3, position: is what the model learned bound to sensor positions, as a defect signal is?

A hot pixel sits at one sensor position: a network that learned the defects of one crop has
nothing to go on at another crop. Scene content and in-camera processing are everywhere in
the frame, so what a network learned from them carries over to any position. The Balanced
model of the camera check (trained on the fixed crop ``main_crop`` in the left half of the
Balanced training images) is tested on the balanced test images

* at its own crop (context: what it learned at all),
* at the mirrored crop in the **right half** (``tl`` -> ``tr``): the paper's Table VI, left
  halves for training and right halves for test (verdict),
* at the **other four positions** of the five-crop layout, their softmax outputs averaged as
  the five-crop fusion averages them (verdict).

Accuracy above chance away from the training position means the model reads something that
is not bound to positions, i.e. not the defects. Caveat: the *density* of defects grows with
age everywhere on the sensor, a position-free age cue; at the small patches of the ``cpu``
preset a crop holds far less than one defect on average, so this cue stays weak there.
If the camera check trained a device-identification model, it is tested left -> right too
(the paper's own Table VI, as context).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.analysis.audit.cnn import balanced_model, predict_proba
from pipeline.analysis.audit.common import (
    AuditContext,
    CheckResult,
    held_out,
    majority_share,
    prediction_rows,
)
from pipeline.analysis.audit.stats import proportion_figure
from pipeline.srnet.crops import CROP_NAMES

__all__ = ["MIRROR", "N_FIGURES", "PositionResult", "position_check"]

N_FIGURES = 2
"""Judged figures of this check (the Bonferroni family counts them)."""
MIRROR = {"tl": "tr", "bl": "br"}
"""Right-half crop mirroring each left-half crop."""


@dataclass
class PositionResult(CheckResult):
    """Result of :func:`position_check`; ``per_position`` maps crop name -> accuracy of the Balanced model."""

    per_position: dict = field(default_factory=dict)


def position_check(ctx: AuditContext) -> PositionResult:
    """Test the Balanced model away from the position it was trained on.

    Returns
    -------
    PositionResult
        Judged ``left_to_right_accuracy`` and ``other_positions_accuracy``; context one
        ``position_<crop>_accuracy`` per crop (its own included), and
        ``device_id_left_to_right_accuracy`` when a device model exists.
    """
    started = time.perf_counter()
    result = PositionResult("position", "Position", "Does the learned signal stay at the sensor positions it "
                            "was learned at, as a defect signal does?")
    if ctx.cnn is None:
        return result.skip("the position check needs the CNN (run without --no-cnn).", started)
    bank, levels = ctx.bank, ctx.levels
    test, truth, chance = held_out(ctx)
    model = balanced_model(ctx)
    own, mirror = ctx.cnn.main_crop, MIRROR[ctx.cnn.main_crop]
    proba = {}
    for name in CROP_NAMES:
        proba[name] = predict_proba(model, bank.crop_input(test, name))
        result.predictions += prediction_rows("position", f"balanced@{name}", bank, test, truth, proba[name],
                                              model.classes)
    classes = np.asarray(model.classes)
    correct = {name: classes[p.argmax(axis=1)] == truth for name, p in proba.items()}
    others = [n for n in CROP_NAMES if n != own]
    fused = np.mean([proba[n] for n in others], axis=0)
    fused_correct = classes[fused.argmax(axis=1)] == truth
    figures = [
        proportion_figure("left_to_right_accuracy", f"trained on the left-half crop '{own}', tested on the "
                          f"right-half crop '{mirror}' (Table VI)", int(correct[mirror].sum()), test.size, chance,
                          levels),
        proportion_figure("other_positions_accuracy", f"trained on crop '{own}', tested on the other four crops of "
                          "the five-crop layout (mean of softmax)", int(fused_correct.sum()), test.size, chance,
                          levels),
    ]
    for name in CROP_NAMES:
        result.per_position[name] = float(correct[name].mean())
        where = " (its own crop)" if name == own else (" (mirrored, right half)" if name == mirror else "")
        figures.append(proportion_figure(f"position_{name}_accuracy", f"Balanced model at crop '{name}'{where}",
                                         int(correct[name].sum()), test.size, chance, levels, role="context"))
    device_model = ctx.store.trained("device_id") if ctx.store is not None else None
    if device_model is not None:
        p = predict_proba(device_model, bank.crop_input(test, mirror))
        guess = np.asarray(device_model.classes)[p.argmax(axis=1)]
        dev_truth = bank.devices[test].astype(str)
        figures.append(proportion_figure(
            "device_id_left_to_right_accuracy", f"device identification trained at '{own}', tested at '{mirror}' "
            "(the paper's Table VI)", int(np.sum(guess == dev_truth)), test.size, majority_share(dev_truth), levels,
            role="context", note="high: the device traces are not bound to positions (processing, not PRNU or "
                                 "defects)"))
    result.figures = figures
    result.details = {"own_crop": own, "mirror_crop": mirror, "per_position_accuracy": result.per_position,
                      "test_images": int(test.size)}
    result.settle()
    if result.verdict != "no bias found":
        result.notes.append("What the model learned works away from the positions it was learned at: it is not "
                            "(only) a defect signal, which is bound to sensor positions.")
    result.seconds = time.perf_counter() - started
    return result
