"""Check 5, location: does the random-crop model's accuracy depend on where in the frame the crop is?

The camera-bias paper's Fig. 8-9: the 32 x 32 crop model of the patch check (trained on crops at
random, CFA-aligned positions, :mod:`pipeline.analysis.audit.patch_colour`) is evaluated on a
regular grid of ``grid`` x ``grid`` crops (:func:`pipeline.analysis.audit.data.grid_positions`)
over every balanced test image (at most ``MAX_IMAGES`` of them, spread over the devices), one
prediction per crop. What this shows:

* a **heat map per device** in the sensor frame: the share of the device's test images whose
  crop at each grid position is classified right;
* **chosen single images** (the most and least accurate test images, and a median one):
  the probability of the true class per position;
* the **verdict**: a permutation test of "accuracy depends on position". Its statistic is the
  variance over positions of the per-position accuracy; its null distribution comes from
  permuting each image's position labels independently (which keeps every image's own
  accuracy and removes only the link between correctness and position). A defect is bound to
  one sensor position, but so is a vignette, a lens flare, a date stamp or a sky at the top of
  every image: an accuracy that depends on position says the model reads something at some
  places of the frame only; the heat map says where, to be read with the scenes and the
  defects in mind.
* a context figure: the mean accuracy over all positions (Clopper–Pearson interval over the
  image-position pairs, which are not independent: the interval is too narrow, hence context).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.analysis.audit.cnn import predict_proba, random_crop_model, seeded_rng
from pipeline.analysis.audit.common import AuditContext, CheckResult, majority_share
from pipeline.analysis.audit.stats import p_value_figure, proportion_figure

__all__ = ["GRID", "MAX_IMAGES", "N_FIGURES", "N_PERMUTATIONS", "LocationResult", "location_check",
           "position_permutation_test"]

N_FIGURES = 1
"""Judged figures of this check (the Bonferroni family counts them)."""
GRID = 8
"""Grid side: ``GRID * GRID`` crop positions per test image."""
MAX_IMAGES = 160
"""Cap on the test images evaluated on the grid (a spread over devices and classes), to bound runtime."""
N_PERMUTATIONS = 9999
"""Permutations of the position test (the smallest p is 1 / 10000)."""


@dataclass
class LocationResult(CheckResult):
    """Result of :func:`location_check`.

    ``maps`` holds, per device, the ``(grid, grid)`` per-position accuracy and the pixel
    coordinates of the grid rows and columns; ``examples`` a few single images' ``(grid, grid)``
    maps of the probability of the true class.
    """

    maps: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)


def position_permutation_test(correct: np.ndarray, n_permutations: int, rng: np.random.Generator,
                              chunk: int = 500) -> tuple[float, int]:
    """Permutation test of "per-position accuracy varies more than by chance".

    Parameters
    ----------
    correct : ndarray of bool or float, (images, positions)
        Correctness (or any score) of each image at each position.
    n_permutations : int
    rng : Generator

    Returns
    -------
    (float, int)
        The observed variance over positions of the column means, and how many permutations
        (positions shuffled independently within every image) reached at least it.
    """
    values = np.asarray(correct, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 2:
        raise ValueError(f"need a (images, positions >= 2) array, got shape {values.shape}")
    observed = float(values.mean(axis=0).var())
    exceed, done = 0, 0
    tolerance = 1e-12 * max(1.0, observed)
    while done < n_permutations:
        k = min(chunk, n_permutations - done)
        stacked = np.broadcast_to(values, (k,) + values.shape)
        shuffled = rng.permuted(stacked, axis=2)
        stats = shuffled.mean(axis=1).var(axis=1)
        exceed += int(np.sum(stats >= observed - tolerance))
        done += k
    return observed, exceed


def _chosen_images(test: np.ndarray, bank, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``limit`` of the test images, spread evenly over (device, class) cells."""
    if test.size <= limit:
        return test
    cells: dict = {}
    for i in test.tolist():
        cells.setdefault((bank.samples[i].device, bank.samples[i].label), []).append(i)
    queues = [list(rng.permutation(v)) for _, v in sorted(cells.items())]
    chosen = []
    while len(chosen) < limit:
        for q in queues:
            if q and len(chosen) < limit:
                chosen.append(q.pop())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def location_check(ctx: AuditContext, *, grid: int | None = None, max_images: int = MAX_IMAGES,
                   n_permutations: int = N_PERMUTATIONS) -> LocationResult:
    """Evaluate the random-crop model on a grid over the test images and test whether position matters.

    Returns
    -------
    LocationResult
        Judged ``position_dependence`` (a p-value); context ``grid_accuracy``; heat maps in
        :attr:`LocationResult.maps`, single images in :attr:`LocationResult.examples`.
    """
    started = time.perf_counter()
    result = LocationResult("location", "Location", "Does the crop model's accuracy depend on where in the frame "
                            "the crop lies (Fig. 8-9)?")
    if ctx.cnn is None or ctx.bank.grid_crops is None:
        why = "needs the CNN (run without --no-cnn)" if ctx.cnn is None else "the bank holds no grid crops"
        return result.skip(f"the location check {why}.", started)
    bank, split, levels = ctx.bank, ctx.cnn_split, ctx.levels
    side = bank.grid if grid is None else grid
    model = random_crop_model(ctx)
    classes = np.asarray(model.classes)
    chosen = _chosen_images(split.test, bank, max_images, seeded_rng(ctx.seed, "location"))
    truth = bank.labels[chosen]
    inputs = bank.grid_input(chosen)
    n, g = inputs.shape[:2]
    proba = predict_proba(model, inputs.reshape((n * g,) + inputs.shape[2:])).reshape(n, g, -1)
    column = np.searchsorted(classes, truth)
    p_true = np.take_along_axis(proba, column[:, None, None], axis=2)[:, :, 0]
    correct = classes[proba.argmax(axis=2)] == truth[:, None]
    statistic, exceed = position_permutation_test(correct, n_permutations, seeded_rng(ctx.seed, "location-perm"))
    per_position = correct.mean(axis=0)
    result.figures = [
        p_value_figure("position_dependence", f"does accuracy depend on the crop's position? permutation test of "
                       f"the variance of per-position accuracy over a {side}x{side} grid ({n} test images, "
                       f"{n_permutations} permutations); value: p", exceed, n_permutations, levels,
                       statistic=statistic),
        proportion_figure("grid_accuracy", f"random-crop model on every {side}x{side} grid position (mean over "
                          "image-positions; pairs not independent)", int(correct.sum()), correct.size,
                          majority_share(truth), levels, role="context"),
    ]
    positions = bank.grid_positions[chosen]
    devices = bank.devices[chosen]
    for device in sorted(set(devices.tolist())):
        rows = np.flatnonzero(devices == device)
        corners = positions[rows[0]].reshape(side, side, 2)
        result.maps[device] = {"accuracy": correct[rows].mean(axis=0).reshape(side, side).tolist(),
                               "rows": corners[:, 0, 0].tolist(), "cols": corners[0, :, 1].tolist(),
                               "images": int(rows.size), "shape": bank.shapes[chosen[rows[0]]].tolist()}
    image_accuracy = correct.mean(axis=1)
    order = np.argsort(image_accuracy, kind="stable")
    picks = list(dict.fromkeys([int(order[-1]), int(order[len(order) // 2]), int(order[0])]))
    for j in picks:
        corners = positions[j].reshape(side, side, 2)
        result.examples.append({"image": bank.samples[chosen[j]].path, "device": bank.samples[chosen[j]].device,
                                "label": int(truth[j]), "accuracy": float(image_accuracy[j]),
                                "p_true": p_true[j].reshape(side, side).tolist(),
                                "rows": corners[:, 0, 0].tolist(), "cols": corners[0, :, 1].tolist()})
    result.details = {"grid": side, "test_images": int(n), "crop": int(bank.random_patch),
                      "per_position_accuracy": per_position.reshape(side, side).tolist(),
                      "statistic_variance": statistic, "exceedances": exceed, "permutations": n_permutations,
                      "model": model.summary()}
    result.settle()
    if result.verdict != "no bias found":
        best = np.unravel_index(int(per_position.argmax()), (side, side))
        result.notes.append(f"Accuracy depends on the crop's position (highest at grid cell row {best[0]}, column "
                            f"{best[1]}): the model reads something at some places of the frame only; see the heat "
                            "maps for where (a defect cluster, vignetting, a stamp, a recurring scene region).")
    result.seconds = time.perf_counter() - started
    return result
