"""Check 'adversarial': where must a crop's pixels change for the model's age class to flip? (paper Fig. 5)

For the Balanced and the Disjoint model of the camera check (trained once, taken from the
audit's :class:`~pipeline.analysis.audit.cnn.ModelStore`; trained here when the camera check did
not run), a bounded number of balanced test crops (``CnnSettings.adversarial_images``, spread
over devices and classes) are perturbed by :func:`pipeline.srnet.adversarial.perturb_until_flip`:
L-inf-normalised gradient steps of 0.01 (on [0, 1] pixels), at most 50, total L-inf bound 0.25,
stopping when the predicted class flips.

Where the perturbation's energy (its square, summed over colour channels) sits:

* **edges**: the top quartile of the crop's local gradient magnitude (luma, central
  differences), outside the defect boxes; the rest is *flat*. Per image, the share of energy
  on edges against the edges' share of the area (about 0.25).
* **defects** (when the images are the simulator's and ``defects.csv`` sits beside their
  manifest): the 5x5 boxes around the defects present at capture time inside the crop; energy
  share against the boxes' area share.

Figures: ``<model>_edge_energy`` = share of images whose edge energy share exceeds the edges'
area share (exact Clopper-Pearson interval over images; chance 0.5, the share a perturbation
that ignores edges would reach). The Balanced model's is the check's verdict (its
perturbation concentrated on content edges means its decision leans on scene content:
'bias found/suspected'); the Disjoint model's is a stress-test (susceptibility) figure. The
defect figures (same form) and flip rates are context: energy on the defects is what a model
that reads sensor defects needs, so it clears the model. The mean energy shares with
bootstrap intervals (2000 resamples of images) are in ``details``.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.analysis.audit.cnn import (
    balanced_model,
    cnn_builder,
    disjoint_groups,
    model_inputs,
    model_runtime,
    protocol_sets,
    seeded_rng,
    spread_sample,
)
from pipeline.analysis.audit.common import AuditContext, CheckResult
from pipeline.analysis.audit.stats import proportion_figure
from pipeline.analysis.perturbation_energy import (
    DEFECT_BOX,
    EDGE_QUANTILE,
    EPSILON,
    MAX_STEPS,
    STEP,
    bootstrap_mean_ci,
    defect_mask,
    draw_perturbations,
    edge_mask,
    energy_shares,
)
from pipeline.sim import GENERATOR

__all__ = ["DEFECT_BOX", "EDGE_QUANTILE", "N_FIGURES", "AdversarialResult", "adversarial_check", "bootstrap_mean_ci",
           "defect_mask", "draw_examples", "edge_mask", "energy_shares", "judge", "measure"]

N_FIGURES = 2
"""Judged figures: the Balanced model's edge figure (verdict) and the Disjoint model's (stress test)."""


@dataclass
class AdversarialResult(CheckResult):
    """Result of :func:`adversarial_check`; ``examples`` holds the arrays of its figure (not in JSON)."""

    examples: dict = field(default_factory=dict)

    def draw(self):
        """The figure: test crops, their amplified perturbations per model, edge and defect markers."""
        return draw_examples(self.examples)


def draw_examples(examples: dict):
    """The check's figure (:func:`pipeline.analysis.perturbation_energy.draw_perturbations`)."""
    return draw_perturbations(examples)


# ---------------------------------------------------------------- defect positions (simulator ground truth)

def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _dataset_root(path: str) -> Path | None:
    """The simulator dataset folder above an image (``defects.csv``, ``manifest.csv``, generator config)."""
    for parent in list(Path(path).resolve().parents)[:4]:
        if (parent / "defects.csv").is_file() and (parent / "manifest.csv").is_file():
            try:
                import json

                if json.loads((parent / "config.json").read_text(encoding="utf-8")).get("generator") == GENERATOR:
                    return parent
            except (OSError, ValueError):
                return None
    return None


def defect_points(bank, indices, crop: str) -> list | None:
    """Per image of ``indices``: the (n, 2) crop positions of its device's defects present at capture.

    None when the positions are unknown (not the simulator's images, or a crop whose box needs the
    image size: only ``tl``, at the sensor's origin, is supported).
    """
    if crop != "tl" or not len(indices):
        return None
    root = _dataset_root(bank.samples[int(indices[0])].path)
    if root is None:
        return None
    table: dict[str, list] = {}
    for row in _read_csv(root / "defects.csv"):
        table.setdefault(row["device"], []).append((int(row["row"]), int(row["col"]), np.datetime64(row["onset"][:19])))
    captured = {str((root / r["path"]).resolve()): np.datetime64(r["captured_at"][:19])
                for r in _read_csv(root / "manifest.csv") if r.get("captured_at")}
    side = bank.patch
    out = []
    for i in np.asarray(indices).tolist():
        s = bank.samples[i]
        when = captured.get(str(Path(s.path).resolve()))
        pts = [(r, c) for r, c, onset in table.get(s.device, [])
               if r < side and c < side and (when is None or onset <= when)]
        out.append(np.array(pts, dtype=np.int64).reshape(-1, 2))
    return out


# ---------------------------------------------------------------- the check

def _test_sample(ctx: AuditContext, n: int) -> np.ndarray:
    split, bank = ctx.cnn_split, ctx.bank
    test = np.asarray(split.test)
    cells = [test[(bank.devices[test] == d) & (bank.labels[test] == c)] for d in split.devices for c in split.classes]
    return spread_sample(cells, min(n, test.size), seeded_rng(ctx.seed, "adversarial"))


def measure(model, inputs: np.ndarray, points: list | None, input_mode: str = "pixels") -> dict:
    """Perturb ``inputs`` against ``model`` (a torch module) and measure where the energy sits.

    Returns a dict of arrays: ``delta``, ``flipped``, ``steps``, ``edge_share``, ``edge_area``,
    ``defect_share``, ``defect_area``.
    """
    from pipeline.srnet.adversarial import perturb_until_flip

    seen = model_inputs(inputs, input_mode)
    lo, hi = (0.0, 1.0) if input_mode == "pixels" else (-1.0, 1.0)
    result = perturb_until_flip(model, seen, step=STEP, max_steps=MAX_STEPS, epsilon=EPSILON, lo=lo, hi=hi)
    shares = [energy_shares(result.delta[i], inputs[i], None if points is None else points[i])
              for i in range(len(inputs))]
    out = {k: np.array([s[k] for s in shares]) for k in ("edge_share", "edge_area", "defect_share", "defect_area")}
    out.update(delta=result.delta, flipped=result.flipped, steps=result.steps)
    return out


def judge(name: str, label: str, m: dict, levels, role: str, *, seed: int = 0) -> list:
    """The figures of one model's measurement: edge (judged with ``role``), defect and flip rate (context)."""
    ok = np.isfinite(m["edge_share"])
    k = int(np.sum(m["edge_share"][ok] > m["edge_area"][ok]))
    lo, hi = bootstrap_mean_ci(m["edge_share"][ok], seed=seed)
    figures = [proportion_figure(
        f"{name}_edge_energy", f"{label}: images whose perturbation energy on edges exceeds the edges' area share",
        k, int(ok.sum()), 0.5, levels, role=role,
        note=f"mean energy share on edges {np.mean(m['edge_share'][ok]):.3f} (bootstrap 95 % {lo:.3f}-{hi:.3f}) "
             f"against an area share of {np.mean(m['edge_area'][ok]):.3f}; above chance: the flip is bought at "
             "content edges")]
    known = np.isfinite(m["defect_share"])
    if known.any():
        kd = int(np.sum(m["defect_share"][known] > m["defect_area"][known]))
        dlo, dhi = bootstrap_mean_ci(m["defect_share"][known], seed=seed)
        figures.append(proportion_figure(
            f"{name}_defect_energy", f"{label}: images whose perturbation energy at defects exceeds their area share",
            kd, int(known.sum()), 0.5, levels, role="context",
            note=f"mean energy share in the {DEFECT_BOX}x{DEFECT_BOX} defect boxes {np.mean(m['defect_share'][known]):.3f}"
                 f" (bootstrap 95 % {dlo:.3f}-{dhi:.3f}) against an area share of "
                 f"{np.mean(m['defect_area'][known]):.3f}; above chance: the model reads the defects (no bias)"))
    figures.append(proportion_figure(f"{name}_flip_rate", f"{label}: crops whose class flipped within "
                                     f"{MAX_STEPS} steps", int(m["flipped"].sum()), len(m["flipped"]), 0.0, levels,
                                     role="context"))
    return figures


def adversarial_check(ctx: AuditContext) -> AdversarialResult:
    """Run the adversarial-perturbation check on the Balanced and Disjoint models (needs ``ctx.cnn``)."""
    started = time.perf_counter()
    result = AdversarialResult("adversarial", "Adversarial perturbations",
                               "Where must a crop change for the model's age class to flip: at content edges "
                               "(a scene shortcut) or at the sensor defects?")
    if ctx.cnn is None or ctx.cnn_split is None:
        return result.skip("the adversarial check needs the CNN models (run without --no-cnn, on data with a "
                           "balanced split).", started)
    bank, split = ctx.bank, ctx.cnn_split
    crop = ctx.cnn.main_crop
    chosen = _test_sample(ctx, ctx.cnn.adversarial_images)
    inputs = bank.crop_input(chosen, crop)
    points = defect_points(bank, chosen, crop)
    models = {"balanced": balanced_model(ctx)}
    groups, _ = disjoint_groups(split, bank)
    if groups:
        sets = protocol_sets(split, groups, ctx.seed, ctx.cnn.max_train)
        idx = sets["disjoint"]
        models["disjoint"] = ctx.store.get("disjoint", cnn_builder(ctx, "disjoint", idx, bank.labels[idx],
                                                                   split.classes))
    else:
        result.notes.append("No Disjoint model (fewer devices than classes): only the Balanced model is perturbed.")
    measured = {}
    for name, trained in models.items():
        with model_runtime(trained):
            measured[name] = measure(trained.model, inputs, points, trained.config.get("input", "pixels"))
        role = "verdict" if name == "balanced" else "susceptibility"
        result.figures += judge(name, f"CNN, {name.title()}", measured[name], ctx.levels, role, seed=ctx.seed)
        m = measured[name]
        result.details[name] = {
            "images": int(len(chosen)), "flipped": int(m["flipped"].sum()),
            "mean_steps": float(m["steps"].mean()),
            "edge_share_mean": float(np.nanmean(m["edge_share"])),
            "edge_share_ci95": list(bootstrap_mean_ci(m["edge_share"], seed=ctx.seed)),
            "edge_area_mean": float(np.mean(m["edge_area"])),
            "defect_share_mean": float(np.nanmean(m["defect_share"])) if np.isfinite(m["defect_share"]).any()
            else None,
            "defect_images": int(np.isfinite(m["defect_share"]).sum())}
    result.details["settings"] = {"step": STEP, "max_steps": MAX_STEPS, "epsilon": EPSILON, "crop": crop,
                                  "edge_quantile": EDGE_QUANTILE, "defect_box": DEFECT_BOX,
                                  "defects_known": points is not None}
    if points is None:
        result.notes.append("Defect positions unknown (only the simulator's ground truth on the 'tl' crop is read): "
                            "the defect figures are left out.")
    if ctx.cnn.method == "srnet-res":
        result.notes.append("srnet-res: the perturbation is made in the model's input (the median residual), "
                            "and measured there against the crop's edges.")
    show = np.arange(min(6, len(chosen)))
    result.examples = {"crops": inputs[show], "deltas": {k: v["delta"][show] for k, v in measured.items()},
                       "flipped": {k: v["flipped"][show] for k, v in measured.items()},
                       "points": None if points is None else [points[i] for i in show],
                       "labels": bank.labels[chosen[show]], "devices": bank.devices[chosen[show]].tolist()}
    result.settle()
    if result.verdict not in (None, "no bias found"):
        result.notes.append("The Balanced model's class flips by changes concentrated at content edges: its decision "
                            "leans on scene content rather than on sensor traces.")
    result.seconds = time.perf_counter() - started
    return result
