"""Adversarial perturbations of ``ml_age``'s own crop networks (the camera-bias paper's Fig. 5).

The bias audit perturbs the networks it trains itself; this module perturbs the networks a
finished ``ml_age`` run trained (``srnet/<device>/run_XX/srnet_<crop>.pt``, or a variant's), on
held-out crops of each device's first run. Each crop is pushed by
:func:`pipeline.srnet.adversarial.perturb_until_flip` (L-inf-normalised gradient steps of
:data:`~pipeline.analysis.perturbation_energy.STEP`, at most
:data:`~pipeline.analysis.perturbation_energy.MAX_STEPS`, total L-inf bound
:data:`~pipeline.analysis.perturbation_energy.EPSILON`) until its crop network's class flips, and
the perturbation's energy is split between content edges and the defect neighbourhoods
(:func:`pipeline.analysis.perturbation_energy.energy_shares`). The defects are all those of the
device, whatever their onset: to make a young image look old, a network that reads defects
paints hot pixels where the later defects appear, and to make an old image look young it
removes the present ones.

Figures per device: the share of crops whose energy share on edges exceeds the edges' area
share, and the same at the defects (crops holding a defect only), each with its exact
(Clopper-Pearson) 99 % interval; chance is 0.5, the share a perturbation that ignores edges (or
defects) would reach. The reading is ``content edges`` when the edge interval lies above 0.5,
``defects`` when the defect interval does, both, or ``no concentration shown``.

The crops are in the network's input space: for ``srnet-res`` that is the median residual, and
its "edges" are those of the residual.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from pipeline.analysis.perturbation_energy import (
    DEFECT_BOX,
    EDGE_QUANTILE,
    EPSILON,
    MAX_STEPS,
    STEP,
    bootstrap_mean_ci,
    draw_perturbations,
    energy_shares,
)
from pipeline.analysis.figures import save_figure
from pipeline.analysis.saliency.inputs import checkpoint_path, points_in_crop
from pipeline.analysis.saliency.stats import faithfulness_pairs
from pipeline.features.device import shown_path

__all__ = ["ADVERSARIAL_COLUMNS", "CONFIDENCE", "adversarial_crops", "adversarial_settings", "perturb_run",
           "summarise_shares"]

CONFIDENCE = 0.99
"""Level of the exact intervals of the per-device figures."""
ADVERSARIAL_COLUMNS = ["device", "run", "image", "crop", "true", "original", "final", "flipped", "steps",
                       "edge_share", "edge_area", "defects_in_crop", "defect_share", "defect_area"]
"""Columns of ``saliency_adversarial.csv``, one row per perturbed crop: the classes (labels) the
crop network predicted before (``original``) and after (``final``) the perturbation, whether it
flipped and after how many steps, and the perturbation's energy share on edges and in the defect
boxes against their area shares (empty when the crop holds no defect)."""


def adversarial_settings() -> dict:
    """What the perturbation does, for ``saliency.json``."""
    return {"step": STEP, "max_steps": MAX_STEPS, "epsilon": EPSILON, "edge_quantile": EDGE_QUANTILE,
            "defect_box": DEFECT_BOX, "confidence": CONFIDENCE,
            "rule": "class flipped by L-inf-normalised gradient ascent on the predicted class's cross-entropy; "
                    "figures: share of crops whose energy share on edges (at defects) exceeds the area share, "
                    "exact interval; above 0.5: the perturbation concentrates there"}


def adversarial_crops(held_out: np.ndarray, truth: np.ndarray, n_crops: int, budget: int) -> list[tuple[int, int]]:
    """Up to ``budget`` (image, crop) pairs of one run's test images: distinct images, classes
    alternating, the crop network taken in turn (image k of the list gets crop ``k % n_crops``)."""
    images = list(dict.fromkeys(i for i, _ in faithfulness_pairs(held_out, truth, n_crops)))
    return [(i, k % n_crops) for k, i in enumerate(images[:budget])]


def _proportion(above: np.ndarray) -> dict:
    n, k = int(above.size), int(above.sum())
    if n == 0:
        return {"n": 0, "above_area": 0, "share": None, "ci": [None, None]}
    ci = binomtest(k, n).proportion_ci(CONFIDENCE, method="exact")
    return {"n": n, "above_area": k, "share": k / n, "ci": [float(ci.low), float(ci.high)]}


def summarise_shares(edge_share, edge_area, defect_share, defect_area, flipped, steps, *, seed: int = 0) -> dict:
    """The per-device figures from the per-crop energy shares (NaN: not measured for that crop).

    Returns
    -------
    dict
        ``edges`` and ``defects``: ``n``, ``above_area`` (crops whose energy share exceeds the
        area share), ``share``, ``ci`` (exact, :data:`CONFIDENCE`), ``mean_energy_share`` with
        its ``bootstrap_ci95`` and ``mean_area_share``; ``flipped``, ``n_crops``,
        ``mean_steps`` and ``reading``.
    """
    out: dict = {"n_crops": int(len(flipped)), "flipped": int(np.sum(flipped)),
                 "mean_steps": float(np.mean(steps)) if len(steps) else None}
    for name, share, area in (("edges", edge_share, edge_area), ("defects", defect_share, defect_area)):
        share, area = np.asarray(share, float), np.asarray(area, float)
        ok = np.isfinite(share) & np.isfinite(area)
        figure = _proportion(share[ok] > area[ok])
        figure["mean_energy_share"] = float(share[ok].mean()) if ok.any() else None
        figure["bootstrap_ci95"] = list(bootstrap_mean_ci(share[ok], seed=seed)) if ok.any() else [None, None]
        figure["mean_area_share"] = float(area[ok].mean()) if ok.any() else None
        out[name] = figure
    above = [name for name in ("edges", "defects") if out[name]["n"] and out[name]["ci"][0] > 0.5]
    out["reading"] = {("edges",): "content edges", ("defects",): "defects",
                      ("edges", "defects"): "content edges and defects"}.get(tuple(above), "no concentration shown")
    return out


def perturb_run(folder, found, stacked: dict[str, np.ndarray], held_out: np.ndarray, truth: np.ndarray,
                usable: list[str], boxes: list[dict], positions, classes: list[int], srnet_config, config,
                out: Path, root: Path | None = None) -> tuple[dict, list[dict], list[Path]]:
    """Perturb up to ``config.adversarial_crops`` held-out crops of the first run's networks.

    Parameters are those of the saliency tool's device step (:mod:`.explain`): the model inputs
    per crop name ``stacked``, which images each run held out, their labels, paths and crop boxes,
    the defect positions, the label of each output column, the network and saliency settings, the
    output folder (the figure goes to ``adversarial/<device>.png``) and the manifest's folder
    (image paths are shown relative to it).

    Returns
    -------
    record : dict
        :func:`summarise_shares` plus ``run`` and ``defect_source``; ``{"n_crops": 0, "note": ...}``
        when nothing was perturbed.
    rows : list of dict
        One row per crop (:data:`ADVERSARIAL_COLUMNS`).
    files : list of Path
        The figure written.
    """
    budget = config.adversarial_crops
    device_name, run = found.device, found.runs[0]
    if budget == 0:
        return {"n_crops": 0, "note": "not run (adversarial_crops = 0)"}, [], []
    pairs = adversarial_crops(held_out[0], truth, len(srnet_config.crops), budget)
    if not pairs:
        return {"n_crops": 0, "note": f"run {run} holds no readable test image"}, [], []
    from pipeline.srnet.adversarial import perturb_until_flip
    from pipeline.srnet.runtime import resolve_device, torch_runtime
    from pipeline.srnet.train import load_crop_model

    lo, hi = (-1.0, 1.0) if srnet_config.input == "median-residual" else (0.0, 1.0)
    torch_device = resolve_device(config.device)
    done: dict[tuple[int, int], dict] = {}
    with torch_runtime(config.num_threads or srnet_config.num_threads, torch_device, deterministic=False):
        for c, crop_name in enumerate(srnet_config.crops):
            images = [i for i, cc in pairs if cc == c]
            if not images:
                continue
            model = load_crop_model(checkpoint_path(folder, device_name, run, crop_name, config.model),
                                    str(torch_device))
            crops = np.ascontiguousarray(stacked[crop_name][images])
            result = perturb_until_flip(model, crops, step=STEP, max_steps=MAX_STEPS, epsilon=EPSILON, lo=lo, hi=hi)
            for k, i in enumerate(images):
                points = points_in_crop(positions.of_device(device_name, run), boxes[i][crop_name])
                done[(i, c)] = {"input": crops[k], "delta": result.delta[k], "points": points,
                                "row": {"device": device_name, "run": run, "image": shown_path(usable[i], root),
                                        "crop": crop_name, "true": int(truth[i]),
                                        "original": int(classes[result.original[k]]),
                                        "final": int(classes[result.final[k]]), "flipped": bool(result.flipped[k]),
                                        "steps": int(result.steps[k]), "defects_in_crop": int(len(points)),
                                        **energy_shares(result.delta[k], crops[k], points)}}
    rows = [done[pair]["row"] for pair in pairs]
    record = summarise_shares(*(np.array([row[key] for row in rows], float)
                                for key in ("edge_share", "edge_area", "defect_share", "defect_area")),
                              np.array([row["flipped"] for row in rows]), np.array([row["steps"] for row in rows]))
    record.update(run=run, defect_source=(
        f"ground truth ({positions.truth_path}): every defect of the device, whatever its onset"
        if positions.truth_path is not None else f"the defects run {run} identified (defects/<device>/run_XX.csv)"))
    shown = pairs[:6]
    name = f"run {run}"
    examples = {"crops": np.stack([done[p]["input"] for p in shown]),
                "deltas": {name: np.stack([done[p]["delta"] for p in shown])},
                "flipped": {name: np.array([done[p]["row"]["flipped"] for p in shown])},
                "points": [done[p]["points"] for p in shown],
                "labels": [int(truth[i]) for i, _ in shown],
                "devices": [f"{device_name}, crop {srnet_config.crops[c]}" for _, c in shown]}
    figure = draw_perturbations(examples, f"{config.model} of the ml_age run, {device_name}")
    files = save_figure(figure, out / "adversarial" / f"{device_name}.png", vector="svg")
    return record, rows, files
