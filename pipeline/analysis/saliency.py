"""Does SRNet look at sensor defects or at image content?  Saliency figures for a finished run.

For every device of an ``ml_age`` output folder trained with ``--methods ...,srnet``, the crop
networks of each SRNet run (``srnet/<device>/run_XX/srnet_<crop>.pt``) explain the test images
of the runs (``splits/<device>/run_XX.csv``) with CAM-family maps
(:mod:`pipeline.srnet.cam`, target: each crop network's predicted class), and three figures
answer the question of the slides in ``../shared/papers`` with numbers:

consistency
    Pearson correlation of the raw maps of the same image and crop made by the networks of
    different runs (``"n/a: one run"`` when SRNet was trained on one run), and, within a run,
    between the maps of different test images explained as the same class.  Age traces sit
    at fixed sensor positions, the same in every image of a class, so maps driven by them
    agree across images and runs; maps driven by content follow each image's content.
content
    Spearman correlation, within each map, between saliency and local image structure at the
    map's resolution (one value per map cell, from the very crop the network saw): luminance
    (cell median of luma), texture (cell median of the squared gradient of the 3x3-median-
    filtered luma) and, for RGB inputs, colour (cell median of the chroma of the 3x3-median-
    filtered channels).  Median filter and cell medians make all three insensitive to a few
    defective pixels, so a map that follows defects does not score as "content".  The sign of
    the relation may differ between images and classes (one class may be recognised by its
    bright parts, the other by its dark parts), and smooth maps correlate with smooth features
    by chance; so the figure compares each map's ``|rho|`` with the structure of its own image
    to its mean ``|rho|`` with the structure of the other test images seen by the same network
    (same crop position), which share the smoothness and any fixed position bias but not the
    content.  Only the map cells that touch no defect neighbourhood count, so that saliency on
    the defects -- whose visibility itself depends on the scene: a hot pixel stands out in a
    dark area and drowns in a bright one -- is not taken for content.  The content figure is
    the best feature's mean difference, within each target class, between the map's rho with its
    own image and its mean rho with the other images (absolute value of the class means,
    weighted by their maps): a relation that keeps its direction over a class's maps -- "the
    evidence is in the colourful parts" -- and not merely the echo of its own image's structure
    that any intermediate layer shows (reported as ``any_relation``).
defects
    The share of saliency mass (ReLU of the raw map, bilinearly upsampled to the crop,
    ``align_corners=False``, never normalised) inside the defect neighbourhoods -- every
    pixel within ``neighbourhood`` pixels (Chebyshev distance, default 2, i.e. a 5x5 box, the
    extent of a demosaiced, JPEG-compressed hot pixel) of a defect -- against the share of the
    crop's area they cover.  Defect positions are the ground truth of a synthetic dataset
    (``defects.csv`` beside its manifest; a defect counts for an image when its onset is not
    later than the image's capture time), or else the defects the run identified from its
    trusted images (``defects/<device>/run_XX.csv``, all of them).  The significance comes
    from a permutation null: the same statistic with every defect mask shifted circularly by
    the same offset, over every offset of the crop that moves each defect out of its own map
    cell (at least one cell plus the neighbourhood radius); its mean is close to the area
    share.

Outputs (in ``out``): ``saliency.json`` (per device and method; settings; provenance),
``saliency.md`` (a short verdict), ``saliency_maps.csv`` (one row per map), ``maps/<device>.npz``
(the raw maps), and ``sheets/<device>.png`` (contact sheets: crops with their defect positions,
and one overlay row per method, shown on one colour scale per device and method).

torch is imported only inside the functions that need it (through :mod:`pipeline.srnet`).
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.analysis.provenance import (
    package_versions,
    read_json,
    utc_now,
    write_json,
)
from pipeline.data.atomic import atomic_write, atomic_write_text

__all__ = [
    "ALL_METHODS",
    "DEFAULT_METHODS",
    "ContentTally",
    "DefectTally",
    "SaliencyConfig",
    "cells_away_from_defects",
    "content_correlations",
    "defect_mask",
    "defect_shares",
    "explain_run",
    "own_and_other_correlations",
    "pool_cells",
    "shift_null",
    "structure_features",
]

ALL_METHODS = ("cam", "gradcam", "gradcam++", "scorecam")
DEFAULT_METHODS = ("cam", "gradcam", "gradcam++")
"""Score-CAM is left out of the default: 512 forward passes per crop (about 10 s per 64x64 crop
on two CPU cores)."""
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
AUTO_MIN_CELLS = 8
"""``layer='auto'`` explains layer12 when its map has at least this many cells per side."""


def _srnet_side(patch: int, halvings: int) -> int:
    """Side of an SRNet map after ``halvings`` stride-2 poolings ('SAME': ceil at each step)."""
    side = int(patch)
    for _ in range(halvings):
        side = -(-side // 2)
    return side


@dataclass
class SaliencyConfig:
    """Settings of a saliency analysis (all recorded in ``saliency.json``).

    Parameters
    ----------
    methods : tuple of str
        From :data:`ALL_METHODS`.
    neighbourhood : int
        Chebyshev radius in pixels of a defect's neighbourhood (2: a 5x5 box).
    score_cam_batch : int
        Masked inputs per forward pass of Score-CAM.
    layer : str
        SRNet layer whose output Grad-CAM, Grad-CAM++ and Score-CAM explain: a stage name
        (``'layer12'`` is the map before global average pooling, one cell per 16 pixels;
        ``'layer10'`` one per 8; ``'layer9'`` one per 4), or ``'auto'`` (default): ``layer12``
        when its map has at least 8x8 cells (patches of 113 pixels and more, e.g. the paper's
        256: 16x16), else ``layer9`` (16x16 cells for the ``cpu`` preset's 64-pixel patches,
        where ``layer12`` has 4x4 cells that each see nearly the whole crop and localise
        nothing).  CAM exists only at ``layer12`` and is always computed there.
    device : str
        torch device: ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'``.
    num_threads : int or None
        CPU threads for torch (None: the run's SRNet setting, else all cores).
    sheet_images : int
        Test images per device shown in the contact sheet.
    progress : bool
        Show progress bars.
    """

    methods: tuple = DEFAULT_METHODS
    neighbourhood: int = 2
    score_cam_batch: int = 64
    layer: str = "auto"
    device: str = "auto"
    num_threads: int | None = None
    sheet_images: int = 4
    progress: bool = True

    def __post_init__(self):
        self.methods = tuple(dict.fromkeys(m.strip().lower() for m in self.methods))
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown saliency method(s) {unknown}: choose from {', '.join(ALL_METHODS)}")
        if int(self.neighbourhood) != self.neighbourhood or self.neighbourhood < 0:
            raise ValueError(f"neighbourhood must be an integer >= 0 (pixels), got {self.neighbourhood!r}")
        if self.layer not in ("auto", "layer12") and "cam" in self.methods:
            raise ValueError(f"CAM is defined only at layer12 (the input of global average pooling), not at "
                             f"{self.layer!r}: drop cam from the methods, or use --layer auto or layer12")

    def layer_for(self, method: str, patch: int) -> str:
        """The layer a method explains for crops of ``patch`` pixels (see ``layer``)."""
        if method == "cam":
            return "layer12"
        if self.layer != "auto":
            return self.layer
        return "layer12" if _srnet_side(patch, 4) >= AUTO_MIN_CELLS else "layer9"
        if self.score_cam_batch < 1 or self.sheet_images < 0:
            raise ValueError("score_cam_batch must be >= 1 and sheet_images >= 0")


# ====================================================================== pure figures (numpy only)

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
    from scipy.ndimage import median_filter

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
    from scipy.stats import rankdata

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
    from scipy.stats import rankdata

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


# ====================================================================== run folder reading

@dataclass
class _DeviceRuns:
    device: str
    runs: list[int]                       # SRNet runs with every crop checkpoint
    test: dict[int, list[tuple[str, int]]]  # run -> [(path, label)]
    classes: list[int] = field(default_factory=list)  # label of each output column of the networks
    skipped: dict[int, str] = field(default_factory=dict)


def _run_number(name: str) -> int | None:
    match = re.fullmatch(r"run_(\d+)(\.csv|\.json)?", name)
    return int(match.group(1)) if match else None


def _srnet_runs(run_dir: Path, device: str, crops: Sequence[str]) -> _DeviceRuns:
    from pipeline.data.splits import read_split

    found = _DeviceRuns(device, [], {})
    folder = run_dir / "srnet" / device
    for run_folder in sorted(folder.iterdir()) if folder.is_dir() else []:
        run = _run_number(run_folder.name)
        if run is None or not run_folder.is_dir():
            continue
        part = run_dir / "parts" / device / f"run_{run:02d}.json"
        missing = [c for c in crops if not (run_folder / f"srnet_{c}.pt").exists()]
        if missing:
            found.skipped[run] = f"no checkpoint for crop(s) {', '.join(missing)}"
            continue
        part_record = read_json(part) if part.exists() else {}
        if "srnet" not in part_record.get("methods", []):
            found.skipped[run] = "SRNet training of this run did not finish (resume the ml_age run)"
            continue
        first = next((p for p in part_record.get("predictions", []) if p.get("method") == "srnet"), {})
        columns = [key[2:] for key in first if key.startswith("p_")]
        if columns:
            found.classes = [int(c) for c in columns]
        split_path = run_dir / "splits" / device / f"run_{run:02d}.csv"
        if not split_path.exists():
            found.skipped[run] = f"split file {split_path} is missing"
            continue
        split = read_split(split_path)
        found.runs.append(run)
        found.test[run] = list(zip(split.test_paths, split.test_labels))
    return found


def _devices(run_dir: Path) -> list[str]:
    folder = run_dir / "srnet"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _synthetic_defects(record: dict, run_dir: Path) -> tuple[Path | None, Path | None]:
    """(defects.csv, manifest) of a synthetic dataset, or (None, None) for real data.

    The ground truth is the ``defects.csv`` recorded by ``ml_age`` for the embedded dataset, or
    the one beside the run's manifest when that folder is a simulator output (its
    ``config.json`` names the simulator as generator).
    """
    from pipeline.data.simulator import GENERATOR

    text = record.get("manifest", {}).get("path") or ""
    manifest = Path(text) if text else None
    candidates = []
    synthetic = record.get("synthetic", {})
    if synthetic.get("defects"):
        candidates.append(Path(synthetic["defects"]))
    if manifest is not None:
        try:
            generator = read_json(manifest.parent / "config.json").get("generator")
        except (OSError, ValueError, AttributeError):
            generator = None
        if generator == GENERATOR:
            candidates.append(manifest.parent / "defects.csv")
    for path in candidates:
        if manifest is not None and manifest.is_file() and path.is_file():
            return path, manifest
    return None, None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


class _DefectPositions:
    """Defect positions (sensor frame) per device and image, from ground truth or a run's table."""

    def __init__(self, run_dir: Path, record: dict):
        self.run_dir = run_dir
        self.truth_path, manifest_path = _synthetic_defects(record, run_dir)
        self.capture: dict[str, np.datetime64] = {}
        self.truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.truth_path is not None:
            rows = _read_csv(self.truth_path)
            by_device: dict[str, list] = {}
            for row in rows:
                by_device.setdefault(row["device"], []).append(row)
            for device, items in by_device.items():
                positions = np.array([[int(r["row"]), int(r["col"])] for r in items], dtype=np.int64)
                onsets = np.array([np.datetime64(r["onset"], "s") for r in items])
                self.truth[device] = (positions, onsets)
            root = manifest_path.parent
            for row in _read_csv(manifest_path):
                path = Path(row["path"])
                path = path if path.is_absolute() else root / path
                if row.get("captured_at"):
                    self.capture[str(path.resolve())] = np.datetime64(row["captured_at"][:19], "s")
        self.identified: dict[tuple[str, int], np.ndarray] = {}

    @property
    def source(self) -> str:
        if self.truth_path is not None:
            return f"ground truth ({self.truth_path}); a defect counts from its onset on"
        return "defects identified by each run (defects/<device>/run_XX.csv), all of them"

    def for_image(self, device: str, run: int, path: str) -> np.ndarray:
        """(n, 2) sensor positions (row, col) of the defects that count for this image."""
        if self.truth_path is not None:
            positions, onsets = self.truth.get(device, (np.zeros((0, 2), np.int64), np.array([], "datetime64[s]")))
            when = self.capture.get(str(Path(path).resolve()))
            if when is None:
                return positions  # capture time unknown: every defect of the device
            return positions[onsets <= when]
        key = (device, run)
        if key not in self.identified:
            table = self.run_dir / "defects" / device / f"run_{run:02d}.csv"
            rows = _read_csv(table) if table.exists() else []
            self.identified[key] = np.array([[int(float(r["row"])), int(float(r["col"]))] for r in rows],
                                            dtype=np.int64).reshape(-1, 2)
        return self.identified[key]


def _crop_geometry(image_shape: tuple[int, ...], config) -> dict[str, tuple[int, int, int, int, int]]:
    """Per crop: (top, left, bottom, right, step) in the frame of ``extract_crops``' source.

    ``step`` is 2 for a CFA plane (plane pixel (i, j) is sensor pixel (2i, 2j) of the (0, 0) plane,
    the one :func:`pipeline.srnet.crops.extract_crops` uses by default), else 1.
    """
    from pipeline.srnet.crops import crop_boxes

    if config.channels == "cfa-plane":
        plane_shape = ((image_shape[0] + 1) // 2, (image_shape[1] + 1) // 2)
        boxes = crop_boxes(plane_shape, config.patch, config.crops, align=1)
        return {name: (*box, 2) for name, box in boxes.items()}
    boxes = crop_boxes(image_shape, config.patch, config.crops, align=2)
    return {name: (*box, 1) for name, box in boxes.items()}


def _points_in_crop(points: np.ndarray, box: tuple[int, int, int, int, int]) -> np.ndarray:
    top, left, bottom, right, step = box
    if len(points) == 0:
        return np.zeros((0, 2), np.int64)
    if step == 2:
        on_plane = (points[:, 0] % 2 == 0) & (points[:, 1] % 2 == 0)
        points = points[on_plane] // 2
    inside = (points[:, 0] >= top) & (points[:, 0] < bottom) & (points[:, 1] >= left) & (points[:, 1] < right)
    return points[inside] - np.array([top, left])


# ====================================================================== the analysis

def explain_run(run_dir: str | Path, out_dir: str | Path | None = None, config: SaliencyConfig | None = None,
                *, log: Callable[[str], None] = print) -> dict:
    """Saliency maps and figures for every device of a finished ``ml_age`` run with SRNet.

    Parameters
    ----------
    run_dir : path
        Output folder of ``python -m pipeline.ml_age --methods ...,srnet``.
    out_dir : path, optional
        Where to write (default ``run_dir / "saliency"``).
    config : SaliencyConfig, optional
        Methods, neighbourhood, device and display settings.
    log : callable
        Receives progress and notes.

    Returns
    -------
    dict
        The content of ``saliency.json`` plus ``verdict_text`` and ``files`` (paths written).

    Raises
    ------
    FileNotFoundError
        ``run_dir`` is not an ``ml_age`` output folder, or holds no finished SRNet run.
    """
    config = config or SaliencyConfig()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "saliency"
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an ml_age output folder (no config.json); "
                                "give the --out folder of `python -m pipeline.ml_age --methods ...,srnet`")
    record = read_json(config_path)
    if "srnet" not in record:
        raise FileNotFoundError(f"{run_dir}: this run did not train SRNet (config.json has no 'srnet' section); "
                                "run `python -m pipeline.ml_age --methods fg,nb,svm,srnet` first")
    from pipeline.srnet.presets import SRNetConfig

    srnet_config = SRNetConfig.from_dict(record["srnet"])
    devices = {}
    for device in _devices(run_dir):
        found = _srnet_runs(run_dir, device, srnet_config.crops)
        if found.runs:
            devices[device] = found
        else:
            log(f"{device}: no finished SRNet run ({'; '.join(found.skipped.values()) or 'no checkpoints'}); skipped")
    if not devices:
        raise FileNotFoundError(f"{run_dir}: no finished SRNet run with checkpoints under srnet/<device>/run_XX/; "
                                "run (or resume) `python -m pipeline.ml_age --methods ...,srnet` with this --out")
    positions = _DefectPositions(run_dir, record)
    files: list[Path] = []
    summary: dict[str, Any] = {}
    per_map_rows: list[dict] = []
    for device, found in devices.items():
        log(f"{device}: explaining SRNet runs {found.runs} with {', '.join(config.methods)}")
        result = _explain_device(run_dir, out, found, srnet_config, config, positions, log)
        summary[device] = result["summary"]
        per_map_rows += result["rows"]
        files += result["files"]
    report = {
        "tool": "pipeline.explain",
        "created": utc_now(),
        "run": str(run_dir.resolve()),
        "run_manifest": record.get("manifest", {}),
        "settings": {**asdict(config), "target": "each crop network's predicted class",
                     "neighbourhood_px": config.neighbourhood,
                     "neighbourhood": f"pixels within Chebyshev distance {config.neighbourhood} of a defect "
                                      f"({2 * config.neighbourhood + 1}x{2 * config.neighbourhood + 1} box)",
                     "defect_source": positions.source,
                     "content_features": "cell medians of luma, of the squared gradient of the 3x3-median-filtered "
                                         "luma and of the chroma of the 3x3-median-filtered channels, at map "
                                         "resolution, on the cells touching no defect neighbourhood; figure: mean "
                                         "|Spearman| of each map with its own image's feature minus its mean "
                                         "|Spearman| with the other test images' feature",
                     "thresholds": {"defect_lift": DEFECT_LIFT, "significance": SIGNIFICANCE,
                                    "content_rho": CONTENT_RHO}},
        "srnet": srnet_config.to_dict(),
        "versions": package_versions(),
        "devices": summary,
    }
    report = _finite(report)
    text = verdict_markdown(report)
    rows_path = out / "saliency_maps.csv"
    _write_rows(rows_path, per_map_rows)
    json_path, md_path = out / "saliency.json", out / "saliency.md"
    atomic_write_text(md_path, text)
    files = [json_path, md_path, rows_path] + files
    report["files"] = [str(p) for p in files]
    write_json(json_path, report)
    return {**report, "verdict_text": text, "files": files}


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def _load_pixels(path: str) -> np.ndarray:
    from pipeline.data.imageio import read_image

    return read_image(path).pixels


def _explain_device(run_dir, out, found: _DeviceRuns, srnet_config, config: SaliencyConfig,
                    positions: _DefectPositions, log) -> dict:
    from tqdm.auto import tqdm

    from pipeline.srnet.cam import saliency_method
    from pipeline.srnet.crops import extract_crops
    from pipeline.srnet.fusion import fuse_probabilities
    from pipeline.srnet.runtime import resolve_device, torch_runtime
    from pipeline.srnet.train import load_crop_model

    device_name = found.device
    labels: dict[str, int] = {}
    for run in found.runs:
        labels.update(dict(found.test[run]))
    images = list(labels)  # union of the test images of every run, first-seen order
    crops: dict[str, list[np.ndarray]] = {name: [] for name in srnet_config.crops}
    boxes, usable, failures = [], [], []
    for path in tqdm(images, desc=f"{device_name}: reading", unit="img", disable=not config.progress, leave=False):
        try:
            pixels = _load_pixels(path)
            extracted = extract_crops(pixels, srnet_config.patch, srnet_config.channels, srnet_config.crops)
        except (OSError, ValueError, TypeError) as exc:  # an unreadable image is recorded, the others go on
            failures.append({"image": path, "reason": str(exc)})
            log(f"{device_name}: {path}: left out ({exc})")
            continue
        for name, crop in extracted.items():
            crops[name].append(crop)
        boxes.append(_crop_geometry(pixels.shape, srnet_config))
        usable.append(path)
    if not usable:
        raise FileNotFoundError(f"{device_name}: none of the {len(images)} test images could be read")
    stacked = {name: np.stack(arrays) for name, arrays in crops.items()}
    n_runs, n_images, n_crops = len(found.runs), len(usable), len(srnet_config.crops)
    held_out = np.array([[path in dict(found.test[run]) for path in usable] for run in found.runs])  # (runs, images)

    torch_device = resolve_device(config.device)
    layers = {method: config.layer_for(method, srnet_config.patch) for method in config.methods}
    maps: dict[str, np.ndarray] = {}
    targets = {m: np.zeros((n_runs, n_images, n_crops), np.int64) for m in config.methods}
    threads = config.num_threads or srnet_config.num_threads
    steps = tqdm(total=n_runs * n_crops * len(config.methods), desc=f"{device_name}: saliency", unit="map set",
                 disable=not config.progress, leave=False)
    crop_proba: dict[int, dict[str, np.ndarray]] = {}
    with torch_runtime(threads, torch_device, deterministic=False):
        for r, run in enumerate(found.runs):
            crop_proba[run] = {}
            for c, crop_name in enumerate(srnet_config.crops):
                checkpoint = run_dir / "srnet" / device_name / f"run_{run:02d}" / f"srnet_{crop_name}.pt"
                model = load_crop_model(checkpoint, str(torch_device))
                for method in config.methods:
                    options = {"batch_size": config.score_cam_batch if method == "scorecam" else 32,
                               "target_layer": layers[method]}
                    result = saliency_method(method, model, **options)(stacked[crop_name])
                    if method not in maps:
                        maps[method] = np.zeros((n_runs, n_images, n_crops, *result.maps.shape[1:]), np.float32)
                    maps[method][r, :, c] = result.maps
                    targets[method][r, :, c] = result.targets
                    if crop_name not in crop_proba[run]:
                        logits = result.logits.astype(np.float64)
                        soft = np.exp(logits - logits.max(axis=1, keepdims=True))
                        crop_proba[run][crop_name] = soft / soft.sum(axis=1, keepdims=True)
                    steps.update(1)
    steps.close()

    # accuracy of each run's fused prediction on its own test images (recomputed from the checkpoints)
    truth = np.array([labels[p] for p in usable])
    n_columns = next(iter(crop_proba[found.runs[0]].values())).shape[1]
    classes = found.classes if len(found.classes) == n_columns else sorted(set(truth.tolist()))
    if len(classes) != n_columns:
        raise ValueError(f"{device_name}: the networks have {n_columns} outputs but the labels are {classes}; "
                         "the run folder is inconsistent")
    accuracy = {}
    for r, run in enumerate(found.runs):
        fused = fuse_probabilities(crop_proba[run], srnet_config.fusion)
        predicted = fused.argmax(axis=1)
        mask = held_out[r]
        accuracy[run] = float(np.mean(predicted[mask] == _class_index(truth[mask], classes)))

    # structure features of every crop, at the maps' resolution (the same for every method)
    feature_cache: dict[tuple, dict[str, list]] = {}

    def features_at(shape: tuple[int, int]) -> dict[str, list[dict[str, np.ndarray]]]:
        if shape not in feature_cache:
            feature_cache[shape] = {crop_name: [structure_features(stacked[crop_name][i], shape)
                                                for i in range(n_images)] for crop_name in srnet_config.crops}
        return feature_cache[shape]

    chance = float(max(np.mean(truth[held_out[r]] == label) for r in range(n_runs) for label in classes))
    rows, method_summaries = [], {}
    for method in config.methods:
        map_shape = tuple(maps[method].shape[3:])
        features = features_at(map_shape)
        feature_names = list(features[srnet_config.crops[0]][0])
        content = ContentTally()
        # leave out of the null the shifts that keep a defect in its own map cell
        min_shift = -(-stacked[srnet_config.crops[0]].shape[2] // map_shape[0]) + config.neighbourhood
        tallies: dict[Any, DefectTally] = {"all": DefectTally(min_shift)}
        for r, run in enumerate(found.runs):
            members = np.flatnonzero(held_out[r])
            if members.size == 0:
                continue
            points_of = {i: positions.for_image(device_name, run, usable[i]) for i in members}
            for c, crop_name in enumerate(srnet_config.crops):
                group_maps = maps[method][r, members, c]
                own = {}
                crop_size = stacked[crop_name].shape[2:]
                local_points = [_points_in_crop(points_of[i], boxes[i][crop_name]) for i in members]
                keep = np.stack([cells_away_from_defects(points, crop_size, config.neighbourhood, map_shape)
                                 for points in local_points])
                for name in feature_names:
                    values = np.stack([features[crop_name][i][name] for i in members])
                    own[name], other, other_abs = own_and_other_correlations(group_maps, values, keep)
                    content.add(name, own[name], other, other_abs, targets[method][r, members, c])
                for k, i in enumerate(members):
                    raw = group_maps[k]
                    points = local_points[k]
                    shares = defect_shares(raw, points, stacked[crop_name].shape[2:], config.neighbourhood)
                    target_label = int(classes[targets[method][r, i, c]])
                    if shares is not None:
                        tallies["all"].add(shares)
                        tallies.setdefault(target_label, DefectTally(min_shift)).add(shares)
                    rows.append({
                        "device": device_name, "run": run, "image": usable[i], "crop": crop_name, "method": method,
                        "true": int(truth[i]), "target": target_label,
                        **{f"rho_{name}": float(own[name][k]) for name in feature_names},
                        "defects_in_crop": len(points),
                        "defect_share": None if shares is None else shares["share"],
                        "area_share": None if shares is None else shares["area"],
                        "saliency_mass": float(np.maximum(raw, 0).sum()),
                    })
        content_summary = content.summary()
        defects = tallies.pop("all").summary()
        defects["by_target_class"] = {str(label): tally.summary() for label, tally in sorted(tallies.items())}
        method_summaries[method] = {
            "layer": layers[method],
            "map_shape": list(map_shape),
            "consistency": _consistency(maps[method], targets[method], held_out),
            "content": content_summary,
            "defects": defects,
            "verdict": method_verdict(content_summary, defects),
        }
    # the device's verdict: the majority of the methods whose maps can localise (more than 4x4
    # cells) if there are any; ties go to the first of them
    fine = [s for s in method_summaries.values() if np.prod(s["map_shape"]) > 16] or list(method_summaries.values())
    device_verdict = Counter(s["verdict"] for s in fine).most_common(1)[0][0]
    voting = [m for m, s in method_summaries.items() if any(s is f for f in fine)]
    files = []
    npz_path = out / "maps" / f"{device_name}.npz"
    buffer = io.BytesIO()
    np.savez_compressed(buffer, runs=np.array(found.runs), images=np.array(usable), crops=np.array(srnet_config.crops),
                        held_out=held_out, true=truth,
                        **{f"maps_{m}": maps[m] for m in config.methods},
                        **{f"targets_{m}": targets[m] for m in config.methods})
    with atomic_write(npz_path, "wb") as fh:
        fh.write(buffer.getvalue())
    files.append(npz_path)
    if config.sheet_images:
        sheet = out / "sheets" / f"{device_name}.png"
        _contact_sheet(sheet, device_name, usable, truth, stacked, maps, targets, held_out, boxes, positions,
                       found.runs, classes, srnet_config, config)
        files.append(sheet)
    summary = {
        "runs": found.runs,
        "runs_skipped": {str(k): v for k, v in found.skipped.items()},
        "n_test_images": int(held_out.sum()),
        "n_images": n_images,
        "failures": failures,
        "srnet_accuracy": {str(k): v for k, v in accuracy.items()},
        "chance_accuracy": chance,
        "verdict_methods": voting,
        "defect_source": positions.source,
        "methods": method_summaries,
        "verdict": device_verdict,
    }
    return {"summary": summary, "rows": rows, "files": files}


def _class_index(labels: np.ndarray, classes: list[int]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[int(v)] for v in labels])


def _consistency(maps: np.ndarray, targets: np.ndarray, held_out: np.ndarray) -> dict[str, Any]:
    """Map agreement across runs (same image and crop) and across images (same run, crop, class)."""
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


# ====================================================================== outputs

_ROW_COLUMNS = ["device", "run", "image", "crop", "method", "true", "target", "rho_luminance", "rho_texture",
                "rho_colour", "defects_in_crop", "defect_share", "area_share", "saliency_mass"]


def _write_rows(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_ROW_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def verdict_markdown(report: dict) -> str:
    """The short text verdict of ``saliency.md`` from the content of ``saliency.json``."""
    settings = report["settings"]
    lines = [
        "# Where does SRNet look?",
        "",
        (f"Run: `{report['run']}`. Maps of each crop network for its predicted class; defect neighbourhood "
         f"{settings['neighbourhood']}; defect positions: {settings['defect_source']}."),
        "",
        ("| device | method (layer, map) | accuracy | consistency (runs / images) | "
         "content ρ, own − other images (feature) | defect share vs area (lift, p) | maps follow |"),
        "|---|---|---|---|---|---|---|",
    ]
    for device, summary in report["devices"].items():
        accuracy = ", ".join(f"{100 * v:.0f}%" for v in summary["srnet_accuracy"].values())
        for method, figures in summary["methods"].items():
            consistency = figures["consistency"]
            runs_text = (consistency.get("across_runs_note", "n/a") if consistency["across_runs"] is None
                         else _fmt(consistency["across_runs"]))
            content = figures["content"]
            feature = content.get("feature")
            content_text = ("n/a" if feature is None else
                            f"{_fmt(content[feature]['systematic'])} ± {_fmt(content[feature]['se'])} ({feature})")
            defects = figures["defects"]
            defect_text = ("n/a" if defects.get("n_maps", 0) == 0 else
                           f"{100 * defects['share']:.1f}% vs {100 * defects['area_share']:.1f}% "
                           f"({_fmt(defects['lift'])}×, p={_fmt(defects['p_value'], '.3f')})")
            shape = f"{figures['map_shape'][0]}x{figures['map_shape'][1]}"
            images_text = _fmt(consistency["across_images"])
            lines.append(f"| {device} | {method} ({figures['layer']}, {shape}) | {accuracy} | {runs_text} / "
                         f"{images_text} | {content_text} | {defect_text} | {figures['verdict']} |")
    lines += ["", "Verdict:", ""]
    for device, summary in report["devices"].items():
        lines.append(f"- **{device}**: {_device_sentence(summary)}")
        coarse = [f"{m} ({f['layer']}, {f['map_shape'][0]}x{f['map_shape'][1]})"
                  for m, f in summary["methods"].items() if np.prod(f["map_shape"]) <= 16]
        if coarse:
            lines.append(f"  Maps of {', '.join(coarse)} have at most 4x4 cells: each cell sees nearly the whole crop, "
                         "so they cannot localise anything and do not vote (CAM exists only at layer12; the other "
                         "methods can explain a finer layer, --layer layer9).")
    lines += [
        "",
        (f"Reading: a method's maps *follow defects* when their share of saliency on the defect neighbourhoods is "
         f"at least {DEFECT_LIFT}× the neighbourhoods' share of the area and no more than {100 * SIGNIFICANCE:.0f}% "
         f"of circularly shifted defect masks reach it; they *follow content* when their Spearman ρ with the "
         f"luminance, texture or colour of their own image exceeds their ρ with those of the other test images "
         f"(same crop, cells away from defects) by at least {CONTENT_RHO}, in one direction over the maps explained "
         f"as a class, and by more than three standard errors. Maps driven by age traces should also agree across "
         f"images of a class and across runs; maps driven by content do not."),
        "",
    ]
    return "\n".join(lines)


def _device_sentence(summary: dict) -> str:
    verdict = summary["verdict"]
    accuracy = np.mean(list(summary["srnet_accuracy"].values()))
    reading = {
        "content": "SRNet reads image content, not sensor defects",
        "defects": "SRNet looks at the sensor defects (age traces)",
        "both content and defects": "SRNet's maps follow both image content and the defects",
        "neither content nor defects": "SRNet's maps follow neither image structure nor the defects",
    }.get(verdict, verdict)
    caveat = (" (its accuracy is near chance, so its maps say little)"
              if accuracy < summary["chance_accuracy"] + 0.1 else "")
    return (f"{reading}{caveat}; majority of {', '.join(summary['verdict_methods'])}, SRNet test accuracy "
            f"{100 * accuracy:.0f}%.")


def _contact_sheet(path, device, usable, truth, stacked, maps, targets, held_out, boxes, positions, runs,
                   classes, srnet_config, config) -> None:
    """One PNG per device: per shown image a row of its crops (defects circled in cyan), then one
    row of overlays per method, on one colour scale per method (the largest positive saliency of
    the device's maps of that method), so that weak and strong maps look different."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from pipeline.srnet.cam import upsample_maps

    run_index = 0
    candidates = np.flatnonzero(held_out[run_index])
    # alternate the true classes so both appear
    by_class: dict[int, list[int]] = {}
    for i in candidates:
        by_class.setdefault(int(truth[i]), []).append(int(i))
    chosen: list[int] = []
    while len(chosen) < min(config.sheet_images, len(candidates)):
        for members in by_class.values():
            if members and len(chosen) < config.sheet_images:
                chosen.append(members.pop(0))
    methods = list(maps)
    crops = list(srnet_config.crops)
    per_crop = 1 + len(methods)
    rows, cols = len(crops) * per_crop, max(len(chosen), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 0.9, 1.6 * rows + 0.6), squeeze=False)
    scale = {m: float(np.maximum(maps[m][run_index], 0).max()) or 1.0 for m in methods}
    grey = {"cmap": "gray", "vmin": 0, "vmax": 1}
    for k, i in enumerate(chosen):
        points = positions.for_image(device, runs[run_index], usable[i])
        for c, crop_name in enumerate(crops):
            crop = stacked[crop_name][i]
            colour = crop.shape[0] == 3
            shown = np.clip(np.moveaxis(crop, 0, 2) if colour else crop[0], 0, 1)
            local = _points_in_crop(points, boxes[i][crop_name])
            ax = axes[c * per_crop, k]
            ax.imshow(shown, **({} if colour else grey))
            if len(local):
                ax.scatter(local[:, 1], local[:, 0], s=30, facecolors="none", edgecolors="cyan", linewidths=0.8)
            if c == 0:
                ax.set_title(f"{Path(usable[i]).stem}\nclass {truth[i]}", fontsize=6)
            if k == 0:
                ax.set_ylabel(f"crop {crop_name}", fontsize=7)
            for m, method in enumerate(methods):
                ax = axes[c * per_crop + 1 + m, k]
                raw = np.maximum(maps[method][run_index, i, c], 0)[None]
                heat = upsample_maps(raw, crop.shape[1:], normalise=False)[0]
                ax.imshow(shown, **({} if colour else grey))
                ax.imshow(heat, cmap="inferno", alpha=0.55, vmin=0, vmax=scale[method])
                if len(local):
                    ax.scatter(local[:, 1], local[:, 0], s=30, facecolors="none", edgecolors="cyan", linewidths=0.6)
                ax.set_xlabel(f"→ class {classes[targets[method][run_index, i, c]]}", fontsize=6, labelpad=1)
                if k == 0:
                    ax.set_ylabel(method, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{device}: SRNet saliency, run {runs[run_index]} (cyan: defect positions; "
                 "one colour scale per method)", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)


# ====================================================================== the embedded default

DEFAULT_RUN = Path("agetrace-out/ml_age_srnet")
MAIN_RUN = Path("agetrace-out/ml_age")


def has_srnet(run_dir: Path) -> bool:
    """Whether ``run_dir`` is an ml_age output folder with at least one finished SRNet run."""
    if not (run_dir / "config.json").is_file():
        return False
    try:
        record = read_json(run_dir / "config.json")
    except (OSError, ValueError):
        return False
    if "srnet" not in record or record.get("status") != "complete":
        return False
    return any((run_dir / "parts" / device).is_dir() and any(
        "srnet" in read_json(part).get("methods", []) for part in (run_dir / "parts" / device).glob("run_*.json"))
        for device in _devices(run_dir))


def default_run(*, progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """The run folder to explain when none is given.

    ``agetrace-out/ml_age`` if it already holds a finished run with SRNet; otherwise
    ``agetrace-out/ml_age_srnet``, made (or resumed; a complete one is reused as it is) by
    running ``ml_age --methods srnet`` with its defaults (the embedded synthetic dataset, 10 splits,
    SRNet ``cpu`` preset, which trains on the first split only).
    """
    if has_srnet(MAIN_RUN):
        log(f"No --run: explaining {MAIN_RUN}, which holds a finished run with SRNet.")
        return MAIN_RUN
    if has_srnet(DEFAULT_RUN):
        log(f"No --run: reusing the finished SRNet run in {DEFAULT_RUN}.")
        return DEFAULT_RUN
    from pipeline.ml_age import main as ml_age_main

    log(f"No --run: training SRNet (preset 'cpu') on the embedded synthetic dataset into {DEFAULT_RUN} with "
        f"`python -m pipeline.ml_age --methods srnet --out {DEFAULT_RUN}` (about 7 minutes on 2 cores; "
        "resumed if interrupted).")
    argv = ["--methods", "srnet", "--out", str(DEFAULT_RUN)] + ([] if progress else ["--no-progress"])
    status = ml_age_main(argv)
    if status != 0:
        raise RuntimeError(f"`python -m pipeline.ml_age {' '.join(argv)}` failed (exit status {status}); see above")
    return DEFAULT_RUN
