"""What the saliency analysis reads from an ``ml_age`` run folder, and where defects fall in a crop.

The run folder is read through :class:`pipeline.analysis.runfolder.RunFolder`.
:func:`srnet_runs` finds the SRNet runs of a device that can be explained (every crop checkpoint
:func:`checkpoint_path`, a part ``parts/<device>/run_XX.json`` holding SRNet and the split
``splits/<device>/run_XX.csv``); :class:`DefectPositions` gives the defect positions of an image
(the ground truth of a synthetic dataset, found through the run's manifest, else the defects
each run identified); :func:`crop_geometry` and :func:`points_in_crop` carry those sensor
positions into the frame of each network input.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.analysis.provenance import read_json
from pipeline.analysis.runfolder import RunFolder
from pipeline.sim import GENERATOR
from pipeline.srnet.crops import crop_boxes

__all__ = ["DefectPositions", "DeviceRuns", "checkpoint_path", "crop_geometry", "points_in_crop", "srnet_runs"]


@dataclass
class DeviceRuns:
    """The SRNet runs of one device that can be explained, their test images and output classes."""

    device: str
    runs: list[int]                       # SRNet runs with every crop checkpoint
    test: dict[int, list[tuple[str, int]]]  # run -> [(path, label)]
    classes: list[int] = field(default_factory=list)  # label of each output column of the networks
    skipped: dict[int, str] = field(default_factory=dict)


def checkpoint_path(folder: RunFolder, device: str, run: int, crop: str, model: str = "srnet") -> Path:
    """The checkpoint of one crop network of an SRNet-family run: ``srnet/<device>/run_XX/srnet_<crop>.pt``
    (``<model>/<device>/run_XX/srnet_<crop>.pt`` for ``srnet-res`` and ``srnet-cs``)."""
    return folder.learned_dir(model, device, run) / f"srnet_{crop}.pt"


def srnet_runs(folder: RunFolder, device: str, crops: Sequence[str], model: str = "srnet") -> DeviceRuns:
    """The runs of ``device`` with a checkpoint of every crop, a finished part and a split file.

    Parameters
    ----------
    folder : RunFolder
        The ``ml_age`` output folder.
    device : str
        A folder name under ``srnet/``.
    crops : sequence of str
        The crop names of the run's SRNet configuration.
    model : {'srnet', 'srnet-res', 'srnet-cs'}
        Which SRNet-family method's networks.

    Returns
    -------
    DeviceRuns
        The usable runs with their test images, and why each other run was skipped.
    """
    found = DeviceRuns(device, [], {})
    for run in folder.learned_runs(model, device):
        missing = [c for c in crops if not checkpoint_path(folder, device, run, c, model).exists()]
        if missing:
            found.skipped[run] = f"no checkpoint for crop(s) {', '.join(missing)}"
            continue
        part = folder.part(device, run) if folder.has_part(device, run) else None
        if part is None or model not in part.methods:
            found.skipped[run] = f"{model} training of this run did not finish (resume the ml_age run)"
            continue
        first = next((p for p in part.predictions if p.get("method") == model), {})
        columns = [key[2:] for key in first if key.startswith("p_")]
        if columns:
            found.classes = [int(c) for c in columns]
        split_path = folder.split_path(device, run)
        if not split_path.exists():
            found.skipped[run] = f"split file {split_path} is missing"
            continue
        split = folder.split(device, run)
        found.runs.append(run)
        found.test[run] = list(zip(split.test_paths, split.test_labels))
    return found


def _synthetic_defects(record: dict) -> tuple[Path | None, Path | None]:
    """(defects.csv, manifest) of a synthetic dataset, or (None, None) for real data.

    The ground truth is the ``defects.csv`` recorded by ``ml_age`` for the embedded dataset, or
    the one beside the run's manifest when that folder is a simulator output (its
    ``config.json`` names the simulator as generator).
    """
    text = record.get("manifest", {}).get("path") or ""
    manifest = Path(text) if text else None
    candidates = []
    synthetic = record.get("synthetic", {})
    if synthetic.get("defects"):
        candidates.append(Path(synthetic["defects"]))
    if manifest is not None:
        try:
            generator = read_json(manifest.parent / "config.json").get("generator")
        except (OSError, ValueError, AttributeError):
            generator = None
        if generator == GENERATOR:
            candidates.append(manifest.parent / "defects.csv")
    for path in candidates:
        if manifest is not None and manifest.is_file() and path.is_file():
            return path, manifest
    return None, None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


class DefectPositions:
    """Defect positions (sensor frame) per device and image, from ground truth or a run's table.

    Parameters
    ----------
    run_dir : str or Path
        The ``ml_age`` output folder (its ``defects/<device>/run_XX.csv`` tables are read when
        there is no ground truth).
    record : dict
        The run's ``config.json`` (its ``manifest`` and ``synthetic`` sections locate the ground
        truth of a synthetic dataset).
    """

    def __init__(self, run_dir: str | Path, record: dict):
        self.folder = RunFolder(run_dir)
        self.truth_path, manifest_path = _synthetic_defects(record)
        self.capture: dict[str, np.datetime64] = {}
        self.truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.truth_path is not None:
            rows = _read_csv(self.truth_path)
            by_device: dict[str, list] = {}
            for row in rows:
                by_device.setdefault(row["device"], []).append(row)
            for device, items in by_device.items():
                positions = np.array([[int(r["row"]), int(r["col"])] for r in items], dtype=np.int64)
                onsets = np.array([np.datetime64(r["onset"], "s") for r in items])
                self.truth[device] = (positions, onsets)
            root = manifest_path.parent
            for row in _read_csv(manifest_path):
                path = Path(row["path"])
                path = path if path.is_absolute() else root / path
                if row.get("captured_at"):
                    self.capture[str(path.resolve())] = np.datetime64(row["captured_at"][:19], "s")
        self.identified: dict[tuple[str, int], np.ndarray] = {}

    @property
    def source(self) -> str:
        """Where the positions come from, in words (recorded in ``saliency.json``)."""
        if self.truth_path is not None:
            return f"ground truth ({self.truth_path}); a defect counts from its onset on"
        return "defects identified by each run (defects/<device>/run_XX.csv), all of them"

    def of_device(self, device: str, run: int) -> np.ndarray:
        """(n, 2) sensor positions of every defect of the device, whatever its onset (ground truth),
        or every defect the run identified."""
        if self.truth_path is not None:
            return self.truth.get(device, (np.zeros((0, 2), np.int64), None))[0]
        return self.for_image(device, run, "")

    def for_image(self, device: str, run: int, path: str) -> np.ndarray:
        """(n, 2) sensor positions (row, col) of the defects that count for this image."""
        if self.truth_path is not None:
            positions, onsets = self.truth.get(device, (np.zeros((0, 2), np.int64), np.array([], "datetime64[s]")))
            when = self.capture.get(str(Path(path).resolve()))
            if when is None:
                return positions  # capture time unknown: every defect of the device
            return positions[onsets <= when]
        key = (device, run)
        if key not in self.identified:
            table = self.folder.defects_path(device, run)
            rows = _read_csv(table) if table.exists() else []
            self.identified[key] = np.array([[int(float(r["row"])), int(float(r["col"]))] for r in rows],
                                            dtype=np.int64).reshape(-1, 2)
        return self.identified[key]


def crop_geometry(image_shape: tuple[int, ...], config) -> dict[str, tuple[int, int, int, int, int]]:
    """Per crop: (top, left, bottom, right, step) in the frame of ``extract_crops``' source.

    ``step`` is 2 for a CFA plane (plane pixel (i, j) is sensor pixel (2i, 2j) of the (0, 0) plane,
    the one :func:`pipeline.srnet.crops.extract_crops` uses by default), else 1.
    """
    if config.channels == "cfa-plane":
        plane_shape = ((image_shape[0] + 1) // 2, (image_shape[1] + 1) // 2)
        boxes = crop_boxes(plane_shape, config.patch, config.crops, align=1)
        return {name: (*box, 2) for name, box in boxes.items()}
    boxes = crop_boxes(image_shape, config.patch, config.crops, align=2)
    return {name: (*box, 1) for name, box in boxes.items()}


def points_in_crop(points: np.ndarray, box: tuple[int, int, int, int, int]) -> np.ndarray:
    """Sensor positions ``points`` (n, 2) inside a :func:`crop_geometry` box, in the crop's frame."""
    top, left, bottom, right, step = box
    if len(points) == 0:
        return np.zeros((0, 2), np.int64)
    if step == 2:
        on_plane = (points[:, 0] % 2 == 0) & (points[:, 1] % 2 == 0)
        points = points[on_plane] // 2
    inside = (points[:, 0] >= top) & (points[:, 0] < bottom) & (points[:, 1] >= left) & (points[:, 1] < right)
    return points[inside] - np.array([top, left])

