"""One simulated camera body: PRNU, defect history, acquisition plan and raw capture.

Raw model of a capture at time ``t`` with exposure ``tau`` and ISO ``iso`` (gain
``g = iso / base_iso``), per pixel of the CFA mosaic, in DN::

    Y = black + I * (1 + K) + g * (tau * D + c) [defects with onset <= t] + noise,

clipped to ``[0, white_level]`` (full well) and rounded. ``I`` is the scene light of the
pixel's CFA colour as set by auto-exposure (it does not change with ``tau`` or ISO: the
metering keeps the image level), ``K`` the PRNU. The noise is Gaussian with variance
``e * S + (e * read_noise_e)**2 + adc_noise_dn**2``, where ``S`` is the signal above black
and ``e = g * (white - black) / full_well_e`` the DN per electron (shot noise, read noise
before and after the gain).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

import numpy as np

from pipeline.sim.config import CFA_PATTERNS, SimulationConfig
from pipeline.sim.defects import DefectSet, sample_defects
from pipeline.sim.isp import Isp, cfa_color_map
from pipeline.sim.scenes import LIGHTING, render_scene
from pipeline.sim.schedule import (STREAM_DEFECTS, STREAM_PRNU, Capture, device_seed, image_rng,
                                   plan_captures)

__all__ = ["SimulatedDevice", "RenderedCapture"]

_CELL = ((0, 0), (0, 1), (1, 0), (1, 1))


@dataclass(frozen=True)
class RenderedCapture:
    """One rendered image: the scene light, the raw mosaic and the processed output.

    Attributes
    ----------
    capture : Capture
    light : numpy.ndarray
        ``(H, W)`` float32 scene light ``I`` in DN on the mosaic (before PRNU, defects, noise).
    raw : numpy.ndarray
        ``(H, W)`` uint16 raw mosaic, black level included.
    image : numpy.ndarray or None
        ``(H, W, 3)`` processed image (uint8; uint16 for TIFF output; None for DNG output,
        which stores the raw mosaic).
    """

    capture: Capture
    light: np.ndarray
    raw: np.ndarray
    image: np.ndarray


class SimulatedDevice:
    """A camera body of a :class:`~pipeline.sim.config.SimulationConfig`.

    Parameters
    ----------
    config : SimulationConfig
    name : str
        The device's name (``config.devices[i].name``).

    Attributes
    ----------
    name, serial : str
    model : ModelConfig
    isp : Isp
        Its processing (the model's style scaled by ``processing_bias``).
    captures : list of Capture
        The time-ordered acquisition plan.
    manufactured : datetime
        Start of the defect process.
    defects : DefectSet
        Every defect from manufacture to the last capture, sorted by onset.
    """

    def __init__(self, config: SimulationConfig, name: str):
        device_cfg = config.device(name)
        self.config = config
        self.name = name
        self.serial = device_cfg.serial
        self.model = config.models[device_cfg.model]
        self.model_key = device_cfg.model
        self.isp = Isp(self.model, config.processing.effective(self.model.isp))
        self.captures = plan_captures(config, name)
        self.manufactured = config.time.first_slot_start - timedelta(days=config.time.manufacture_lead_days)
        end = self.captures[-1].captured_at if self.captures else self.manufactured
        rng = np.random.default_rng(device_seed(config.seed, name, STREAM_DEFECTS))
        self.defects: DefectSet = sample_defects(config.defects, self.model.width, self.model.height,
                                                 self.model.cfa, self.manufactured, end, rng)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the sensor frame."""
        return self.model.height, self.model.width

    @cached_property
    def prnu(self) -> np.ndarray:
        """The PRNU factor ``K``, ``(H, W)`` float32, iid N(0, prnu_sigma**2)."""
        rng = np.random.default_rng(device_seed(self.config.seed, self.name, STREAM_PRNU))
        return (rng.standard_normal(self.shape, dtype=np.float32) * np.float32(self.model.prnu_sigma))

    @cached_property
    def cfa_colors(self) -> np.ndarray:
        """``(H, W)`` uint8 colour (0=R, 1=G, 2=B) of every sensor site."""
        return cfa_color_map(self.model.cfa, *self.shape)

    def gain(self, iso: float) -> float:
        """Analogue gain at ``iso`` relative to ``base_iso``."""
        return float(iso) / self.model.base_iso

    def first_slot_after(self, when: datetime | np.datetime64) -> int | None:
        """Slot of the first capture at or after ``when`` (None if there is none)."""
        when = np.datetime64(when, "s")
        for capture in self.captures:
            if np.datetime64(capture.captured_at, "s") >= when:
                return capture.slot
        return None

    def scene_light(self, capture: Capture, rng: np.random.Generator) -> np.ndarray:
        """The scene light ``I`` of a planned capture on the mosaic, in DN (float32).

        Renders the scene, applies its group's lighting and the metering error, then samples
        each site's colour through the model's spectral response.
        """
        height, width = self.shape
        scene = render_scene(capture.scene, width, height, rng)
        lighting = LIGHTING[capture.scene_group]
        scale = (np.asarray(lighting.tint) * lighting.key * 2.0 ** capture.metering_ev
                 * np.asarray(self.model.spectral_response) * (self.model.white_level - self.model.black_level))
        return self.mosaic_of(scene, scale)

    def mosaic_of(self, rgb: np.ndarray, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
        """Sample an ``(H, W, 3)`` RGB image through the CFA: ``rgb[y, x, colour(y, x)] * scale[colour]``."""
        out = np.empty(self.shape, np.float32)
        for (dy, dx), colour in zip(_CELL, CFA_PATTERNS[self.model.cfa]):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, colour] * np.float32(scale[colour])
        return out

    def render_raw(self, light: np.ndarray, exposure_s: float, iso: float, at: datetime | np.datetime64,
                   rng: np.random.Generator | None = None, *, noise: bool = True, prnu: bool = True,
                   defects: bool = True) -> np.ndarray:
        """The raw mosaic of one capture.

        Parameters
        ----------
        light : numpy.ndarray
            ``(H, W)`` scene light ``I`` in DN above black (see :meth:`scene_light`).
        exposure_s : float
            Exposure time ``tau``.
        iso : float
            ISO; gain ``iso / base_iso`` scales the defects and the DN per electron.
        at : datetime or numpy.datetime64
            Capture time: the defects with onset at or before it are present.
        rng : numpy.random.Generator, optional
            Noise source; required when ``noise`` is True.
        noise, prnu, defects : bool
            Switch the noise, the PRNU and the defects off (for tests of the model).

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` uint16, black level included, clipped to ``[0, white_level]``.
        """
        if light.shape != self.shape:
            raise ValueError(f"light has shape {light.shape}; device {self.name} needs {self.shape}")
        gain = self.gain(iso)
        signal = light.astype(np.float32, copy=True)
        if prnu:
            signal *= 1.0 + self.prnu
        if defects and len(self.defects):
            present = self.defects.active(at)
            amplitude = self.defects.amplitude_dn(exposure_s, gain)[present].astype(np.float32)
            signal[self.defects.rows[present], self.defects.cols[present]] += amplitude
        if noise:
            if rng is None:
                raise ValueError("render_raw(noise=True) needs an rng")
            dn_per_e = gain * (self.model.white_level - self.model.black_level) / self.model.full_well_e
            variance = np.maximum(signal, 0.0)
            variance *= np.float32(dn_per_e)
            variance += np.float32((self.model.read_noise_e * dn_per_e) ** 2 + self.model.adc_noise_dn ** 2)
            np.sqrt(variance, out=variance)
            variance *= rng.standard_normal(self.shape, dtype=np.float32)
            signal += variance
        signal += np.float32(self.model.black_level)
        np.rint(signal, out=signal)
        np.clip(signal, 0, self.model.white_level, out=signal)
        return signal.astype(np.uint16)

    def render(self, capture: Capture) -> RenderedCapture:
        """Render a planned capture exactly as the simulator writes it (same random stream)."""
        rng = image_rng(self.config.seed, self.name, capture.index)
        light = self.scene_light(capture, rng)
        raw = self.render_raw(light, capture.exposure_s, capture.iso, capture.captured_at, rng)
        fmt = self.isp.processing.output_format
        image = self.isp.develop(raw, bits=16 if fmt == "tiff" else 8) if fmt != "dng" else None
        return RenderedCapture(capture, light, raw, image)
