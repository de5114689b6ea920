"""The five fixed crops of the five-crop fusion, and the one input scaling SRNet ever sees.

Crops are taken in the sensor frame: pixel arrays exactly as stored (no EXIF orientation),
rows first.  Their boxes depend only on the image shape and the patch size, so every image
of a device gives each network the same sensor region.  Box origins are rounded down to a
multiple of ``align`` (2 by default) so that every crop starts on the same phase of a 2x2
colour filter array; for a CFA plane (already one colour) no alignment is needed.

:func:`to_tensor_input` is the single place where pixel values become network inputs; the
training and the explanation code both go through it, so inputs are never scaled
differently between the two.  With ``input='median-residual'`` (method ``srnet-res``) each
crop becomes the 3x3 median-filter residual of each of its channels, computed on the crop plus
a one-pixel margin inside the image, so that every crop pixel has the residual of the whole image
(:func:`kernels.median_residual`, reflect borders at the image's own edges).  Only numpy and
the kernels are imported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernels import median_residual

CROP_NAMES: tuple[str, ...] = ("tl", "tr", "bl", "br", "ce")
"""Top-left, top-right, bottom-left, bottom-right and centre, in this order."""
CHANNEL_MODES: tuple[str, ...] = ("rgb", "luma", "cfa-plane")
INPUT_MODES: tuple[str, ...] = ("pixels", "median-residual")
DTYPE_FULL_SCALE: dict[np.dtype, float] = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
"""Fixed divisor per integer dtype; float images are taken as already scaled."""
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights (what Pillow's ``convert('L')`` uses)."""


def input_channels(channels: str) -> int:
    """Number of network input channels for a channel mode (3 for ``'rgb'``, else 1)."""
    _check_channel_mode(channels)
    return 3 if channels == "rgb" else 1


def crop_box(name: str, shape: Sequence[int], size: int, *, align: int = 2) -> tuple[int, int, int, int]:
    """Box ``(top, left, bottom, right)`` (bottom/right exclusive) of one named crop.

    Parameters
    ----------
    name : {'tl', 'tr', 'bl', 'br', 'ce'}
        Which crop.
    shape : sequence of int
        Image shape; only the first two entries (height, width) are used.
    size : int
        Side of the square crop in pixels.
    align : int, default 2
        Box origins are rounded down to a multiple of this (2 keeps the CFA phase of every
        crop identical; 1 disables it).

    Raises
    ------
    ValueError
        Unknown name, non-positive size or alignment, or an image smaller than the crop.
    """
    if name not in CROP_NAMES:
        raise ValueError(f"unknown crop {name!r}; use one of {', '.join(CROP_NAMES)}")
    if int(size) != size or size < 1:
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    if int(align) != align or align < 1:
        raise ValueError(f"align must be a positive integer, got {align!r}")
    if len(shape) < 2:
        raise ValueError(f"image shape must have at least 2 dimensions (height, width), got {tuple(shape)}")
    height, width = int(shape[0]), int(shape[1])
    if height < size or width < size:
        raise ValueError(
            f"image of {height}x{width} pixels is smaller than the {size}x{size} crop; "
            "use a smaller patch size or exclude the image"
        )
    last_top, last_left = height - size, width - size
    top = {"t": 0, "b": last_top, "c": last_top // 2}[name[0]]
    left = {"l": 0, "r": last_left, "e": last_left // 2}[name[1]]
    top -= top % align
    left -= left % align
    return top, left, top + size, left + size


def crop_boxes(
    shape: Sequence[int], size: int, names: Sequence[str] = CROP_NAMES, *, align: int = 2
) -> dict[str, tuple[int, int, int, int]]:
    """Boxes of several crops, ``name -> (top, left, bottom, right)``; see :func:`crop_box`."""
    return {name: crop_box(name, shape, size, align=align) for name in names}


def cfa_plane(mosaic: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """One colour plane of a 2x2 CFA mosaic as a view: ``mosaic[r::2, c::2]``.

    Plane pixel ``(i, j)`` is sensor pixel ``(2 i + r, 2 j + c)``.
    """
    mosaic = np.asarray(mosaic)
    if mosaic.ndim != 2:
        raise ValueError(
            f"a CFA plane needs the raw mosaic as a 2-D array, got shape {mosaic.shape}; "
            "read RAW files as the visible CFA mosaic, or use channels='rgb' or 'luma'"
        )
    row, col = offset
    if row not in (0, 1) or col not in (0, 1):
        raise ValueError(f"cfa offset must be (row, col) with entries 0 or 1, got {offset!r}")
    return mosaic[row::2, col::2]


def to_tensor_input(pixels: np.ndarray, channels: str = "rgb") -> np.ndarray:
    """Pixels (H, W[, 3]) -> network input (C, H, W) float32, scaled by a fixed per-dtype factor.

    Parameters
    ----------
    pixels : ndarray
        uint8 (scaled by 1/255), uint16 (1/65535) or float32/float64 (taken as already
        scaled).  (H, W, 3) for ``'rgb'``; (H, W, 3) or (H, W) for ``'luma'``; (H, W) --
        one CFA plane, see :func:`cfa_plane` -- for ``'cfa-plane'``.
    channels : {'rgb', 'luma', 'cfa-plane'}
        ``'luma'`` of an RGB array is the BT.601 weighted sum of the scaled channels; of a
        2-D array it is the array itself.

    Returns
    -------
    ndarray
        C-contiguous float32 of shape (3, H, W) or (1, H, W).
    """
    _check_channel_mode(channels)
    pixels = np.asarray(pixels)
    full_scale = np.float32(_dtype_full_scale(pixels.dtype))
    if channels == "rgb":
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"channels='rgb' needs an (H, W, 3) array, got shape {pixels.shape}; use 'luma' for grey images")
        scaled = np.moveaxis(pixels, 2, 0).astype(np.float32) / full_scale
    elif channels == "luma":
        if pixels.ndim == 3 and pixels.shape[2] == 3:
            scaled = np.tensordot(LUMA_WEIGHTS, pixels.astype(np.float32) / full_scale, axes=([0], [2]))[None]
        elif pixels.ndim == 2:
            scaled = pixels[None].astype(np.float32) / full_scale
        else:
            raise ValueError(f"channels='luma' needs an (H, W, 3) or (H, W) array, got shape {pixels.shape}")
    else:
        if pixels.ndim != 2:
            raise ValueError(f"channels='cfa-plane' needs one (H, W) colour plane, got shape {pixels.shape}")
        scaled = pixels[None].astype(np.float32) / full_scale
    scaled = np.ascontiguousarray(scaled, dtype=np.float32)
    if pixels.dtype.kind == "f" and not np.isfinite(scaled).all():
        raise ValueError("pixels contain NaN or infinite values; clean or exclude the image")
    return scaled


def extract_crops(
    pixels: np.ndarray,
    size: int,
    channels: str = "rgb",
    names: Sequence[str] = CROP_NAMES,
    *,
    cfa_offset: tuple[int, int] = (0, 0),
    input: str = "pixels",
) -> dict[str, np.ndarray]:
    """The named crops of one image as network inputs, ``name -> (C, size, size)`` float32.

    Parameters
    ----------
    pixels : ndarray
        The image in the sensor frame: (H, W, 3) RGB, (H, W) grey, or (H, W) CFA mosaic for
        ``channels='cfa-plane'``.
    size : int
        Crop side in pixels (of the CFA plane for ``'cfa-plane'``, which covers ``2 * size``
        sensor pixels).
    channels : {'rgb', 'luma', 'cfa-plane'}
        See :func:`to_tensor_input`.
    names : sequence of str
        Which crops, from :data:`CROP_NAMES`.
    cfa_offset : (int, int)
        Plane of the 2x2 CFA tile used with ``'cfa-plane'``.
    input : {'pixels', 'median-residual'}
        The scaled pixels, or the 3x3 median-filter residual of each input channel of them
        (equal, at every crop pixel, to the residual of the whole scaled image).

    Returns
    -------
    dict
        ``name -> float32 array (C, size, size)``; only the crops are converted, never the
        whole image.
    """
    _check_channel_mode(channels)
    if input not in INPUT_MODES:
        raise ValueError(f"unknown input {input!r}; use one of {', '.join(INPUT_MODES)}")
    pixels = np.asarray(pixels)
    if channels == "cfa-plane":
        source, align = cfa_plane(pixels, cfa_offset), 1
    else:
        source, align = pixels, 2
    boxes = crop_boxes(source.shape, size, names, align=align)
    if input == "median-residual":
        return {name: _residual_crop(source, box, channels) for name, box in boxes.items()}
    return {
        name: to_tensor_input(source[top:bottom, left:right], channels)
        for name, (top, left, bottom, right) in boxes.items()
    }


def median_residual_inputs(inputs: np.ndarray) -> np.ndarray:
    """The 3x3 median-filter residual of every channel of network inputs (N, C, P, P) float32.

    For inputs that are already crops (the audit's crop banks, after colour jitter and the like):
    each crop's residual is computed on the crop alone, with reflect borders at its own edges.
    Inside the crop it equals the residual of the image the crop came from.
    """
    inputs = np.asarray(inputs)
    if inputs.ndim != 4 or inputs.dtype != np.float32:
        raise ValueError(f"inputs must be float32 network inputs (N, C, P, P), got {inputs.dtype} {inputs.shape}")
    out = np.empty_like(inputs)
    for index, crop in enumerate(inputs):
        residual = median_residual(np.ascontiguousarray(np.moveaxis(crop, 0, 2)))
        out[index] = np.moveaxis(residual, 2, 0)
    return out


def _residual_crop(source: np.ndarray, box: tuple[int, int, int, int], channels: str) -> np.ndarray:
    """Median residual (C, P, P) of the scaled crop, computed with a one-pixel margin where the
    image has one, so that it equals the whole image's residual on every crop pixel."""
    top, left, bottom, right = box
    height, width = source.shape[:2]
    outer_top, outer_left = max(top - 1, 0), max(left - 1, 0)
    outer_bottom, outer_right = min(bottom + 1, height), min(right + 1, width)
    scaled = to_tensor_input(source[outer_top:outer_bottom, outer_left:outer_right], channels)
    residual = median_residual(np.ascontiguousarray(np.moveaxis(scaled, 0, 2)))
    inner = residual[top - outer_top : bottom - outer_top, left - outer_left : right - outer_left]
    return np.ascontiguousarray(np.moveaxis(inner, 2, 0), dtype=np.float32)


def _dtype_full_scale(dtype: np.dtype) -> float:
    if dtype in DTYPE_FULL_SCALE:
        return DTYPE_FULL_SCALE[dtype]
    if dtype.kind == "f":
        return 1.0
    raise TypeError(
        f"pixels of dtype {dtype} are not supported; pass uint8, uint16 or float (already scaled to [0, 1]) arrays"
    )


def _check_channel_mode(channels: str) -> None:
    if channels not in CHANNEL_MODES:
        raise ValueError(f"unknown channel mode {channels!r}; use one of {', '.join(CHANNEL_MODES)}")
