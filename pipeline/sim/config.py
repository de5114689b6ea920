"""Configuration of the synthetic aging camera: dataclasses, TOML loading, dotted overrides.

The shipped default lives in ``data_manifests/synthetic_default.toml`` and is read through
:mod:`importlib.resources`, so that a non-editable install finds it. Every value can be
overridden by a dotted key (``"defects.rate_per_year"``, ``"models.alpha.width"``,
``"devices.0.serial"``); override values given as strings are parsed as TOML values
(``"0.5"`` -> 0.5, ``"[1, 5]"`` -> [1, 5], ``"abc"`` -> "abc").

Units: times in seconds or days as named, amplitudes in DN of the raw scale at the model's
``base_iso`` (the analogue gain, and with it every raw amplitude, scales as ``iso / base_iso``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

__all__ = [
    "SIMULATOR_VERSION", "CFA_PATTERNS", "SCENE_GROUPS", "IspStyle", "ProcessingConfig", "ModelConfig",
    "DeviceConfig", "AgeClass", "TimeConfig", "DefectConfig", "SceneConfig", "CaptureConfig",
    "SimulationConfig", "load_config", "apply_overrides", "config_hash",
]

#: Bumped whenever the same configuration would produce different bytes; part of the cache key.
SIMULATOR_VERSION = 1

#: Colour index (0=R, 1=G, 2=B) of the 2x2 CFA cell, row-major, per pattern name.
CFA_PATTERNS = {
    "RGGB": (0, 1, 1, 2),
    "BGGR": (2, 1, 1, 0),
    "GRBG": (1, 0, 2, 1),
    "GBRG": (1, 2, 0, 1),
}
OUTPUT_FORMATS = ("jpeg", "tiff", "dng")
JPEG_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
#: Scene groups (see :mod:`pipeline.sim.scenes`): each has its own lighting and scene types.
SCENE_GROUPS = ("indoor", "outdoor")
DEFAULT_RESOURCE = "synthetic_default.toml"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class IspStyle:
    """A camera model's characteristic in-camera processing; ``None`` means "as the base".

    The processing actually applied is ``base + processing_bias * (style - base)``
    (see :meth:`ProcessingConfig.effective`), so at ``processing_bias = 0`` every model
    processes alike and at 1 each has its full style.
    """

    gamma: float | None = None
    wb_tint: tuple[float, float, float] | None = None
    sharpen: float | None = None
    saturation: float | None = None
    jpeg_quality: int | None = None


@dataclass(frozen=True)
class ProcessingConfig:
    """Base in-camera processing, shared by every model at ``processing_bias = 0``.

    Attributes
    ----------
    processing_bias : float
        In [0, 1]: how far each model's :class:`IspStyle` departs from the base.
    gamma : float
        Display gamma of the tone curve ``y = x ** (1 / gamma)`` on white-balanced linear data.
    wb_tint : tuple of 3 float
        Extra R, G, B gains on top of the daylight white balance (a colour cast).
    sharpen : float
        Unsharp-mask amount (Gaussian sigma 1 px) on the gamma-encoded image; 0 = off.
    saturation : float
        Saturation factor around the pixel's channel mean; 1 = unchanged.
    jpeg_quality : int
        Pillow/libjpeg quality, 1..100.
    jpeg_subsampling : {"4:4:4", "4:2:2", "4:2:0"}
        Chroma subsampling. Default 4:4:4 keeps a defect's colour pattern at pixel resolution
        so per-channel residuals see it; many real cameras use 4:2:2.
    output_format : {"jpeg", "tiff", "dng"}
        ``jpeg``: 8-bit JPEG with EXIF; ``tiff``: the same processed image at 16 bits, no
        compression; ``dng``: the raw CFA mosaic (black level included) as a DNG.
    """

    processing_bias: float = 0.0
    gamma: float = 2.2
    wb_tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sharpen: float = 0.0
    saturation: float = 1.0
    jpeg_quality: int = 92
    jpeg_subsampling: str = "4:4:4"
    output_format: str = "jpeg"

    def __post_init__(self):
        _check(0.0 <= self.processing_bias <= 1.0, "processing.processing_bias must lie in [0, 1]")
        _check(self.gamma > 0, "processing.gamma must be > 0")
        _check(len(self.wb_tint) == 3 and min(self.wb_tint) > 0, "processing.wb_tint needs 3 positive gains")
        _check(1 <= self.jpeg_quality <= 100, "processing.jpeg_quality must lie in 1..100")
        _check(self.jpeg_subsampling in JPEG_SUBSAMPLING,
               f"processing.jpeg_subsampling must be one of {sorted(JPEG_SUBSAMPLING)}")
        _check(self.output_format in OUTPUT_FORMATS,
               f"processing.output_format must be one of {list(OUTPUT_FORMATS)}")

    def effective(self, style: IspStyle) -> "ProcessingConfig":
        """The processing of a model with ``style``, scaled by ``processing_bias``."""
        b = self.processing_bias

        def mix(base, own):
            return base if own is None else base + b * (own - base)

        tint = self.wb_tint if style.wb_tint is None else tuple(
            mix(t, s) for t, s in zip(self.wb_tint, style.wb_tint))
        return ProcessingConfig(
            processing_bias=b, gamma=mix(self.gamma, style.gamma), wb_tint=tint,
            sharpen=mix(self.sharpen, style.sharpen), saturation=mix(self.saturation, style.saturation),
            jpeg_quality=int(round(mix(self.jpeg_quality, style.jpeg_quality))),
            jpeg_subsampling=self.jpeg_subsampling, output_format=self.output_format)


@dataclass(frozen=True)
class ModelConfig:
    """A camera model: sensor, exposure habits and processing style, shared by its bodies.

    Attributes
    ----------
    make, model : str
        EXIF Make / Model.
    width, height : int
        Sensor frame in pixels (even numbers: whole CFA cells).
    cfa : str
        CFA pattern of the top-left 2x2 cell, one of ``CFA_PATTERNS``.
    bit_depth, black_level : int
        Raw white level is ``2**bit_depth - 1``; the black level is added to every pixel.
    full_well_e : float
        Electrons that fill ``white_level - black_level`` at ``base_iso`` (sets the shot noise).
    read_noise_e, adc_noise_dn : float
        Read noise before the gain (electrons) and after it (DN).
    base_iso : int
        ISO of unit analogue gain. Gain = ``iso / base_iso`` multiplies defect amplitudes and
        the DN per electron; the scene level itself is fixed by auto-exposure.
    iso_values, iso_weights : tuple
        Discrete ISO distribution of the captures.
    exposure_min_s, exposure_max_s : float
        Exposure times are log-uniform in this range, rounded to a 1/n s shutter speed.
    prnu_sigma : float
        Standard deviation of the PRNU factor K (iid Gaussian per pixel).
    spectral_response : tuple of 3 float
        Raw sensitivity of the R, G, B sites to a daylight-white scene (G = 1 typical);
        the daylight white balance is its inverse.
    isp : IspStyle
        The model's characteristic processing (used as far as ``processing_bias`` says).
    """

    make: str
    model: str
    width: int = 1024
    height: int = 768
    cfa: str = "RGGB"
    bit_depth: int = 12
    black_level: int = 64
    full_well_e: float = 20000.0
    read_noise_e: float = 3.0
    adc_noise_dn: float = 0.8
    base_iso: int = 100
    iso_values: tuple[int, ...] = (100, 200, 400, 800)
    iso_weights: tuple[float, ...] = (0.45, 0.3, 0.15, 0.1)
    exposure_min_s: float = 1 / 500
    exposure_max_s: float = 1 / 15
    prnu_sigma: float = 0.008
    spectral_response: tuple[float, float, float] = (0.55, 1.0, 0.75)
    isp: IspStyle = field(default_factory=IspStyle)

    def __post_init__(self):
        where = f"model {self.model!r}"
        _check(self.width >= 16 and self.height >= 16 and self.width % 2 == 0 and self.height % 2 == 0,
               f"{where}: width and height must be even and >= 16 (got {self.width}x{self.height})")
        _check(self.cfa in CFA_PATTERNS, f"{where}: cfa must be one of {sorted(CFA_PATTERNS)}, not {self.cfa!r}")
        _check(8 <= self.bit_depth <= 16, f"{where}: bit_depth must lie in 8..16")
        _check(0 <= self.black_level < self.white_level // 2, f"{where}: black_level must be small and >= 0")
        _check(len(self.iso_values) == len(self.iso_weights) > 0 and min(self.iso_weights) >= 0
               and sum(self.iso_weights) > 0, f"{where}: iso_values and iso_weights must match and be >= 0")
        _check(0 < self.exposure_min_s <= self.exposure_max_s, f"{where}: need 0 < exposure_min_s <= exposure_max_s")
        _check(len(self.spectral_response) == 3 and min(self.spectral_response) > 0,
               f"{where}: spectral_response needs 3 positive values")
        _check(self.prnu_sigma >= 0 and self.full_well_e > 0 and self.read_noise_e >= 0 and self.adc_noise_dn >= 0,
               f"{where}: prnu_sigma, full_well_e, read_noise_e, adc_noise_dn must be non-negative")

    @property
    def white_level(self) -> int:
        """Largest raw value (clipping level, full well)."""
        return 2 ** self.bit_depth - 1


@dataclass(frozen=True)
class DeviceConfig:
    """One camera body: its id (manifest ``device``), its model key, its serial number."""

    name: str
    model: str
    serial: str


@dataclass(frozen=True)
class AgeClass:
    """An age class: an inclusive range of acquisition slots (TOML ``slots = [first, last]``)."""

    label: int
    slots: tuple[int, int]

    def __post_init__(self):
        _check(len(self.slots) == 2 and 1 <= self.slots[0] <= self.slots[1],
               f"class {self.label}: slots must be [first, last] with 1 <= first <= last")


@dataclass(frozen=True)
class TimeConfig:
    """Acquisition calendar, shared by all devices.

    Slot ``k`` starts on ``first_slot_start + (k - 1) * slot_spacing_days``; its images fall on
    the ``slot_duration_days`` days from there, between ``day_start_hour`` and ``day_end_hour``.
    Each sensor is made ``manufacture_lead_days`` before slot 1 starts: its defect process runs
    from then to the device's last capture.
    """

    first_slot_start: datetime = datetime(2014, 10, 6, 8, 0, 0)
    slot_spacing_days: float = 28.0
    slot_duration_days: int = 4
    day_start_hour: float = 8.0
    day_end_hour: float = 19.0
    manufacture_lead_days: float = 120.0

    def __post_init__(self):
        _check(self.slot_spacing_days > 0 and self.slot_duration_days >= 1,
               "time: slot_spacing_days must be > 0 and slot_duration_days >= 1")
        _check(self.slot_duration_days <= self.slot_spacing_days,
               "time: slot_duration_days must not exceed slot_spacing_days (slots would overlap)")
        _check(0 <= self.day_start_hour < self.day_end_hour <= 24, "time: need 0 <= day_start_hour < day_end_hour <= 24")
        _check(self.manufacture_lead_days >= 0, "time: manufacture_lead_days must be >= 0")

    def slot_start(self, slot: int) -> datetime:
        """Start of acquisition slot ``slot`` (1-based)."""
        return self.first_slot_start + timedelta(days=(slot - 1) * self.slot_spacing_days)


@dataclass(frozen=True)
class DefectConfig:
    """The in-field defect process and its amplitude mixture.

    Attributes
    ----------
    rate_per_year : float
        Poisson rate of new defects per sensor per year (365.25 days). Real sensors gain far
        fewer per year on this small an area; the rate is an accelerated-aging knob.
    stuck_fraction : float
        Probability that a defect is partially stuck (offset ``c`` only, ``D = 0``); the others
        are hot pixels (dark current ``D``, plus a small offset).
    strong_fraction : float
        Probability that a defect belongs to the strong population of the amplitude mixture.
    weak_median_dn, strong_median_dn : float
        Medians of the two log-normal populations of the amplitude ``A`` (raw DN at base ISO).
        A stuck pixel has ``c = A``; a hot pixel has ``D = A / reference_exposure_s``.
    amplitude_log_sigma : float
        Log-normal sigma of both populations.
    hot_offset_max_fraction : float
        A hot pixel's offset is uniform in ``[0, hot_offset_max_fraction * A]``.
    reference_exposure_s : float
        Exposure at which a hot pixel's dark signal equals its amplitude ``A``.
    """

    rate_per_year: float = 20.0
    stuck_fraction: float = 0.4
    strong_fraction: float = 0.5
    weak_median_dn: float = 20.0
    strong_median_dn: float = 300.0
    amplitude_log_sigma: float = 0.6
    hot_offset_max_fraction: float = 0.1
    reference_exposure_s: float = 1 / 60

    def __post_init__(self):
        _check(self.rate_per_year >= 0, "defects.rate_per_year must be >= 0")
        for name in ("stuck_fraction", "strong_fraction", "hot_offset_max_fraction"):
            _check(0.0 <= getattr(self, name) <= 1.0, f"defects.{name} must lie in [0, 1]")
        _check(self.weak_median_dn > 0 and self.strong_median_dn > 0 and self.amplitude_log_sigma >= 0
               and self.reference_exposure_s > 0, "defects: medians, sigma and reference exposure must be positive")


@dataclass(frozen=True)
class SceneConfig:
    """Scene content and its correlation with the age class.

    Attributes
    ----------
    scene_bias : float
        In [0, 1]. An image of class ``k`` takes its scene from group ``group_for_class[k]``
        with probability ``scene_bias + (1 - scene_bias) / n_groups`` and from a group drawn
        uniformly otherwise: 0 makes the scene type independent of the class, 1 makes the
        classes draw from disjoint scene groups (the content shortcut of the papers).
    group_for_class : tuple of str
        Scene group ("indoor" or "outdoor") favoured by each class, in class order.
    exposure_jitter_ev : float
        Standard deviation (EV) of the per-image metering error around the group's key.
    """

    scene_bias: float = 0.5
    group_for_class: tuple[str, ...] = ("indoor", "outdoor")
    exposure_jitter_ev: float = 0.3

    def __post_init__(self):
        _check(0.0 <= self.scene_bias <= 1.0, "scenes.scene_bias must lie in [0, 1]")
        _check(self.exposure_jitter_ev >= 0, "scenes.exposure_jitter_ev must be >= 0")
        unknown = sorted(set(self.group_for_class) - set(SCENE_GROUPS))
        _check(not unknown, f"scenes.group_for_class: unknown group(s) {unknown}; use {list(SCENE_GROUPS)}")


@dataclass(frozen=True)
class CaptureConfig:
    """How many images each device takes per age class (spread evenly over the class's slots)."""

    images_per_class: int = 60

    def __post_init__(self):
        _check(self.images_per_class >= 1, "capture.images_per_class must be >= 1")


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a synthetic dataset, bit for bit (with the package versions)."""

    seed: int = 20141006
    name: str = "synthetic"
    time: TimeConfig = field(default_factory=TimeConfig)
    classes: tuple[AgeClass, ...] = (AgeClass(0, (1, 5)), AgeClass(1, (20, 25)))
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    defects: DefectConfig = field(default_factory=DefectConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    devices: tuple[DeviceConfig, ...] = ()

    def __post_init__(self):
        _check(self.seed >= 0, "seed must be a non-negative integer")
        _check(len(self.devices) >= 1, "the configuration needs at least one [[devices]] entry")
        names = [d.name for d in self.devices]
        _check(len(set(names)) == len(names), f"device names must be unique: {names}")
        for d in self.devices:
            _check(d.model in self.models, f"device {d.name!r}: unknown model {d.model!r} "
                                           f"(known: {sorted(self.models)})")
            _check(d.name and all(ch.isalnum() or ch in "-_." for ch in d.name),
                   f"device name {d.name!r}: use letters, digits, '-', '_' or '.' (it names files)")
        _check(len(self.classes) >= 1, "the configuration needs at least one [[classes]] entry")
        labels = [c.label for c in self.classes]
        _check(len(set(labels)) == len(labels), f"class labels must be unique: {labels}")
        ranges = sorted(c.slots for c in self.classes)
        _check(all(a[1] < b[0] for a, b in zip(ranges, ranges[1:])), "class slot ranges must not overlap")
        _check(len(self.scenes.group_for_class) == len(self.classes),
               f"scenes.group_for_class needs one group per class ({len(self.classes)})")

    def model_of(self, device: DeviceConfig | str) -> ModelConfig:
        """The model configuration of a device (by config or name)."""
        return self.models[self.device(device).model if isinstance(device, str) else device.model]

    def device(self, name: str) -> DeviceConfig:
        """The device configuration called ``name``."""
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(f"no device {name!r} in the configuration (known: {[d.name for d in self.devices]})")

    def to_dict(self) -> dict:
        """A JSON-ready dict (datetimes as ISO 8601 strings) that :meth:`from_dict` reads back."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict, source: str = "configuration") -> "SimulationConfig":
        """Build and validate a configuration; errors name ``source`` and the offending key."""
        try:
            return _build(cls, data, "")
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    def with_overrides(self, overrides: dict | None) -> "SimulationConfig":
        """A copy with dotted-key overrides applied (see :func:`apply_overrides`)."""
        return SimulationConfig.from_dict(apply_overrides(self.to_dict(), overrides or {}), "overrides")


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _build(tp, value, where: str):
    """Convert plain TOML/JSON data into the annotated type ``tp``, recursively."""
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{where or 'top level'}: expected a table, got {value!r}")
        hints = typing.get_type_hints(tp)
        known = {f.name for f in fields(tp)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise KeyError(f"unknown key(s) {[f'{where}{k}' for k in unknown]}; known: {sorted(known)}")
        kwargs = {name: _build(hints[name], v, f"{where}{name}.") for name, v in value.items()}
        try:
            return tp(**kwargs)
        except TypeError as exc:
            raise TypeError(f"{where or 'top level'}: {exc}") from exc
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _build(options[0], value, where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where.rstrip('.')}: expected a list, got {value!r}")
        item_types = [args[0]] * len(value) if (len(args) == 2 and args[1] is Ellipsis) else list(args)
        if len(item_types) != len(value):
            raise ValueError(f"{where.rstrip('.')}: expected {len(item_types)} values, got {len(value)}")
        return tuple(_build(t, v, f"{where}{i}.") for i, (t, v) in enumerate(zip(item_types, value)))
    if origin is dict:
        _, val_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise TypeError(f"{where.rstrip('.')}: expected a table, got {value!r}")
        return {str(k): _build(val_type, v, f"{where}{k}.") for k, v in value.items()}
    key = where.rstrip(".")
    if tp is datetime:
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                raise ValueError(f"{key}: use a naive local time (no UTC offset), got {value}")
            return value
        return _build(datetime, datetime.fromisoformat(str(value)), where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise TypeError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported type {tp}")


def _parse_override_value(text):
    if not isinstance(text, str):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: dict) -> dict:
    """Return a deep copy of ``data`` with dotted-key ``overrides`` applied.

    Keys are dotted paths (``"scenes.scene_bias"``); ``"__"`` also separates (so Python
    keyword arguments work: ``scenes__scene_bias=1``); integer parts index lists
    (``"devices.0.serial"``). String values are parsed as TOML values when they parse.
    A path that does not exist in ``data`` is an error, except a new key in a table of
    models (``models.<new>``) or a field a dataclass omitted.
    """
    data = copy.deepcopy(data)
    for raw_key, raw_value in overrides.items():
        parts = raw_key.replace("__", ".").split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[:depth + 1]), raw_key)
        last = parts[-1]
        value = _parse_override_value(raw_value)
        if isinstance(node, list):
            node[_index(node, last, raw_key)] = value
        else:
            node[last] = value
    return data


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise KeyError(f"override {key!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _child(node, part: str, path: str, key: str):
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if not isinstance(node, dict):
        raise KeyError(f"override {key!r}: {path!r} is not a table")
    if part not in node:
        node[part] = {}
    return node[part]


def _read_default_text() -> tuple[str, str]:
    resource = resources.files("data_manifests") / DEFAULT_RESOURCE
    return resource.read_text(encoding="utf-8"), f"data_manifests/{DEFAULT_RESOURCE}"


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> SimulationConfig:
    """Load a simulation configuration from TOML, with optional dotted-key overrides.

    Parameters
    ----------
    path : str or Path, optional
        A TOML file; by default the shipped ``data_manifests/synthetic_default.toml``.
    overrides : dict, optional
        Dotted keys to values, applied before validation (see :func:`apply_overrides`).

    Returns
    -------
    SimulationConfig

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not valid TOML or a value is invalid; the message names the file and key.
    """
    if path is None:
        text, source = _read_default_text()
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"simulation config {path} does not exist: give a TOML file "
                                    "or omit --config for the shipped default")
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML ({exc})") from exc
    data = apply_overrides(data, overrides or {})
    return SimulationConfig.from_dict(data, source)


def config_hash(config: SimulationConfig) -> str:
    """SHA-256 (hex) of the resolved configuration and :data:`SIMULATOR_VERSION`: the cache key."""
    payload = json.dumps({"simulator_version": SIMULATOR_VERSION, "config": config.to_dict()},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
