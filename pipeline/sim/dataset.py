"""Generate a dated image dataset with known sensor defects, and cache the default one.

This module runs the synthetic camera (:mod:`pipeline.sim.sensor` and its helpers) over every
planned capture and writes the images, the manifest and the defect ground truth. Quick use::

    from pipeline.sim import default_dataset, load_config, simulate
    ds = default_dataset()                       # cached under <cache_root()>/<hash>/
    ds = default_dataset(**{"scenes.scene_bias": 1.0})
    ds = simulate(load_config(overrides={"capture.images_per_class": 8}), "/tmp/sim")

Output folder (built in ``<out>.tmp-<pid>`` and renamed into place, so an interrupted run never
looks complete)::

    images/<device>/<device>_<NNNN>.jpg   (.tiff / .dng with processing.output_format)
    manifest.csv    one row per image, columns MANIFEST_COLUMNS
    defects.csv     one row per defect of every device (ground truth), columns DEFECT_COLUMNS
    config.json     resolved configuration, seed, config hash, package versions, per-device facts
    classes.toml    the age classes as a class specification (time_axis = "timeslot")

``defects.csv`` relates raw amplitudes to image values: a defect adds
``iso / base_iso * (exposure_s * D + c)`` raw DN to its pixel; the ISP maps raw DN ``v`` of
colour ``k`` to the white-balanced linear level ``(v - black_level) * wb_gain / (white_level -
black_level)`` and then to ``255 * level ** (1 / gamma)``. ``amp8_ref`` is the 8-bit jump of
the defect's own pixel and channel at reference conditions (base ISO, the model's geometric
mean exposure, linear background 0.18), before demosaicing spreads it and JPEG blurs it.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import platformdirs
from tqdm import tqdm

from pipeline.sim.config import SIMULATOR_VERSION, SimulationConfig, config_hash, load_config
from pipeline.sim.isp import display_jump_8bit
from pipeline.sim.schedule import Capture
from pipeline.sim.sensor import SimulatedDevice
from pipeline.sim.writers import FILE_SUFFIX, ExifInfo, write_dng, write_jpeg, write_tiff16

__all__ = ["SimulatedDataset", "simulate", "default_dataset", "cached_dataset", "cache_root", "MANIFEST_COLUMNS",
           "DEFECT_COLUMNS", "GENERATOR"]

GENERATOR = "agetrace synthetic camera"
MANIFEST_COLUMNS = ("path", "device", "captured_at", "timeslot", "label", "exposure_s", "iso", "make", "model",
                    "scene", "scene_group")
DEFECT_COLUMNS = ("device", "row", "col", "cfa_color", "onset", "first_slot", "preexisting", "D", "c", "kind",
                  "base_iso", "black_level", "white_level", "wb_gain", "gamma", "amp8_ref")
REFERENCE_BACKGROUND = 0.18


@dataclass(frozen=True)
class SimulatedDataset:
    """A generated dataset on disk.

    Attributes
    ----------
    root : Path
        The output folder.
    manifest_path, defects_path : Path
        ``root / "manifest.csv"`` and ``root / "defects.csv"``.
    config : SimulationConfig
        The configuration it was generated from.
    """

    root: Path
    manifest_path: Path
    defects_path: Path
    config: SimulationConfig

    @classmethod
    def at(cls, root: str | Path, config: SimulationConfig) -> "SimulatedDataset":
        """The dataset in folder ``root`` (standard file names), generated from ``config``."""
        root = Path(root)
        return cls(root, root / "manifest.csv", root / "defects.csv", config)

    def manifest_rows(self) -> list[dict[str, str]]:
        """The manifest as a list of dicts of strings (column -> value)."""
        return _read_csv(self.manifest_path)

    def defect_rows(self) -> list[dict[str, str]]:
        """The defect ground truth as a list of dicts of strings (column -> value)."""
        return _read_csv(self.defects_path)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def cache_root() -> Path:
    """Where :func:`default_dataset` caches: ``<agetrace's cache folder>/synthetic``.

    agetrace's cache folder is ``$AGETRACE_CACHE`` when that is set, else the platform's user cache
    folder for agetrace (:func:`platformdirs.user_cache_dir`): ``$XDG_CACHE_HOME/agetrace``, by
    default ``~/.cache/agetrace``, on Linux; ``~/Library/Caches/agetrace`` on macOS;
    ``%LOCALAPPDATA%\\agetrace\\Cache`` on Windows. Read at each call, so a changed environment
    variable takes effect at once.
    """
    base = os.environ.get("AGETRACE_CACHE")
    folder = Path(base).expanduser() if base else Path(platformdirs.user_cache_dir("agetrace", appauthor=False))
    return folder / "synthetic"


def _image_relpath(capture: Capture, suffix: str, digits: int) -> str:
    return f"images/{capture.device}/{capture.device}_{capture.index:0{digits}d}{suffix}"


def _digits(config: SimulationConfig) -> int:
    return max(4, len(str(config.capture.images_per_class * len(config.classes) - 1)))


# ---------------------------------------------------------------- per-image work (also in worker processes)

_WORKER: dict = {}


def _init_worker(config: SimulationConfig, tmp_root: str) -> None:
    _WORKER.clear()
    _WORKER.update(config=config, root=Path(tmp_root), devices={})


def _render_and_write(job: tuple[str, int]) -> str:
    name, index = job
    config: SimulationConfig = _WORKER["config"]
    devices: dict = _WORKER["devices"]
    if name not in devices:
        devices[name] = SimulatedDevice(config, name)
    device: SimulatedDevice = devices[name]
    capture = device.captures[index]
    fmt = config.processing.output_format
    relpath = _image_relpath(capture, FILE_SUFFIX[fmt], _digits(config))
    try:
        rendered = device.render(capture)
        info = ExifInfo(device.model.make, device.model.model, device.serial, capture.captured_at,
                        capture.exposure_s, capture.iso)
        target = _WORKER["root"] / relpath
        if fmt == "jpeg":
            write_jpeg(target, rendered.image, info, device.isp.processing.jpeg_quality,
                       device.isp.processing.jpeg_subsampling)
        elif fmt == "tiff":
            write_tiff16(target, rendered.image, info)
        else:
            write_dng(target, rendered.raw, info, device.model)
    except Exception as exc:
        raise RuntimeError(f"simulating {relpath} failed: {exc}") from exc
    return relpath


# ---------------------------------------------------------------- tables

def _manifest_rows(config: SimulationConfig, devices: list[SimulatedDevice]) -> list[dict]:
    suffix, digits = FILE_SUFFIX[config.processing.output_format], _digits(config)
    rows = []
    for device in devices:
        for cap in device.captures:
            rows.append({
                "path": _image_relpath(cap, suffix, digits), "device": device.name,
                "captured_at": cap.captured_at.isoformat(timespec="seconds"), "timeslot": cap.slot,
                "label": cap.label, "exposure_s": repr(cap.exposure_s), "iso": cap.iso,
                "make": device.model.make, "model": device.model.model, "scene": cap.scene,
                "scene_group": cap.scene_group})
    return rows


def _defect_rows(devices: list[SimulatedDevice]) -> list[dict]:
    rows = []
    for device in devices:
        model, isp, defects = device.model, device.isp, device.defects
        first_capture = np.datetime64(device.captures[0].captured_at, "s")
        wb = isp.wb_gains[defects.cfa_color]
        tau_ref = float(np.sqrt(model.exposure_min_s * model.exposure_max_s))
        amp8 = display_jump_8bit(defects.amplitude_dn(tau_ref), REFERENCE_BACKGROUND, wb, isp.raw_range,
                                 isp.processing.gamma)
        for i in range(len(defects)):
            rows.append({
                "device": device.name, "row": int(defects.rows[i]), "col": int(defects.cols[i]),
                "cfa_color": int(defects.cfa_color[i]), "onset": str(defects.onset[i]),
                "first_slot": device.first_slot_after(defects.onset[i]),
                "preexisting": int(defects.onset[i] < first_capture),
                "D": repr(float(defects.D[i])), "c": repr(float(defects.c[i])), "kind": defects.kinds[i],
                "base_iso": model.base_iso, "black_level": model.black_level, "white_level": model.white_level,
                "wb_gain": repr(float(wb[i])), "gamma": repr(float(isp.processing.gamma)),
                "amp8_ref": f"{float(amp8[i]):.3f}"})
    return rows


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("agetrace", "numpy", "scipy", "pillow", "scikit-image", "tifffile"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def _run_record(config: SimulationConfig, devices: list[SimulatedDevice]) -> dict:
    return {
        "generator": GENERATOR,
        "simulator_version": SIMULATOR_VERSION,
        "config_hash": config_hash(config),
        "seed": config.seed,
        "config": config.to_dict(),
        "versions": _versions(),
        "devices": {d.name: {
            "model": d.model_key, "make": d.model.make, "model_name": d.model.model, "serial": d.serial,
            "cfa": d.model.cfa, "width": d.model.width, "height": d.model.height,
            "manufactured": d.manufactured.isoformat(timespec="seconds"),
            "first_capture": d.captures[0].captured_at.isoformat(timespec="seconds"),
            "last_capture": d.captures[-1].captured_at.isoformat(timespec="seconds"),
            "images": len(d.captures), "defects": len(d.defects),
            "processing": asdict(d.isp.processing)} for d in devices},
    }


def _class_spec_toml(config: SimulationConfig) -> str:
    quote = json.dumps  # a JSON string is a valid TOML basic string
    lines = [f"name = {quote(config.name)}", 'time_axis = "timeslot"', ""]
    for dev in config.devices:
        model = config.models[dev.model]
        classes = ", ".join(f"{{ label = {c.label}, slots = [{c.slots[0]}, {c.slots[1]}], "
                            f"expected_count = {config.capture.images_per_class} }}" for c in config.classes)
        lines += [f"[devices.{quote(dev.name)}]", f"make = {quote(model.make)}", f"model = {quote(model.model)}",
                  f"resolution = [{model.width}, {model.height}]", 'sensor = "CMOS"',
                  f"classes = [{classes}]", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- folder handling

def _is_simulator_output(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError):
        return False


def _check_replaceable(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_simulator_output(out))):
        raise FileExistsError(f"{out} exists and is not a simulator output; refusing to overwrite it: "
                              "choose another output folder or remove it")


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an earlier simulator output."""
    if out.exists():
        _check_replaceable(out)
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _render_all(config: SimulationConfig, tmp: Path, jobs: list[tuple[str, int]], workers: int,
                progress: bool) -> None:
    try:
        if workers <= 1:
            _init_worker(config, str(tmp))
            with tqdm(total=len(jobs), desc="simulate", unit="img", disable=not progress) as bar:
                for job in jobs:
                    _render_and_write(job)
                    bar.update()
        else:
            # The pool starts its workers before tqdm starts its monitor thread (no fork after threads).
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                     initargs=(config, str(tmp))) as pool:
                results = pool.map(_render_and_write, jobs, chunksize=4)
                with tqdm(total=len(jobs), desc="simulate", unit="img", disable=not progress) as bar:
                    for _ in results:
                        bar.update()
    finally:
        _WORKER.clear()


def simulate(config: SimulationConfig, out_dir: str | Path, *, workers: int | None = None,
             progress: bool = True) -> SimulatedDataset:
    """Generate a synthetic dataset into ``out_dir``.

    Parameters
    ----------
    config : SimulationConfig
        E.g. from :func:`load_config`.
    out_dir : str or Path
        Output folder. It is built in ``<out_dir>.tmp-<pid>`` and renamed into place; an
        existing folder is replaced only if it is empty or an earlier simulator output.
    workers : int, optional
        Worker processes (default ``os.cpu_count()``); 1 renders in this process. The output
        is byte-identical whatever the number.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    SimulatedDataset

    Raises
    ------
    FileExistsError
        If ``out_dir`` exists and is neither empty nor a simulator output.
    """
    out = Path(out_dir).absolute()
    _check_replaceable(out)
    return _generate(config, Path(out_dir), workers=workers, progress=progress)


def _generate(config: SimulationConfig, out_dir: Path, *, workers: int | None, progress: bool,
              keep_if_complete: str | None = None) -> SimulatedDataset:
    """Generate into ``out_dir``; with ``keep_if_complete`` (a config hash), a complete dataset
    of that hash that appeared at ``out_dir`` meanwhile (another process) is kept and ours dropped."""
    out = out_dir.absolute()
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    devices = [SimulatedDevice(config, d.name) for d in config.devices]
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for device in devices:
            (tmp / "images" / device.name).mkdir(parents=True, exist_ok=True)
        jobs = [(d.name, c.index) for d in devices for c in d.captures]
        _render_all(config, tmp, jobs, workers, progress)
        _write_csv(tmp / "manifest.csv", MANIFEST_COLUMNS, _manifest_rows(config, devices))
        _write_csv(tmp / "defects.csv", DEFECT_COLUMNS, _defect_rows(devices))
        (tmp / "classes.toml").write_text(_class_spec_toml(config), encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(_run_record(config, devices), indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
        if keep_if_complete is not None and _is_complete(out, keep_if_complete):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SimulatedDataset.at(out, config)


def _is_complete(folder: Path, expected_hash: str) -> bool:
    try:
        record = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if record.get("config_hash") != expected_hash or not (folder / "defects.csv").is_file():
        return False
    try:
        rows = _read_csv(folder / "manifest.csv")
    except OSError:
        return False
    return all((folder / row["path"]).is_file() for row in rows)


def cached_dataset(config: SimulationConfig, cache_dir: str | Path | None = None, *, workers: int | None = None,
                   progress: bool = True) -> SimulatedDataset:
    """The dataset of ``config`` from the cache, generated there first if missing or incomplete.

    The folder is ``<cache_dir or cache_root()>/<first 16 hex digits of config_hash(config)>``.
    """
    digest = config_hash(config)
    folder = (Path(cache_dir) if cache_dir is not None else cache_root()) / digest[:16]
    if _is_complete(folder, digest):
        return SimulatedDataset.at(folder, config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(folder)
    return _generate(config, folder, workers=workers, progress=progress, keep_if_complete=digest)


def default_dataset(cache_dir: str | Path | None = None, *, workers: int | None = None, progress: bool = True,
                    **overrides) -> SimulatedDataset:
    """The shipped default dataset (optionally with overrides), generated once and cached.

    Parameters
    ----------
    cache_dir : str or Path, optional
        Cache folder; default :func:`cache_root` (``$AGETRACE_CACHE/synthetic``, else the platform's
        user cache folder: ``$XDG_CACHE_HOME/agetrace/synthetic`` or ``~/.cache/agetrace/synthetic``
        on Linux).
    workers, progress
        As in :func:`simulate`, used only when the dataset must be generated.
    **overrides
        Dotted keys of the configuration, e.g. ``**{"scenes.scene_bias": 1.0}``, or with
        ``__`` for the dots: ``scenes__scene_bias=1.0``, ``seed=7``.

    Returns
    -------
    SimulatedDataset
    """
    config = load_config(overrides=overrides)
    return cached_dataset(config, cache_dir, workers=workers, progress=progress)
