"""The acquisition plan of a device: when each image is taken, with which exposure, ISO and scene.

Every random stream is derived from ``(seed, device name, stream[, image index])`` through
:class:`numpy.random.SeedSequence`, so a device's plan, PRNU, defects and each image do not
depend on the other devices, on the order of work or on the number of worker processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

import numpy as np

from pipeline.sim.config import SimulationConfig
from pipeline.sim.scenes import SCENE_TYPES, choose_scene

__all__ = ["Capture", "STREAM_PRNU", "STREAM_DEFECTS", "STREAM_SCHEDULE", "STREAM_IMAGE",
           "device_seed", "image_rng", "plan_captures", "shutter_speed"]

STREAM_PRNU, STREAM_DEFECTS, STREAM_SCHEDULE, STREAM_IMAGE = 0, 1, 2, 3


def _device_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "little")


def device_seed(seed: int, device: str, stream: int, *extra: int) -> np.random.SeedSequence:
    """The seed sequence of one random stream of one device (and image, via ``extra``)."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(_device_key(device), stream, *extra))


def image_rng(seed: int, device: str, index: int) -> np.random.Generator:
    """The generator that renders image ``index`` of ``device`` (scene, crop, noise)."""
    return np.random.default_rng(device_seed(seed, device, STREAM_IMAGE, index))


@dataclass(frozen=True)
class Capture:
    """One planned image of one device.

    Attributes
    ----------
    device : str
    index : int
        0-based position in the device's time-ordered captures (names the file).
    slot : int
        1-based acquisition slot.
    label : int
        Age class of the slot.
    captured_at : datetime
        Naive local capture time, to the second.
    exposure_s : float
        Exposure time, a shutter speed ``1/n`` s (see :func:`shutter_speed`).
    iso : int
    scene : str
        Scene type name (a key of ``SCENE_TYPES``).
    scene_group : str
    metering_ev : float
        Metering error of the auto-exposure for this image, in EV.
    """

    device: str
    index: int
    slot: int
    label: int
    captured_at: datetime
    exposure_s: float
    iso: int
    scene: str
    scene_group: str
    metering_ev: float


def shutter_speed(exposure_s: float) -> Fraction:
    """Round an exposure time to a camera-like shutter speed: ``1/n`` below 1 s, tenths above."""
    if exposure_s < 1.0:
        return Fraction(1, max(1, int(round(1.0 / exposure_s))))
    return Fraction(int(round(exposure_s * 10)), 10)


def _images_per_slot(total: int, first: int, last: int) -> list[tuple[int, int]]:
    slots = list(range(first, last + 1))
    base, extra = divmod(total, len(slots))
    return [(slot, base + (1 if i < extra else 0)) for i, slot in enumerate(slots)]


def plan_captures(config: SimulationConfig, device: str) -> list[Capture]:
    """The time-ordered acquisition plan of ``device``.

    ``capture.images_per_class`` images per class are spread evenly over the class's slots
    (the first slots take the remainder); inside a slot each image falls on one of its
    ``slot_duration_days`` days at a uniform time of day. Exposure is log-uniform in the
    model's range, ISO follows the model's weights, and the scene follows
    :func:`~pipeline.sim.scenes.choose_scene`.
    """
    cfg = config.device(device)
    model = config.models[cfg.model]
    time = config.time
    rng = np.random.default_rng(device_seed(config.seed, device, STREAM_SCHEDULE))
    iso_p = np.asarray(model.iso_weights, float) / float(np.sum(model.iso_weights))
    log_lo, log_hi = np.log(model.exposure_min_s), np.log(model.exposure_max_s)
    drafts = []
    for class_index, age_class in enumerate(sorted(config.classes, key=lambda c: c.slots)):
        for slot, count in _images_per_slot(config.capture.images_per_class, *age_class.slots):
            midnight = datetime.combine(time.slot_start(slot).date(), datetime.min.time())
            for _ in range(count):
                day = int(rng.integers(0, time.slot_duration_days))
                second = int(rng.uniform(time.day_start_hour * 3600, time.day_end_hour * 3600))
                exposure = float(shutter_speed(float(np.exp(rng.uniform(log_lo, log_hi)))))
                iso = int(model.iso_values[int(rng.choice(len(iso_p), p=iso_p))])
                scene = choose_scene(_class_position(config, age_class.label), config.scenes, rng)
                ev = float(rng.normal(0.0, config.scenes.exposure_jitter_ev))
                drafts.append((midnight + timedelta(days=day, seconds=second), slot, age_class.label,
                               exposure, iso, scene, ev))
    drafts.sort(key=lambda d: (d[0], d[1]))
    return [Capture(device, i, slot, label, at, exposure, iso, scene, SCENE_TYPES[scene].group, ev)
            for i, (at, slot, label, exposure, iso, scene, ev) in enumerate(drafts)]


def _class_position(config: SimulationConfig, label: int) -> int:
    """Index of class ``label`` in the configuration (the index into ``group_for_class``)."""
    return [c.label for c in config.classes].index(label)
