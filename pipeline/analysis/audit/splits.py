"""The audit's splits: the experiment's own per-device splits, and a balanced CNN split.

* :func:`content_splits` makes exactly the splits ``python -m pipeline.ml_age`` makes with the
  same root seed, runs and test size (per device, its images in time order, seed
  :func:`pipeline.data.splits.device_seed`), writes them as
  ``splits/<device>/run_XX.csv`` in the experiment's format, and works from the files read
  back, so that the content baselines and the age estimators are compared on identical
  splits.
* :func:`cnn_split` holds out ``test_size`` of every (device, class) cell and trims the held
  out images to the same number per cell: the balanced test set of the camera-bias paper
  (every device, every class, equally). It is written as ``splits_cnn/<device>.csv``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.manifest import Manifest
from pipeline.data.splits import Split, device_seed, read_split, stratified_splits, write_split

__all__ = ["CnnSplit", "cnn_split", "content_splits"]


def content_splits(manifest: Manifest, bank, *, runs: int, test_size: float, seed: int,
                   out: Path | None) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per device, ``runs`` (train, test) pairs of bank indices on the experiment's splits.

    Devices whose images are all of one class, or with a class of fewer than two images, are
    left out (as the experiment leaves them out). Unreadable images stay in the split files
    (as in the experiment) and are dropped from the index arrays.

    Returns
    -------
    dict
        device -> list of ``(train_idx, test_idx)`` into ``bank.samples``.
    """
    where = {s.path: s.index for s in bank.samples}
    result = {}
    for device in manifest.devices:
        rows = manifest.for_device(device)
        order = [str(r.path) for r in rows]
        labels = [r.label for r in rows]
        if len(set(labels)) < 2:
            continue
        try:
            runs_idx = stratified_splits(labels, n_runs=runs, test_size=test_size, seed=device_seed(seed, device))
        except ValueError:
            continue
        pairs = []
        for run, (train, test, run_seed) in enumerate(runs_idx):
            split = Split(run, run_seed, tuple(order[i] for i in train), tuple(labels[i] for i in train),
                          tuple(order[i] for i in test), tuple(labels[i] for i in test))
            if out is not None:
                path = Path(out) / "splits" / device / f"run_{run:02d}.csv"
                write_split(path, split)
                split = read_split(path)
            tr = np.array([where[p] for p in split.train_paths if p in where], dtype=np.int64)
            te = np.array([where[p] for p in split.test_paths if p in where], dtype=np.int64)
            pairs.append((tr, te))
        result[device] = pairs
    return result


@dataclass(frozen=True)
class CnnSplit:
    """The CNN checks' split.

    Attributes
    ----------
    pool : dict
        ``(device, label) -> bank indices`` available for training.
    test : ndarray
        Bank indices of the balanced test set (same count in every (device, class) cell).
    per_cell : int
        Test images per (device, class) cell.
    devices : list of str
        Devices with both classes, in manifest order.
    classes : list of int
    """

    pool: dict
    test: np.ndarray
    per_cell: int
    devices: list
    classes: list

    def pool_of(self, devices=None, classes=None) -> np.ndarray:
        """Training indices of some devices and classes (default: all), sorted."""
        devices = self.devices if devices is None else devices
        classes = self.classes if classes is None else classes
        parts = [self.pool[(d, c)] for d in devices for c in classes if (d, c) in self.pool]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _cell_seed(seed: int, device: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(device.encode()), 0x6175])


def cnn_split(bank, *, test_size: float, seed: int, out: Path | None, usable=None) -> CnnSplit:
    """Hold out ``test_size`` of every (device, class) cell, trimmed to equal cells.

    Parameters
    ----------
    bank : ImageBank
    test_size : float
        Fraction of each cell held out before trimming (at least one image per cell).
    seed : int
        Root seed; each device draws from its own stream.
    out : Path or None
        Output folder for ``splits_cnn/<device>.csv``.
    usable : array of bool, optional
        Images that may take part (default: those with CNN crops, else all).

    Raises
    ------
    ValueError
        If no device has at least two images of each of two classes.
    """
    usable = (bank.cnn_ok if bank.cnn_ok is not None else np.ones(len(bank.samples), bool)) if usable is None \
        else np.asarray(usable, bool)
    labels, devices = bank.labels, bank.devices
    classes = sorted(set(labels.tolist()))
    order = list(dict.fromkeys(devices.tolist()))
    cells, pool = {}, {}
    kept_devices = []
    for device in order:
        members = {c: np.flatnonzero((devices == device) & (labels == c) & usable) for c in classes}
        if sum(m.size >= 2 for m in members.values()) < 2:
            continue
        kept_devices.append(device)
        rng = np.random.default_rng(_cell_seed(seed, device))
        for c, idx in members.items():
            if idx.size < 2:
                continue
            shuffled = rng.permutation(idx)
            n_test = min(max(1, round(float(test_size * idx.size))), idx.size - 1)
            cells[(device, c)] = shuffled[:n_test]
            pool[(device, c)] = np.sort(shuffled[n_test:])
    if not kept_devices:
        raise ValueError("the CNN checks need at least one device with two or more images of two classes")
    per_cell = min(len(v) for v in cells.values())
    test = np.sort(np.concatenate([v[:per_cell] for v in cells.values()]))
    if out is not None:
        for device in kept_devices:
            tr = [i for c in classes for i in pool.get((device, c), [])]
            te = [i for c in classes if (device, c) in cells for i in cells[(device, c)][:per_cell]]
            write_split(Path(out) / "splits_cnn" / f"{device}.csv",
                        Split(0, seed, tuple(bank.samples[i].path for i in tr), tuple(int(labels[i]) for i in tr),
                              tuple(bank.samples[i].path for i in te), tuple(int(labels[i]) for i in te)))
    present = sorted({c for (_, c) in cells})
    return CnnSplit(pool, test, per_cell, kept_devices, present)
