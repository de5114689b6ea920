"""Square patches of one image centred on sensor positions (the defects of a run), as CNN input.

A patch of side ``P`` centred on ``(row, col)`` covers rows ``row - P/2 .. row + P/2 - 1`` and
the same columns, so the defect pixel lands at index ``(P // 2, P // 2)``. Positions near the
border are completed by reflection about the edge pixel (numpy's ``'reflect'``, repeated for
patches larger than the image), so every patch has the same size and the defect stays at its
centre.

Values are scaled by :func:`pipeline.srnet.crops.to_tensor_input`, the one place where pixels
become network inputs. With ``source='residual'`` the patch is the 3x3 median residual
(:func:`kernels.median_residual`) of those scaled values, computed on the patch with a one-pixel
margin: every patch pixel then sees the same 3x3 neighbourhood as in the whole image, and the
residual equals the whole image's residual at every pixel that is not on the image's outermost
rows or columns (there the whole-image kernel repeats the edge pixel where the patch reflects
about it). Only the patches are gathered and scaled, never the whole image.

Only numpy (and the numba kernels) are imported here; torch is not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels import median_residual
from pipeline.srnet.crops import DTYPE_FULL_SCALE, to_tensor_input
from pipeline.srnet.defect_presets import CHANNELS, SOURCES


def defect_patches(
    pixels: np.ndarray,
    rows: Any,
    cols: Any,
    patch: int,
    source: str = "residual",
    channels: str = "rgb",
) -> np.ndarray:
    """Patches of one image centred on each ``(row, col)``, as network inputs.

    Parameters
    ----------
    pixels : ndarray
        The image in the sensor frame: (H, W, 3) RGB or (H, W) grey or RAW mosaic; uint8
        (scaled by 1/255), uint16 (1/65535) or float (taken as already scaled).
    rows, cols : sequence of int
        Sensor positions, one patch per pair, in ``[0, H)`` and ``[0, W)``.
    patch : int
        Patch side; even, at least 8.
    source : {'residual', 'pixels'}
        The 3x3 median residual of the scaled image per channel, or the scaled pixels.
    channels : {'rgb', 'luma'}
        Three RGB channels, or the BT.601 luminance; a 2-D image always gives its one channel.

    Returns
    -------
    ndarray, float32, (n, C, patch, patch)
        ``C`` is 3 for an RGB image with ``channels='rgb'``, else 1; ``n = len(rows)`` (0 gives
        an empty array of that shape).

    Raises
    ------
    TypeError
        ``pixels`` of an unsupported dtype, or non-integer ``rows``/``cols``.
    ValueError
        A bad shape, ``patch``, ``source`` or ``channels``, positions outside the image, or
        non-finite pixel values in a patch.
    """
    pixels = _checked_pixels(pixels)
    height, width = pixels.shape[:2]
    rows = _checked_positions("rows", rows, height)
    cols = _checked_positions("cols", cols, width)
    if len(rows) != len(cols):
        raise ValueError(f"rows and cols must have the same length, got {len(rows)} and {len(cols)}")
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 8 or patch % 2:
        raise ValueError(f"patch must be an even integer >= 8, got {patch!r}")
    patch = int(patch)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
    mode = "luma" if pixels.ndim == 2 else channels
    n_channels = 3 if mode == "rgb" else 1
    if len(rows) == 0:
        return np.zeros((0, n_channels, patch, patch), np.float32)

    margin = 1 if source == "residual" else 0
    side = patch + 2 * margin
    offsets = np.arange(side) - (patch // 2 + margin)
    row_index = _reflect(rows[:, None] + offsets, height)  # (n, side)
    col_index = _reflect(cols[:, None] + offsets, width)
    gathered = pixels[row_index[:, :, None], col_index[:, None, :]]  # (n, side, side[, 3])
    # Patches stacked along the rows form one image that to_tensor_input scales in one call.
    stacked = gathered.reshape((len(rows) * side, side) + pixels.shape[2:])
    try:
        scaled = to_tensor_input(stacked, mode)  # (C, n * side, side)
    except ValueError as exc:
        raise ValueError(f"pixels: {exc}") from exc
    if margin:
        # Stacked patches touch only at their margins, which are dropped below, so one kernel
        # call over the stack gives each patch interior its own residual.
        scaled = median_residual(np.ascontiguousarray(np.moveaxis(scaled, 0, 2)))
        scaled = np.moveaxis(scaled, 2, 0)
    out = scaled.reshape(n_channels, len(rows), side, side).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(out[:, :, margin : side - margin, margin : side - margin], dtype=np.float32)


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """Indices reflected into ``[0, size)`` about the edge pixels, as ``numpy.pad(mode='reflect')``."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    folded = np.mod(index, period)
    return np.where(folded < size, folded, period - folded)


def _checked_pixels(pixels: Any) -> np.ndarray:
    pixels = np.asarray(pixels)
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ValueError(f"pixels must be an (H, W, 3) RGB or (H, W) grey/mosaic array, got shape {pixels.shape}")
    if pixels.size == 0:
        raise ValueError(f"pixels must not be empty, got shape {pixels.shape}")
    if pixels.dtype not in DTYPE_FULL_SCALE and pixels.dtype.kind != "f":
        raise TypeError(
            f"pixels of dtype {pixels.dtype} are not supported; pass uint8, uint16 or float (already scaled) arrays"
        )
    return pixels


def _checked_positions(name: str, values: Any, size: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of pixel indices, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer pixel indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    outside = (array < 0) | (array >= size)
    if outside.any():
        raise ValueError(
            f"{name} must lie in [0, {size}) for this image; {int(outside.sum())} do not "
            f"(e.g. {int(array[outside][0])}): the positions belong to an image of another size"
        )
    return array
