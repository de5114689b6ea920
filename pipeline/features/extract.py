"""Per-image feature extraction: residual statistics for training, sparse residuals for features.

Two passes per device and split, each decoding an image once:

* :func:`accumulate_batch` (trusted images only) — the full median residual of every image,
  fused into per-pixel accumulators of the image's time block, never materialised;
* :func:`sparse_batch` (trusted and test images) — the residual and its local noise level at a
  few thousand candidate positions only.

Both are module-level functions of one batch, so that :func:`pipeline.features.executor.map_batches`
can run them in worker processes. An image that cannot be read is returned as a failure
(path, reason), never raised, so that one bad file does not stop a run of thousands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import kernels
from pipeline.data.errors import ImageReadError
from pipeline.data.imageio import SensorImage, read_image

__all__ = ["AccumulateTask", "AccumulateResult", "SparseTask", "SparseResult", "accumulate_batch",
           "sparse_batch", "analysis_view", "probe_device"]

#: Standardised residual threshold whose exceedances the accumulators count (W > k·σ).
EXCEED_K = 3.0

#: Floor of the local noise level, in pixel units: one quantisation step. In flat or
#: saturated regions of an 8-bit JPEG most residuals of a window are exactly 0, so the scaled
#: MAD is 0 and any residual would look infinitely significant.
SIGMA_FLOOR = 1.0


@dataclass(frozen=True)
class AccumulateTask:
    """Images of one time block, to be folded into one accumulator."""

    paths: tuple[str, ...]
    block: int
    expected_shape: tuple[int, int] | None


@dataclass
class AccumulateResult:
    block: int
    stats: object | None  # kernels.PixelStats
    n_images: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    exposures: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class SparseTask:
    """Images at whose candidate positions residuals are measured."""

    paths: tuple[str, ...]
    rows: np.ndarray
    cols: np.ndarray
    channels: np.ndarray
    expected_shape: tuple[int, int] | None


@dataclass
class SparseResult:
    residuals: np.ndarray  # (n_images, n_positions) float32, NaN: clipped neighbourhood or unreadable
    sigma: np.ndarray      # (n_images, n_positions) float32
    failures: list[tuple[str, str]] = field(default_factory=list)
    exposures: dict[str, float | None] = field(default_factory=dict)


def analysis_view(image: SensorImage) -> tuple[np.ndarray, bool, float]:
    """The array defects are analysed on, whether it is a CFA mosaic, and its saturation level.

    RGB stays H×W×3 (residuals per channel), grayscale H×W, RAW the H×W mosaic (residuals over
    same-colour neighbours). The black level is not subtracted: it cancels in ``Y − median(Y)``.
    """
    if image.kind == "cfa":
        if image.cfa_pattern is None or image.cfa_pattern.shape != (2, 2):
            raise ImageReadError(image.path, "only 2×2 CFA mosaics (Bayer) are supported for defect analysis",
                                 "Convert the file to a Bayer DNG or use the camera's JPEGs.")
        return image.pixels, True, float(image.white_level)
    return image.pixels, False, float(image.white_level)


def probe_device(path: str) -> tuple[tuple[int, int], str]:
    """Frame (height, width) and kind of a device's images, from one readable image."""
    image = read_image(path)
    return tuple(image.pixels.shape[:2]), image.kind


def accumulate_batch(task: AccumulateTask) -> AccumulateResult:
    """Fold the full residual of every image of one block into one accumulator."""
    result = AccumulateResult(task.block, None, 0)
    for path in task.paths:
        try:
            image = read_image(path, expected_shape=task.expected_shape)
            pixels, is_cfa, saturation = analysis_view(image)
        except ImageReadError as exc:
            result.failures.append((path, exc.reason))
            continue
        if result.stats is None:
            result.stats = kernels.PixelStats(pixels.shape, exceed_k=EXCEED_K)
        result.stats.update_from_image(pixels, cfa=is_cfa, saturation=saturation)
        result.n_images += 1
        result.exposures[path] = image.metadata.exposure_s
    return result


def sparse_batch(task: SparseTask) -> SparseResult:
    """Residual and local noise level at the task's positions, for each image of the batch."""
    n, m = len(task.paths), task.rows.size
    out = SparseResult(np.full((n, m), np.nan, dtype=np.float32), np.full((n, m), np.nan, dtype=np.float32))
    for i, path in enumerate(task.paths):
        try:
            image = read_image(path, expected_shape=task.expected_shape)
            pixels, is_cfa, saturation = analysis_view(image)
        except ImageReadError as exc:
            out.failures.append((path, exc.reason))
            continue
        out.exposures[path] = image.metadata.exposure_s
        if m == 0:
            continue
        if is_cfa:
            w = kernels.sparse_cfa_residual(pixels, task.rows, task.cols)
            s = kernels.local_sigma_at(pixels, task.rows, task.cols, cfa=True)
        else:
            channels = task.channels if pixels.ndim == 3 else None
            w = kernels.sparse_residual(pixels, task.rows, task.cols, channels)
            s = kernels.local_sigma_at(pixels, task.rows, task.cols, channels)
        # any of the 8 median neighbours saturated (the centre itself may be: a saturated hot
        # pixel's residual is still a lower bound of its strength)
        clipped = kernels.clipped_at(pixels, task.rows, task.cols, None if (is_cfa or pixels.ndim == 2) else task.channels,
                                     saturation=saturation, cfa=is_cfa)
        out.residuals[i] = np.where(clipped, np.nan, w)
        out.sigma[i] = np.maximum(s, SIGMA_FLOOR)
    return out
