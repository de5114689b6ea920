"""Check 6, binary masks: is the label predictable from scene structure alone (the paper's Table III)?

Every crop of the Balanced training and test images (``main_crop``) is reduced to a binary mask:
its BT.601 luma thresholded against its local mean
(:func:`skimage.filters.threshold_local`, ``method='mean'``, block ``BLOCK`` pixels), giving a
one-channel {0, 1} input. That keeps edges and the layout of light and dark regions (scene
structure) and removes colour, tone, noise and every pixel-level trace: a hot pixel flips at
most its own mask pixel, as any noisy pixel does. An SRNet-family network (the audit's method,
as the Balanced model) is trained on the masks of the Balanced training images and tested on
the masks of the balanced test images; accuracy above chance (verdict,
``binary_mask_accuracy``) means the label shows in scene structure.
"""

from __future__ import annotations

import time

import numpy as np
from skimage.filters import threshold_local

from pipeline.analysis.audit.cnn import balanced_model, predict_proba
from pipeline.analysis.audit.common import AuditContext, CheckResult, held_out, model_seed, prediction_rows
from pipeline.analysis.audit.stats import proportion_figure

__all__ = ["BLOCK", "N_FIGURES", "binary_mask_check", "binary_masks"]

N_FIGURES = 1
"""Judged figures of this check (the Bonferroni family counts them)."""
BLOCK = 15
"""Block size (pixels, odd) of the local-mean threshold."""


def binary_masks(luma: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Binarise inputs ``(N, 1, P, P)`` (luma in [0, 1]) by local-mean thresholding -> float32 {0, 1}.

    The block is shrunk to the largest odd size below the crop when the crop is smaller.
    """
    luma = np.asarray(luma, dtype=np.float32)
    if luma.ndim != 4 or luma.shape[1] != 1:
        raise ValueError(f"binary masks need luma inputs (N, 1, P, P), got shape {luma.shape}")
    side = min(luma.shape[2:])
    size = max(3, min(block, side if side % 2 else side - 1))
    out = np.empty_like(luma)
    for i in range(luma.shape[0]):
        image = luma[i, 0]
        out[i, 0] = image > threshold_local(image, size, method="mean", mode="reflect")
    return out


def binary_mask_check(ctx: AuditContext) -> CheckResult:
    """Train and test the audit's network on binary masks of the Balanced crops.

    Returns
    -------
    CheckResult
        Judged ``binary_mask_accuracy``; context ``binary_mask_train_accuracy`` and
        ``balanced_accuracy`` (the Balanced model on the plain crops, for comparison).
    """
    started = time.perf_counter()
    result = CheckResult("binary_mask", "Binary masks", "Is the label predictable from scene structure alone, "
                         "without colour, tone or texture (Table III)?")
    if ctx.cnn is None:
        return result.skip("the binary-mask check needs the CNN (run without --no-cnn).", started)
    bank, levels, cnn = ctx.bank, ctx.levels, ctx.cnn
    test, truth, chance = held_out(ctx)
    base = balanced_model(ctx)
    index, classes, crop = base.train_index, base.classes, cnn.main_crop

    def build():
        masks = binary_masks(bank.crop_input(index, crop, "luma"))
        return (masks, bank.labels[index], cnn.srnet_config(channels="luma", seed=model_seed(ctx.seed, "binary_mask")),
                index, classes)

    model = ctx.store.get("binary_mask", build)
    proba = predict_proba(model, binary_masks(bank.crop_input(test, crop, "luma")))
    correct = np.asarray(classes)[proba.argmax(axis=1)] == truth
    base_correct = np.asarray(classes)[predict_proba(base, bank.crop_input(test, crop)).argmax(axis=1)] == truth
    result.predictions = prediction_rows("binary_mask", "binary_mask", bank, test, truth, proba, classes)
    result.figures = [
        proportion_figure("binary_mask_accuracy", f"trained and tested on binary masks of crop '{crop}' "
                          f"(local-mean threshold, block {BLOCK}; Table III)", int(correct.sum()), test.size,
                          chance, levels),
        proportion_figure("balanced_accuracy", f"Balanced model on the plain crops '{crop}'", int(base_correct.sum()),
                          test.size, chance, levels, role="context"),
    ]
    result.details = {"model": model.summary(), "test_images": int(test.size), "block": BLOCK,
                      "train_accuracy": model.train_accuracy}
    result.settle()
    if result.verdict != "no bias found":
        result.notes.append("The label shows in binary masks, which keep only the scene's structure (edges, light "
                            "and dark regions): the data let a model tell the classes apart by what is pictured.")
    result.seconds = time.perf_counter() - started
    return result
