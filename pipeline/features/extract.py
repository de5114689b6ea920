"""Per-image feature extraction: screening records, and residuals at candidate positions.

Two passes over a device's images, each decoding an image once, shared by every split run:

* :func:`screen_batch` — the full median residual of every image, reduced to a sparse
  record (:class:`ScreenRecord`): where it exceeds ``EXCEED_K`` noise levels and where its
  window is clipped (:func:`kernels.exceedances`). Each run sums the records of its own
  training images into time-block counts to screen candidates, without decoding again;
* :func:`sparse_batch` — the residual and its local noise level at given positions (the
  union of every run's candidates).

Both are module-level functions of one batch, so that
:func:`pipeline.features.executor.map_batches` can run them in worker processes (local or
Dask). Results per image are cached by content (:class:`pipeline.features.cache.FeatureCache`).
Each pass reads a file's bytes once: they are hashed (the cache key, the same SHA-256 as
:func:`pipeline.features.cache.file_digest`) and a JPEG or PNG is decoded from that same buffer;
JPEGs are decoded into one reused array per worker thread instead of a new one per image.
The screening pass also returns each image's file SHA-256 and a fingerprint of its decoded pixels,
from which a run finds content duplicates (the same picture under another name or format).
An image that cannot be read is returned as a failure (path, reason), never raised, so that
one bad file does not stop a run of thousands.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from dataclasses import dataclass, field

import numpy as np

import kernels
from pipeline.data.errors import ImageReadError
from pipeline.data.imageio import SensorImage, jpeg_frame, read_image
from pipeline.features.cache import FeatureCache, fingerprint

__all__ = ["ScreenTask", "ScreenRecord", "ScreenResult", "SparseTask", "SparseResult", "screen_batch",
           "sparse_batch", "analysis_view", "probe_device", "pixel_fingerprint", "EXCEED_K", "SIGMA_FLOOR"]

#: Version of the per-image computations; bump it when a change alters cached results.
FEATURE_VERSION = 3  # 2: records carry the ISO from the file's metadata; 3: and a pixel fingerprint

#: Standardised residual threshold whose exceedances the screening records keep (W > k·σ).
#: On the synthetic default, k = 4 kept recall (0.935) and raised precision (0.973 against
#: 0.936 at k = 3) with half the candidates, and the records are smaller.
EXCEED_K = 4.0

#: Floor of the local noise level, in pixel units: one quantisation step. In flat or
#: saturated regions of an 8-bit JPEG most residuals of a window are exactly 0, so the scaled
#: MAD is 0 and any residual would look infinitely significant.
SIGMA_FLOOR = 1.0


@dataclass(frozen=True)
class ScreenTask:
    """Images whose screening records are wanted, and what every one of them must be."""

    paths: tuple[str, ...]
    expected_shape: tuple[int, int] | None
    cache: FeatureCache = field(default_factory=lambda: FeatureCache(None))
    expected_kind: str | None = None
    expected_bit_depth: int | None = None


@dataclass
class ScreenRecord:
    """Sparse summary of one image's full residual.

    Attributes
    ----------
    exceed : ndarray of int
        Sorted flat indices (into the analysis array, H×W or H×W×C) where ``W > EXCEED_K·σ``,
        ``σ`` the image's noise level per channel or CFA plane (floored at ``SIGMA_FLOOR``).
    clipped : ndarray of int
        Sorted flat indices whose residual window holds a saturated neighbour (not measured).
    shape : tuple
        Shape of the analysis array.
    exposure : float or None
        Exposure time from the file's metadata.
    iso : float or None
        ISO speed from the file's metadata.
    pixel_fingerprint : str or None
        :func:`pixel_fingerprint` of the analysed pixels (equal for the same picture in another
        file; a match is a candidate duplicate, confirmed by comparing every pixel).
    """

    exceed: np.ndarray
    clipped: np.ndarray
    shape: tuple
    exposure: float | None
    iso: float | None = None
    pixel_fingerprint: str | None = None


@dataclass
class ScreenResult:
    records: dict = field(default_factory=dict)   # path -> ScreenRecord
    failures: list[tuple[str, str]] = field(default_factory=list)
    cache_hits: int = 0
    digests: dict = field(default_factory=dict)   # path -> SHA-256 of the file's bytes
    notes: dict = field(default_factory=dict)     # path -> SensorImage.notes of an image read with notes
    cache_error: str | None = None                # why the cache could not be written, if it could not


@dataclass(frozen=True)
class SparseTask:
    """Images at whose candidate positions residuals are measured."""

    paths: tuple[str, ...]
    rows: np.ndarray
    cols: np.ndarray
    channels: np.ndarray
    expected_shape: tuple[int, int] | None
    cache: FeatureCache = field(default_factory=lambda: FeatureCache(None))
    expected_kind: str | None = None
    expected_bit_depth: int | None = None


@dataclass
class SparseResult:
    residuals: np.ndarray  # (n_images, n_positions) float32, NaN: clipped neighbourhood or unreadable
    sigma: np.ndarray      # (n_images, n_positions) float32
    failures: list[tuple[str, str]] = field(default_factory=list)
    exposures: dict[str, float | None] = field(default_factory=dict)
    isos: dict[str, float | None] = field(default_factory=dict)
    cache_hits: int = 0
    cache_error: str | None = None


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


def probe_device(path: str) -> tuple[tuple[int, int], str, int]:
    """Frame (height, width), kind and bit depth of one image (a device's images must share them).

    A JPEG's come from its header alone (:func:`pipeline.data.imageio.jpeg_frame`), without
    decoding it: the probe of a device's few sample images would otherwise cost as many decodes.
    """
    data = _file_bytes(path)
    frame = jpeg_frame(data) if data is not None else None
    if frame is not None:
        return frame
    image = read_image(path)
    return tuple(image.pixels.shape[:2]), image.kind, int(image.bit_depth)


#: Every how many rows of a decoded image go into its pixel fingerprint. Hashing every pixel of a
#: 12 MP image costs about half a JPEG decode (SHA-256, 20 ms); every 16th row costs 1.5 ms, and a
#: match is only a candidate that is confirmed by comparing every pixel before anything is excluded.
PIXEL_FINGERPRINT_ROW_STEP = 16


def pixel_fingerprint(pixels: np.ndarray) -> str:
    """SHA-256 (hex) of the dtype, the shape and every 16th row of decoded pixels.

    One picture stored twice (byte for byte, or as a PNG copy of a JPEG's decoded pixels) has one
    fingerprint; two different pictures with equal fingerprints would need every sampled row
    equal, so a match is a near-certain duplicate, which the caller confirms on all pixels.
    """
    digest = hashlib.sha256(f"{pixels.dtype.str}{pixels.shape}".encode())
    if pixels.flags.c_contiguous:
        for row in pixels[::PIXEL_FINGERPRINT_ROW_STEP]:  # the same bytes as one copy of the rows, without it
            digest.update(row)
    else:
        digest.update(np.ascontiguousarray(pixels[::PIXEL_FINGERPRINT_ROW_STEP]))
    return digest.hexdigest()


def _file_bytes(path: str) -> bytes | None:
    """The file's bytes, read once for both its content key and its decoding.

    None when it is not a regular file (a named pipe would block) or cannot be read:
    :func:`read_image` then says what is wrong with it.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _content_key(data: bytes | None) -> str | None:
    """The cache's content key of a file's bytes: their SHA-256, as :func:`pipeline.features.cache.file_digest` gives it."""
    return None if data is None else hashlib.sha256(data).hexdigest()


def _expectations(task) -> dict:
    return {"expected_shape": task.expected_shape, "expected_kind": task.expected_kind,
            "expected_bit_depth": task.expected_bit_depth}


#: Per thread, the uint8 array the last JPEG was decoded into, reused for the next one of at most its size.
_decode_buffers = threading.local()


def _read(path, task, data) -> tuple[SensorImage, np.ndarray, bool, float]:
    buffer = getattr(_decode_buffers, "jpeg", None)
    image = read_image(path, **_expectations(task), data=data, decode_into=buffer)
    pixels = image.pixels
    if (image.format == "jpeg" and pixels.dtype == np.uint8 and pixels.flags.c_contiguous and pixels.flags.writeable
            and (buffer is None or pixels.size > buffer.size)):
        _decode_buffers.jpeg = pixels.reshape(-1)  # the next, once this image is done with
    return (image, *analysis_view(image))


def _screen_params(task) -> str:
    return fingerprint(version=FEATURE_VERSION, exceed_k=EXCEED_K, sigma_floor=SIGMA_FLOOR,
                       **{k: None if v is None else (list(v) if isinstance(v, tuple) else v)
                          for k, v in _expectations(task).items()})


def _exposure_or_none(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def screen_batch(task: ScreenTask) -> ScreenResult:
    """The screening record and file digest of every image of the batch (from the cache when present)."""
    result = ScreenResult()
    params = _screen_params(task)
    for path in task.paths:
        data = _file_bytes(path)
        content = _content_key(data)
        if content:
            result.digests[path] = content
        cached = task.cache.load("screen", content, params) if content else None
        if cached is not None:
            result.records[path] = ScreenRecord(cached["exceed"], cached["clipped"], tuple(cached["shape"].tolist()),
                                                _exposure_or_none(cached["exposure"]), _exposure_or_none(cached["iso"]),
                                                cached["pixel_fingerprint"].tobytes().hex())
            if cached["notes"].size:
                result.notes[path] = tuple(str(note) for note in cached["notes"])
            result.cache_hits += 1
            continue
        try:
            image, pixels, is_cfa, saturation = _read(path, task, data)
        except ImageReadError as exc:
            result.failures.append((path, exc.reason))
            continue
        del data  # the bytes are not needed past decoding
        sigma = np.maximum(kernels.image_sigma(pixels, cfa=is_cfa), SIGMA_FLOOR)
        exceed, clipped = kernels.exceedances(pixels, sigma, EXCEED_K, saturation=saturation, cfa=is_cfa)
        index_type = np.int32 if pixels.size < 2 ** 31 else np.int64
        record = ScreenRecord(exceed.astype(index_type), clipped.astype(index_type), pixels.shape,
                              image.metadata.exposure_s, image.metadata.iso, pixel_fingerprint(pixels))
        if image.notes:
            result.notes[path] = tuple(image.notes)
        result.records[path] = record
        if content:
            task.cache.store("screen", content, params, {
                "exceed": record.exceed, "clipped": record.clipped, "shape": np.array(record.shape),
                "exposure": np.array(np.nan if record.exposure is None else record.exposure),
                "iso": np.array(np.nan if record.iso is None else record.iso),
                "pixel_fingerprint": np.frombuffer(bytes.fromhex(record.pixel_fingerprint), dtype=np.uint8),
                "notes": np.array(list(image.notes), dtype=str)})
    result.cache_error = task.cache.write_error
    return result


def _sparse_params(task: SparseTask) -> str:
    return fingerprint(version=FEATURE_VERSION, sigma_floor=SIGMA_FLOOR, rows=np.asarray(task.rows, np.int64),
                       cols=np.asarray(task.cols, np.int64), channels=np.asarray(task.channels, np.int64),
                       **{k: None if v is None else (list(v) if isinstance(v, tuple) else v)
                          for k, v in _expectations(task).items()})


def sparse_batch(task: SparseTask) -> SparseResult:
    """Residual and local noise level at the task's positions, for each image of the batch."""
    n, m = len(task.paths), task.rows.size
    out = SparseResult(np.full((n, m), np.nan, dtype=np.float32), np.full((n, m), np.nan, dtype=np.float32))
    params = _sparse_params(task) if task.cache.root is not None else ""
    for i, path in enumerate(task.paths):
        data = _file_bytes(path)
        content = _content_key(data) if task.cache.root is not None else None
        cached = task.cache.load("sparse", content, params) if content else None
        if cached is not None:
            out.residuals[i], out.sigma[i] = cached["residuals"], cached["sigma"]
            out.exposures[path] = _exposure_or_none(cached["exposure"])
            out.isos[path] = _exposure_or_none(cached["iso"])
            out.cache_hits += 1
            continue
        try:
            image, pixels, is_cfa, saturation = _read(path, task, data)
        except ImageReadError as exc:
            out.failures.append((path, exc.reason))
            continue
        del data
        out.exposures[path] = image.metadata.exposure_s
        out.isos[path] = image.metadata.iso
        if m:
            out.residuals[i], out.sigma[i] = _measure(pixels, is_cfa, saturation, task)
        if content:
            exposure = image.metadata.exposure_s
            task.cache.store("sparse", content, params, {
                "residuals": out.residuals[i], "sigma": out.sigma[i],
                "exposure": np.array(np.nan if exposure is None else exposure),
                "iso": np.array(np.nan if image.metadata.iso is None else image.metadata.iso)})
    out.cache_error = task.cache.write_error
    return out


def _measure(pixels, is_cfa, saturation, task):
    if is_cfa:
        w = kernels.sparse_cfa_residual(pixels, task.rows, task.cols)
        s = kernels.local_sigma_at(pixels, task.rows, task.cols, cfa=True)
    else:
        channels = task.channels if pixels.ndim == 3 else None
        w = kernels.sparse_residual(pixels, task.rows, task.cols, channels)
        s = kernels.local_sigma_at(pixels, task.rows, task.cols, channels)
    # any of the 8 median neighbours saturated (the centre itself may be: a saturated hot
    # pixel's residual is still a lower bound of its strength)
    clipped = kernels.clipped_at(pixels, task.rows, task.cols,
                                 None if (is_cfa or pixels.ndim == 2) else task.channels,
                                 saturation=saturation, cfa=is_cfa)
    return np.where(clipped, np.nan, w), np.maximum(s, SIGMA_FLOOR)
