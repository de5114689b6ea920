"""An independent reference age classifier that knows the true defects.

This module is an *oracle for tests*: it is given the ground truth of a dataset (every defect's
position, CFA colour, onset time, dark current ``D``, offset ``c`` and base ISO; every image's
capture time, exposure time and ISO) and classifies images by age with a model of how the data
were generated. It shares no code with the project: it imports neither ``baselines`` nor
``kernels`` nor ``pipeline``; it reads images itself (rawpy for RAW/DNG mosaics, Pillow or
tifffile for developed images, numpy for ``.npy`` mosaics) and computes its own median
residuals. Its purpose is a yardstick on the same splits for an estimator that has to *find*
the defects ("the estimator is within x points of an oracle that knows the truth"), so it must
not inherit the estimator's mistakes. It is not a proven upper bound (the JPEG model is learned,
not exact), only a strong, independent comparator.

Residuals
---------
``W = Y - median3x3(Y)`` computed only in a small patch around each true defect:

* CFA mosaics: per colour *plane* — the 2×2 phase ``(row % 2, col % 2)`` of the site, so the
  two green phases of a Bayer mosaic are two planes — with the median over the 3×3
  neighbourhood in that plane (the eight nearest same-colour sites, two pixels apart on the
  mosaic). Borders are mirrored without repeating the edge (numpy ``mode="reflect"``), so a
  defect never appears twice in its own neighbourhood.
* Developed images (H×W×C): per channel, 3×3 neighbourhood in that channel.

The local noise level is ``1.4826 · MAD``, in a ``(2·radius+1)²`` window of the same
plane/channel around the defect (the defect left out), of each element minus the median of its
eight neighbours, floored at ``sigma_floor``. (The MAD of the 3×3 residual itself collapses on
smooth gradients, where most elements are their own neighbourhood's median: see
``_patch_residuals``.)

Models
------
:class:`RawReference` (CFA mosaics): the exact likelihood of the generative model. A defect
with onset ``t_j`` adds ``g·(τ·D_j + c_j)`` DN to its photosite in every capture taken at or
after ``t_j`` (``g = ISO / base ISO``), the sum clipped at the white level; the median of its
same-colour neighbours is not affected by the defect itself. So the residual of defect ``j`` is
``N(μ_j, σ_j²)`` when present, with ``μ_j = min(g·(τD_j + c_j), white − background_j)``
(``background_j`` the median of its neighbours, black-subtracted), and ``N(0, σ_j²)`` when
absent. The log-likelihood of a capture time ``t`` is the sum over defects of the present or
absent log density; the class likelihood marginalises ``t`` over the empirical distribution of
the class's *training* capture times, and the class priors are the training class frequencies.
(The extra shot noise of the defect's own charge is not modelled: the camera's electrons per DN
are not part of the ground truth. It only widens the present state, which the LR between
present and absent hardly notices when the defect is strong.) One departure from the pure
model, on by default and switchable off (``outlier=0``): both states carry a small broad
component, because the healthy residual of a pixel on a scene edge is not ``N(0, σ²)`` with
the robust local σ, and one such pixel must not outvote the others.

:class:`JpegReference` (developed images): per defect and class, a density of the standardised
residual ``z = w / σ`` at the defect's position learned on the training split only — a Gaussian
KDE with Scott's bandwidth (floored, because JPEG residuals are integers and a class can have
all-equal values), mixed with a broad Gaussian of weight ``epsilon`` so that one value far from
every training value (a defect masked by texture) cannot cast an unbounded vote — and combined
as naive Bayes with the training class priors. Standardising by the local noise level is what
lets one density serve images of different ISO (``feature="w"`` keeps the raw residual), and by
default each density is conditional on the defect's known raw amplitude in the image (a kernel
in ``log(1 + g·(τD + c))`` beside the one in ``z``), because a hot pixel's jump grows with
exposure time and gain (``condition_on_amplitude=False`` gives plain per-class KDEs).
The residual is taken in the channel of the defect's CFA colour (``channel="cfa"``): bilinear
demosaicing (the synthetic camera's, and the baseline of every demosaicer) keeps a defect's
full amplitude only in its own colour at its own site, while the other two channels at that
site are interpolated from unaffected neighbours; taking the maximum over channels
(``channel="max"``) adds the healthy noise of two more channels, biased upwards by the maximum,
without adding signal (synthetic default, 10 splits: 0.971 against 0.996). Defects whose onset
lies before the first training image or after the last one have the same distribution in every
class and carry no information; by default
(``informative_only=True``) they are left out. Left in, a KDE gives them spurious differences
between the classes' finite samples (noise, not bias), which is what ``informative_only=False``
shows.

Ground truth
------------
:class:`Truth` is the small adapter between a dataset's layout and the reference: two CSV files,
one row per defect (``device,row,col,cfa_color,onset,D,c,base_iso``) and one row per capture
(``path,device,captured_at,exposure_s,iso[,label]``). The simulator's ``defects.csv`` and
``manifest.csv`` and the real-mosaic sets' ``defects_truth.csv`` and ``captures_truth.csv`` both
have these columns; :meth:`Truth.find` picks whichever pair a dataset folder holds. Relative
image paths are taken from the captures CSV's folder.

Entry point: :func:`reference_accuracy` fits and predicts every split file of a run folder
(``splits/<device>/run_XX.csv``, columns ``run,seed,subset,path,label``).
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

__all__ = ["Capture", "DeviceDefects", "Truth", "read_mosaic", "read_developed", "mosaic_residuals",
           "developed_residuals", "RawReference", "JpegReference", "JpegTimeReference", "time_credible_range", "ReferenceResult", "reference_accuracy",
           "RAW_SUFFIXES"]

MAD_SCALE = 1.482602218505602
RAW_SUFFIXES = {".dng", ".nef", ".cr2", ".cr3", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw", ".npy"}
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# ----------------------------------------------------------------------------- ground truth

def parse_time(text: str) -> np.datetime64:
    """ISO 8601 text as ``datetime64[s]``; an aware time is converted to naive UTC."""
    value = datetime.fromisoformat(str(text).strip())
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(value, "s")


def _key(path) -> str:
    return os.path.realpath(os.fspath(path))


@dataclass(frozen=True)
class Capture:
    """Ground truth of one image: the capture time, exposure time (s) and ISO."""

    path: str
    device: str
    captured_at: np.datetime64
    exposure_s: float
    iso: float
    label: int | None = None


@dataclass(frozen=True)
class DeviceDefects:
    """The true defects of one device (arrays of equal length)."""

    device: str
    row: np.ndarray
    col: np.ndarray
    cfa_color: np.ndarray
    onset: np.ndarray       # datetime64[s]
    D: np.ndarray           # DN per second at base ISO
    c: np.ndarray           # DN at base ISO
    base_iso: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def amplitude(self, exposure_s: float, iso: float) -> np.ndarray:
        """Raw DN each defect adds when present: ``(iso / base_iso) · (τ·D + c)``."""
        return (float(iso) / self.base_iso) * (float(exposure_s) * self.D + self.c)

    def present(self, times) -> np.ndarray:
        """``(n_times, n_defects)`` bool: defect present in a capture at each time (onset <= t)."""
        times = np.asarray(times, dtype="datetime64[s]").reshape(-1)
        return self.onset[None, :] <= times[:, None]

    def take(self, index) -> "DeviceDefects":
        return DeviceDefects(self.device, *(np.asarray(getattr(self, name))[index]
                                            for name in ("row", "col", "cfa_color", "onset", "D", "c", "base_iso")))

    @classmethod
    def empty(cls, device: str) -> "DeviceDefects":
        z = np.zeros(0, dtype=np.int64)
        f = np.zeros(0)
        return cls(device, z, z, z, np.zeros(0, dtype="datetime64[s]"), f, f, f)


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class Truth:
    """Ground truth of a dataset: defects per device and captures per image path.

    Parameters
    ----------
    defects_csv : path
        One row per defect with ``device,row,col,cfa_color,onset,D,c,base_iso`` (other columns
        ignored).
    captures_csv : path
        One row per image with ``path,device,captured_at,exposure_s,iso`` and optionally
        ``label`` (other columns ignored).
    root : path, optional
        Folder that relative image paths start from (default: the captures CSV's folder).
    """

    DEFECT_COLUMNS = ("device", "row", "col", "cfa_color", "onset", "D", "c", "base_iso")
    CAPTURE_COLUMNS = ("path", "device", "captured_at", "exposure_s", "iso")
    LAYOUTS = (("defects_truth.csv", "captures_truth.csv"), ("defects.csv", "manifest.csv"))

    def __init__(self, defects_csv, captures_csv, root=None):
        self.defects_csv, self.captures_csv = Path(defects_csv), Path(captures_csv)
        self.root = Path(root) if root is not None else self.captures_csv.parent
        defect_rows, capture_rows = _read_rows(self.defects_csv), _read_rows(self.captures_csv)
        for name, rows, columns in (("defects", defect_rows, self.DEFECT_COLUMNS),
                                    ("captures", capture_rows, self.CAPTURE_COLUMNS)):
            if rows and not set(columns) <= set(rows[0]):
                raise ValueError(f"{name} CSV lacks columns {sorted(set(columns) - set(rows[0]))}")
        self.captures: dict[str, Capture] = {}
        self._by_text: dict[str, Capture] = {}
        for rec in capture_rows:
            raw = rec["path"]
            full = Path(raw) if os.path.isabs(raw) else self.root / raw
            label = rec.get("label")
            cap = Capture(str(full), rec["device"], parse_time(rec["captured_at"]), float(rec["exposure_s"]),
                          float(rec["iso"]), int(label) if label not in (None, "") else None)
            self.captures[_key(full)] = cap
            self._by_text[raw] = cap
        self.devices = sorted({c.device for c in self.captures.values()} | {r["device"] for r in defect_rows})
        self.defects: dict[str, DeviceDefects] = {}
        for device in self.devices:
            rows = [r for r in defect_rows if r["device"] == device]
            if not rows:
                self.defects[device] = DeviceDefects.empty(device)
                continue
            self.defects[device] = DeviceDefects(
                device, np.array([int(r["row"]) for r in rows]), np.array([int(r["col"]) for r in rows]),
                np.array([int(r["cfa_color"]) for r in rows]),
                np.array([parse_time(r["onset"]) for r in rows], dtype="datetime64[s]"),
                np.array([float(r["D"]) for r in rows]), np.array([float(r["c"]) for r in rows]),
                np.array([float(r["base_iso"]) for r in rows]))

    @classmethod
    def find(cls, folder) -> "Truth":
        """The truth of a dataset folder: ``defects_truth.csv`` + ``captures_truth.csv`` (real
        mosaics) or ``defects.csv`` + ``manifest.csv`` (the synthetic camera)."""
        folder = Path(folder)
        for defects_name, captures_name in cls.LAYOUTS:
            if (folder / defects_name).is_file() and (folder / captures_name).is_file():
                return cls(folder / defects_name, folder / captures_name)
        raise FileNotFoundError(f"{folder} holds neither of the ground-truth pairs {cls.LAYOUTS}")

    def capture(self, path) -> Capture:
        """Ground truth of one image, by path (however spelled) or by its text in the CSV."""
        found = self.captures.get(_key(path)) or self._by_text.get(os.fspath(path))
        if found is None and not os.path.isabs(os.fspath(path)):
            found = self.captures.get(_key(self.root / os.fspath(path)))
        if found is None:
            raise KeyError(f"{path} is not in {self.captures_csv}")
        return found

    def capture_info(self, paths) -> list[Capture]:
        """Ground truth of each path, in order."""
        return [self.capture(p) for p in paths]


# ----------------------------------------------------------------------------- images

def read_mosaic(path) -> tuple[np.ndarray, np.ndarray]:
    """A CFA mosaic as black-subtracted DN and the per-site saturation level above black.

    RAW files go through rawpy's ``raw_image_visible`` (never ``postprocess``), minus the black
    level of each site's colour; the saturation is ``white_level − black``. A ``.npy`` file is
    taken as an already black-subtracted mosaic without a white level (saturation ``inf``).

    Returns
    -------
    mosaic : ndarray of float64, shape (H, W)
    saturation : ndarray of float64, shape (H, W) (broadcastable)
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        mosaic = np.load(path).astype(np.float64)
        if mosaic.ndim != 2:
            raise ValueError(f"{path}: a .npy mosaic must be 2-D, got shape {mosaic.shape}")
        return mosaic, np.full((1, 1), np.inf)
    import rawpy

    with rawpy.imread(str(path)) as raw:
        mosaic = raw.raw_image_visible.astype(np.float64)
        colours = raw.raw_colors_visible.astype(np.intp)
        black = np.asarray(raw.black_level_per_channel, dtype=np.float64)[colours]
        white = float(raw.white_level)
    return mosaic - black, white - black


def read_developed(path) -> np.ndarray:
    """A developed image as float64 ``(H, W, C)`` in its stored orientation (EXIF orientation
    is *not* applied: pixel positions stay sensor positions). 16-bit TIFFs keep 16 bits."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        data = tifffile.imread(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            data = np.asarray(im)
    data = np.asarray(data, dtype=np.float64)
    return data[:, :, None] if data.ndim == 2 else data


def _reflect(index: np.ndarray, size) -> np.ndarray:
    """Indices mirrored into ``0..size-1`` without repeating the edge (d c b | a b c d | c b a);
    ``size`` may be an array broadcasting against ``index``."""
    size = np.asarray(size, dtype=np.int64)
    period = np.maximum(2 * (size - 1), 1)
    index = np.abs(index) % period
    return np.where(size == 1, 0, np.where(index >= size, period - index, index))


def _patch_residuals(patches: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residual, local σ and background at the centre of ``(n, P, P)`` patches, ``P = 2·radius + 3``.

    ``w`` is the centre minus the median of its 3×3 neighbourhood (itself included) and
    ``background`` that median. ``σ`` is ``1.4826 · MAD`` over the ``(2·radius+1)²`` window
    (centre left out) of each element minus the median of its *eight neighbours*: the 3×3
    residual itself has a point mass at 0 (an element that is the median of its neighbourhood,
    1 in 9 on pure noise and most elements of a smooth ramp), which drives its MAD towards 0 on
    gradients — by a factor of 6 on the smooth scenes of the tests — while the leave-centre-out
    residual has the spread of a present defect's ``w − μ`` (a defect is never its own median).
    """
    n, size, _ = patches.shape
    inner = size - 2
    shifted = np.stack([patches[:, dy:dy + inner, dx:dx + inner] for dy in range(3) for dx in range(3)], axis=1)
    median = np.median(shifted, axis=1)
    neighbours = np.median(np.delete(shifted, 4, axis=1), axis=1)
    spread = (patches[:, 1:-1, 1:-1] - neighbours).reshape(n, -1)
    centre = radius
    w = patches[:, 1 + centre, 1 + centre] - median[:, centre, centre]
    others = np.delete(spread, centre * inner + centre, axis=1)
    mad = np.median(np.abs(others - np.median(others, axis=1, keepdims=True)), axis=1)
    return w, MAD_SCALE * mad, median[:, centre, centre]


def mosaic_residuals(mosaic, rows, cols, *, radius: int = 3, sigma_floor: float = 0.5):
    """Residual, local noise level and background at CFA sites, over same-colour neighbours.

    The site's plane is the 2×2 phase ``(row % 2, col % 2)``; the residual is the site minus the
    median of its 3×3 neighbourhood in that plane.

    Returns
    -------
    w, sigma, background : ndarray of float64, shape (n,)
    """
    mosaic = np.asarray(mosaic)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if rows.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    height, width = mosaic.shape
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width:
        raise ValueError(f"defect positions outside the {height}x{width} mosaic")
    py, px = rows % 2, cols % 2
    plane_h, plane_w = (height - py + 1) // 2, (width - px + 1) // 2
    offsets = np.arange(-(radius + 1), radius + 2)
    pr = _reflect(rows[:, None] // 2 + offsets[None, :], plane_h[:, None])
    pc = _reflect(cols[:, None] // 2 + offsets[None, :], plane_w[:, None])
    mr, mc = 2 * pr + py[:, None], 2 * pc + px[:, None]
    patches = mosaic[mr[:, :, None], mc[:, None, :]].astype(np.float64)
    w, sigma, background = _patch_residuals(patches, radius)
    return w, np.maximum(sigma, sigma_floor), background


def developed_residuals(image, rows, cols, channels, *, radius: int = 3, sigma_floor: float = 0.5):
    """Residual, local noise level and background at pixels of given channels of an (H, W, C) image."""
    image = np.asarray(image)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    channels = np.asarray(channels, dtype=np.int64)
    if rows.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    height, width, n_channels = image.shape
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width:
        raise ValueError(f"defect positions outside the {height}x{width} image")
    channels = np.minimum(channels, n_channels - 1)   # grayscale: every colour is channel 0
    offsets = np.arange(-(radius + 1), radius + 2)
    pr = _reflect(rows[:, None] + offsets[None, :], height)
    pc = _reflect(cols[:, None] + offsets[None, :], width)
    patches = image[pr[:, :, None], pc[:, None, :], channels[:, None, None]].astype(np.float64)
    w, sigma, background = _patch_residuals(patches, radius)
    return w, np.maximum(sigma, sigma_floor), background


@dataclass
class Measurement:
    """What the reference measures in one image at the defects of its device."""

    w: np.ndarray
    sigma: np.ndarray
    background: np.ndarray
    saturation: np.ndarray


class MeasurementCache:
    """Measurements by (image, defects, settings), so that repeated splits read each image once."""

    def __init__(self):
        self._store: dict = {}

    def get(self, key, compute):
        if key not in self._store:
            self._store[key] = compute()
        return self._store[key]


def _defects_key(defects: DeviceDefects) -> tuple:
    return (defects.device, np.asarray(defects.row).tobytes(), np.asarray(defects.col).tobytes(),
            np.asarray(defects.cfa_color).tobytes())


def measure_mosaic(path, defects: DeviceDefects, radius: int, sigma_floor: float) -> Measurement:
    mosaic, saturation = read_mosaic(path)
    w, sigma, background = mosaic_residuals(mosaic, defects.row, defects.col, radius=radius, sigma_floor=sigma_floor)
    sat = np.broadcast_to(saturation, mosaic.shape)[defects.row, defects.col] if len(defects) else np.zeros(0)
    return Measurement(w, sigma, background, np.asarray(sat, dtype=np.float64))


def measure_developed(path, defects: DeviceDefects, channel: str, radius: int, sigma_floor: float) -> Measurement:
    image = read_developed(path)
    if channel == "cfa":
        w, sigma, background = developed_residuals(image, defects.row, defects.col, defects.cfa_color,
                                                   radius=radius, sigma_floor=sigma_floor)
    elif channel == "max":
        per = [developed_residuals(image, defects.row, defects.col, np.full(len(defects), k), radius=radius,
                                   sigma_floor=sigma_floor) for k in range(image.shape[2])]
        ws = np.stack([p[0] for p in per])
        best = np.argmax(ws, axis=0) if len(defects) else np.zeros(0, dtype=np.intp)
        pick = (best, np.arange(len(defects)))
        w, sigma, background = ws[pick], np.stack([p[1] for p in per])[pick], np.stack([p[2] for p in per])[pick]
    else:
        raise ValueError(f"channel must be 'cfa' or 'max', got {channel!r}")
    return Measurement(w, sigma, background, np.full(len(defects), np.inf))


# ----------------------------------------------------------------------------- estimators

def _as_captures(paths, capture_info) -> list[Capture]:
    """capture_info: a sequence aligned with paths, a mapping path -> Capture, or a Truth."""
    if isinstance(capture_info, Truth):
        return capture_info.capture_info(paths)
    if isinstance(capture_info, dict):
        return [capture_info.get(p) or capture_info[_key(p)] for p in paths]
    infos = list(capture_info)
    if len(infos) != len(paths):
        raise ValueError(f"capture_info has {len(infos)} entries for {len(paths)} paths")
    return infos


def _time_seconds(times) -> np.ndarray:
    return np.asarray(times, dtype="datetime64[s]").astype(np.int64)


class _Reference:
    """Shared fit bookkeeping: classes in sorted order, priors from training frequencies."""

    def __init__(self, defects: DeviceDefects, *, radius: int = 3, sigma_floor: float = 0.5,
                 cache: MeasurementCache | None = None):
        self.defects = defects
        self.radius = radius
        self.sigma_floor = sigma_floor
        self.cache = cache if cache is not None else MeasurementCache()

    def _fit_labels(self, labels):
        labels = np.asarray(labels)
        self.classes_, y = np.unique(labels, return_inverse=True)
        counts = np.bincount(y, minlength=len(self.classes_))
        self.log_prior_ = np.log(counts / counts.sum())
        return y

    def predict(self, paths, capture_info) -> np.ndarray:
        """The most probable class of each image."""
        return self.classes_[np.argmax(self.predict_proba(paths, capture_info), axis=1)]


class RawReference(_Reference):
    """Exact-likelihood age classifier for CFA mosaics, given the true defects.

    Parameters
    ----------
    defects : DeviceDefects
        The device's true defects.
    outlier : float, default 1e-3
        Weight of a broad component (``N(0, (outlier_scale·σ + μ)²)``, the same in both states)
        mixed into the present and the absent density. The generative model's healthy residual
        ``N(0, σ²)`` ignores scene structure: at an edge the 3×3 median residual can be hundreds
        of local σ (the MAD is robust to the edge, the centre pixel is not), and a single such
        defect would otherwise outvote twenty clean ones. (With the leave-centre-out σ it changes
        nothing measurable on the synthetic default — 1.000 either way over 10 splits — but
        with a plain MAD of the 3×3 residual it decided 1–3 of its 480 DNG test predictions.)
        ``0`` gives the pure Gaussian model.
    outlier_scale : float, default 30
        Width of the broad component in local noise levels (plus the present mean).
    radius : int
        Half-size of the plane window of the local noise level.
    sigma_floor : float, default 1.0
        Lowest local noise level (DN). Raw values are integers: a MAD of 0 in a dark, flat
        window only says that the noise is below about one step.
    cache : MeasurementCache, optional
        Shared measurements (reading each image once over many splits).

    Attributes (after fit)
    ----------------------
    classes_ : ndarray
    log_prior_ : ndarray
    train_times_ : list of ndarray of int64
        Training capture times of each class (seconds), the empirical ``p(t | class)``.
    """

    def __init__(self, defects: DeviceDefects, *, outlier: float = 1e-3, outlier_scale: float = 30.0,
                 radius: int = 3, sigma_floor: float = 1.0, cache: MeasurementCache | None = None):
        super().__init__(defects, radius=radius, sigma_floor=sigma_floor, cache=cache)
        if not 0 <= outlier < 1:
            raise ValueError(f"outlier must be in [0, 1), got {outlier!r}")
        self.outlier = outlier
        self.outlier_scale = outlier_scale

    def _measure(self, path) -> Measurement:
        key = ("raw", _key(path), _defects_key(self.defects), self.radius, self.sigma_floor)
        return self.cache.get(key, lambda: measure_mosaic(path, self.defects, self.radius, self.sigma_floor))

    def fit(self, paths, labels, capture_info) -> "RawReference":
        """Learn the class priors and each class's training capture times (images are not read)."""
        infos = _as_captures(paths, capture_info)
        y = self._fit_labels(labels)
        times = _time_seconds([c.captured_at for c in infos])
        self.train_times_ = [times[y == k] for k in range(len(self.classes_))]
        return self

    def present_mean(self, m: Measurement, info: Capture) -> np.ndarray:
        """Expected residual of each defect when present in this capture (clipped at white)."""
        amplitude = self.defects.amplitude(info.exposure_s, info.iso)
        headroom = m.saturation - m.background
        return np.clip(np.minimum(amplitude, headroom), 0.0, None)

    def defect_log_ratios(self, m: Measurement, info: Capture) -> np.ndarray:
        """``log p(w | present) − log p(w | absent)`` of each defect in one image."""
        mu = self.present_mean(m, info)
        s2 = m.sigma * m.sigma
        if self.outlier == 0:
            return (m.w * mu - 0.5 * mu * mu) / s2      # log N(w; μ, σ²) − log N(w; 0, σ²)
        present = -0.5 * (m.w - mu) ** 2 / s2 - np.log(m.sigma)
        absent = -0.5 * m.w ** 2 / s2 - np.log(m.sigma)
        broad_sd = self.outlier_scale * m.sigma + mu       # the same in both states
        broad = -0.5 * (m.w / broad_sd) ** 2 - np.log(broad_sd)
        keep, out = math.log1p(-self.outlier), math.log(self.outlier)
        return np.logaddexp(keep + present, out + broad) - np.logaddexp(keep + absent, out + broad)

    def time_log_likelihood(self, path, info: Capture, times_s) -> np.ndarray:
        """``log p(image | capture time t)`` (up to a constant shared by all t) for each t."""
        m = self._measure(path)
        if len(self.defects) == 0:
            return np.zeros(len(times_s))
        lam = self.defect_log_ratios(m, info)
        onset_s = _time_seconds(self.defects.onset)
        present = onset_s[None, :] <= np.asarray(times_s, dtype=np.int64)[:, None]
        return present.astype(np.float64) @ lam

    def predict_proba(self, paths, capture_info) -> np.ndarray:
        """Posterior class probabilities, columns in ``classes_`` order."""
        infos = _as_captures(paths, capture_info)
        all_times = np.concatenate(self.train_times_)
        bounds = np.cumsum([0] + [len(t) for t in self.train_times_])
        out = np.empty((len(paths), len(self.classes_)))
        for i, (path, info) in enumerate(zip(paths, infos)):
            ll = self.time_log_likelihood(path, info, all_times)
            per_class = np.array([logsumexp(ll[bounds[k]:bounds[k + 1]]) - math.log(bounds[k + 1] - bounds[k])
                                  for k in range(len(self.classes_))])
            post = self.log_prior_ + per_class
            out[i] = np.exp(post - logsumexp(post))
        return out


class JpegReference(_Reference):
    """Naive-Bayes age classifier for developed images from per-defect class-conditional KDEs.

    Parameters
    ----------
    defects : DeviceDefects
    channel : {'cfa', 'max'}
        Residual in the defect's CFA-colour channel, or the largest over channels.
    feature : {'z', 'w'}
        The residual standardised by its local noise level (``z = w / σ``, default) or the raw
        residual ``w``. Standardising removes what the class densities cannot model per image:
        the noise grows with ISO (the gain amplifies it) and with texture, so a raw-``w`` density
        mixes images of different ISO and a high-ISO image of the old class looks "present".
        On the synthetic default (10 splits) ``w`` scores 0.917 against 0.996 for ``z``
        (unconditional densities: 0.90 against 0.975).
    condition_on_amplitude : bool, default True
        Make each class density conditional on the defect's known raw amplitude in the image,
        ``u = log(1 + g·(τD + c))`` from the ground truth and the capture's exposure and ISO:
        ``p(z | u, class) = Σ_i K_h(z − z_i) K_b(u − u_i) / Σ_i K_b(u − u_i)`` over the class's
        training images (product Gaussian kernel, Scott's bandwidths). A hot pixel's jump grows
        with τ and g, so an image taken at 1/1000 s says little and one at 1/15 s a lot; the
        unconditional density blurs the two. Measured: synthetic default 0.975 → 0.996
        (10 splits), real-mosaic JPEGs 0.989 → 1.000, the small default (14 training images
        per class, thin in two dimensions) 0.988 → 0.963.
    informative_only : bool
        Use only defects whose onset lies after the first and at or before the last training
        capture (the others have the same distribution in every class).
    bandwidth_floor : float, optional
        Lowest KDE bandwidth in feature units (default :attr:`DEFAULT_FLOOR`).
    epsilon : float
        Weight of the broad Gaussian mixed into every class density.
    radius, sigma_floor, cache
        As in :class:`RawReference`.
    """

    #: lowest KDE bandwidth when ``bandwidth_floor`` is None: half an 8-bit level for ``w``, and
    #: for ``z = w / σ`` a quarter of a noise level
    DEFAULT_FLOOR = {"w": 0.5, "z": 0.25}
    #: lowest bandwidth of the log-amplitude kernel
    AMPLITUDE_FLOOR = 0.05

    def __init__(self, defects: DeviceDefects, *, channel: str = "cfa", feature: str = "z",
                 condition_on_amplitude: bool = True, informative_only: bool = True,
                 bandwidth_floor: float | None = None, epsilon: float = 0.01, radius: int = 3,
                 sigma_floor: float = 0.5, cache: MeasurementCache | None = None):
        super().__init__(defects, radius=radius, sigma_floor=sigma_floor, cache=cache)
        if feature not in ("z", "w"):
            raise ValueError(f"feature must be 'z' or 'w', got {feature!r}")
        if channel not in ("cfa", "max"):
            raise ValueError(f"channel must be 'cfa' or 'max', got {channel!r}")
        self.feature = feature
        self.channel = channel
        self.condition_on_amplitude = condition_on_amplitude
        self.informative_only = informative_only
        self.bandwidth_floor = bandwidth_floor
        self.epsilon = epsilon

    def _measure(self, path) -> Measurement:
        key = ("developed", self.channel, _key(path), _defects_key(self.defects), self.radius, self.sigma_floor)
        return self.cache.get(key, lambda: measure_developed(path, self.defects, self.channel, self.radius,
                                                              self.sigma_floor))

    def _features(self, paths) -> np.ndarray:
        if len(self.defects) == 0:
            return np.zeros((len(paths), 0))
        measured = [self._measure(p) for p in paths]
        if self.feature == "w":
            return np.stack([m.w for m in measured])
        return np.stack([m.w / m.sigma for m in measured])

    def _log_amplitudes(self, infos) -> np.ndarray:
        if len(self.defects) == 0:
            return np.zeros((len(infos), 0))
        return np.stack([np.log1p(self.defects.amplitude(c.exposure_s, c.iso)) for c in infos])

    @staticmethod
    def _scott(samples, floor):
        if len(samples) < 2:
            return np.full(samples.shape[1], floor)
        return np.maximum(np.nan_to_num(np.std(samples, axis=0, ddof=1) * len(samples) ** (-1 / 5)), floor)

    def fit(self, paths, labels, capture_info) -> "JpegReference":
        """Learn the class priors and, per class and used defect, the KDE samples and bandwidths."""
        infos = _as_captures(paths, capture_info)
        y = self._fit_labels(labels)
        times = _time_seconds([c.captured_at for c in infos])
        onset = _time_seconds(self.defects.onset)
        if self.informative_only:
            self.used_ = np.flatnonzero((onset > times.min()) & (onset <= times.max()))
        else:
            self.used_ = np.arange(len(self.defects))
        X = self._features(paths)[:, self.used_]
        U = self._log_amplitudes(infos)[:, self.used_]
        floor = self.bandwidth_floor if self.bandwidth_floor is not None else self.DEFAULT_FLOOR[self.feature]
        self.samples_ = [X[y == k] for k in range(len(self.classes_))]
        self.bandwidth_ = [self._scott(s, floor) for s in self.samples_]
        self.amplitude_samples_ = [U[y == k] for k in range(len(self.classes_))]
        self.amplitude_bandwidth_ = [self._scott(u, self.AMPLITUDE_FLOOR) for u in self.amplitude_samples_]
        self.broad_mean_ = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
        self.broad_sd_ = 3.0 * np.maximum(X.std(axis=0), 1.0) if len(X) else np.ones(X.shape[1])
        return self

    def class_log_density(self, X, U=None) -> np.ndarray:
        """``(n_images, n_classes, n_used)`` log densities of each used defect's feature
        (conditional on the log amplitudes ``U`` when ``condition_on_amplitude``)."""
        X = np.asarray(X, dtype=np.float64)
        out = np.empty((X.shape[0], len(self.classes_), X.shape[1]))
        broad = (-0.5 * ((X - self.broad_mean_) / self.broad_sd_) ** 2 - np.log(self.broad_sd_) - _LOG_SQRT_2PI)
        for k, (s, h) in enumerate(zip(self.samples_, self.bandwidth_)):
            z = (X[:, None, :] - s[None, :, :]) / h            # (n, n_k, m)
            log_kernel = -0.5 * z * z
            if self.condition_on_amplitude:
                v = (np.asarray(U)[:, None, :] - self.amplitude_samples_[k][None, :, :]) / self.amplitude_bandwidth_[k]
                log_weight = -0.5 * v * v
                kde = logsumexp(log_kernel + log_weight, axis=1) - logsumexp(log_weight, axis=1)
            else:
                kde = logsumexp(log_kernel, axis=1) - math.log(len(s))
            kde = kde - np.log(h) - _LOG_SQRT_2PI
            out[:, k, :] = np.logaddexp(math.log1p(-self.epsilon) + kde, math.log(self.epsilon) + broad)
        return out

    def predict_proba(self, paths, capture_info) -> np.ndarray:
        """Posterior class probabilities (naive Bayes), columns in ``classes_`` order."""
        infos = _as_captures(paths, capture_info)
        X = self._features(paths)[:, self.used_]
        U = self._log_amplitudes(infos)[:, self.used_]
        post = self.log_prior_[None, :] + self.class_log_density(X, U).sum(axis=2)
        return np.exp(post - logsumexp(post, axis=1, keepdims=True))


class JpegTimeReference(JpegReference):
    """Capture-time likelihood of a developed image, given the true defects and onsets.

    The dating counterpart of :class:`JpegReference`: instead of one density per age class, each
    defect gets two, learned on the training images — its feature in the images taken *before*
    its true onset (absent) and in those taken at or after it (present), each a KDE with the
    same kernels, amplitude conditioning, bandwidth floors and broad component as the class
    densities. ``log p(image | t)`` is the sum over defects of the present or absent log
    density, whichever state the truth gives at ``t``. A defect is used when at least
    ``min_per_state`` training images lie on each side of its onset; the others say nothing
    about time within the training period.
    """

    def __init__(self, defects: DeviceDefects, *, min_per_state: int = 2, **kwargs):
        super().__init__(defects, informative_only=True, **kwargs)
        if min_per_state < 1:
            raise ValueError(f"min_per_state must be at least 1, got {min_per_state}")
        self.min_per_state = min_per_state

    def fit(self, paths, capture_info, labels=None) -> "JpegTimeReference":
        """Learn each used defect's absent and present densities (``labels`` are not needed)."""
        infos = _as_captures(paths, capture_info)
        times = _time_seconds([c.captured_at for c in infos])
        onset = _time_seconds(self.defects.onset)
        present = onset[None, :] <= times[:, None]
        counts = present.sum(axis=0)
        self.used_ = np.flatnonzero((counts >= self.min_per_state) & (len(times) - counts >= self.min_per_state))
        X = self._features(paths)[:, self.used_]
        U = self._log_amplitudes(infos)[:, self.used_]
        floor = self.bandwidth_floor if self.bandwidth_floor is not None else self.DEFAULT_FLOOR[self.feature]
        self.states_ = []  # per used defect: (absent, present) of (samples, bandwidth, amplitudes, bandwidth)
        for k, j in enumerate(self.used_):
            per_state = []
            for state in (False, True):
                rows = present[:, j] == state
                x, u = X[rows, k:k + 1], U[rows, k:k + 1]
                per_state.append((x[:, 0], float(self._scott(x, floor)[0]), u[:, 0],
                                  float(self._scott(u, self.AMPLITUDE_FLOOR)[0])))
            self.states_.append(per_state)
        self.broad_mean_ = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
        self.broad_sd_ = 3.0 * np.maximum(X.std(axis=0), 1.0) if len(X) else np.ones(X.shape[1])
        self.onset_s_ = onset[self.used_]
        return self

    def _log_density(self, x: float, u: float, k: int, state: int) -> float:
        samples, h, amplitudes, b = self.states_[k][state]
        log_kernel = -0.5 * ((x - samples) / h) ** 2
        if self.condition_on_amplitude:
            log_weight = -0.5 * ((u - amplitudes) / b) ** 2
            kde = logsumexp(log_kernel + log_weight) - logsumexp(log_weight)
        else:
            kde = logsumexp(log_kernel) - math.log(len(samples))
        kde = kde - math.log(h) - _LOG_SQRT_2PI
        broad = (-0.5 * ((x - self.broad_mean_[k]) / self.broad_sd_[k]) ** 2 - math.log(self.broad_sd_[k])
                 - _LOG_SQRT_2PI)
        return float(np.logaddexp(math.log1p(-self.epsilon) + kde, math.log(self.epsilon) + broad))

    def defect_log_ratios(self, path, info: Capture) -> np.ndarray:
        """``log p(x | present) − log p(x | absent)`` of each used defect in one image."""
        x = self._features([path])[0, self.used_]
        u = self._log_amplitudes([info])[0, self.used_]
        return np.array([self._log_density(x[k], u[k], k, 1) - self._log_density(x[k], u[k], k, 0)
                         for k in range(len(self.used_))])

    def time_log_likelihood(self, path, info: Capture, times_s) -> np.ndarray:
        """``log p(image | capture time t)`` (up to a constant shared by all t) for each t."""
        if len(self.used_) == 0:
            return np.zeros(len(times_s))
        present = self.onset_s_[None, :] <= np.asarray(times_s, dtype=np.int64)[:, None]
        return present.astype(np.float64) @ self.defect_log_ratios(path, info)


def time_credible_range(log_likelihood, start_s: int, end_s: int, onsets_s, level: float = 0.95):
    """Equal-tailed credible range of capture time under a uniform prior on ``[start, end]``.

    ``log_likelihood(times_s)`` must be constant between consecutive onsets (it is for both
    references: a defect is present from its onset on), so the posterior is piecewise uniform and
    its quantiles are exact.

    Returns
    -------
    low_s, high_s : float
        The range (seconds).
    edges_s : ndarray
        ``start``, the onsets inside the period, ``end``: the inter-onset intervals.
    mass : ndarray
        Posterior probability of each interval.
    """
    onsets_s = np.asarray(onsets_s, dtype=np.int64)
    inner = np.unique(onsets_s[(onsets_s > start_s) & (onsets_s < end_s)])
    edges = np.concatenate([[start_s], inner, [end_s]]).astype(np.int64)
    ll = np.asarray(log_likelihood(edges[:-1]), dtype=np.float64)
    lengths = np.diff(edges).astype(np.float64)
    keep = lengths > 0
    log_mass = np.where(keep, ll + np.log(np.where(keep, lengths, 1.0)), -np.inf)
    mass = np.exp(log_mass - logsumexp(log_mass))
    cdf = np.concatenate([[0.0], np.cumsum(mass)])

    def quantile(q):
        k = int(np.clip(np.searchsorted(cdf, q, side="left") - 1, 0, len(mass) - 1))
        while mass[k] == 0 and k < len(mass) - 1:
            k += 1
        return edges[k] + (q - cdf[k]) / mass[k] * lengths[k] if mass[k] > 0 else float(edges[k])

    tail = (1.0 - level) / 2.0
    return float(quantile(tail)), float(quantile(1.0 - tail)), edges, mass


# ----------------------------------------------------------------------------- splits of a run folder

@dataclass
class ReferenceResult:
    """Accuracy per (device, run) and per-image probabilities of the reference."""

    kind: str
    accuracy: dict = field(default_factory=dict)        # (device, run) -> accuracy
    #: dicts: device, run, path (as in the split file), image (relative to the truth's root, like
    #: the ``image`` column of a run's predictions.csv), true, predicted, p_<class>
    predictions: list = field(default_factory=list)

    def mean_accuracy(self) -> float:
        return float(np.mean(list(self.accuracy.values()))) if self.accuracy else float("nan")

    def device_accuracy(self, device: str) -> float:
        values = [a for (d, _), a in self.accuracy.items() if d == device]
        return float(np.mean(values)) if values else float("nan")


def read_split_csv(path) -> tuple[int, list[str], list[int], list[str], list[int]]:
    """``run, train_paths, train_labels, test_paths, test_labels`` of a split file
    (``run,seed,subset,path,label``)."""
    train_p, train_y, test_p, test_y = [], [], [], []
    run = None
    with open(path, newline="", encoding="utf-8") as handle:
        for rec in csv.DictReader(handle):
            run = int(rec["run"])
            target = (train_p, train_y) if rec["subset"] == "train" else (test_p, test_y)
            if rec["subset"] not in ("train", "test"):
                raise ValueError(f"{path}: subset {rec['subset']!r}")
            target[0].append(rec["path"])
            target[1].append(int(rec["label"]))
    if run is None:
        match = re.search(r"run_(\d+)", Path(path).stem)
        run = int(match.group(1)) if match else -1
    return run, train_p, train_y, test_p, test_y


def _kind_of(path) -> str:
    return "raw" if Path(path).suffix.lower() in RAW_SUFFIXES else "jpeg"


def reference_accuracy(dataset_folder, run_folder, kind: str = "auto", *, truth: Truth | None = None,
                       devices=None, runs=None, **options) -> ReferenceResult:
    """Fit the reference on the train rows and predict the test rows of every split file.

    Parameters
    ----------
    dataset_folder : path
        Folder with the ground-truth CSVs (see :meth:`Truth.find`); ignored when ``truth`` is given.
    run_folder : path
        Folder with ``splits/<device>/run_XX.csv``.
    kind : {'raw', 'jpeg', 'auto'}
        :class:`RawReference` or :class:`JpegReference`; ``auto`` picks by the images' suffix.
    truth : Truth, optional
        The ground truth, when the dataset has another layout.
    devices, runs : iterable, optional
        Restrict to these devices / run numbers.
    **options
        Passed to the reference's constructor.

    Returns
    -------
    ReferenceResult
    """
    aliases = {"auto": "auto", "raw": "raw", "dng": "raw", "mosaic": "raw", "jpeg": "jpeg", "jpg": "jpeg",
               "developed": "jpeg"}
    if kind not in aliases:
        raise ValueError(f"kind must be one of {sorted(aliases)}, got {kind!r}")
    kind = aliases[kind]
    truth = truth if truth is not None else Truth.find(dataset_folder)
    split_root = Path(run_folder) / "splits"
    if not split_root.is_dir():
        raise FileNotFoundError(f"{split_root} does not exist: not a run folder")
    cache = MeasurementCache()
    result = ReferenceResult(kind)
    for device_dir in sorted(p for p in split_root.iterdir() if p.is_dir()):
        device = device_dir.name
        if devices is not None and device not in devices:
            continue
        for split_file in sorted(device_dir.glob("run_*.csv")):
            run, train_p, train_y, test_p, test_y = read_split_csv(split_file)
            if runs is not None and run not in runs:
                continue
            train_info, test_info = truth.capture_info(train_p), truth.capture_info(test_p)
            truth_device = {c.device for c in train_info + test_info}
            if truth_device != {device}:
                raise ValueError(f"{split_file}: its images belong to devices {sorted(truth_device)} in the truth")
            this_kind = _kind_of(train_p[0]) if kind == "auto" else kind
            result.kind = this_kind
            defects = truth.defects.get(device, DeviceDefects.empty(device))
            cls = {"raw": RawReference, "jpeg": JpegReference}[this_kind]
            model = cls(defects, cache=cache, **options).fit(train_p, train_y, train_info)
            proba = model.predict_proba(test_p, test_info)
            predicted = model.classes_[np.argmax(proba, axis=1)]
            result.accuracy[(device, run)] = float(np.mean(predicted == np.asarray(test_y)))
            for path, y, pred, p in zip(test_p, test_y, predicted, proba):
                image = truth.capture(path).path
                try:
                    image = os.path.relpath(os.path.realpath(image), os.path.realpath(truth.root))
                except ValueError:
                    pass
                row = {"device": device, "run": run, "path": path, "image": image, "true": int(y),
                       "predicted": int(pred)}
                row.update({f"p_{c}": float(v) for c, v in zip(model.classes_, p)})
                result.predictions.append(row)
    return result
