"""Streaming per-pixel statistics of residuals over many images, mergeable across workers.

:class:`PixelStats` keeps, for every pixel (and channel), the number of images that updated
it, the mean and the sum of squared deviations ``M2`` of its residual (Welford's update;
Chan et al.'s pairwise formula to merge two accumulators), and optionally how many times the
residual exceeded ``exceed_k`` times the image's noise level.

Counts are stored as one image total plus, only once some update skipped pixels (a validity
mask or a saturation level), a per-pixel number of skipped images. With no skipping the
per-pixel count is uniform and the Welford update needs no division per pixel, which keeps
the fused update close to the cost of the residual alone.
"""

import numpy as np
from numba import njit, prange

from kernels._rows import (
    all_finite_rows,
    chunk_bounds,
    clamp_neighbours,
    n_row_chunks,
    segment_length,
)
from kernels._validate import IMAGE_DTYPES, check_float32
from kernels._welford import fused_span, update_from_values
from kernels.clipping import saturation_level
from kernels.noise import image_sigma, residual_sigma

_STATE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_FORMAT_VERSION = 1


@njit(cache=True)
def _threshold_row(thresholds, b, y, height):
    """Row of thresholds for image ``b`` and row ``y``: thresholds has 1, 2 (CFA) or H rows."""
    n_rows = thresholds.shape[1]
    return thresholds[b, y if n_rows == height else y % n_rows]


@njit(parallel=True, cache=True, nogil=True)
def _update_from_residual(res2d, skip2d, use_skip, mean, m2, skipped, has_skipped, exceed,
                          thresholds, use_exceed, n_seen, inv_count, n_chunks):
    """Fold one precomputed residual (H × L) into the state, segment by segment."""
    height, length = res2d.shape
    for k in prange(n_chunks):
        y0, y1 = chunk_bounds(height, n_chunks, k)
        segment = segment_length(res2d.itemsize)
        no_skip = np.zeros(segment, np.uint8)
        for y in range(y0, y1):
            for j0 in range(0, length, segment):
                j1 = min(j0 + segment, length)
                skip = skip2d[y, j0:j1] if use_skip else no_skip[:j1 - j0]
                sk = skipped[y, j0:j1] if has_skipped else skipped[0, 0:0]
                ex = exceed[y, j0:j1] if use_exceed else exceed[0, 0:0]
                thr = _threshold_row(thresholds, 0, y, height)[j0:j1] if use_exceed else thresholds[0, 0, 0:0]
                update_from_values(res2d[y, j0:j1], skip, mean[y, j0:j1], m2[y, j0:j1], sk,
                                   has_skipped, ex, thr, use_exceed, n_seen, inv_count[0])


@njit(parallel=True, cache=True, nogil=True)
def _update_from_images(stack, row_step, col_step, level, use_level, mean, m2, skipped,
                        has_skipped, exceed, thresholds, use_exceed, n_before, inv_count,
                        n_chunks):
    """Residual of each image of ``stack`` (B × H × L), computed and folded in segment by segment.

    The state of a row segment stays in cache while all B images update it, so the state is
    read and written once per call, not once per image.
    """
    n_images, height, length = stack.shape
    for k in prange(n_chunks):
        y0, y1 = chunk_bounds(height, n_chunks, k)
        segment = segment_length(stack.itemsize)
        scratch = np.empty((3, segment + 2 * col_step), stack.dtype)
        for y in range(y0, y1):
            up, dn = clamp_neighbours(y, row_step, height)
            for j0 in range(0, length, segment):
                j1 = min(j0 + segment, length)
                sk = skipped[y, j0:j1] if has_skipped else skipped[0, 0:0]
                ex = exceed[y, j0:j1] if use_exceed else exceed[0, 0:0]
                for b in range(n_images):
                    image = stack[b]
                    thr = _threshold_row(thresholds, b, y, height)[j0:j1] if use_exceed else thresholds[0, 0, 0:0]
                    fused_span(image[up], image[y], image[dn], col_step, j0, j1, scratch, level[0],
                               use_level, up == y, dn == y, mean[y, j0:j1], m2[y, j0:j1], sk,
                               has_skipped, ex, thr, use_exceed, n_before + b, inv_count[b])


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _chan_merge(mean_a, m2_a, skipped_a, has_a, n_a, mean_b, m2_b, skipped_b, has_b, n_b, n_chunks):
    """Fold accumulator b into a, element by element (flattened arrays).

    Branch-free: a pixel that no image updated has mean 0 and M2 0, so the weights
    ``count_b / total`` of 0 (b empty) or 1 (a empty) give the right result without a test.
    """
    size = mean_a.size
    for k in prange(n_chunks):
        i0, i1 = chunk_bounds(size, n_chunks, k)
        for j in range(i0, i1):
            i = np.uint64(j)
            count_a = n_a - (skipped_a[i] if has_a else 0)
            count_b = n_b - (skipped_b[i] if has_b else 0)
            weight_b = count_b / max(count_a + count_b, 1)
            delta = np.float64(mean_b[i]) - np.float64(mean_a[i])
            mean_a[i] = mean_a[i] + delta * weight_b
            m2_a[i] = m2_a[i] + m2_b[i] + delta * delta * (count_a * weight_b)


class PixelStats:
    """Mergeable per-pixel count, mean, M2 and exceedance counts of residuals.

    Parameters
    ----------
    shape : tuple of int
        Residual shape, ``(H, W)`` (gray or CFA mosaic) or ``(H, W, C)``.
    exceed_k : float, optional
        When given, count per pixel how often ``W > exceed_k * sigma``, with ``sigma`` the
        image's noise level (by default estimated per image and channel/CFA plane with
        :func:`kernels.image_sigma`).
    dtype : {numpy.float32, numpy.float64}
        Precision of ``mean`` and ``m2``. float32 halves the memory traffic of an update;
        Welford's update does not cancel like sum / sum-of-squares does, and over 10,000
        images of a residual whose mean is 1,000 times its standard deviation the float32
        mean stays within 2e-6 and the variance within 3e-5 (relative) of the exact ones.

    Attributes
    ----------
    n_images : int
        Number of images folded in (including images that skipped some pixels).
    mean, m2 : numpy.ndarray
        Per-pixel mean and sum of squared deviations of the residual.
    skipped : numpy.ndarray or None
        int32 per-pixel number of images that skipped the pixel; None until an update skips.
    exceed : numpy.ndarray or None
        uint32 per-pixel count of ``W > exceed_k * sigma``; None when ``exceed_k`` is None.

    Notes
    -----
    A skipped pixel (``valid`` False, or a clipped neighbourhood under ``saturation``) does
    not change that pixel's count, mean, M2 or exceedance count.
    """

    def __init__(self, shape, exceed_k=None, dtype=np.float32):
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"shape must be (H, W) or (H, W, C) with positive sizes, got {shape}")
        dtype = np.dtype(dtype)
        if dtype not in _STATE_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if exceed_k is not None:
            exceed_k = float(exceed_k)
            if not np.isfinite(exceed_k):
                raise ValueError(f"exceed_k must be finite, got {exceed_k}")
        self.shape = shape
        self.dtype = dtype
        self.exceed_k = exceed_k
        self.n_images = 0
        self.mean = np.zeros(shape, dtype)
        self.m2 = np.zeros(shape, dtype)
        self.skipped = None
        self.exceed = None if exceed_k is None else np.zeros(shape, np.uint32)

    # ----------------------------------------------------------------- derived values
    @property
    def count(self):
        """int64 per-pixel number of images that updated the pixel."""
        count = np.full(self.shape, self.n_images, np.int64)
        if self.skipped is not None:
            count -= self.skipped
        return count

    def variance(self, ddof=1):
        """Per-pixel variance ``M2 / (count - ddof)`` as float64, NaN where ``count <= ddof``."""
        count = self.count - ddof
        with np.errstate(divide="ignore", invalid="ignore"):
            var = self.m2.astype(np.float64) / count
        var[count <= 0] = np.nan
        return var

    def copy(self):
        """An independent copy."""
        return PixelStats.from_dict({k: np.copy(v) for k, v in self.to_dict().items()})

    # ----------------------------------------------------------------- updates
    def update(self, residual, sigma=None, valid=None, cfa=False):
        """Fold in one precomputed residual.

        Parameters
        ----------
        residual : numpy.ndarray
            float32 residual of shape ``self.shape`` (finite).
        sigma : float or array_like, optional
            Noise level for the exceedance count (only used when ``exceed_k`` was given):
            a scalar, a per-channel ``(C,)`` array, a ``(2, 2)`` per-CFA-plane array
            (``cfa=True``) or a per-pixel map of shape ``self.shape`` (e.g.
            :func:`kernels.local_sigma`). Default: :func:`kernels.residual_sigma`.
        valid : numpy.ndarray, optional
            bool mask of shape ``self.shape``; False pixels are skipped.
        cfa : bool
            Interpret a ``(2, 2)`` sigma per CFA plane.

        Returns
        -------
        PixelStats
            ``self``.
        """
        residual = check_float32(residual, "residual", self.shape)
        res2d = residual.reshape(self.shape[0], -1)
        if not all_finite_rows(res2d, n_row_chunks(res2d.shape[0])):
            raise ValueError("residual contains NaN or inf; mask those pixels with valid=... "
                             "after replacing them (np.nan_to_num)")
        if valid is not None:
            valid = np.asarray(valid)
            if valid.dtype != np.bool_ or valid.shape != self.shape:
                raise ValueError(f"valid must be a bool array of shape {self.shape}, got "
                                 f"{valid.dtype} {valid.shape}")
            skip2d = np.ascontiguousarray(~valid).view(np.uint8).reshape(res2d.shape)
            self._ensure_skipped()
        else:
            skip2d = np.zeros((1, 1), np.uint8)
        if sigma is None and self.exceed_k is not None:
            sigma = residual_sigma(residual, cfa=cfa)
        thresholds = self._thresholds(sigma, 1, cfa, allow_map=True)
        inv_count = np.array([1.0 / (self.n_images + 1)], self.dtype)
        _update_from_residual(res2d, skip2d, valid is not None, *self._state2d(), thresholds,
                              self.exceed is not None, self.n_images, inv_count,
                              n_row_chunks(res2d.shape[0]))
        self.n_images += 1
        return self

    def update_from_image(self, image, sigma=None, saturation=None, cfa=False):
        """Fold in the residual of one image, computed on the fly and never materialised.

        The residual is :func:`kernels.median_residual` (``cfa=False``) or
        :func:`kernels.cfa_residual` (``cfa=True``), computed segment by segment and folded
        into the statistics while still in cache.

        Parameters
        ----------
        image : numpy.ndarray
            Image of shape ``self.shape``; uint8, uint16 or float32 (finite).
        sigma : float or array_like, optional
            Noise level for the exceedance count (only used when ``exceed_k`` was given): a
            scalar, per channel ``(C,)``, or per CFA plane ``(2, 2)`` with ``cfa=True``.
            Default: :func:`kernels.image_sigma` of the image.
        saturation : float, optional
            Pixels with a neighbour ``>= saturation`` in their residual window are skipped
            (the rule of :func:`kernels.clipped_neighbourhood`).
        cfa : bool
            The image is a 2×2 CFA mosaic; needs a 2-D ``self.shape``.

        Returns
        -------
        PixelStats
            ``self``.
        """
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
        if image.shape != self.shape:
            raise ValueError(f"image has shape {image.shape}; these statistics are {self.shape}")
        if sigma is None and self.exceed_k is not None:
            sigma = image_sigma(image, cfa=cfa)
        return self._fold_stack(image[np.newaxis], sigma, saturation, cfa)

    def update_from_stack(self, images, sigma=None, saturation=None, cfa=False):
        """Fold in the residuals of a stack of images in one pass over the statistics.

        Equivalent to calling :meth:`update_from_image` on each image in order, but the
        statistics are read and written once for the whole stack instead of once per image,
        which makes each image cheaper (decode into a reused ``(B, ...)`` buffer).

        Parameters
        ----------
        images : numpy.ndarray
            ``(B,) + self.shape`` stack; uint8, uint16 or float32 (finite).
        sigma : float or array_like, optional
            As for :meth:`update_from_image`, optionally per image: ``(B, C)`` or ``(B, 1)``,
            or ``(B, 2, 2)`` with ``cfa=True``. Default: :func:`kernels.image_sigma` of each
            image.
        saturation : float, optional
            Clipping level; see :meth:`update_from_image`.
        cfa : bool
            The images are 2×2 CFA mosaics.

        Returns
        -------
        PixelStats
            ``self``.
        """
        if not isinstance(images, np.ndarray):
            raise TypeError(f"images must be a numpy array, got {type(images).__name__}")
        if images.ndim != len(self.shape) + 1 or images.shape[1:] != self.shape or images.shape[0] < 1:
            raise ValueError(f"images must be a stack of shape (B, *{self.shape}) with B >= 1, "
                             f"got {images.shape}")
        if sigma is None and self.exceed_k is not None:
            sigma = np.stack([image_sigma(image, cfa=cfa) for image in images])
        return self._fold_stack(images, sigma, saturation, cfa)

    def _fold_stack(self, images, sigma, saturation, cfa):
        if cfa and len(self.shape) != 2:
            raise ValueError(f"cfa=True needs H×W statistics, these are {self.shape}")
        if images.dtype not in IMAGE_DTYPES:
            raise TypeError(f"images have dtype {images.dtype}; convert to uint8, uint16 or float32")
        n_batch = images.shape[0]
        stack = np.ascontiguousarray(images).reshape(n_batch, self.shape[0], -1)
        if stack.dtype.kind == "f" and not all_finite_rows(stack.reshape(-1, stack.shape[2]),
                                                           n_row_chunks(stack.shape[0] * stack.shape[1])):
            raise ValueError("image contains NaN or inf; replace them (np.nan_to_num) first")
        thresholds = self._thresholds(sigma, n_batch, cfa, allow_map=False)
        use_level = False
        level = np.zeros(1, stack.dtype)
        if saturation is not None:
            level, use_level = saturation_level(stack.dtype, saturation)
            self._ensure_skipped()
        row_step, col_step = (2, 2) if cfa else (1, self.shape[2] if len(self.shape) == 3 else 1)
        inv_count = (1.0 / (self.n_images + 1 + np.arange(n_batch))).astype(self.dtype)
        _update_from_images(stack, row_step, col_step, level, use_level, *self._state2d(),
                            thresholds, self.exceed is not None, self.n_images, inv_count,
                            n_row_chunks(self.shape[0]))
        self.n_images += n_batch
        return self

    def merge(self, other):
        """Fold another accumulator of the same shape, dtype and ``exceed_k`` into this one.

        Uses Chan et al.'s pairwise update, so merging the accumulators of disjoint sets of
        images equals (up to rounding) accumulating all images in one; counts and
        exceedance counts add exactly.

        Returns
        -------
        PixelStats
            ``self``.
        """
        if not isinstance(other, PixelStats):
            raise TypeError(f"can only merge a PixelStats, got {type(other).__name__}")
        if (other.shape, other.dtype, other.exceed_k) != (self.shape, self.dtype, self.exceed_k):
            raise ValueError(
                f"cannot merge statistics of shape {other.shape}, dtype {other.dtype}, exceed_k "
                f"{other.exceed_k} into shape {self.shape}, dtype {self.dtype}, exceed_k {self.exceed_k}"
            )
        dummy = np.zeros(1, np.int32)
        has_a, has_b = self.skipped is not None, other.skipped is not None
        _chan_merge(self.mean.reshape(-1), self.m2.reshape(-1),
                    self.skipped.reshape(-1) if has_a else dummy, has_a, self.n_images,
                    other.mean.reshape(-1), other.m2.reshape(-1),
                    other.skipped.reshape(-1) if has_b else dummy, has_b, other.n_images,
                    n_row_chunks(self.mean.size))
        if has_b:
            self._ensure_skipped()
            self.skipped += other.skipped
        if self.exceed is not None:
            self.exceed += other.exceed
        self.n_images += other.n_images
        return self

    # ----------------------------------------------------------------- serialisation
    def to_dict(self):
        """The state as a dict of numpy arrays (suitable for ``np.savez``)."""
        state = {
            "format": np.array(_FORMAT_VERSION),
            "shape": np.array(self.shape, np.int64),
            "n_images": np.array(self.n_images, np.int64),
            "exceed_k": np.array(np.nan if self.exceed_k is None else self.exceed_k),
            "mean": self.mean,
            "m2": self.m2,
        }
        if self.skipped is not None:
            state["skipped"] = self.skipped
        if self.exceed is not None:
            state["exceed"] = self.exceed
        return state

    @classmethod
    def from_dict(cls, state):
        """Rebuild from :meth:`to_dict` output (for example an ``np.load`` of a saved file)."""
        missing = {"format", "shape", "n_images", "exceed_k", "mean", "m2"} - set(state)
        if missing:
            raise ValueError(f"not a PixelStats state: missing {sorted(missing)}")
        if int(state["format"]) != _FORMAT_VERSION:
            raise ValueError(f"PixelStats state format {int(state['format'])} is not supported "
                             f"(expected {_FORMAT_VERSION})")
        exceed_k = float(state["exceed_k"])
        mean = np.asarray(state["mean"])
        stats = cls(tuple(np.asarray(state["shape"]).tolist()),
                    None if np.isnan(exceed_k) else exceed_k, mean.dtype)
        stats.n_images = int(state["n_images"])
        for name, dtype in (("mean", stats.dtype), ("m2", stats.dtype),
                            ("skipped", np.int32), ("exceed", np.uint32)):
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != stats.shape or value.dtype != dtype:
                raise ValueError(f"state[{name!r}] has {value.dtype} {value.shape}; expected "
                                 f"{np.dtype(dtype)} {stats.shape}")
            setattr(stats, name, np.array(value, order="C"))
        if ("exceed" in state) != (stats.exceed_k is not None):
            raise ValueError("state has exceed_k but no exceed counts (or the reverse)")
        if stats.skipped is not None and (stats.skipped.min() < 0 or stats.skipped.max() > stats.n_images):
            raise ValueError("state['skipped'] is outside 0..n_images")
        return stats

    # ----------------------------------------------------------------- helpers
    def _ensure_skipped(self):
        if self.skipped is None:
            self.skipped = np.zeros(self.shape, np.int32)

    def _state2d(self):
        rows = self.shape[0]
        dummy_skipped = np.zeros((1, 1), np.int32)
        dummy_exceed = np.zeros((1, 1), np.uint32)
        return (
            self.mean.reshape(rows, -1),
            self.m2.reshape(rows, -1),
            dummy_skipped if self.skipped is None else self.skipped.reshape(rows, -1),
            self.skipped is not None,
            dummy_exceed if self.exceed is None else self.exceed.reshape(rows, -1),
        )

    def _thresholds(self, sigma, n_batch, cfa, allow_map):
        """float32 ``exceed_k * sigma`` laid out as (B, R, W·C) rows, R = 1, 2 (CFA) or H."""
        if self.exceed_k is None:
            if sigma is not None:
                raise ValueError("sigma given, but these statistics count no exceedances; "
                                 "create PixelStats(shape, exceed_k=...) to count them")
            return np.zeros((1, 1, 1), np.float32)
        sigma = np.asarray(sigma, np.float64)
        if not np.isfinite(sigma).all() or (sigma < 0).any():
            raise ValueError("sigma must be finite and >= 0")
        height, width = self.shape[:2]
        n_channels = self.shape[2] if len(self.shape) == 3 else 1
        if allow_map and sigma.shape == self.shape and not (cfa and sigma.shape == (2, 2)):
            return (self.exceed_k * sigma).astype(np.float32).reshape(1, height, -1)
        try:
            if cfa:
                per_plane = np.broadcast_to(sigma, (n_batch, 2, 2))
                rows = np.tile(per_plane, (1, 1, (width + 1) // 2))[:, :, :width]
            else:
                per_channel = np.broadcast_to(sigma, (n_batch, n_channels))
                rows = np.tile(per_channel, (1, width))[:, np.newaxis, :]
        except ValueError:
            expected = "(2, 2) or (B, 2, 2)" if cfa else f"({n_channels},), (B, 1) or (B, {n_channels})"
            maps = f", or a per-pixel map {self.shape}" if allow_map else ""
            raise ValueError(f"sigma of shape {sigma.shape} does not fit: give a scalar, "
                             f"{expected}{maps}") from None
        return np.ascontiguousarray(self.exceed_k * rows, dtype=np.float32)
