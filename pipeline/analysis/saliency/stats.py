"""The saliency figures and their verdict rules, on arrays (no files, no networks).

Three figures per device and method (see :mod:`pipeline.analysis.saliency` for what they
mean): *consistency* (:func:`consistency`: Pearson agreement of maps across runs and across
images), *content* (:func:`structure_features`, :func:`own_and_other_correlations`,
:class:`ContentTally`: Spearman correlation of a map with its own image's structure against the
other images') and *defects* (:func:`defect_shares`, :func:`shift_null`, :class:`DefectTally`:
the share of saliency on the defect neighbourhoods against a circular-shift null),
:func:`method_verdict`, which turns a method's content and defect figures into one phrase with
the thresholds below, and :func:`device_verdict`, the majority of the methods whose maps can
localise and passed the faithfulness checks (:func:`faithfulness_pairs` orders the crops those
checks take, :func:`faithfulness_record` summarises their results for ``saliency.json``).

Only the upsampling of a map to its crop (:func:`defect_shares`) needs torch, imported there.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.ndimage import median_filter
from scipy.stats import rankdata

__all__ = [
    "CONTENT_RHO",
    "DEFECT_LIFT",
    "MIN_CELLS",
    "NO_FAITHFUL_METHOD",
    "SIGNIFICANCE",
    "ContentTally",
    "DefectTally",
    "cell_edges",
    "cells_away_from_defects",
    "consistency",
    "content_correlations",
    "defect_mask",
    "defect_shares",
    "device_verdict",
    "faithfulness_pairs",
    "faithfulness_record",
    "method_verdict",
    "own_and_other_correlations",
    "pearson",
    "pool_cells",
    "shift_null",
    "spearman",
    "structure_features",
    "summarise_defects",
]

DEFECT_LIFT = 1.5
"""A method "looks at defects" when its defect share is at least this multiple of the area share ..."""
SIGNIFICANCE = 0.05
"""... and no more than this fraction of the shifted masks reach the observed share."""
CONTENT_RHO = 0.15
"""A method "follows content" when, for some feature, its maps correlate with the structure of
their own image more than with that of the other test images by at least this much (Spearman rho),
in a direction that holds over the maps of a target class (see :class:`ContentTally`), and by
more than three standard errors."""
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""BT.601 luma weights of the R, G and B channels."""


def cell_edges(size: int, cells: int) -> np.ndarray:
    """Pixel boundaries of ``cells`` equal (up to rounding) cells along a side of ``size``."""
    return np.round(np.linspace(0, size, cells + 1)).astype(int)


def pool_cells(values: np.ndarray, shape: tuple[int, int], reducer: Callable = np.median) -> np.ndarray:
    """Reduce a 2-D array to a ``shape`` grid of cells (median by default).

    Cells are equal blocks when the sizes divide, otherwise rounded equal partitions.
    """
    values = np.asarray(values)
    rows, cols = shape
    height, width = values.shape
    if height % rows == 0 and width % cols == 0:
        blocks = values.reshape(rows, height // rows, cols, width // cols).transpose(0, 2, 1, 3)
        return reducer(blocks.reshape(rows, cols, -1), axis=2)
    re_, ce_ = cell_edges(height, rows), cell_edges(width, cols)
    out = np.empty(shape, dtype=np.float64)
    for i in range(rows):
        for j in range(cols):
            out[i, j] = reducer(values[re_[i]:re_[i + 1], ce_[j]:ce_[j + 1]])
    return out


def structure_features(crop: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Local image structure of one network input at map resolution.

    Parameters
    ----------
    crop : ndarray, (C, P, P)
        The network input (C = 3: BT.601 luma of the channels; C = 1: the channel).
    shape : (int, int)
        The saliency map's (h, w).

    Returns
    -------
    dict
        ``luminance``: cell median of the luma; ``texture``: cell median of the squared
        gradient magnitude of the 3x3-median-filtered luma; for RGB inputs also ``colour``:
        cell median of the chroma (largest minus smallest channel) of the 3x3-median-filtered
        channels.  All three ignore isolated defective pixels.
    """
    crop = np.asarray(crop, dtype=np.float32)
    luma = np.tensordot(LUMA, crop, axes=([0], [0])) if crop.shape[0] == 3 else crop[0]
    smooth = median_filter(luma, size=3, mode="reflect")
    gy, gx = np.gradient(smooth)
    features = {"luminance": pool_cells(luma, shape), "texture": pool_cells(gx * gx + gy * gy, shape)}
    if crop.shape[0] == 3:
        channels = median_filter(crop, size=(1, 3, 3), mode="reflect")
        features["colour"] = pool_cells(channels.max(axis=0) - channels.min(axis=0), shape)
    return features


def _ranks(values: np.ndarray) -> np.ndarray:
    return rankdata(values.ravel())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped arrays (NaN if either is constant)."""
    return pearson(_ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64)))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped arrays (NaN if either is constant)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denominator if denominator > 0 else float("nan")


def content_correlations(saliency: np.ndarray, crop: np.ndarray) -> dict[str, float]:
    """Spearman correlation of one raw map with each :func:`structure_features` feature."""
    features = structure_features(crop, saliency.shape)
    return {name: spearman(saliency, values) for name, values in features.items()}


def _standardised_ranks(rows: np.ndarray) -> np.ndarray:
    """Ranks of each row, centred and scaled to unit norm (NaN rows where a row is constant)."""
    ranks = rankdata(rows.reshape(len(rows), -1), axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(ranks, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, ranks / norms, np.nan)


MIN_CELLS = 8
"""Fewest map cells a content correlation is computed on (fewer: NaN, the map is left out)."""


def own_and_other_correlations(maps: np.ndarray, features: np.ndarray,
                               keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spearman correlations of maps with the structure of their own and of the other images.

    Parameters
    ----------
    maps : ndarray, (M, h, w)
        Raw maps of M images seen by one network (same crop position).
    features : ndarray, (M, h, w)
        One structure feature of the same M images, in the same order.
    keep : ndarray of bool, (M, h, w), optional
        The cells each map's correlations use (default: all); map i is compared with every
        image's feature on map i's cells.

    Returns
    -------
    own : ndarray, (M,)
        Spearman correlation of map i with the feature of image i.
    other : ndarray, (M,)
        Mean Spearman correlation of map i with the feature of every other image j: what
        ``own`` would be if the map did not follow its own image (it shares the map's
        smoothness and any fixed position bias).  NaN when M < 2.
    other_abs : ndarray, (M,)
        The same for the absolute correlations (what ``|own|`` would be).
    """
    maps = np.asarray(maps, np.float64)
    features = np.asarray(features, np.float64)
    count = len(maps)
    if keep is None:
        matrix = _standardised_ranks(maps) @ _standardised_ranks(features).T  # (i, j): map i vs feature j
    else:
        flat_maps, flat_features = maps.reshape(count, -1), features.reshape(count, -1)
        flat_keep = np.asarray(keep, bool).reshape(count, -1)
        matrix = np.full((count, count), np.nan)
        for i in range(count):
            cells = flat_keep[i]
            if cells.sum() < MIN_CELLS:
                continue
            zs = _standardised_ranks(flat_maps[i][cells][None])[0]
            matrix[i] = _standardised_ranks(flat_features[:, cells]) @ zs
    own = np.diag(matrix).copy()
    if count < 2:
        return own, np.full(count, np.nan), np.full(count, np.nan)
    off = matrix.copy()
    off[np.diag_indices(count)] = np.nan
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows of constant maps are all NaN
        return own, np.nanmean(off, axis=1), np.nanmean(np.abs(off), axis=1)


def cells_away_from_defects(points: np.ndarray, size: tuple[int, int], radius: int,
                            shape: tuple[int, int]) -> np.ndarray:
    """Map cells (``shape``) that touch no defect neighbourhood of a crop of ``size`` pixels."""
    if len(points) == 0:
        return np.ones(shape, dtype=bool)
    return ~pool_cells(defect_mask(points, size, radius), shape, reducer=np.max).astype(bool)


class ContentTally:
    """Per feature and target class: own-image correlations against the other images'.

    For each map ``d = rho_own - mean_j rho(map, feature of image j)``; a *systematic* relation
    makes ``d`` keep its sign over the maps explained as one class (the network finds its
    evidence in bright, or dark, or textured, or colourful parts), so the figure of a feature is
    the mean over target classes (weighted by their maps) of ``|mean d|``, with its standard
    error.  ``any_relation`` (mean ``|rho_own| - mean_j |rho|``) is reported too: an
    intermediate layer echoes its own image's structure whatever the decision rests on, so it
    is larger than zero even for a network that reads defects, and is not used for the verdict.
    """

    def __init__(self):
        self.values: dict[str, dict[str, list]] = {}

    def add(self, feature: str, own: np.ndarray, other: np.ndarray, other_abs: np.ndarray,
            groups: np.ndarray) -> None:
        """Add one group of maps (:func:`own_and_other_correlations`; ``groups``: target classes)."""
        keep = np.isfinite(own) & np.isfinite(other) & np.isfinite(other_abs)
        store = self.values.setdefault(feature, {"own": [], "other": [], "other_abs": [], "group": []})
        store["own"].extend(own[keep].tolist())
        store["other"].extend(other[keep].tolist())
        store["other_abs"].extend(other_abs[keep].tolist())
        store["group"].extend(np.asarray(groups)[keep].tolist())

    def summary(self) -> dict[str, Any]:
        """Per feature figures; ``figure``/``feature``: the largest systematic relation and its feature."""
        out: dict[str, Any] = {}
        best_name, best = None, -np.inf
        for name, store in self.values.items():
            own, other = np.asarray(store["own"]), np.asarray(store["other"])
            if own.size == 0:
                out[name] = {"n_maps": 0}
                continue
            any_relation = np.abs(own) - np.asarray(store["other_abs"])
            difference, groups = own - other, np.asarray(store["group"])
            systematic, variance, by_class = 0.0, 0.0, {}
            for label in sorted(set(groups.tolist())):
                values = difference[groups == label]
                weight = values.size / difference.size
                systematic += weight * abs(float(values.mean()))
                variance += weight ** 2 * (values.var(ddof=1) / values.size if values.size > 1 else np.nan)
                by_class[str(label)] = {"mean_difference": float(values.mean()), "n_maps": int(values.size)}
            out[name] = {
                "n_maps": int(own.size),
                "mean_rho": float(own.mean()),
                "mean_abs_rho": float(np.abs(own).mean()),
                "mean_abs_rho_other_images": float(np.mean(store["other_abs"])),
                "any_relation": float(any_relation.mean()),
                "systematic": systematic,
                "se": float(math.sqrt(variance)),
                "by_target_class": by_class,
            }
            if systematic > best:
                best_name, best = name, systematic
        out["figure"] = None if best_name is None else best
        out["feature"] = best_name
        return out


def defect_mask(points: np.ndarray, size: tuple[int, int], radius: int) -> np.ndarray:
    """Boolean (H, W) mask of every pixel within Chebyshev distance ``radius`` of a point.

    ``points`` is an (n, 2) integer array of (row, col) inside the frame.
    """
    height, width = size
    mask = np.zeros((height, width), dtype=bool)
    for row, col in np.asarray(points, dtype=np.int64).reshape(-1, 2):
        mask[max(row - radius, 0):row + radius + 1, max(col - radius, 0):col + radius + 1] = True
    return mask


def _upsampled_mass(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """ReLU of a raw map, bilinearly upsampled (align_corners=False), as float64 mass."""
    from pipeline.srnet.cam import upsample_maps

    positive = np.maximum(np.asarray(saliency, dtype=np.float32), 0.0)
    return upsample_maps(positive[None], size, normalise=False)[0].astype(np.float64)


def shift_null(mass: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of ``mass`` inside ``mask`` shifted circularly by every offset, (H, W).

    Entry ``[dy, dx]`` is ``sum(mass * roll(mask, (dy, dx))) / sum(mass)``; entry ``[0, 0]`` is
    the observed share and the mean over all entries is exactly ``mask.mean()``.
    """
    total = mass.sum()
    spectrum = np.fft.rfft2(mass) * np.conj(np.fft.rfft2(mask.astype(np.float64)))
    # correlation[d] = sum_p mass[p] mask[p - d]: the circular cross-correlation
    correlation = np.fft.irfft2(spectrum, s=mass.shape)
    return correlation / total


def defect_shares(saliency: np.ndarray, points: np.ndarray, size: tuple[int, int],
                  radius: int) -> dict[str, Any] | None:
    """Saliency share on the defect neighbourhoods of one crop, its area share and shift null.

    Returns None when the crop holds no defect or the map has no positive mass.
    """
    if len(points) == 0:
        return None
    mass = _upsampled_mass(saliency, size)
    if not mass.sum() > 0:
        return None
    mask = defect_mask(points, size, radius)
    null = shift_null(mass, mask)
    return {"share": float((mass * mask).sum() / mass.sum()), "area": float(mask.mean()), "null": null}


class DefectTally:
    """Running totals of :func:`defect_shares` records (the shift nulls are summed, not kept).

    Parameters
    ----------
    min_shift : int
        Shifts closer than this to no shift (circular Chebyshev distance, pixels) are left out
        of the null: they keep each defect inside the same map cell (or its own neighbourhood)
        and so measure the observed saliency again rather than saliency unrelated to the
        defects.  :func:`explain_run` uses one map cell plus the neighbourhood radius.
    """

    def __init__(self, min_shift: int = 0):
        self.min_shift = int(min_shift)
        self.shares: list[float] = []
        self.areas: list[float] = []
        self.null_sum: np.ndarray | None = None

    def add(self, record: dict[str, Any]) -> None:
        """Add one map's record (``share``, ``area``, ``null``)."""
        self.shares.append(record["share"])
        self.areas.append(record["area"])
        self.null_sum = record["null"].copy() if self.null_sum is None else self.null_sum + record["null"]

    def summary(self) -> dict[str, Any]:
        """Mean share, mean area share, lift, the null's 95th percentile and the p-value."""
        if not self.shares:
            return {"n_maps": 0, "note": "n/a: no defect positions inside the crops (or no positive saliency)"}
        share = float(np.mean(self.shares))
        area = float(np.mean(self.areas))
        null = self.null_sum / len(self.shares)
        height, width = null.shape
        dy, dx = np.arange(height), np.arange(width)
        distance = np.maximum(np.minimum(dy, height - dy)[:, None], np.minimum(dx, width - dx)[None, :])
        values = null[distance >= self.min_shift]
        if values.size == 0:
            values = null.ravel()
        exceed = int(np.count_nonzero(values >= share - 1e-12))
        return {
            "n_maps": len(self.shares),
            "share": share,
            "area_share": area,
            "lift": share / area if area > 0 else float("nan"),
            "null_mean": float(values.mean()),
            "null_p95": float(np.quantile(values, 0.95)),
            "null_shifts": int(values.size),
            "min_shift_px": self.min_shift,
            # a permutation p-value: the observed statistic counts as one draw of the null
            "p_value": (1 + exceed) / (1 + values.size),
        }


def summarise_defects(records: list[dict], min_shift: int = 0) -> dict[str, Any]:
    """Mean share, mean area share, lift and the shift-null p-value over maps of one method.

    The null statistic for a shift is the mean over maps of the share with every map's
    defect mask shifted circularly by it (shifts closer than ``min_shift`` to none left out);
    the p-value is ``(1 + number of shifts reaching the observed mean share) / (1 + number of
    shifts)``.
    """
    tally = DefectTally(min_shift)
    for record in records:
        tally.add(record)
    return tally.summary()


def _content_is_high(content: dict) -> bool:
    feature = content.get("feature")
    if feature is None:
        return False
    stats = content[feature]
    se = stats["se"] if stats["se"] is not None and np.isfinite(stats["se"]) else float("inf")
    return content["figure"] >= CONTENT_RHO and content["figure"] > 3 * se


def _defects_are_high(defects: dict) -> bool:
    return defects.get("n_maps", 0) > 0 and defects["lift"] >= DEFECT_LIFT and defects["p_value"] <= SIGNIFICANCE


def method_verdict(content: dict, defects: dict) -> str:
    """One phrase: what the maps of one method follow."""
    on_content, on_defects = _content_is_high(content), _defects_are_high(defects)
    if on_defects and not on_content:
        return "defects"
    if on_content and not on_defects:
        return "content"
    if on_content and on_defects:
        return "both content and defects"
    if defects.get("n_maps", 0) == 0:
        return "no defect positions to test; content not detected"
    return "neither content nor defects"


NO_FAITHFUL_METHOD = "undetermined: no saliency method passed the faithfulness checks"
"""The device's verdict when every method's maps were found unfaithful."""


def device_verdict(methods: dict[str, dict]) -> tuple[str, list[str]]:
    """The device's verdict from its methods' summaries, and the methods that voted.

    Parameters
    ----------
    methods : dict
        Per method, its summary: ``verdict`` (:func:`method_verdict`), ``map_shape`` and
        ``verdict_used`` (False for a method that failed the faithfulness checks; missing means
        True).

    Returns
    -------
    verdict : str
        The most common verdict of the methods that vote (ties: the first of them), or
        :data:`NO_FAITHFUL_METHOD` when every method is unfaithful.
    voting : list of str
        The methods that vote: the faithful ones whose maps have more than 4x4 cells (a coarser
        map cannot localise anything), or every faithful one if none is finer.
    """
    usable = [m for m, s in methods.items() if s.get("verdict_used", True)]
    if not usable:
        return NO_FAITHFUL_METHOD, []
    voting = [m for m in usable if np.prod(methods[m]["map_shape"]) > 16] or usable
    return Counter(methods[m]["verdict"] for m in voting).most_common(1)[0][0], voting


def faithfulness_pairs(held_out: np.ndarray, truth: np.ndarray, n_crops: int) -> list[tuple[int, int]]:
    """Every (image, crop) index pair of one run's test images, in the order the faithfulness checks take them.

    Parameters
    ----------
    held_out : ndarray of bool, (images,)
        The run's test images.
    truth : ndarray of int, (images,)
        The images' labels.
    n_crops : int
        Crop networks per image.

    Returns
    -------
    list of (int, int)
        The images alternate between their true classes (first-seen order within a class), each
        with every crop in turn.
    """
    by_class: dict[int, list[int]] = {}
    for i in np.flatnonzero(held_out):
        by_class.setdefault(int(truth[i]), []).append(int(i))
    queues = list(by_class.values())
    images: list[int] = []
    while any(queues):
        for queue in queues:
            if queue:
                images.append(queue.pop(0))
    return [(i, c) for i in images for c in range(n_crops)]


def faithfulness_record(verdict: dict[str, Any], curves: list, checks: list, *, spans: np.ndarray,
                        **counts: Any) -> dict[str, Any]:
    """One method's faithfulness results, as ``saliency.json`` stores them.

    Parameters
    ----------
    verdict : dict
        :meth:`pipeline.srnet.faithfulness.FaithfulnessVerdict.to_dict`.
    curves : list of DeletionInsertion
        The method's curves (one per crop network with informative crops; may be empty).
    checks : list of RandomisationCheck
        The method's randomisation checks.
    spans : ndarray
        ``p(input) - p(baseline)`` of every crop scanned for informativeness.
    **counts
        Stored as they are (``run``, ``n_scanned``, ``n_informative``, ``n_randomised``, ``n_crops``).

    Returns
    -------
    dict
        The verdict's fields and the counts; ``median_span_scanned``; ``auc`` (mean over the
        informative crops of the areas under the four curves: map and random order, deletion and
        insertion) and ``curves`` (``fractions``, the mean curves and their standard errors), both
        None without curves; ``mean_probability`` and ``mean_baseline_probability`` of the explained
        class on those crops; ``randomisation_cascade``: median ``|rho|`` after each cascade step,
        or None.
    """
    record = {**verdict, **counts, "median_span_scanned": float(np.median(spans)) if len(spans) else None,
              "auc": None, "curves": None, "mean_probability": None, "mean_baseline_probability": None,
              "randomisation_cascade": None}
    if curves:
        pooled = {name: np.concatenate([getattr(result, name) for result in curves])
                  for name in ("deletion", "insertion", "deletion_random", "insertion_random")}
        fractions = np.asarray(curves[0].fractions)
        count = len(pooled["deletion"])
        record["auc"] = {name: float(np.trapezoid(values, fractions, axis=1).mean()) for name, values in pooled.items()}
        record["curves"] = {"fractions": fractions.tolist(),
                            **{name: values.mean(axis=0).tolist() for name, values in pooled.items()},
                            **{f"{name}_se": (values.std(axis=0, ddof=1) / math.sqrt(count)).tolist()
                               if count > 1 else None for name, values in pooled.items()}}
        record["mean_probability"] = float(pooled["deletion"][:, 0].mean())
        record["mean_baseline_probability"] = float(pooled["deletion"][:, -1].mean())
    if checks and checks[0].cascade:
        record["randomisation_cascade"] = {
            stage: float(np.median(np.abs(np.concatenate([check.cascade[stage] for check in checks]))))
            for stage in checks[0].cascade}
    return record


def consistency(maps: np.ndarray, targets: np.ndarray, held_out: np.ndarray) -> dict[str, Any]:
    """Map agreement across runs (same image and crop) and across images (same run, crop, class).

    Parameters
    ----------
    maps : ndarray, (runs, images, crops, h, w)
        Raw maps of one method.
    targets : ndarray of int, (runs, images, crops)
        The class each map explains.
    held_out : ndarray of bool, (runs, images)
        Whether an image is a test image of a run.

    Returns
    -------
    dict
        ``across_runs``: mean Pearson correlation of the maps of the same image and crop made by
        two runs' networks (None with a note for one run), also restricted to images both runs
        held out; ``across_images``: mean Pearson correlation, within a run and crop, of the maps
        of two test images explained as the same class; with the number of pairs of each.
    """
    n_runs, n_images, n_crops = maps.shape[:3]
    out: dict[str, Any] = {}
    if n_runs < 2:
        out["across_runs"] = None
        out["across_runs_note"] = "n/a: one run"
    else:
        values, both_held_out = [], []
        for a in range(n_runs):
            for b in range(a + 1, n_runs):
                for i in range(n_images):
                    for c in range(n_crops):
                        value = pearson(maps[a, i, c], maps[b, i, c])
                        if np.isfinite(value):
                            values.append(value)
                            if held_out[a, i] and held_out[b, i]:
                                both_held_out.append(value)
        out["across_runs"] = float(np.mean(values)) if values else None
        out["across_runs_pairs"] = len(values)
        out["across_runs_note"] = ("every run's networks explain every image held out by any run (an image held out "
                                   "by one run may be a training image of another)")
        out["across_runs_held_out_by_both"] = float(np.mean(both_held_out)) if both_held_out else None
        out["across_runs_held_out_pairs"] = len(both_held_out)
    values = []
    for r in range(n_runs):
        members = np.flatnonzero(held_out[r])
        for c in range(n_crops):
            for x, i in enumerate(members):
                for j in members[x + 1:]:
                    if targets[r, i, c] == targets[r, j, c]:
                        value = pearson(maps[r, i, c], maps[r, j, c])
                        if np.isfinite(value):
                            values.append(value)
    out["across_images"] = float(np.mean(values)) if values else None
    out["across_images_pairs"] = len(values)
    return out
