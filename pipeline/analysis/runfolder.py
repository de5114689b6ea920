"""The output folder of an age experiment (``python -m pipeline.ml_age --out``) as a typed contract.

Layout of a run folder::

    config.json                 the run record (:class:`RunRecord`): resolved configuration, seeds,
                                versions, manifest SHA-256, code fingerprint, schema version, status
    splits/<device>/run_XX.csv  the splits every method read back (:mod:`pipeline.data.splits`)
    parts/<device>/run_XX.json  one finished (device, run) (:class:`Part`): predictions, metrics,
                                defects, FG model, each method's calibration table
    defects/<device>/run_XX.csv the identified defects of that run
    srnet/<device>/run_XX/      SRNet's crop checkpoints of that run (srnet_<crop>.pt)
    cache/                      the per-image feature cache (unless the run was given another one)
    predictions.csv metrics.csv calibration.csv summary.csv summary.md accuracy_boxplot.png
    accuracy_boxplot.svg failures.csv excluded.csv read_notes.csv calibration/
                                the aggregates (:data:`AGGREGATE_FILES`), written at the final commit

Every reader of a run folder (the experiment resuming, the cross-device evaluation, ``ml_age
explain``, the saliency analysis) goes through :class:`RunFolder`, and every writer through
:func:`write_record` and :func:`write_part` (atomic). ``config.json`` records
:data:`SCHEMA_VERSION`; a folder written with another schema is refused with
:class:`RunFolderSchemaError` rather than misread. The schema version changes whenever a field
of :class:`RunRecord` or :class:`Part` changes meaning or a field the code needs is added.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from baselines.fridrich_goljan import FridrichGoljanClassifier
from pipeline.analysis.config import ConfigMismatchError
from pipeline.analysis.provenance import read_json, write_json
from pipeline.data.splits import Split, read_split

__all__ = ["SCHEMA_VERSION", "STATUS_RUNNING", "STATUS_COMMITTING", "STATUS_COMPLETE", "STATUS_NOTHING_ANALYSED",
           "CONFIG", "PARTS", "SPLITS", "DEFECTS", "CALIBRATION", "SRNET", "CACHE", "STAGING", "AGGREGATE_FILES",
           "RunFolderSchemaError", "OutputFolderError", "ManifestRecord", "RunRecord", "PartDefects", "Part",
           "RunFolder", "read_record", "write_record", "read_part", "write_part", "fg_from_params"]

#: version of the layout and fields of a run folder; written into config.json
SCHEMA_VERSION = 1

#: ``config.json`` status while parts are computed, while the aggregates are moved in, of a finished
#: run, and of one in which no device could be analysed
STATUS_RUNNING = "running"
STATUS_COMMITTING = "committing"
STATUS_COMPLETE = "complete"
STATUS_NOTHING_ANALYSED = "no-device-analysed"

#: names of the files and folders of a run folder
CONFIG = "config.json"
PARTS = "parts"
SPLITS = "splits"
DEFECTS = "defects"
CALIBRATION = "calibration"
SRNET = "srnet"
CACHE = "cache"
STAGING = ".staging"
#: the aggregate files of a run, written at the final commit only (and removed when a run starts)
AGGREGATE_FILES = ("predictions.csv", "metrics.csv", "calibration.csv", "summary.csv", "summary.md",
                   "accuracy_boxplot.png", "accuracy_boxplot.svg", "failures.csv", "excluded.csv", "read_notes.csv")

_RUN_FILE = re.compile(r"run_(\d+)(\.csv|\.json)?")


class RunFolderSchemaError(ConfigMismatchError):
    """The folder was written with another run-folder schema (by another version of agetrace)."""


class OutputFolderError(OSError):
    """The run's output folder cannot be written (full, over quota, read-only, no permission).

    The ``errno`` and the file are those of the failed write; the message names the folder and
    says what to do.
    """

    def __init__(self, code: int, path: str, reason: str, folder: str):
        super().__init__(code, reason, path)
        self.folder = folder

    def __str__(self) -> str:
        return (f"cannot write to the output folder {self.folder} ({self.strerror}, writing {self.filename}): "
                "free space or fix permissions there, or give another --out; started again with the same "
                "--out, the run resumes where it stopped")

    def __reduce__(self):
        return (type(self), (self.errno, self.filename, self.strerror, self.folder))


# ---------------------------------------------------------------- config.json

@dataclass
class ManifestRecord:
    """The manifest a run read.

    Attributes
    ----------
    path : str
        The manifest file as given.
    sha256 : str
        SHA-256 of its bytes; a resumed run must have the same.
    rows : int
        Rows inside a class (those the run used).
    excluded : int
        Rows outside every class.
    folder : str, optional
        The manifest's folder, absolute: the image paths of the run's outputs are relative to it
        (absolute only for images outside it). Absent in folders written before it was recorded.
    """

    path: str
    sha256: str
    rows: int
    excluded: int
    folder: str | None = None

    def image_root(self) -> Path | None:
        """The folder the outputs' image paths are relative to: :attr:`folder`, else the folder of an
        absolute :attr:`path`; None when neither tells it (a relative path of an older record)."""
        if self.folder:
            return Path(self.folder)
        return Path(self.path).parent if Path(self.path).is_absolute() else None


@dataclass
class RunRecord:
    """The run record, ``config.json`` of a run folder.

    Attributes
    ----------
    tool : str
        ``"pipeline.ml_age"``.
    status : str
        :data:`STATUS_RUNNING` while parts are computed, :data:`STATUS_COMMITTING` while the
        aggregate files are moved in, then :data:`STATUS_COMPLETE` or :data:`STATUS_NOTHING_ANALYSED`.
    started : str
        UTC time the first run into this folder started (ISO 8601).
    config : dict
        Every field of the :class:`~pipeline.analysis.config.ExperimentConfig` of the latest run.
    result_config : dict
        The fields of ``config`` that change results (a resumed run must repeat them).
    manifest : ManifestRecord
        The manifest read.
    device_seeds : dict
        Device -> its split seed (:func:`pipeline.data.splits.device_seed`).
    versions : dict
        Python, platform and package versions, the LibRaw and libjpeg-turbo versions, and the git
        commit of the source (``git_commit``, ``git_dirty``) when it ran from a checkout
        (:func:`pipeline.analysis.provenance.package_versions`).
    code : str
        Fingerprint of the source (:func:`pipeline.analysis.provenance.code_fingerprint`); parts
        made by other code are not mixed with this code's.
    schema_version : int
        :data:`SCHEMA_VERSION` of the code that wrote the folder.
    srnet : dict, optional
        The resolved SRNet preset (:meth:`pipeline.srnet.presets.SRNetConfig.to_dict`), when SRNet
        is one of the methods.
    learned : dict, optional
        Method -> its resolved configuration, for the constrained learned methods
        (``srnet-res``, ``srnet-cs``, ``defect-cnn``) the run has.
    resumed : int, optional
        How many times the run was resumed (absent on the first run).
    finished : str, optional
        UTC time the final status was written.
    n_failures, n_excluded : int, optional
        Rows of failures.csv and excluded.csv (written at the commit).
    skipped_devices : list of dict, optional
        Devices that could not be analysed: ``device``, ``images``, ``reason``.
    calibration_figures : list of str, optional
        The reliability and Tippett figures, relative to the folder.
    feature_cache : dict, optional
        ``folder`` of the feature cache, images taken from it and computed per pass, and
        ``not_written`` when it could not be written.
    reuse : dict, optional
        What the run reused: ``parts_reused``, ``parts_computed``, ``devices_reused``,
        ``images_from_cache`` and ``images_computed`` (per pass).
    command : dict, optional
        The command line of the latest run into the folder: ``argv`` as run, ``entry_point``
        (e.g. ``python -m pipeline.ml_age``) and ``line`` (:func:`pipeline.analysis.provenance.command_line`);
        absent in folders written before it was recorded.
    extra : dict
        Keys the caller added to the record (e.g. ``synthetic``: the embedded dataset's
        ``root`` and ``defects``); written at the top level of ``config.json``.
    """

    tool: str
    status: str
    started: str
    config: dict
    result_config: dict
    manifest: ManifestRecord
    device_seeds: dict
    versions: dict
    code: str
    schema_version: int = SCHEMA_VERSION
    srnet: dict | None = None
    learned: dict | None = None
    resumed: int | None = None
    finished: str | None = None
    n_failures: int | None = None
    n_excluded: int | None = None
    skipped_devices: list | None = None
    calibration_figures: list | None = None
    feature_cache: dict | None = None
    reuse: dict | None = None
    command: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The record as ``config.json`` holds it (fields that are None left out, ``extra`` at the top)."""
        data = {**self.extra}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            data[f.name] = vars(value).copy() if isinstance(value, ManifestRecord) else value
        return data

    @classmethod
    def from_json(cls, data: dict, folder: str | Path = "") -> "RunRecord":
        """The record of a ``config.json`` written by :meth:`to_json`.

        Raises
        ------
        RunFolderSchemaError
            ``data`` has no schema version, or another one than :data:`SCHEMA_VERSION`.
        """
        _check_schema(data.get("schema_version"), folder)
        names = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in names}
        values["manifest"] = ManifestRecord(**data["manifest"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in names})


def _check_schema(found, folder) -> None:
    if found == SCHEMA_VERSION:
        return
    if isinstance(found, int) and found > SCHEMA_VERSION:
        raise RunFolderSchemaError(
            f"{folder} was made by a newer version of agetrace (run-folder schema {found}, this version reads "
            f"{SCHEMA_VERSION}); update agetrace, or rerun `python -m pipeline.ml_age ... --out <new folder>`")
    raise RunFolderSchemaError(
        f"{folder} was made by an older version of agetrace (run-folder schema {found or 0}, this version reads "
        f"{SCHEMA_VERSION}); rerun `python -m pipeline.ml_age ... --out <new folder>`")


def read_record(folder: str | Path) -> RunRecord:
    """The run record of ``folder``.

    Raises
    ------
    FileNotFoundError
        ``folder`` has no ``config.json`` (it is not a run folder).
    ConfigMismatchError
        ``config.json`` is that of another program (its ``tool``).
    RunFolderSchemaError
        The folder was written with another run-folder schema.
    """
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an ml_age output folder (no {CONFIG})")
    data = read_json(path)
    tool = data.get("tool")
    if tool not in (None, "pipeline.ml_age"):
        raise ConfigMismatchError(f"{folder} holds the output of {tool} (its {CONFIG}), not an ml_age run")
    return RunRecord.from_json(data, folder)


def write_record(folder: str | Path, record: RunRecord) -> None:
    """Write ``config.json`` of ``folder`` atomically."""
    write_json(Path(folder) / CONFIG, record.to_json())


# ---------------------------------------------------------------- parts/<device>/run_XX.json

@dataclass
class PartDefects:
    """The defects a run identified on its training images (one entry per defect, same order in each list).

    Attributes
    ----------
    rows, cols, channels : list of int
        Sensor position and colour channel (CFA plane or RGB channel).
    onset_index : list of int
        Index, among the run's readable training images in time order, of the first showing it.
    onset_path : list of str
        That image's path.
    dark_current, offset : list of float
        The fitted defect response (residual ``τ·D + c``).
    llr : list of float
        Log-likelihood ratio of the onset test.
    spread : list of int
        Width of the onset's location in trusted images.
    """

    rows: list
    cols: list
    channels: list
    onset_index: list
    dark_current: list
    offset: list
    llr: list
    spread: list
    onset_path: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def to_json(self) -> dict:
        """The defects as a part file holds them (column name -> list)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> "PartDefects":
        """The inverse of :meth:`to_json`."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class Part:
    """One finished (device, split run) of an experiment, ``parts/<device>/run_XX.json``.

    A part is written when every method asked for that run is done; a rerun asking for more
    methods adds theirs to it.

    Attributes
    ----------
    device : str
    run : int
        Split run.
    seed : int
        The split's seed (models of the run derive theirs from it).
    methods : list of str
        The methods whose results the part holds.
    predictions : list of dict
        Rows of predictions.csv of the run's test images, every method.
    metrics : list of dict
        Rows of metrics.csv, one per method.
    failures : list of (str, str)
        Unreadable images of the device (path, reason), as known when the part was written.
    duplicates : list of (str, str)
        Content duplicates left out (path, reason).
    read_notes : list of (str, list of str)
        Images used with a note from their reader.
    calibration : dict
        Method -> its calibration table (:func:`pipeline.analysis.calibration.calibration_table`),
        fitted on the run's training images.
    defects : PartDefects, optional
        The run's identified defects (when a defect-based method ran).
    n_candidates : int, optional
        Candidates the onset test examined.
    fg_model : dict, optional
        The fitted Fridrich–Goljan model (:meth:`FridrichGoljanClassifier.to_params`; see
        :func:`fg_from_params`), when fg ran and the run had defects.
    frame : tuple of int, optional
        The device's image frame (rows, cols) the residuals were measured in.
    kind : str, optional
        ``"cfa"``, ``"rgb"`` or ``"gray"``: what the reader gave for the device.
    srnet_config : dict, optional
        The SRNet configuration the run trained with (seeded), when SRNet ran.
    learned_configs : dict, optional
        Method -> the configuration a constrained learned method trained with (seeded); for
        ``defect-cnn`` also ``n_defects`` and ``note``.
    """

    device: str
    run: int
    seed: int
    methods: list = field(default_factory=list)
    predictions: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    duplicates: list = field(default_factory=list)
    read_notes: list = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    defects: PartDefects | None = None
    n_candidates: int | None = None
    fg_model: dict | None = None
    frame: tuple | None = None
    kind: str | None = None
    srnet_config: dict | None = None
    learned_configs: dict | None = None

    def fg_classifier(self) -> FridrichGoljanClassifier:
        """The run's fitted Fridrich–Goljan model.

        Raises
        ------
        ValueError
            The part holds no FG model (fg not run, or no defects).
        """
        if self.fg_model is None:
            raise ValueError(f"run {self.run} of {self.device} has no Fridrich–Goljan model (no defects, or fg "
                             "not run)")
        return fg_from_params(self.fg_model)

    def to_json(self) -> dict:
        """The part as its file holds it (fields that are None left out)."""
        data = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            data[f.name] = value.to_json() if isinstance(value, PartDefects) else value
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Part":
        """The inverse of :meth:`to_json`."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if values.get("defects") is not None:
            values["defects"] = PartDefects.from_json(values["defects"])
        if values.get("frame") is not None:
            values["frame"] = tuple(values["frame"])
        return cls(**values)


def read_part(path: str | Path) -> Part:
    """A part file."""
    return Part.from_json(read_json(path))


def write_part(folder: str | Path, part: Part) -> Path:
    """Write ``part`` into ``folder/parts/<device>/run_XX.json`` atomically; returns the path."""
    path = RunFolder(folder).part_path(part.device, part.run)
    write_json(path, part.to_json())
    return path


def fg_from_params(params: dict) -> FridrichGoljanClassifier:
    """Rebuild a fitted :class:`FridrichGoljanClassifier` from the parameters a run stored."""
    if "params" not in params:
        raise ValueError("this run's Fridrich–Goljan model was written by an older agetrace (before the "
                         "ISO-aware, robust likelihood); run the experiment again in a new --out folder")
    return FridrichGoljanClassifier.from_params(params)


# ---------------------------------------------------------------- the folder

class RunFolder:
    """A run folder: where its files are, and reading them.

    Parameters
    ----------
    path : str or Path
        The folder (it need not exist: the paths are still defined).

    Examples
    --------
    >>> folder = RunFolder("agetrace-out/ml_age")
    >>> folder.part_path("SIM-alpha01", 3).as_posix()
    'agetrace-out/ml_age/parts/SIM-alpha01/run_03.json'
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._record: RunRecord | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # paths
    @property
    def config_path(self) -> Path:
        """``config.json``."""
        return self.path / CONFIG

    def split_path(self, device: str, run: int) -> Path:
        """``splits/<device>/run_XX.csv``."""
        return self.path / SPLITS / device / f"run_{run:02d}.csv"

    def part_path(self, device: str, run: int) -> Path:
        """``parts/<device>/run_XX.json``."""
        return self.path / PARTS / device / f"run_{run:02d}.json"

    def defects_path(self, device: str, run: int) -> Path:
        """``defects/<device>/run_XX.csv``."""
        return self.path / DEFECTS / device / f"run_{run:02d}.csv"

    def learned_dir(self, method: str, device: str, run: int) -> Path:
        """Checkpoints of a learned method's run: ``srnet/<device>/run_XX/`` for SRNet (as always),
        ``<method>/<device>/run_XX/`` for the others."""
        if method == "srnet":
            return self.srnet_dir(device, run)
        return self.path / method / device / f"run_{run:02d}"

    def srnet_dir(self, device: str, run: int) -> Path:
        """``srnet/<device>/run_XX/``: SRNet's checkpoints of that run (``srnet_<crop>.pt``)."""
        return self.path / SRNET / device / f"run_{run:02d}"

    @property
    def calibration_dir(self) -> Path:
        """``calibration/``: the reliability and Tippett figures."""
        return self.path / CALIBRATION

    @property
    def staging_dir(self) -> Path:
        """``.staging/``: the aggregate files before the final commit."""
        return self.path / STAGING

    # reading
    def exists(self) -> bool:
        """Whether the folder holds a ``config.json``."""
        return self.config_path.is_file()

    @property
    def record(self) -> RunRecord:
        """The run record (read once; see :func:`read_record` for the errors)."""
        if self._record is None:
            self._record = read_record(self.path)
        return self._record

    def devices(self) -> list[str]:
        """Devices with at least one part, sorted."""
        return _subfolders(self.path / PARTS)

    def srnet_devices(self) -> list[str]:
        """Devices with an ``srnet/<device>/`` folder, sorted."""
        return _subfolders(self.path / SRNET)

    def learned_devices(self, method: str) -> list[str]:
        """Devices with a checkpoint folder of a learned method (``srnet/<device>/`` for SRNet), sorted."""
        return _subfolders(self.learned_dir(method, "_", 0).parent.parent)

    def has_part(self, device: str, run: int) -> bool:
        """Whether the part of (device, run) exists."""
        return self.part_path(device, run).is_file()

    def part(self, device: str, run: int) -> Part:
        """The part of (device, run).

        Raises
        ------
        FileNotFoundError
            The part was not written (the run was not finished, or the device was skipped).
        """
        path = self.part_path(device, run)
        if not path.is_file():
            raise FileNotFoundError(f"no finished run {run} for device {device!r} in {self.path}")
        return read_part(path)

    def parts(self, device: str) -> dict[int, Part]:
        """Every part of ``device``: run -> part, in run order."""
        folder = self.path / PARTS / device
        runs = sorted(_run_number(p.name) for p in folder.glob("run_*.json") if _run_number(p.name) is not None) \
            if folder.is_dir() else []
        return {run: self.part(device, run) for run in runs}

    def split(self, device: str, run: int) -> Split:
        """The split of (device, run), read back from its file."""
        return read_split(self.split_path(device, run))

    def splits(self, device: str) -> list[Split]:
        """Every split file of ``device``, in run order."""
        folder = self.path / SPLITS / device
        runs = sorted(_run_number(p.name) for p in folder.glob("run_*.csv") if _run_number(p.name) is not None) \
            if folder.is_dir() else []
        return [self.split(device, run) for run in runs]

    def srnet_runs(self, device: str) -> dict[int, Path]:
        """Run -> ``srnet/<device>/run_XX/`` for every SRNet run folder of ``device`` (finished or not)."""
        return self.learned_runs("srnet", device)

    def learned_runs(self, method: str, device: str) -> dict[int, Path]:
        """Run -> checkpoint folder of a learned method for every run folder of ``device`` (finished or not)."""
        folder = self.learned_dir(method, device, 0).parent
        found = {}
        for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
            run = _run_number(sub.name)
            if run is not None and sub.is_dir():
                found[run] = sub
        return found


def _run_number(name: str) -> int | None:
    match = _RUN_FILE.fullmatch(name)
    return int(match.group(1)) if match else None


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
