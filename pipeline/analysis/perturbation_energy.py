"""Where an adversarial perturbation's energy sits: on content edges, at sensor defects, or elsewhere.

A perturbation that flips a network's class (:func:`pipeline.srnet.adversarial.perturb_until_flip`)
shows which pixels the decision leans on. Its energy (the square, summed over channels) is split
between

* **edges**: the top quartile (``EDGE_QUANTILE``) of the crop's local gradient magnitude (luma,
  central differences), outside the defect boxes; their area share is fixed (about 0.25);
* **defects**: ``DEFECT_BOX`` x ``DEFECT_BOX`` boxes around the defects' crop positions, when known.

A share of energy above the area share means the perturbation concentrates there. Used by the
bias audit's ``adversarial`` check (:mod:`pipeline.analysis.audit.adversarial`) and by the saliency
tool on ``ml_age``'s own SRNet networks (:mod:`pipeline.analysis.saliency.adversarial`). Numpy and
matplotlib only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFECT_BOX", "EDGE_QUANTILE", "EPSILON", "MAX_STEPS", "STEP", "bootstrap_mean_ci", "defect_mask",
           "draw_perturbations", "edge_mask", "energy_shares"]

EDGE_QUANTILE = 0.75
"""Pixels at or above this quantile of local gradient magnitude are edges (the top quartile)."""
DEFECT_BOX = 5
"""Side of the box around a defect counted as 'at the defect'."""
STEP, MAX_STEPS, EPSILON = 0.01, 50, 0.25
"""The perturbation's L-inf step (on [0, 1] inputs), its most steps, and its total L-inf bound."""


def edge_mask(crop: np.ndarray, quantile: float = EDGE_QUANTILE) -> np.ndarray:
    """(P, P) bool: the top ``1 - quantile`` of pixels by local gradient magnitude of the crop's luma.

    Exactly ``round((1 - quantile) * P * P)`` pixels (ties broken by position), so that the area
    share is fixed whatever the content.
    """
    luma = np.asarray(crop, dtype=np.float64).mean(axis=0)
    gy, gx = np.gradient(luma)
    magnitude = np.hypot(gx, gy).ravel()
    k = int(round((1 - quantile) * magnitude.size))
    mask = np.zeros(magnitude.size, bool)
    if k:
        mask[np.argsort(-magnitude, kind="stable")[:k]] = True
    return mask.reshape(luma.shape)


def defect_mask(points: np.ndarray, side: int, box: int = DEFECT_BOX) -> np.ndarray:
    """(side, side) bool: ``box`` x ``box`` squares centred at the crop positions ``points`` (n, 2)."""
    mask = np.zeros((side, side), bool)
    half = box // 2
    for r, c in np.asarray(points, dtype=np.int64).reshape(-1, 2):
        mask[max(0, r - half):r + half + 1, max(0, c - half):c + half + 1] = True
    return mask


def energy_shares(delta: np.ndarray, crop: np.ndarray, points: np.ndarray | None = None) -> dict:
    """Per image: energy share and area share of edges (outside defect boxes) and of the defect boxes.

    ``delta`` and ``crop`` are (C, P, P); ``points`` are the defects' crop positions (None:
    unknown). Energy is the squared perturbation summed over channels.
    """
    energy = np.square(np.asarray(delta, dtype=np.float64)).sum(axis=0)
    total = energy.sum()
    side = energy.shape[0]
    defects = defect_mask(points, side) if points is not None and len(points) else np.zeros_like(energy, bool)
    edges = edge_mask(crop) & ~defects
    out = {"edge_share": float(energy[edges].sum() / total) if total > 0 else float("nan"),
           "edge_area": float(edges.mean()), "defect_share": float("nan"), "defect_area": float("nan")}
    if defects.any():
        out["defect_share"] = float(energy[defects].sum() / total) if total > 0 else float("nan")
        out["defect_area"] = float(defects.mean())
    return out


def bootstrap_mean_ci(values, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling images)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (n_boot, values.size))].mean(axis=1)
    return float(np.quantile(means, (1 - confidence) / 2)), float(np.quantile(means, (1 + confidence) / 2))


def draw_perturbations(examples: dict, title: str | None = None):
    """Grid: each row a test crop, then |perturbation| per model amplified to the visible range; markers.

    ``examples`` holds ``crops`` (N, C, P, P), ``deltas`` (model -> (N, C, P, P)), ``flipped``
    (model -> (N,) bool), ``points`` (None or per crop an (n, 2) array of defect positions),
    ``labels`` and ``devices`` (per crop); ``title`` replaces the first line of the title.
    Returns a matplotlib Figure, or None when there is no crop.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    crops = examples.get("crops")
    if crops is None or not len(crops):
        return None
    names = list(examples["deltas"])
    rows, cols = len(crops), 1 + len(names)
    fig = Figure(figsize=(max(2.1 * cols + 0.6, 5.6), 2.0 * rows + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        image = np.clip(np.transpose(crops[i], (1, 2, 0)), 0, 1)
        ax = axes[i][0]
        ax.imshow(image if image.shape[2] == 3 else image[..., 0], cmap="gray", interpolation="nearest")
        edges = edge_mask(crops[i])
        ax.contour(edges, levels=[0.5], colors="cyan", linewidths=0.5)
        ax.set_title(f"{examples['devices'][i]}, class {examples['labels'][i]}", fontsize=7)
        for j, name in enumerate(names):
            energy = np.sqrt(np.square(examples["deltas"][name][i]).sum(axis=0))
            peak = energy.max()
            gain = 1.0 / peak if peak > 0 else 1.0
            ax2 = axes[i][j + 1]
            ax2.imshow(energy * gain, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax2.contour(edges, levels=[0.5], colors="cyan", linewidths=0.4, alpha=0.6)
            flip = "flipped" if examples["flipped"][name][i] else "not flipped"
            ax2.set_title(f"{name}: x{gain:.0f}, {flip}", fontsize=7)
        for ax_ in axes[i]:
            ax_.set_xticks([])
            ax_.set_yticks([])
            if examples.get("points") is not None:
                for r, c in examples["points"][i]:
                    ax_.add_patch(Rectangle((c - DEFECT_BOX / 2, r - DEFECT_BOX / 2), DEFECT_BOX, DEFECT_BOX,
                                            fill=False, edgecolor="lime", lw=1.0))
            ax_.set_xlim(-0.5, image.shape[1] - 0.5)      # boxes at the border must not widen the axes
            ax_.set_ylim(image.shape[0] - 0.5, -0.5)
    first = title or "Adversarial perturbations (paper Fig. 5)"
    fig.suptitle(f"{first}\ntest crop, then |perturbation| per model scaled by xN to fill the colour range\n"
                 "cyan: edges (top quartile of gradient); green squares: defects", fontsize=8)
    return fig
