"""In-field sensor defects: a homogeneous Poisson process in time, uniform over the sensor,
with a heavy-tailed two-population amplitude mixture; defects never heal.

A defect adds ``gain * (tau * D + c)`` DN to its pixel's raw value from its onset on, with
``gain = iso / base_iso``, ``tau`` the exposure time, ``D`` the dark-current rate (DN/s at base
ISO) and ``c`` the offset (DN at base ISO). Hot pixels are D-dominated; partially stuck pixels
have ``D = 0`` and are c-dominated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from pipeline.sim.config import CFA_PATTERNS, DefectConfig

__all__ = ["DefectSet", "SECONDS_PER_YEAR", "poisson_onsets", "sample_defects", "to_datetime64"]

SECONDS_PER_YEAR = 365.25 * 86400.0


def to_datetime64(value: datetime | np.datetime64 | str) -> np.datetime64:
    """A time as ``numpy.datetime64`` with second resolution (naive local time)."""
    return np.datetime64(value, "s")


@dataclass(frozen=True)
class DefectSet:
    """The defects of one sensor, sorted by onset.

    Attributes
    ----------
    rows, cols : numpy.ndarray of int64
        Sensor position (row, column) in the full frame.
    cfa_color : numpy.ndarray of uint8
        Colour of the CFA site: 0 = R, 1 = G, 2 = B.
    onset : numpy.ndarray of datetime64[s]
        When the defect appears (it is present in every capture at or after this time).
    D : numpy.ndarray of float64
        Dark-current rate, DN per second at base ISO (0 for stuck pixels).
    c : numpy.ndarray of float64
        Offset, DN at base ISO.
    stuck : numpy.ndarray of bool
        True for partially stuck (c-dominated) pixels, False for hot pixels.
    """

    rows: np.ndarray
    cols: np.ndarray
    cfa_color: np.ndarray
    onset: np.ndarray
    D: np.ndarray
    c: np.ndarray
    stuck: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def kinds(self) -> list[str]:
        """``"stuck"`` or ``"hot"`` per defect."""
        return ["stuck" if s else "hot" for s in self.stuck]

    def active(self, at: datetime | np.datetime64) -> np.ndarray:
        """Boolean mask of the defects present at time ``at`` (onset at or before it)."""
        return self.onset <= to_datetime64(at)

    def amplitude_dn(self, exposure_s: float, gain: float = 1.0) -> np.ndarray:
        """Raw DN each defect adds to its pixel: ``gain * (exposure_s * D + c)``."""
        return gain * (exposure_s * self.D + self.c)

    def count_between(self, start: datetime | np.datetime64, end: datetime | np.datetime64) -> int:
        """Number of onsets in the half-open interval ``(start, end]``."""
        return int(np.count_nonzero((self.onset > to_datetime64(start)) & (self.onset <= to_datetime64(end))))


def poisson_onsets(rate_per_year: float, start: datetime, end: datetime,
                   rng: np.random.Generator) -> np.ndarray:
    """Arrival times of a homogeneous Poisson process on ``[start, end]``.

    Parameters
    ----------
    rate_per_year : float
        Expected arrivals per year (365.25 days).
    start, end : datetime
        The observation window (naive local times), ``start <= end``.
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray of datetime64[s]
        Sorted arrival times (the count is Poisson, the times iid uniform given the count),
        truncated to the second.
    """
    if rate_per_year < 0:
        raise ValueError(f"rate_per_year must be >= 0, got {rate_per_year}")
    span_s = (to_datetime64(end) - to_datetime64(start)).astype(np.int64)
    if span_s < 0:
        raise ValueError(f"the defect process window ends ({end}) before it starts ({start})")
    count = rng.poisson(rate_per_year * span_s / SECONDS_PER_YEAR)
    offsets = np.sort(rng.uniform(0.0, float(span_s), size=count))
    return to_datetime64(start) + offsets.astype(np.int64).astype("timedelta64[s]")


def sample_defects(config: DefectConfig, width: int, height: int, cfa: str, start: datetime,
                   end: datetime, rng: np.random.Generator) -> DefectSet:
    """Draw one sensor's defects over its life ``[start, end]``.

    Positions are uniform over the frame and distinct; the amplitude ``A`` (DN at base ISO) is
    log-normal with median ``weak_median_dn`` or, with probability ``strong_fraction``,
    ``strong_median_dn``. A stuck pixel (probability ``stuck_fraction``) has ``c = A, D = 0``;
    a hot pixel has ``D = A / reference_exposure_s`` and ``c`` uniform in
    ``[0, hot_offset_max_fraction * A]``.
    """
    onset = poisson_onsets(config.rate_per_year, start, end, rng)
    n = len(onset)
    if n > width * height:
        raise ValueError(f"{n} defects do not fit on a {width}x{height} sensor: lower defects.rate_per_year")
    flat = rng.choice(width * height, size=n, replace=False)
    rows, cols = np.divmod(flat.astype(np.int64), width)
    pattern = np.asarray(CFA_PATTERNS[cfa], np.uint8)
    cfa_color = pattern[(rows % 2) * 2 + cols % 2]
    strong = rng.random(n) < config.strong_fraction
    median = np.where(strong, config.strong_median_dn, config.weak_median_dn)
    amplitude = median * np.exp(config.amplitude_log_sigma * rng.standard_normal(n))
    stuck = rng.random(n) < config.stuck_fraction
    hot_offset = rng.uniform(0.0, config.hot_offset_max_fraction, n) * amplitude
    D = np.where(stuck, 0.0, amplitude / config.reference_exposure_s)
    c = np.where(stuck, amplitude, hot_offset)
    return DefectSet(rows=rows, cols=cols, cfa_color=cfa_color, onset=onset, D=D, c=c, stuck=stuck)
