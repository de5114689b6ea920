"""Class specifications: map acquisition times or slots to age classes, per device.

A class specification is a TOML file (the shipped ones live in ``data_manifests/``)::

    name = "NTIF"
    time_axis = "timeslot"              # or "captured_at"

    [devices."NTIF-canon01"]
    make = "Canon"
    model = "IXUS 115 HS"
    resolution = [4000, 3000]           # width, height of the device's sensor frame
    classes = [
      { label = 0, slots = [1, 5] },    # inclusive slot range
      { label = 1, slots = [20, 25] },
    ]

With ``time_axis = "captured_at"`` a class is ``{ label, start, end }`` where ``start``/``end``
are ISO 8601 dates or datetimes, or ``YYYY-MM`` (a whole month); ``end`` is inclusive: a date
covers its whole day, a month its whole month.
"""

from __future__ import annotations

import calendar
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from importlib import resources
from pathlib import Path

__all__ = ["ClassRange", "DeviceClasses", "ClassSpec", "load_class_spec", "shipped_class_specs"]


@dataclass(frozen=True)
class ClassRange:
    """One age class of one device: a closed slot range or a closed time interval."""

    label: int
    first_slot: int | None = None
    last_slot: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    expected_count: int | None = None

    def contains(self, *, timeslot: int | None, captured_at: datetime | None) -> bool:
        """Whether an image with this slot / time belongs to the class."""
        if self.first_slot is not None:
            return timeslot is not None and self.first_slot <= timeslot <= self.last_slot
        return captured_at is not None and self.start <= captured_at <= self.end


@dataclass(frozen=True)
class DeviceClasses:
    """The class ranges of one device plus its descriptive fields."""

    device: str
    classes: tuple[ClassRange, ...]
    make: str | None = None
    model: str | None = None
    resolution: tuple[int, int] | None = None  # (width, height)
    sensor: str | None = None


@dataclass(frozen=True)
class ClassSpec:
    """A parsed class specification.

    Attributes
    ----------
    name : str
        Dataset name, e.g. ``"NTIF"``.
    time_axis : {"timeslot", "captured_at"}
        Which manifest column the class ranges refer to.
    devices : dict of str to DeviceClasses
        Class ranges per device id.
    source : str
        Where the specification was read from.
    """

    name: str
    time_axis: str
    devices: dict[str, DeviceClasses] = field(default_factory=dict)
    source: str = ""

    def label_for(self, device: str, *, timeslot: int | None, captured_at: datetime | None):
        """Return ``(label, reason)`` for one image.

        ``label`` is None when the image falls in no class (``reason`` says why); raises
        ``KeyError`` for a device the specification does not know.
        """
        dev = self.devices[device]
        if self.time_axis == "timeslot" and timeslot is None:
            return None, f"class specification {self.name!r} needs a timeslot; the row has none"
        if self.time_axis == "captured_at" and captured_at is None:
            return None, f"class specification {self.name!r} needs captured_at; the row has none"
        hits = [c.label for c in dev.classes if c.contains(timeslot=timeslot, captured_at=captured_at)]
        if not hits:
            where = f"slot {timeslot}" if self.time_axis == "timeslot" else f"time {captured_at}"
            return None, f"{where} lies outside every class range of {device} in {self.name!r}"
        if len(set(hits)) > 1:
            return None, f"ambiguous: class ranges {sorted(set(hits))} of {device} overlap"
        return hits[0], ""


def _parse_bound(value, *, end: bool, where: str) -> datetime:
    """Parse a class bound; an end bound covers its whole day or month."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime.combine(value, time.max if end else time.min)
    text = str(value)
    if len(text) == 7 and text[4] == "-":  # YYYY-MM
        year, month = int(text[:4]), int(text[5:])
        if end:
            return datetime(year, month, calendar.monthrange(year, month)[1], 23, 59, 59, 999999)
        return datetime(year, month, 1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{where}: cannot parse {text!r} as a date (use YYYY-MM, YYYY-MM-DD or ISO 8601)") from exc
    if len(text) == 10 and end:
        parsed = parsed + timedelta(days=1) - timedelta(microseconds=1)
    return parsed.replace(tzinfo=None)


def _parse_spec(data: dict, source: str) -> ClassSpec:
    axis = data.get("time_axis", "captured_at")
    if axis not in ("timeslot", "captured_at"):
        raise ValueError(f"{source}: time_axis must be 'timeslot' or 'captured_at', not {axis!r}")
    devices = {}
    for dev_id, entry in data.get("devices", {}).items():
        ranges = []
        for i, cls in enumerate(entry.get("classes", [])):
            where = f"{source}: devices.{dev_id}.classes[{i}]"
            if "label" not in cls:
                raise ValueError(f"{where}: every class needs a `label`")
            if axis == "timeslot":
                slots = cls.get("slots")
                if not (isinstance(slots, list) and len(slots) == 2 and slots[0] <= slots[1]):
                    raise ValueError(f"{where}: `slots` must be [first, last] with first <= last")
                ranges.append(ClassRange(int(cls["label"]), first_slot=int(slots[0]), last_slot=int(slots[1]),
                                         expected_count=cls.get("expected_count")))
            else:
                if "start" not in cls or "end" not in cls:
                    raise ValueError(f"{where}: a captured_at class needs `start` and `end`")
                start = _parse_bound(cls["start"], end=False, where=where)
                stop = _parse_bound(cls["end"], end=True, where=where)
                if stop < start:
                    raise ValueError(f"{where}: end {cls['end']} precedes start {cls['start']}")
                ranges.append(ClassRange(int(cls["label"]), start=start, end=stop,
                                         expected_count=cls.get("expected_count")))
        if not ranges:
            raise ValueError(f"{source}: device {dev_id!r} has no classes")
        res = entry.get("resolution")
        devices[dev_id] = DeviceClasses(dev_id, tuple(ranges), entry.get("make"), entry.get("model"),
                                        tuple(res) if res else None, entry.get("sensor"))
    if not devices:
        raise ValueError(f"{source}: no [devices.*] tables")
    return ClassSpec(data.get("name", Path(source).stem), axis, devices, source)


def shipped_class_specs() -> list[str]:
    """Names of the class specifications shipped in ``data_manifests`` (e.g. ``["ntif", "plus"]``)."""
    root = resources.files("data_manifests")
    return sorted(p.name[:-5] for p in root.iterdir()
                  if p.name.endswith(".toml") and not p.name.startswith("synthetic"))


def load_class_spec(name_or_path: str | Path) -> ClassSpec:
    """Load a class specification by shipped name (``"ntif"``, ``"plus"``) or from a TOML path.

    Raises
    ------
    FileNotFoundError
        If neither a shipped specification nor a file of that name exists.
    ValueError
        If the file is malformed; the message names the file and the entry.
    """
    path = Path(name_or_path)
    if path.is_file():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        shipped = resources.files("data_manifests") / f"{name_or_path}.toml"
        if not shipped.is_file():
            raise FileNotFoundError(
                f"no class specification {str(name_or_path)!r}: give a TOML file or one of "
                f"{shipped_class_specs()}")
        text, source = shipped.read_text(encoding="utf-8"), f"data_manifests/{name_or_path}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML ({exc})") from exc
    return _parse_spec(data, source)
