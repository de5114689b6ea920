"""In-camera processing of the synthetic camera: black level, white balance on the mosaic,
bilinear demosaicing, saturation, gamma tone curve, optional unsharp mask, quantisation.

Bilinear demosaicing keeps every measured value at its own site (the 3x3 kernels below have
weight 1 at the centre and 0 at same-colour sites two pixels away), so a defect's full raw
amplitude survives in its own colour channel at its own pixel; its neighbours receive 1/2
(edge neighbours of an R/B site) or 1/4 of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.sim.config import CFA_PATTERNS, ModelConfig, ProcessingConfig

__all__ = ["Isp", "cfa_color_map", "demosaic_bilinear", "display_jump_8bit"]

_CELL = ((0, 0), (0, 1), (1, 0), (1, 1))


def cfa_color_map(cfa: str, height: int, width: int) -> np.ndarray:
    """``(height, width)`` uint8 colour index (0=R, 1=G, 2=B) of every site of a CFA pattern."""
    cell = np.asarray(CFA_PATTERNS[cfa], np.uint8).reshape(2, 2)
    return np.tile(cell, ((height + 1) // 2, (width + 1) // 2))[:height, :width]


def _pair_mean(plane: np.ndarray, axis: int, forward: bool) -> np.ndarray:
    """Mean of ``plane`` at k and k+1 (``forward``) or k-1 and k along ``axis``, edges replicated.

    On a quarter-resolution CFA plane, replicating the edge equals mirror extension of the
    full-resolution mosaic (the mirrored neighbour of a border site is the same-colour site
    two pixels inside, i.e. the same plane element).
    """
    if axis == 0:
        other = (np.concatenate((plane[1:], plane[-1:]), axis=0) if forward
                 else np.concatenate((plane[:1], plane[:-1]), axis=0))
    else:
        other = (np.concatenate((plane[:, 1:], plane[:, -1:]), axis=1) if forward
                 else np.concatenate((plane[:, :1], plane[:, :-1]), axis=1))
    other += plane
    other *= np.float32(0.5)
    return other


def demosaic_bilinear(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    """Bilinear demosaicing of a float CFA mosaic.

    Equivalent to convolving each sparse colour plane with ``[[0,1,0],[1,4,1],[0,1,0]] / 4``
    (green) or ``[[1,2,1],[2,4,2],[1,2,1]] / 4`` (red, blue) with mirror borders, computed on
    the four quarter-resolution planes of the 2x2 CFA cell (about 4x faster).

    Parameters
    ----------
    mosaic : numpy.ndarray
        ``(H, W)`` float32 mosaic with even H and W.
    cfa : str
        Pattern name, a key of ``CFA_PATTERNS``.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` float32 RGB.
    """
    if mosaic.ndim != 2 or mosaic.shape[0] % 2 or mosaic.shape[1] % 2:
        raise ValueError(f"demosaic_bilinear needs a 2-D mosaic with even sides, got shape {mosaic.shape}")
    mosaic = np.asarray(mosaic, np.float32)
    pattern = CFA_PATTERNS[cfa]
    out = np.empty(mosaic.shape + (3,), np.float32)
    red_blue_site = {colour: cell for cell, colour in zip(_CELL, pattern) if colour != 1}
    for (ty, tx), own in zip(_CELL, pattern):
        target = out[ty::2, tx::2]
        target[..., own] = mosaic[ty::2, tx::2]
        for colour in range(3):
            if colour == own:
                continue
            if colour == 1:  # the four green neighbours: two in the row, two in the column
                mean = _pair_mean(mosaic[ty::2, 1 - tx::2], 1, tx > 1 - tx)
                mean += _pair_mean(mosaic[1 - ty::2, tx::2], 0, ty > 1 - ty)
                mean *= np.float32(0.5)
            else:  # the two (row or column) or four (diagonal) red/blue neighbours
                sy, sx = red_blue_site[colour]
                mean = mosaic[sy::2, sx::2]
                if tx != sx:
                    mean = _pair_mean(mean, 1, tx > sx)
                if ty != sy:
                    mean = _pair_mean(mean, 0, ty > sy)
            target[..., colour] = mean
    return out


def display_jump_8bit(amplitude_dn, background: float, wb_gain, raw_range: float, gamma: float):
    """8-bit change of a pixel's own channel when ``amplitude_dn`` raw DN are added to it.

    ``background`` is the channel's white-balanced linear level in [0, 1]. This is the
    ISP's tone curve applied to the pixel before demosaicing neighbours, sharpening and JPEG.
    """
    lifted = np.clip(background + np.asarray(amplitude_dn) * np.asarray(wb_gain) / raw_range, 0.0, 1.0)
    return 255.0 * (lifted ** (1.0 / gamma) - background ** (1.0 / gamma))


@dataclass(frozen=True)
class Isp:
    """The processing of one device (its model's sensor and effective processing).

    Attributes
    ----------
    model : ModelConfig
    processing : ProcessingConfig
        The effective processing (already scaled by ``processing_bias``).
    """

    model: ModelConfig
    processing: ProcessingConfig

    @property
    def raw_range(self) -> float:
        """``white_level - black_level``: raw DN that map to linear 1.0 before white balance."""
        return float(self.model.white_level - self.model.black_level)

    @property
    def wb_gains(self) -> np.ndarray:
        """Per-colour (R, G, B) white-balance gains: daylight balance times the processing tint."""
        return (np.asarray(self.processing.wb_tint, np.float64)
                / np.asarray(self.model.spectral_response, np.float64))

    def linear(self, raw: np.ndarray) -> np.ndarray:
        """Black-subtracted, normalised, white-balanced, demosaiced linear RGB (float32, unclipped)."""
        mosaic = raw.astype(np.float32)
        mosaic -= self.model.black_level
        pattern = CFA_PATTERNS[self.model.cfa]
        gains = (self.wb_gains / self.raw_range).astype(np.float32)
        for (dy, dx), colour in zip(_CELL, pattern):
            mosaic[dy::2, dx::2] *= gains[colour]
        return demosaic_bilinear(mosaic, self.model.cfa)

    def display(self, raw: np.ndarray) -> np.ndarray:
        """The processed image, float32 in [0, 1] (before quantisation)."""
        rgb = self.linear(raw)
        p = self.processing
        if p.saturation != 1.0:
            mean = rgb.mean(axis=2, keepdims=True)
            rgb = mean + (rgb - mean) * np.float32(p.saturation)
        np.clip(rgb, 0.0, 1.0, out=rgb)
        np.power(rgb, np.float32(1.0 / p.gamma), out=rgb)
        if p.sharpen > 0.0:
            blurred = ndimage.gaussian_filter(rgb, sigma=(1.0, 1.0, 0.0), mode="mirror")
            rgb += np.float32(p.sharpen) * (rgb - blurred)
            np.clip(rgb, 0.0, 1.0, out=rgb)
        return rgb

    def develop(self, raw: np.ndarray, bits: int = 8) -> np.ndarray:
        """The processed image quantised to ``bits`` (8 -> uint8, 16 -> uint16)."""
        if bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {bits}")
        top = 255.0 if bits == 8 else 65535.0
        scaled = self.display(raw)
        scaled *= np.float32(top)
        scaled += np.float32(0.5)
        return scaled.astype(np.uint8 if bits == 8 else np.uint16)
