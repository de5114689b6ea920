"""Residual crops around defects, for the evidence report: the positions to measure, and the
trusted images' mean crop before and after each defect's onset.

A crop is the ``(2r + 1) × (2r + 1)`` median residual around a defect, in the defect's own colour
channel for RGB images and on its own colour plane for a CFA mosaic (the same-colour sites two
pixels apart, the neighbours its residual is computed from). Crops are measured with the
project's own reader and residual (:func:`pipeline.features.extract.sparse_batch`), so that a
crop's centre is exactly the residual the model uses; a pixel whose median window holds a
saturated neighbour, or that falls outside the frame, has no value (NaN) and is left out of the
means.

:func:`crop_batch` is a module-level function of one batch of images, so that
:func:`pipeline.features.executor.map_batches` runs it in worker processes; each batch returns
only per-defect sums and counts (a few numbers per crop pixel), never a crop per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.features.cache import FeatureCache
from pipeline.features.extract import SparseTask, sparse_batch

__all__ = ["CROP_RADIUS", "CropTask", "CropSums", "crop_positions", "crop_batch", "merge_crop_sums",
           "measure_crops"]

#: crops are (2·CROP_RADIUS + 1)² pixels: 11 × 11
CROP_RADIUS = 5


def crop_positions(rows, cols, channels, frame, *, cfa: bool, radius: int = CROP_RADIUS):
    """Sensor positions of every crop pixel around each defect.

    Parameters
    ----------
    rows, cols, channels : array-like of int, shape (m,)
        The defects.
    frame : tuple of int
        ``(height, width)`` of the sensor.
    cfa : bool
        A CFA mosaic: the crop steps two pixels at a time (the defect's colour plane).
    radius : int
        Crop half-width in crop pixels.

    Returns
    -------
    rows, cols, channels : ndarray of int64, shape (m · k · k,)
        Positions, crop after crop, each row-major (``k = 2·radius + 1``); positions outside the
        frame are clamped to its edge (and flagged in ``inside``).
    inside : ndarray of bool, shape (m, k, k)
        Whether each crop pixel lies inside the frame.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    rows, cols, channels = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (rows, cols, channels))
    height, width = int(frame[0]), int(frame[1])
    offsets = np.arange(-radius, radius + 1) * (2 if cfa else 1)
    r = rows[:, None, None] + offsets[None, :, None]
    c = cols[:, None, None] + offsets[None, None, :]
    r, c = np.broadcast_arrays(r, c)
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    ch = np.broadcast_to(np.maximum(channels, 0)[:, None, None], r.shape)
    return (np.clip(r, 0, height - 1).reshape(-1), np.clip(c, 0, width - 1).reshape(-1),
            np.ascontiguousarray(ch).reshape(-1), inside)


def measure_crops(paths, rows, cols, channels, frame, kind: str, bit_depth: int, *,
                  radius: int = CROP_RADIUS) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The residual crops around the defects in each image.

    Returns
    -------
    crops : ndarray of float32, shape (n_images, m, k, k)
        NaN outside the frame, where the median window is clipped, and for unreadable images.
    failures : list of (path, reason)
    """
    m = np.asarray(rows).size
    k = 2 * radius + 1
    prow, pcol, pch, inside = crop_positions(rows, cols, channels, frame, cfa=kind == "cfa", radius=radius)
    result = sparse_batch(SparseTask(tuple(str(p) for p in paths), prow, pcol, pch, tuple(frame), FeatureCache(None),
                                     kind, bit_depth))
    crops = result.residuals.reshape(len(paths), m, k, k)
    return np.where(inside[None], crops, np.nan).astype(np.float32), list(result.failures)


@dataclass(frozen=True)
class CropTask:
    """Trusted images of one batch, their capture times, and the defects with their onsets."""

    paths: tuple[str, ...]
    times: tuple[float, ...]
    rows: np.ndarray
    cols: np.ndarray
    channels: np.ndarray
    onset_time: np.ndarray
    frame: tuple[int, int]
    kind: str
    bit_depth: int
    radius: int = CROP_RADIUS


@dataclass
class CropSums:
    """Sums and counts of the crops of a set of images, before and after each defect's onset.

    Arrays of shape (m, k, k); an image counts as *after* a defect's onset when its time is at or
    after the onset time (as the Fridrich–Goljan fit counts it), else *before*.
    """

    before_sum: np.ndarray
    before_count: np.ndarray
    after_sum: np.ndarray
    after_count: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def empty(cls, m: int, radius: int = CROP_RADIUS) -> CropSums:
        k = 2 * radius + 1
        return cls(np.zeros((m, k, k)), np.zeros((m, k, k), np.int64), np.zeros((m, k, k)),
                   np.zeros((m, k, k), np.int64))

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean crop before and after the onset (float32, NaN where no image had a value)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            before = np.where(self.before_count > 0, self.before_sum / np.maximum(self.before_count, 1), np.nan)
            after = np.where(self.after_count > 0, self.after_sum / np.maximum(self.after_count, 1), np.nan)
        return before.astype(np.float32), after.astype(np.float32)


def crop_batch(task: CropTask) -> CropSums:
    """Read each image of the batch once and add its crops to the before/after sums of each defect."""
    m = np.asarray(task.rows).size
    out = CropSums.empty(m, task.radius)
    if not task.paths or m == 0:
        return out
    crops, out.failures = measure_crops(task.paths, task.rows, task.cols, task.channels, task.frame, task.kind,
                                        task.bit_depth, radius=task.radius)
    valid = np.isfinite(crops)
    times = np.asarray(task.times, dtype=np.float64)
    after = (times[:, None] >= np.asarray(task.onset_time)[None, :])[:, :, None, None]
    values = np.where(valid, crops, 0.0).astype(np.float64)
    out.before_sum += np.where(~after, values, 0.0).sum(0)
    out.before_count += (valid & ~after).sum(0)
    out.after_sum += np.where(after, values, 0.0).sum(0)
    out.after_count += (valid & after).sum(0)
    return out


def merge_crop_sums(parts, m: int, radius: int = CROP_RADIUS) -> CropSums:
    """Add the sums of several batches."""
    total = CropSums.empty(m, radius)
    for part in parts:
        total.before_sum += part.before_sum
        total.before_count += part.before_count
        total.after_sum += part.after_sum
        total.after_count += part.after_count
        total.failures.extend(part.failures)
    return total
