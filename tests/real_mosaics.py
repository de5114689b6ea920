"""Real RAW mosaics with injected, dated hot pixels: fetch the sources, build dated datasets.

Why
---
The age estimators must be checked on data with *real* sensor noise, real scene texture and a
real camera's processing, against a ground truth that does not come from the code under test
(see DESIGN.md, "Validity claims"). This script takes real CFA mosaics straight from three
cameras' raw files, turns each camera into one simulated *device* whose pixels develop
defects over time (with this file's own small model, not the project's simulator), and writes
dated datasets of DNGs or JPEGs with manifests and the exact ground truth.

Where the raw files come from (all pinned by SHA-256, archive and extracted file)
-------------------------------------------------------------------------------
========================  ==========================================  ==============================
device                    source (PyPI source distribution, member)   camera, frame, licence
========================  ==========================================  ==============================
``real-sony-a7r3``        ``libraw-cffi==0.19.0``                      Sony ILCE-7RM3 (A7R III), ARW,
                          ``libraw_cffi-0.19.0.tar.gz`` (18.2 MB),     visible 3464x5184, RGGB, 14 bit
                          member ``libraw_cffi/tests/_DSC2164.ARW``    (black 512, white 16383);
                          (18.6 MB)                                    a concert at ISO 3200, 1/640 s.
                                                                       Package MIT (Julian Berman);
                                                                       no separate licence for the file.
``real-canon-550d``       ``tinydng==0.1.0``                           Canon EOS Kiss X4 (550D / Rebel
                          ``tinydng-0.1.0.tar.gz`` (7.0 MB),           T2i), DNG (Magic-Lantern-style,
                          member ``colorchart.dng`` (3.9 MB)           black 2056, white 15000), visible
                                                                       1156x1734, RGGB; a colour chart
                                                                       on a table. Package MIT (Syoyo
                                                                       Fujita and contributors).
``real-rawpipe-sensor``   ``rawpipe==0.19.3``                          An unnamed 10-bit RGGB sensor
                          ``rawpipe-0.19.3.tar.gz`` (9.3 MB),          (values stored <<2, black 256,
                          member ``test/input.raw`` (2.8 MB,           white taken as 4092); headerless
                          968x1424 uint16, layout from                 1424x968 frame of a grey chart;
                          ``test/expected.ppm`` and                    white balance (R 1.7, B 2.4) from
                          ``test/regression.py``)                      rawpipe's own test. Package MIT
                                                                       (Tomi Aarnio). Wrapped once into a
                                                                       DNG (cached) so LibRaw reads it.
========================  ==========================================  ==============================

No Debian source package searched had a usable camera raw (exiv2, tracker-miners and
kimageformats carry only stripped, fuzzed or non-Bayer files), nor did the rawpy, exifread,
pidng, imageio, rawkit or colour-demosaicing sdists. The archives are downloaded once with
``pip download --no-binary :all: --no-deps`` into ``$AGETRACE_TEST_DATA`` (default
``~/.cache/agetrace-test-data``); ``AGETRACE_OFFLINE=1`` forbids downloading. About 34.5 MB in
all; every use re-checks the extracted files' hashes.

What is built
-------------
One source camera = one device. A device's *frame* is ``FRAME_SHAPE`` (384 x 512, rows x
columns); each capture is a crop of the real frame at an even offset (so the CFA phase is
kept), a different offset for every capture, drawn independently of the age class so that
scene content carries no class information. Defect positions are positions in that frame,
i.e. sensor positions of the simulated device.

Defects per device: a Poisson number (mean ``mean_defects``), uniform positions, onsets uniform
over ``ONSET_PERIOD`` (from six months before class 0 to the end of class 1, so onsets fall
before class 0, inside class 0, between the classes and inside class 1). About 40 % are
partially stuck (offset ``c`` DN, ``D = 0``), the others hot (dark current ``D`` DN/s,
``c = 0``). Amplitudes are log-normal mixtures of a weak and a strong population, in units of
the camera's raw range (white - black): see :data:`AMPLITUDES`. A capture at time ``t`` with
exposure ``tau`` and ISO ``s`` adds ``(s / BASE_ISO) * (tau * D + c)`` DN (rounded to the
source's quantisation step) to every defect whose onset is at or before ``t``, then clips at
the white level (a source pixel already above it, as in the Sony file's highlights, is left as
it is). The quantisation step is measured on the source: the Sony ARW stores only even values,
the rawpipe sensor multiples of 4, the Canon every value. Exposures are ``1/n`` s with ``n`` log-uniform over 15..1000; ISO is drawn
from {100, 200, 400, 800, 1600}; ``BASE_ISO`` = 100. Class 0 captures fall in
``CLASS_PERIODS[0]`` (three months), class 1 in ``CLASS_PERIODS[1]`` (three months, 15 months
later). With ``capture_times="continuous"`` (the dating benchmark's sets) the same number of
captures falls uniformly over the whole span ``CLASS_PERIODS[0][0]`` .. ``CLASS_PERIODS[1][1]``
(21 months), labelled 0 before its midpoint and 1 after. The source file's own exposure and ISO
are ignored: only the defects follow the drawn settings.

Outputs of :func:`build` (``kind='dng'`` or ``'jpeg'``), in one folder:

* ``<device>/IMG_0001.dng|jpg`` ... numbered in capture-time order.
  DNG: the modified CFA mosaic, 16-bit uncompressed, with the camera's CFA pattern, black and
  white levels, colour matrix and as-shot white balance, and Make, Model, CameraSerialNumber,
  DateTimeOriginal, ExposureTime and PhotographicSensitivity (ISO). rawpy reads the mosaic back
  bit-identical. JPEG: developed by LibRaw from the modified mosaic (camera white balance, no
  auto-brightness, no maximum adjustment, AHD, sRGB, BT.709 gamma, 8 bit, ``user_flip=0``),
  cropped to the frame and saved by Pillow at quality 92 (4:2:0) with Make, Model,
  Orientation 1, DateTimeOriginal, ExposureTime (a rational), ISOSpeedRatings and
  BodySerialNumber. Development works on the crop plus a 16-pixel margin written as a DNG with
  the camera's colour matrix and white balance; inside the frame that is bit-identical to
  developing the whole original raw file (checked for all three sources) and some 30 times
  faster than developing the 42-megapixel Sony frame.
* ``manifest.csv``: path, device, captured_at, label, exposure_s, iso, make, model.
* ``manifest_exif_only.csv``: the same without exposure_s and iso (they must come from EXIF).
* ``defects_truth.csv``: device, row, col, cfa_color (0 R, 1 G, 2 B), onset, D, c, base_iso,
  type (hot/stuck).
* ``captures_truth.csv``: path, device, captured_at, exposure_s, iso, label, source_file,
  crop_row, crop_col (the frame's top-left corner in the source's visible area).

How strong a defect must be to show in the JPEG (measured on seed 0, all three devices,
against the same crop developed without defects): an effective raw increment below 0.3 % of the
raw range changes the 8-bit value by 3 or more in under 10 % of cases, 0.3-1 % in about a
third, 1-3 % in 86 %, 3-10 % in 98 %, above 10 % always (green always; red and blue, spread by
demosaicing and 4:2:0 chroma, can hide on bright or saturated backgrounds). About two thirds
of all (defect, capture) pairs with the defect present change the JPEG by 3 or more.

Use
---
    python tests/real_mosaics.py --out DIR --seed 0 --kind jpeg
    python tests/real_mosaics.py --out DIR --seed 1 --kind dng --images-per-class 40
    python tests/real_mosaics.py --fetch-only

From Python (tests, benchmarks): ``build(out_dir, seed, kind)``; ``fetch_sources()``;
``load_source(device)``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path

import numpy as np

# the same cache folder, variables and hashing as the I/O tests' camera files
from fetch_camera_files import CACHE_VARIABLE, OFFLINE_VARIABLE, cache_dir
from fetch_camera_files import sha256_of as _sha256_of

__all__ = [
    "AMPLITUDES", "BASE_ISO", "CLASS_PERIODS", "DEVICES", "FRAME_SHAPE", "FetchError", "ISO_VALUES",
    "ONSET_PERIOD", "OfflineError", "BuildResult", "SourceMosaic", "build", "cache_dir",
    "defect_increment", "fetch_sources", "load_source",
]


#: Rows x columns of every capture (the simulated sensor's frame).
FRAME_SHAPE = (384, 512)
#: Margin (even) kept around a crop for demosaicing when developing a JPEG.
DEVELOP_MARGIN = 16
BASE_ISO = 100
ISO_VALUES = (100, 200, 400, 800, 1600)
#: Exposure times are 1/n s with n log-uniform over this range.
SHUTTER_DENOMINATORS = (15, 1000)
CLASS_PERIODS = (
    (datetime(2019, 3, 1), datetime(2019, 6, 1)),
    (datetime(2020, 9, 1), datetime(2020, 12, 1)),
)
ONSET_PERIOD = (datetime(2018, 9, 1), datetime(2020, 12, 1))
#: Fraction of defects that are partially stuck (offset c) rather than hot (dark current D).
STUCK_FRACTION = 0.4
#: Log-normal amplitude populations, in units of the raw range (white - black): for stuck
#: pixels ``c / range``, for hot pixels ``D / range`` per second. (probability of the strong
#: population, (median, sigma) weak, (median, sigma) strong).
AMPLITUDES = {
    "stuck": (0.45, (0.002, 0.6), (0.02, 0.8)),
    "hot": (0.45, (0.25, 0.7), (2.5, 0.8)),
}
JPEG_QUALITY = 92


class FetchError(RuntimeError):
    """The raw files could not be downloaded or did not match their pinned hashes."""


class OfflineError(FetchError):
    """The raw files are not cached and AGETRACE_OFFLINE=1 forbids downloading them."""


@dataclass(frozen=True)
class _Archive:
    name: str
    version: str
    filename: str
    sha256: str
    #: local file name -> (member path in the archive, SHA-256)
    members: dict


_ARCHIVES = {
    "libraw-cffi": _Archive(
        "libraw-cffi", "0.19.0", "libraw_cffi-0.19.0.tar.gz",
        "c92b259c0a82a87e5e3636b8ffef84bcc3c0781c595994b09ceb9b87892ea930",
        {"_DSC2164.ARW": ("libraw_cffi-0.19.0/libraw_cffi/tests/_DSC2164.ARW",
                          "42ec55eef6047c1bfbd1fd05fdcae78993f3513814138eff4cbcf9498c57d4e6")}),
    "tinydng": _Archive(
        "tinydng", "0.1.0", "tinydng-0.1.0.tar.gz",
        "ede1315f980318f99f3102edbb1ee13ef71d148e9731ae2dfbcb450968cb7072",
        {"colorchart.dng": ("tinydng-0.1.0/colorchart.dng",
                            "592dba160b03770752667847f60ef07e9d96c17bf841e78e2b0cb5cbc5616edd")}),
    "rawpipe": _Archive(
        "rawpipe", "0.19.3", "rawpipe-0.19.3.tar.gz",
        "733d899e2c9a09e1e81fd95c28c6e19642d8749a90058aeada206d2f6542b13f",
        {"input.raw": ("rawpipe-0.19.3/test/input.raw",
                       "b4d75850d39f96596b228d515bae0d2ab61e9e10589807a81f63d8dd9f84a3ca")}),
}


@dataclass(frozen=True)
class _Device:
    device: str
    archive: str
    source_file: str
    make: str
    model: str
    #: for a headerless source: (rows, cols, black, white, 'RGGB', (R gain, B gain))
    headerless: tuple | None = None


#: The devices, in the order a build uses them.
DEVICES = (
    _Device("real-sony-a7r3", "libraw-cffi", "_DSC2164.ARW", "SONY", "ILCE-7RM3"),
    _Device("real-canon-550d", "tinydng", "colorchart.dng", "Canon", "Canon EOS Kiss X4"),
    _Device("real-rawpipe-sensor", "rawpipe", "input.raw", "Unknown", "rawpipe test sensor",
            headerless=(968, 1424, 256, 4092, "RGGB", (1.7, 2.4))),
)
_BY_NAME = {d.device: d for d in DEVICES}

# XYZ (D65) -> linear sRGB: a colour matrix saying "camera RGB is linear sRGB", for the
# headerless source whose real matrix is unknown (LibRaw then applies no colour mixing).
_XYZ_TO_SRGB = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])


# --- fetching ---------------------------------------------------------------------------------

def _matches(path: Path, digest: str) -> bool:
    return path.is_file() and _sha256_of(path) == digest


def fetch_sources(devices=None, cache: Path | None = None) -> dict[str, Path]:
    """Return ``{device: path of its source raw file}``, each verified against its SHA-256.

    Parameters
    ----------
    devices : iterable of str, optional
        Device names (default: all of :data:`DEVICES`).
    cache : Path, optional
        Cache folder (default :func:`cache_dir`).

    Raises
    ------
    OfflineError
        If a file is not cached and ``AGETRACE_OFFLINE=1``.
    FetchError
        If pip fails or a hash does not match.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    chosen = [_device(name) for name in (devices or [d.device for d in DEVICES])]
    paths = {}
    for dev in chosen:
        archive = _ARCHIVES[dev.archive]
        target = cache / f"{archive.name}-{archive.version}-raw"
        if not all(_matches(target / name, digest) for name, (_, digest) in archive.members.items()):
            _extract(_download(archive, cache), archive, target)
        for name, (_, digest) in archive.members.items():
            actual = _sha256_of(target / name)
            if actual != digest:
                raise FetchError(f"{target / name} has SHA-256 {actual}, expected {digest}: "
                                 f"delete {target} and fetch again")
        paths[dev.device] = target / dev.source_file
    return paths


def _download(archive: _Archive, cache: Path) -> Path:
    path = cache / archive.filename
    if _matches(path, archive.sha256):
        return path
    if os.environ.get(OFFLINE_VARIABLE) == "1":
        raise OfflineError(f"{archive.filename} is not cached in {cache} and {OFFLINE_VARIABLE}=1; "
                           "run `python tests/real_mosaics.py --fetch-only` once with network access")
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    # The second form skips building the build dependencies from source, should the first fail.
    for extra in ([], ["--no-build-isolation"]):
        with tempfile.TemporaryDirectory(dir=cache) as download_dir:
            command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                       "--disable-pip-version-check", "--quiet", *extra,
                       f"{archive.name}=={archive.version}", "-d", download_dir]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"`{' '.join(command)}` failed to run: {exc}")
                continue
            downloaded = Path(download_dir) / archive.filename
            if result.returncode != 0 or not downloaded.is_file():
                errors.append(f"`{' '.join(command)}` exited {result.returncode}:\n"
                              f"{result.stderr.strip()[-1500:]}")
                continue
            actual = _sha256_of(downloaded)
            if actual != archive.sha256:
                raise FetchError(f"{archive.filename} has SHA-256 {actual}, expected {archive.sha256}: "
                                 "the index served a different file; do not trust it")
            os.replace(downloaded, path)
            return path
    raise FetchError(f"could not download {archive.name}=={archive.version} from the package index:\n"
                     + "\n".join(errors) + f"\nSet {OFFLINE_VARIABLE}=1 to skip what needs it without network.")


def _extract(archive_path: Path, archive: _Archive, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive_path, "r:gz") as bundle:
        for name, (member, _) in archive.members.items():
            source = bundle.extractfile(member)
            if source is None:
                raise FetchError(f"{archive_path} has no file {member}")
            with source, tempfile.NamedTemporaryFile(dir=target, delete=False) as sink:
                shutil.copyfileobj(source, sink)
            os.chmod(sink.name, 0o644)
            os.replace(sink.name, target / name)


def _device(name: str) -> _Device:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown device {name!r}; choose from {sorted(_BY_NAME)}") from None


# --- sources ----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SourceMosaic:
    """A source camera's CFA mosaic (visible area, as stored) and what developing it needs.

    Attributes
    ----------
    device, make, model, source_file : str
    path : Path
        The raw file rawpy read (for the headerless source: the DNG wrapped around it).
    mosaic : numpy.ndarray
        H x W uint16, ``raw_image_visible``.
    cfa : numpy.ndarray
        2 x 2 colours (0 R, 1 G, 2 B) of ``mosaic[:2, :2]``.
    black : numpy.ndarray
        2 x 2 black levels at those positions.
    white : int
    step : int
        Quantisation step of the stored values (4 for the rawpipe sensor, else 1).
    color_matrix : numpy.ndarray
        3 x 3 XYZ (D65) -> camera matrix (DNG ColorMatrix1).
    neutral : numpy.ndarray
        As-shot neutral (R, G, B), G = 1.
    """

    device: str
    make: str
    model: str
    source_file: str
    path: Path
    mosaic: np.ndarray
    cfa: np.ndarray
    black: np.ndarray
    white: int
    step: int
    color_matrix: np.ndarray
    neutral: np.ndarray

    @property
    def raw_range(self) -> float:
        """White level minus the mean black level, in DN."""
        return float(self.white - self.black.mean())


def load_source(device: str, cache: Path | None = None) -> SourceMosaic:
    """Fetch (if needed) and read one device's source mosaic with rawpy."""
    import rawpy

    dev = _device(device)
    path = fetch_sources([device], cache)[device]
    if dev.headerless is not None:
        path = _wrap_headerless(dev, path)
    with rawpy.imread(str(path)) as raw:
        if raw.raw_type != rawpy.RawType.Flat or raw.raw_pattern is None:
            raise FetchError(f"{path} is not a CFA mosaic")
        mosaic = np.array(raw.raw_image_visible, dtype=np.uint16, copy=True)
        colours = np.array(raw.raw_colors_visible[:2, :2], copy=True)
        letters = raw.color_desc.decode("ascii")
        cfa = np.array([["RGB".index(letters[i]) for i in row] for row in colours], dtype=np.uint8)
        black = np.asarray(raw.black_level_per_channel, dtype=np.float64)[colours]
        white = int(raw.white_level)
        wb = np.asarray(raw.camera_whitebalance[:3], dtype=np.float64)
        matrix = np.asarray(raw.rgb_xyz_matrix[:3], dtype=np.float64)
    if not np.any(matrix):  # LibRaw leaves it empty for DNGs: take the file's ColorMatrix1
        matrix = _dng_color_matrix(path)
    if dev.headerless is not None:  # the wrapper must hold the pinned samples, bit for bit
        original = np.fromfile(fetch_sources([device], cache)[device], dtype="<u2").reshape(mosaic.shape)
        if not np.array_equal(original, mosaic):
            path.unlink()
            raise FetchError(f"{path} did not read back as {dev.source_file}; deleted it, run again")
    sample = np.unique(mosaic[::7, ::7])
    step = int(np.gcd.reduce(np.diff(sample).astype(np.int64))) if sample.size > 1 else 1
    return SourceMosaic(device=dev.device, make=dev.make, model=dev.model, source_file=dev.source_file,
                        path=path, mosaic=mosaic, cfa=cfa, black=black, white=white, step=max(step, 1),
                        color_matrix=matrix, neutral=wb[1] / wb)


def _dng_color_matrix(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        value = tif.pages.first.tags[50721].value  # ColorMatrix1
    numbers = np.asarray(value, dtype=np.float64).reshape(-1, 2)
    return (numbers[:, 0] / numbers[:, 1]).reshape(3, 3)


def _wrap_headerless(dev: _Device, raw_path: Path) -> Path:
    """Write (once) a DNG around a headerless mosaic so that LibRaw can read and develop it."""
    rows, cols, black, white, pattern, (red_gain, blue_gain) = dev.headerless
    digest = _sha256_of(raw_path)[:16]
    target = raw_path.with_name(f"{raw_path.stem}-{digest}.dng")
    if target.is_file():
        return target
    mosaic = np.fromfile(raw_path, dtype="<u2")
    if mosaic.size != rows * cols:
        raise FetchError(f"{raw_path} has {mosaic.size} samples, expected {rows}x{cols}")
    mosaic = mosaic.reshape(rows, cols)
    cfa = np.array(["RGB".index(letter) for letter in pattern], dtype=np.uint8).reshape(2, 2)
    with tempfile.TemporaryDirectory(dir=raw_path.parent) as scratch:
        written = _write_dng(Path(scratch) / "wrapped", mosaic, cfa, np.full((2, 2), black), white,
                             _XYZ_TO_SRGB, np.array([1 / red_gain, 1.0, 1 / blue_gain]),
                             make=dev.make, model=dev.model)
        os.replace(written, target)
    return target


# --- the defect model -------------------------------------------------------------------------

@dataclass
class _Plan:
    device: str
    rows: np.ndarray
    cols: np.ndarray
    cfa_color: np.ndarray
    onsets: list
    D: np.ndarray
    c: np.ndarray
    kinds: list
    captures: list = field(default_factory=list)  # dicts: time, label, shutter_n, iso, crop


def _random_time(rng, start: datetime, end: datetime) -> datetime:
    return start + timedelta(seconds=int(rng.integers(0, int((end - start).total_seconds()))))


def _log_normal_mixture(rng, n: int, spec) -> np.ndarray:
    p_strong, (weak_median, weak_sigma), (strong_median, strong_sigma) = spec
    strong = rng.random(n) < p_strong
    median = np.where(strong, strong_median, weak_median)
    sigma = np.where(strong, strong_sigma, weak_sigma)
    return median * np.exp(sigma * rng.standard_normal(n))


def _plan_device(seed: int, index: int, source: SourceMosaic, images_per_class: int,
                 mean_defects: float, frame_shape, capture_times: str = "classes") -> _Plan:
    rng = np.random.default_rng([int(seed), int(index), 0x5EED])
    height, width = frame_shape
    count = int(rng.poisson(mean_defects))
    flat = rng.choice(height * width, size=count, replace=False)
    rows, cols = np.divmod(flat, width)
    onsets = sorted(_random_time(rng, *ONSET_PERIOD) for _ in range(count))
    order = rng.permutation(count)  # positions independent of onset order
    rows, cols = rows[order], cols[order]
    stuck = rng.random(count) < STUCK_FRACTION
    scale = source.raw_range
    c = np.where(stuck, _log_normal_mixture(rng, count, AMPLITUDES["stuck"]) * scale, 0.0)
    D = np.where(stuck, 0.0, _log_normal_mixture(rng, count, AMPLITUDES["hot"]) * scale)
    plan = _Plan(device=source.device, rows=rows, cols=cols, cfa_color=source.cfa[rows % 2, cols % 2],
                 onsets=onsets, D=np.round(D, 3), c=np.round(c, 3),
                 kinds=["stuck" if s else "hot" for s in stuck])
    margin = DEVELOP_MARGIN
    max_row = source.mosaic.shape[0] - height - margin
    max_col = source.mosaic.shape[1] - width - margin
    if max_row < margin or max_col < margin:
        raise ValueError(f"{source.device}: source {source.mosaic.shape} too small for frame {frame_shape}")
    crops: set = set()
    low, high = np.log(SHUTTER_DENOMINATORS[0]), np.log(SHUTTER_DENOMINATORS[1])
    captures = []
    if capture_times == "continuous":
        start, end = CLASS_PERIODS[0][0], CLASS_PERIODS[-1][1]
        middle = start + (end - start) / 2
        periods, per_period = [(start, end)], images_per_class * len(CLASS_PERIODS)
    else:
        periods, per_period = list(CLASS_PERIODS), images_per_class
    for label, (start, end) in enumerate(periods):
        for _ in range(per_period):
            while True:  # a distinct even offset for every capture
                crop = (margin + 2 * int(rng.integers(0, (max_row - margin) // 2 + 1)),
                        margin + 2 * int(rng.integers(0, (max_col - margin) // 2 + 1)))
                if crop not in crops:
                    crops.add(crop)
                    break
            when = _random_time(rng, start, end)
            if capture_times == "continuous":
                label = int(when >= middle)
            captures.append({"time": when, "label": label,
                             "shutter_n": int(round(math.exp(rng.uniform(low, high)))),
                             "iso": int(rng.choice(ISO_VALUES)), "crop": crop})
    plan.captures = sorted(captures, key=lambda capture: capture["time"])
    return plan


def defect_increment(D, c, exposure_s: float, iso: float, step: int = 1) -> np.ndarray:
    """DN added to a defect's raw value: ``(iso / BASE_ISO) * (exposure_s * D + c)``, rounded
    (half to even) to a multiple of the source's quantisation `step`, before clipping."""
    amount = (float(iso) / BASE_ISO) * (float(exposure_s) * np.asarray(D, float) + np.asarray(c, float))
    return np.rint(amount / step) * step


def _inject(crop: np.ndarray, plan: _Plan, capture: dict, white: int, step: int, offset: int = 0) -> np.ndarray:
    """Return a copy of `crop` with the defects active at the capture's time added and clipped."""
    out = crop.copy()
    active = np.array([onset <= capture["time"] for onset in plan.onsets], dtype=bool)
    if not active.any():
        return out
    add = defect_increment(plan.D[active], plan.c[active], 1.0 / capture["shutter_n"], capture["iso"], step)
    r, c = plan.rows[active] + offset, plan.cols[active] + offset
    current = out[r, c].astype(np.int64)
    out[r, c] = np.minimum(current + add.astype(np.int64), np.maximum(white, current)).astype(np.uint16)
    return out


# --- writers ----------------------------------------------------------------------------------

def _srational(value: float) -> list:
    fraction = Fraction(float(value)).limit_denominator(1_000_000)
    return [fraction.numerator, fraction.denominator]


def _write_dng(path_without_suffix: Path, mosaic: np.ndarray, cfa: np.ndarray, black: np.ndarray, white: int,
               color_matrix: np.ndarray, neutral: np.ndarray, *, make: str, model: str,
               serial: str | None = None, captured_at: datetime | None = None,
               shutter_n: int | None = None, iso: int | None = None) -> Path:
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, DNGVersion, PhotometricInterpretation

    height, width = mosaic.shape
    tags = DNGTags()
    tags.set(Tag.ImageWidth, width)
    tags.set(Tag.ImageLength, height)
    tags.set(Tag.TileWidth, width)
    tags.set(Tag.TileLength, height)
    tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    tags.set(Tag.SamplesPerPixel, 1)
    tags.set(Tag.BitsPerSample, 16)
    tags.set(Tag.CFARepeatPatternDim, [2, 2])
    tags.set(Tag.CFAPattern, [int(v) for v in np.asarray(cfa).ravel()])
    tags.set(Tag.BlackLevelRepeatDim, [2, 2])
    tags.set(Tag.BlackLevel, [int(round(v)) for v in np.asarray(black).ravel()])
    tags.set(Tag.WhiteLevel, int(white))
    tags.set(Tag.ColorMatrix1, [_srational(v) for v in np.asarray(color_matrix).ravel()])
    tags.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    tags.set(Tag.AsShotNeutral, [_srational(v) for v in neutral])
    tags.set(Tag.DNGVersion, DNGVersion.V1_4)
    tags.set(Tag.Make, make)
    tags.set(Tag.Model, model)
    tags.set(Tag.UniqueCameraModel, f"{make} {model}")
    tags.set(Tag.Orientation, 1)
    if serial:
        tags.set(Tag.CameraSerialNumber, serial)
    if captured_at is not None:
        tags.set(Tag.DateTimeOriginal, captured_at.strftime("%Y:%m:%d %H:%M:%S"))
    if shutter_n is not None:
        tags.set(Tag.ExposureTime, [[1, int(shutter_n)]])
    if iso is not None:
        tags.set(Tag.PhotographicSensitivity, [int(iso)])
    converter = RAW2DNG()
    converter.options(tags, path="", compress=False)
    return Path(converter.convert(np.ascontiguousarray(mosaic, dtype=np.uint16), filename=str(path_without_suffix)))


def _develop(source: SourceMosaic, clean_with_margin: np.ndarray, modified_with_margin: np.ndarray,
             scratch: Path) -> np.ndarray:
    """Develop a modified crop (with its margin) with LibRaw; return the RGB frame without margin."""
    import rawpy

    dng = _write_dng(scratch / "develop", clean_with_margin, source.cfa, source.black, source.white,
                     source.color_matrix, source.neutral, make=source.make, model=source.model)
    with rawpy.imread(str(dng)) as raw:
        raw.raw_image[:, :] = modified_with_margin  # the injected mosaic, in LibRaw's own buffer
        rgb = raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_bps=8, user_flip=0,
                              adjust_maximum_thr=0.0, demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD,
                              output_color=rawpy.ColorSpace.sRGB)
    m = DEVELOP_MARGIN
    return np.ascontiguousarray(rgb[m:rgb.shape[0] - m, m:rgb.shape[1] - m])


def _write_jpeg(path: Path, rgb: np.ndarray, *, make: str, model: str, serial: str, captured_at: datetime,
                shutter_n: int, iso: int) -> None:
    from PIL import Image, TiffImagePlugin

    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    exif[0x0112] = 1
    sub = exif.get_ifd(0x8769)
    sub[0x829A] = TiffImagePlugin.IFDRational(1, int(shutter_n))  # ExposureTime
    sub[0x8827] = int(iso)  # ISOSpeedRatings
    sub[0x9003] = captured_at.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
    sub[0xA431] = serial  # BodySerialNumber
    Image.fromarray(rgb, "RGB").save(path, "JPEG", quality=JPEG_QUALITY, subsampling=2, exif=exif.tobytes())


# --- the build --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` wrote."""

    out_dir: Path
    kind: str
    seed: int
    manifest: Path
    manifest_exif_only: Path
    defects_truth: Path
    captures_truth: Path
    images: int
    devices: tuple
    defects: dict
    seconds: float


def build(out_dir, seed: int = 0, kind: str = "jpeg", *, images_per_class: int = 40, devices=None,
          mean_defects: float = 48.0, frame_shape=FRAME_SHAPE, cache: Path | None = None,
          overwrite: bool = False, progress: bool = False, capture_times: str = "classes") -> BuildResult:
    """Build one dated dataset of real mosaics with injected defects.

    Parameters
    ----------
    out_dir : str or Path
        Folder to create. It must not exist or be empty unless `overwrite`; the set is built
        in a sibling folder and renamed into place, so an interrupted build leaves nothing
        that looks whole.
    seed : int
        Seeds the defects, capture times, exposures, ISOs and crop positions (per device, so a
        build of fewer devices draws the same for those it has).
    kind : {'jpeg', 'dng'}
    images_per_class : int
        Captures per age class and device (two classes).
    devices : sequence of str, optional
        Subset of :data:`DEVICES` names (default: all three).
    mean_defects : float
        Poisson mean of the number of defects per device.
    frame_shape : (int, int)
        Rows, columns of every capture (even numbers).
    cache : Path, optional
        Cache of the source files (default :func:`cache_dir`).
    overwrite : bool
        Replace an existing non-empty `out_dir`.
    progress : bool
        Print one line per device.
    capture_times : {'classes', 'continuous'}
        Captures inside the two class periods, or spread uniformly over the whole span from the
        first class's start to the last one's end (labels split at its midpoint).

    Returns
    -------
    BuildResult
    """
    if kind not in ("jpeg", "dng"):
        raise ValueError(f"kind must be 'jpeg' or 'dng', not {kind!r}")
    if capture_times not in ("classes", "continuous"):
        raise ValueError(f"capture_times must be 'classes' or 'continuous', not {capture_times!r}")
    if images_per_class < 1:
        raise ValueError("images_per_class must be at least 1")
    height, width = (int(v) for v in frame_shape)
    if height % 2 or width % 2 or height < 32 or width < 32:
        raise ValueError(f"frame_shape {frame_shape} must be even and at least 32x32")
    names = list(devices) if devices else [d.device for d in DEVICES]
    for name in names:
        _device(name)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new folder or pass overwrite")
    started = time.perf_counter()
    fetch_sources(names, cache)  # fail early, before any work
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        manifest_rows, capture_rows, defect_rows, counts = [], [], [], {}
        for index, name in enumerate(names):
            device_index = [d.device for d in DEVICES].index(name)
            source = load_source(name, cache)
            plan = _plan_device(seed, device_index, source, images_per_class, mean_defects, (height, width),
                                capture_times)
            counts[name] = len(plan.onsets)
            serial = f"{name}-seed{seed}"
            (staging / name).mkdir()
            for k, capture in enumerate(plan.captures, start=1):
                relative = f"{name}/IMG_{k:04d}.{'dng' if kind == 'dng' else 'jpg'}"
                _write_capture(staging / relative, kind, source, plan, capture, serial, (height, width), staging)
                exposure = 1.0 / capture["shutter_n"]
                when = capture["time"].isoformat()
                manifest_rows.append({"path": relative, "device": name, "captured_at": when,
                                      "label": capture["label"], "exposure_s": repr(exposure),
                                      "iso": capture["iso"], "make": source.make, "model": source.model})
                capture_rows.append({"path": relative, "device": name, "captured_at": when,
                                     "exposure_s": repr(exposure), "iso": capture["iso"],
                                     "label": capture["label"], "source_file": source.source_file,
                                     "crop_row": capture["crop"][0], "crop_col": capture["crop"][1]})
            for i in range(len(plan.onsets)):
                defect_rows.append({"device": name, "row": int(plan.rows[i]), "col": int(plan.cols[i]),
                                    "cfa_color": int(plan.cfa_color[i]), "onset": plan.onsets[i].isoformat(),
                                    "D": repr(float(plan.D[i])), "c": repr(float(plan.c[i])),
                                    "base_iso": BASE_ISO, "type": plan.kinds[i]})
            if progress:
                print(f"  {name}: {len(plan.captures)} {kind} captures, {counts[name]} defects "
                      f"({time.perf_counter() - started:.1f} s)", flush=True)
        manifest_columns = ["path", "device", "captured_at", "label", "exposure_s", "iso", "make", "model"]
        _write_csv(staging / "manifest.csv", manifest_columns, manifest_rows)
        _write_csv(staging / "manifest_exif_only.csv",
                   [c for c in manifest_columns if c not in ("exposure_s", "iso")], manifest_rows)
        _write_csv(staging / "defects_truth.csv",
                   ["device", "row", "col", "cfa_color", "onset", "D", "c", "base_iso", "type"], defect_rows)
        _write_csv(staging / "captures_truth.csv",
                   ["path", "device", "captured_at", "exposure_s", "iso", "label", "source_file",
                    "crop_row", "crop_col"], capture_rows)
        for leftover in staging.glob(".scratch*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildResult(out_dir=out_dir, kind=kind, seed=seed, manifest=out_dir / "manifest.csv",
                       manifest_exif_only=out_dir / "manifest_exif_only.csv",
                       defects_truth=out_dir / "defects_truth.csv", captures_truth=out_dir / "captures_truth.csv",
                       images=len(manifest_rows), devices=tuple(names), defects=counts,
                       seconds=time.perf_counter() - started)


def _write_capture(path: Path, kind: str, source: SourceMosaic, plan: _Plan, capture: dict, serial: str,
                   frame_shape, staging: Path) -> None:
    height, width = frame_shape
    row, col = capture["crop"]
    if kind == "dng":
        crop = source.mosaic[row:row + height, col:col + width]
        modified = _inject(crop, plan, capture, source.white, source.step)
        _write_dng(path.with_suffix(""), modified, source.cfa, source.black, source.white,
                   source.color_matrix, source.neutral, make=source.make, model=source.model, serial=serial,
                   captured_at=capture["time"], shutter_n=capture["shutter_n"], iso=capture["iso"])
        return
    m = DEVELOP_MARGIN
    clean = source.mosaic[row - m:row + height + m, col - m:col + width + m]
    modified = _inject(clean, plan, capture, source.white, source.step, offset=m)
    scratch = Path(tempfile.mkdtemp(prefix=".scratch", dir=staging))
    try:
        rgb = _develop(source, clean, modified, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _write_jpeg(path, rgb, make=source.make, model=source.model, serial=serial, captured_at=capture["time"],
                shutter_n=capture["shutter_n"], iso=capture["iso"])


def _write_csv(path: Path, columns: list, rows: list) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# --- command line -----------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Build a dated dataset of real RAW mosaics (three cameras) with injected hot pixels.")
    parser.add_argument("--out", type=Path, help="output folder (created; must be new or empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kind", choices=("jpeg", "dng"), default="jpeg")
    parser.add_argument("--images-per-class", type=int, default=40)
    parser.add_argument("--devices", nargs="+", choices=[d.device for d in DEVICES])
    parser.add_argument("--capture-times", choices=("classes", "continuous"), default="classes")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--fetch-only", action="store_true", help="only fill the cache and verify it")
    args = parser.parse_args(argv)
    try:
        if args.fetch_only:
            for name, path in fetch_sources(args.devices).items():
                print(f"{name}: {path}")
            return 0
        if args.out is None:
            parser.error("--out is required unless --fetch-only")
        result = build(args.out, args.seed, args.kind, images_per_class=args.images_per_class,
                       devices=args.devices, overwrite=args.overwrite, progress=True,
                       capture_times=args.capture_times)
    except (FetchError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {result.images} {result.kind} images of {len(result.devices)} devices "
          f"(seed {result.seed}) in {result.seconds:.1f} s to {result.out_dir}")
    for name in (result.manifest, result.manifest_exif_only, result.defects_truth, result.captures_truth):
        print(f"  {name}")
    print("  defects per device: " + ", ".join(f"{k} {v}" for k, v in result.defects.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
