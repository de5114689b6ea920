"""Repeated stratified train/test splits, written to files so every method sees the same ones.

The papers' protocol: per device, 90 % of the images of *each class* train and 10 % test,
drawn independently in each of N runs (10 in the papers). Splits are written to CSV and read
back, and every method of a run works from the files that were read back, never from an
in-memory copy, so that identical splits are guaranteed rather than hoped for.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.atomic import atomic_write_text

__all__ = ["Split", "device_seed", "stratified_splits", "write_split", "read_split", "oversample_minority"]


@dataclass(frozen=True)
class Split:
    """One run's split of one device: paths and labels of the train and test images."""

    run: int
    seed: int
    train_paths: tuple[str, ...]
    train_labels: tuple[int, ...]
    test_paths: tuple[str, ...]
    test_labels: tuple[int, ...]


def device_seed(root_seed: int, device: str) -> int:
    """Split seed of one device: independent of the other devices and of their order.

    Parameters
    ----------
    root_seed : int
        The experiment's root seed (``ExperimentConfig.seed``).
    device : str
        The device id.

    Returns
    -------
    int
        The seed of :func:`stratified_splits` for this device.
    """
    return int(np.random.SeedSequence([root_seed, zlib.crc32(device.encode())]).generate_state(1)[0])


def stratified_splits(labels, *, n_runs: int = 10, test_size: float = 0.1, seed: int = 0):
    """Per-class test draws, repeated with independent seeds.

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        Class of each image.
    n_runs : int, default 10
        Number of independent repetitions.
    test_size : float, default 0.1
        Fraction of each class that goes to test; each class gets
        ``max(1, round(test_size * n_class))`` test images and keeps at least one for training.
    seed : int, default 0
        Root seed; run ``r`` uses the r-th child of ``numpy.random.SeedSequence(seed)``.

    Returns
    -------
    list of (train_idx, test_idx, run_seed)
        Sorted index arrays into ``labels``, and the run's own integer seed.

    Raises
    ------
    ValueError
        If a class has fewer than two images, or arguments are out of range.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("labels must be a non-empty 1-D array")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    if n_runs < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}")
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        small = classes[counts < 2].tolist()
        raise ValueError(f"class(es) {small} have fewer than 2 images: a stratified split needs at least one "
                         "train and one test image per class")
    runs = []
    for child in np.random.SeedSequence(seed).spawn(n_runs):
        run_seed = int(child.generate_state(1)[0])
        rng = np.random.default_rng(child)
        test = []
        for cls, count in zip(classes, counts):
            members = np.flatnonzero(labels == cls)
            n_test = min(max(1, round(test_size * count)), count - 1)
            test.append(rng.choice(members, size=n_test, replace=False))
        test_idx = np.sort(np.concatenate(test))
        train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
        runs.append((train_idx, test_idx, run_seed))
    return runs


def write_split(path: str | Path, split: Split) -> None:
    """Write one split as CSV (``run,seed,subset,path,label``), atomically."""
    lines = ["run,seed,subset,path,label"]
    for subset, paths, labels in (("train", split.train_paths, split.train_labels),
                                  ("test", split.test_paths, split.test_labels)):
        for p, y in zip(paths, labels):
            if "," in p or '"' in p or "\n" in p:
                p = '"' + p.replace('"', '""') + '"'
            lines.append(f"{split.run},{split.seed},{subset},{p},{int(y)}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_split(path: str | Path) -> Split:
    """Read a split written by :func:`write_split`.

    Raises
    ------
    ValueError
        If the file is malformed (names the file and line).
    """
    train_p, train_y, test_p, test_y = [], [], [], []
    run = seed = None
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != ["run", "seed", "subset", "path", "label"]:
            raise ValueError(f"{path}: not a split file (header {reader.fieldnames})")
        for line_no, rec in enumerate(reader, start=2):
            try:
                run, seed, label = int(rec["run"]), int(rec["seed"]), int(rec["label"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line_no}: run, seed and label must be integers") from None
            if rec["subset"] == "train":
                train_p.append(rec["path"])
                train_y.append(label)
            elif rec["subset"] == "test":
                test_p.append(rec["path"])
                test_y.append(label)
            else:
                raise ValueError(f"{path}:{line_no}: subset must be train or test, not {rec['subset']!r}")
    if run is None or not train_p or not test_p:
        raise ValueError(f"{path}: a split needs at least one train and one test row")
    return Split(run, seed, tuple(train_p), tuple(train_y), tuple(test_p), tuple(test_y))


def oversample_minority(labels, *, random_state=None) -> np.ndarray:
    """Indices that balance the classes by drawing extra minority-class samples.

    Every original index appears at least once; each smaller class is topped up to the size
    of the largest by sampling its members without replacement as far as possible (then with
    replacement). The result is shuffled.

    Parameters
    ----------
    labels : array-like of int, shape (n,)
    random_state : int or numpy.random.Generator, optional

    Returns
    -------
    numpy.ndarray of int
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("labels must be a non-empty 1-D array")
    rng = np.random.default_rng(random_state)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max()
    parts = []
    for cls, count in zip(classes, counts):
        members = np.flatnonzero(labels == cls)
        extra_needed = target - count
        full, rest = divmod(extra_needed, count)
        extra = [members] * full + [rng.choice(members, size=rest, replace=False)]
        parts.append(np.concatenate([members, *extra]))
    return rng.permutation(np.concatenate(parts))
