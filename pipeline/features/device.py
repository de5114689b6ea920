"""One device's images, read in the experiment's two extraction passes.

Pass 1 (:func:`screen_device`) reads every image once: its screening record (the residual
statistics that pick defect candidates) and the SHA-256 of its file; unreadable images are
recorded with their reason, content duplicates found from the digests and pixel fingerprints
(:func:`find_duplicates`). Pass 2 (:func:`defect_features`) identifies each split's defects from
its own training images and measures every image at the union of all splits' candidates, so
that the images are read twice however many splits there are. :func:`device_features` runs
both passes for splits the caller chose (the dating model's folds); the age experiment calls the
steps itself, between which it writes its split files.

Both passes go through the per-image :class:`~pipeline.features.cache.FeatureCache`; a cache that
cannot be written is switched off after one warning and the run goes on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from baselines.defects import DefectIdentifier
from pipeline.data.errors import ImageReadError
from pipeline.data.imageio import read_image
from pipeline.data.splits import Split
from pipeline.features.cache import FeatureCache
from pipeline.features.executor import batched, make_pool, map_batches
from pipeline.features.extract import ScreenTask, SparseTask, probe_device, screen_batch, sparse_batch
from pipeline.features.screening import screen_candidates
from pipeline.logs import get_logger

__all__ = ["ExtractionSettings", "DeviceData", "probe_images", "screen_device", "find_duplicates", "defect_features",
           "device_features", "record_failures", "failure_rows", "duplicate_rows", "read_note_rows", "capture_times",
           "fg_side_arrays", "shown_path"]

logger = get_logger(__name__)


class ExtractionSettings(Protocol):
    """The settings the extraction reads (:class:`pipeline.analysis.config.ExperimentConfig` has them all)."""

    n_blocks: int                  # contiguous time blocks of trusted images for screening
    candidate_false_alarm: float   # see baselines.defects.DefectIdentifier
    onset_false_alarm: float
    strict: bool                   # raise at the first unreadable image instead of recording it
    batch_size: int                # images per task
    progress: bool                 # show progress bars
    executor: str                  # 'local' or 'dask' (for a pool made here)
    workers: int | None
    scheduler: str | None


@dataclass
class DeviceData:
    """One device's images and what reading them found (filled in by the passes of this module)."""

    device: str
    rows: dict            # absolute path -> ManifestRow
    order: list           # paths in time order
    seed: int
    frame: tuple | None = None
    kind: str | None = None
    bit_depth: int | None = None
    cache_stats: Counter = field(default_factory=Counter)  # images taken from / added to the cache
    failures: dict = field(default_factory=dict)  # path -> reason
    duplicates: dict = field(default_factory=dict)  # path -> reason (a copy of an earlier row's content)
    read_notes: dict = field(default_factory=dict)  # path -> what reading it noted (e.g. first of 2 frames)
    source: Path | None = None  # the manifest, named in --strict errors
    root: Path | None = None    # the manifest's folder, paths are shown relative to it

    def line(self, path: str) -> int:
        """The manifest line of one of the device's images."""
        return self.rows[path].line

    def shown(self, path: str) -> str:
        """The image's path as the outputs show it (relative to the manifest's folder when inside it)."""
        return shown_path(path, self.root)


def shown_path(path: str, root: Path | None) -> str:
    """``path`` relative to ``root`` when it lies inside it (as the outputs show image paths), else as it is.

    Every output of every tool shows an image's path this way, with ``root`` the manifest's
    folder: relative to it (POSIX separators) when the image is inside it, absolute otherwise.
    """
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def probe_images(dev: DeviceData, cfg: ExtractionSettings, samples: int = 7) -> bool:
    """Set the device's frame, kind and bit depth: those most of a few images spread over time share.

    A single foreign first image (rotated, resized, grayscale) must not condemn the rest of
    the device. Returns False when no image could be read at all (each recorded as a failure).
    """
    picks = [dev.order[i] for i in np.unique(np.linspace(0, len(dev.order) - 1, samples).round().astype(int))]
    chosen = set(picks)
    seen = Counter()
    for path in picks + [p for p in dev.order if p not in chosen]:
        if seen and path not in chosen:
            break  # look further only while none of the picks was readable
        try:
            seen[probe_device(path)] += 1
        except ImageReadError as exc:
            record_failures(dev, [(path, exc.reason)], cfg.strict)
    if not seen:
        return False
    (frame, kind, bit_depth), _ = seen.most_common(1)[0]
    dev.frame, dev.kind, dev.bit_depth = frame, kind, bit_depth
    # the screening pass reads every image again and records its own reason for each
    dev.failures.clear()
    return True


def record_failures(dev: DeviceData, failures, strict: bool) -> None:
    """Record ``(path, reason)`` pairs of unreadable images in ``dev.failures`` (the first reason of each).

    Raises
    ------
    ImageReadError
        With ``strict``, at the first of them, naming its manifest line.
    """
    for path, reason in failures:
        if strict:
            where = f"line {dev.line(path)} of the manifest" + (f" {dev.source}" if dev.source else "")
            raise ImageReadError(path, reason, f"It is {where}: fix the file or remove the row, or run without "
                                               "--strict to record it in failures.csv and go on.")
        dev.failures.setdefault(path, reason)


def failure_rows(dev: DeviceData) -> list[dict]:
    """Rows of failures.csv for the device's unreadable images, in manifest order."""
    return [{"line": dev.line(p), "device": dev.device, "image": dev.shown(p), "reason": r}
            for p, r in sorted(dev.failures.items(), key=lambda item: dev.line(item[0]))]


def duplicate_rows(dev: DeviceData) -> list[dict]:
    """Rows of excluded.csv for the device's content duplicates, in manifest order."""
    return [{"line": dev.line(p), "image": dev.shown(p), "device": dev.device, "reason": r}
            for p, r in sorted(dev.duplicates.items(), key=lambda item: dev.line(item[0]))]


def read_note_rows(dev: DeviceData) -> list[dict]:
    """Rows of read_notes.csv: one per note a reader made about one of the device's images."""
    return [{"line": dev.line(p), "device": dev.device, "image": dev.shown(p), "note": note}
            for p, notes in sorted(dev.read_notes.items(), key=lambda item: dev.line(item[0])) for note in notes]


def _same_pixels(first: str, second: str, dev: DeviceData) -> bool:
    """Whether two images decode to exactly the same pixels (the check behind a fingerprint match)."""
    try:
        a, b = (read_image(p, expected_shape=dev.frame, expected_kind=dev.kind,
                           expected_bit_depth=dev.bit_depth).pixels for p in (first, second))
    except ImageReadError:
        return False
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def find_duplicates(dev: DeviceData, records: dict, digests: dict) -> None:
    """Record every readable image whose content an earlier manifest row already has.

    The same file bytes (SHA-256 of the file) or the same decoded pixels (a PNG copy of a JPEG, a
    renamed copy) would put one picture in both the training and the test images of a split. The
    row first in manifest order is kept; each later one is recorded in ``dev.duplicates`` with the
    line and path of the one kept, and takes no part in the experiment. Equal pixel fingerprints
    (a sample of the rows) are confirmed by decoding both images and comparing every pixel.
    """
    first_bytes, first_pixels = {}, {}
    for path in sorted((p for p in dev.order if p in records and p not in dev.failures), key=dev.line):
        by_bytes, by_pixels = digests.get(path), records[path].pixel_fingerprint
        if by_bytes is not None and by_bytes in first_bytes:
            kept = first_bytes[by_bytes]
            dev.duplicates[path] = f"same file bytes as line {dev.line(kept)} ({dev.shown(kept)})"
            continue
        kept = first_pixels.get(by_pixels) if by_pixels is not None else None
        if kept is not None and _same_pixels(kept, path, dev):
            dev.duplicates[path] = f"same pixels as line {dev.line(kept)} ({dev.shown(kept)})"
            continue
        if by_bytes is not None:
            first_bytes[by_bytes] = path
        if by_pixels is not None:
            first_pixels.setdefault(by_pixels, path)


def _exposure(dev: DeviceData, path: str, from_exif: dict) -> float:
    value = dev.rows[path].exposure_s
    if value is None:
        value = from_exif.get(path)
    return float(value) if value else np.nan


def _iso(dev: DeviceData, path: str, from_exif: dict) -> float:
    value = dev.rows[path].iso
    if value is None:
        value = from_exif.get(path)
    return float(value) if value else np.nan


def capture_times(rows) -> np.ndarray:
    """Capture time of each manifest row as a number: days since 1970 when every row has a
    ``captured_at``, else the acquisition slot (the axis the rows are ordered on)."""
    if all(r.captured_at is not None for r in rows):
        epoch = datetime(1970, 1, 1)
        return np.array([(r.captured_at - epoch).total_seconds() / 86400.0 for r in rows])
    if all(r.timeslot is not None for r in rows):
        return np.array([float(r.timeslot) for r in rows])
    return np.array([float(i) for i in range(len(rows))])


def _cache_write_failed(cache: FeatureCache, results) -> None:
    """Switch the cache's writing off after the first failed write, with one warning naming the folder."""
    reason = next((r.cache_error for r in results if r.cache_error), None)
    if reason is None or cache.write_error_reported:
        return
    cache.stop_writing(reason)
    cache.write_error_reported = True
    logger.warning("%s: the run goes on without caching per-image features (the results are the same; "
                   "a rerun computes them again). Free space or fix permissions there, or pass --cache "
                   "with another folder.", cache.write_error)


def screen_device(dev: DeviceData, cfg: ExtractionSettings, pool, cache: FeatureCache) -> tuple[dict, dict]:
    """Pass 1: the screening record and file digest of every image of the device (unreadable ones recorded)."""
    tasks = [ScreenTask(tuple(chunk), dev.frame, cache, dev.kind, dev.bit_depth)
             for chunk in batched(dev.order, cfg.batch_size)]
    results = map_batches(screen_batch, tasks, pool=pool, weights=[len(t.paths) for t in tasks], unit="img",
                          desc=f"{dev.device}: residual screening (pass 1 of 2)", progress=cfg.progress)
    _cache_write_failed(cache, results)
    records, digests = {}, {}
    for res in results:
        record_failures(dev, res.failures, cfg.strict)
        records.update(res.records)
        digests.update(res.digests)
        dev.read_notes.update(res.notes)
        dev.cache_stats["screening_cached"] += res.cache_hits
        dev.cache_stats["screening_computed"] += len(res.records) - res.cache_hits
    return records, digests


def defect_features(dev: DeviceData, splits: list[Split], records: dict, cfg: ExtractionSettings, pool,
                            cache: FeatureCache) -> dict:
    """Identify each run's defects from its trusted images; measure them in every image.

    Each run screens candidates from the screening records (pass 1) of its own training
    images only; then one pass over the images measures residuals at the union of all runs'
    candidates (pass 2), from which each run takes its own columns. Returns ``run -> features``.
    """
    order_index = {p: i for i, p in enumerate(dev.order)}
    trains = {s.run: sorted(s.train_paths, key=order_index.__getitem__) for s in splits}
    exif_exposure = {path: record.exposure for path, record in records.items()}
    exif_iso = {path: record.iso for path, record in records.items()}
    identifier = DefectIdentifier(candidate_false_alarm=cfg.candidate_false_alarm,
                                  onset_false_alarm=cfg.onset_false_alarm)
    shape = next(iter(records.values())).shape if records else None
    candidates = {}
    for split in splits:
        usable = [records[p] for p in trains[split.run] if p in records]
        empty = np.zeros(0, dtype=np.int64)
        candidates[split.run] = (screen_candidates(usable, cfg.n_blocks, shape, identifier) if shape
                                 else (empty, empty, empty))
    # pass 2 at the union of the runs' candidates
    keys = sorted({(int(r), int(c), int(ch)) for rows, cols, chans in candidates.values()
                   for r, c, ch in zip(rows, cols, chans)})
    column = {k: i for i, k in enumerate(keys)}
    urows, ucols, uchans = (np.array([k[i] for k in keys], dtype=np.int64) for i in range(3))
    every = sorted(set().union(*trains.values(), *(s.test_paths for s in splits)), key=order_index.__getitem__)
    tasks = [SparseTask(tuple(chunk), urows, ucols, uchans, dev.frame, cache, dev.kind, dev.bit_depth)
             for chunk in batched(every, cfg.batch_size)]
    results = map_batches(sparse_batch, tasks, pool=pool, weights=[len(t.paths) for t in tasks], unit="img",
                          desc=f"{dev.device}: residuals at {len(keys)} candidates (pass 2 of 2)",
                          progress=cfg.progress)
    _cache_write_failed(cache, results)
    W_all = np.concatenate([r.residuals for r in results]) if results else np.zeros((0, len(keys)), np.float32)
    S_all = np.concatenate([r.sigma for r in results]) if results else np.zeros((0, len(keys)), np.float32)
    for res in results:
        record_failures(dev, res.failures, cfg.strict)
        for path, value in res.exposures.items():
            exif_exposure.setdefault(path, value)
        for path, value in res.isos.items():
            exif_iso.setdefault(path, value)
        dev.cache_stats["residuals_cached"] += res.cache_hits
        dev.cache_stats["residuals_computed"] += len(res.exposures) - res.cache_hits
    row_of = {p: i for i, p in enumerate(every)}
    out = {}
    for split in splits:
        train, test = trains[split.run], list(split.test_paths)
        rows, cols, chans = candidates[split.run]
        take = np.array([column[(int(r), int(c), int(ch))] for r, c, ch in zip(rows, cols, chans)], dtype=np.int64)
        images = np.array([row_of[p] for p in train + test], dtype=np.int64)
        W, S = W_all[np.ix_(images, take)], S_all[np.ix_(images, take)]
        out[split.run] = _identify_run(dev, train, test, W, S, rows, cols, chans, exif_exposure, exif_iso,
                                       identifier)
    return out


def device_features(rows, splits: list[Split], cfg: ExtractionSettings, *, pool=None,
                    cache: FeatureCache | None = None) -> tuple[dict, dict]:
    """The two extraction passes of an experiment for one device, on splits the caller chose.

    Dating uses it with folds of all trusted images (and one split training on all of them);
    ``run_experiment`` does the same internally with its repeated stratified splits.

    Parameters
    ----------
    rows : list of ManifestRow
        The device's images (one device).
    splits : list of Split
        Each split's training images identify its defects; its training and test images are
        measured at them. Run numbers must be distinct.
    cfg : ExtractionSettings
        Detection parameters, workers, batch size, progress.
    pool : executor, optional
        From :func:`pipeline.features.executor.make_pool`; a local one of ``cfg.workers`` if None.
    cache : FeatureCache, optional
        Per-image cache (none by default).

    Returns
    -------
    features : dict
        ``run -> {"train", "test", "W", "S", "tau", "iso", "time", "ok", "table", "onset_paths",
        "n_candidates"}``; ``W`` and ``S`` hold the residuals and noise levels at the split's
        identified defects for its training then test images.
    device : dict
        ``frame``, ``kind``, ``bit_depth`` of the device, ``failures`` (path -> reason) and
        ``sha256`` (path -> SHA-256 of the file, from the screening pass).

    Raises
    ------
    ValueError
        If none of the images can be read.
    """
    if len({r.device for r in rows}) != 1:
        raise ValueError("device_features needs the rows of exactly one device")
    rows = sorted(rows, key=lambda r: r.time_key)
    dev = DeviceData(rows[0].device, {str(r.path): r for r in rows}, [str(r.path) for r in rows], seed=0)
    cache = cache or FeatureCache(None)
    if pool is None:
        with make_pool(cfg.executor, workers=cfg.workers, scheduler=cfg.scheduler) as own:
            return device_features(rows, splits, cfg, pool=own, cache=cache)
    if not probe_images(dev, cfg):
        raise ValueError(f"none of the {len(rows)} image(s) of {dev.device} could be read: "
                         + "; ".join(f"{p}: {r}" for p, r in list(dev.failures.items())[:3]))
    records, digests = screen_device(dev, cfg, pool, cache)
    features = defect_features(dev, splits, records, cfg, pool, cache)
    return features, {"frame": dev.frame, "kind": dev.kind, "bit_depth": dev.bit_depth,
                      "failures": dict(dev.failures), "sha256": digests}


def _identify_run(dev, train, test, W, S, rows, cols, chans, exif_exposure, exif_iso, identifier):
    every = train + test
    tau = np.array([_exposure(dev, p, exif_exposure) for p in every])
    iso = np.array([_iso(dev, p, exif_iso) for p in every])
    times = capture_times([dev.rows[p] for p in every])
    ok = np.array([p not in dev.failures for p in every])
    n_train = len(train)
    tr_ok = ok[:n_train]
    # the onset test sees the effective exposure g·τ: defect amplitudes scale with analogue gain
    effective = tau * iso / np.nanmin(iso) if np.isfinite(iso).any() else tau
    table = identifier.identify(W[:n_train][tr_ok], S[:n_train][tr_ok], effective[:n_train][tr_ok], rows, cols,
                                chans, demosaiced=dev.kind != "cfa")
    # candidate column of each identified defect
    key = {(int(r), int(c), int(ch)): i for i, (r, c, ch) in enumerate(zip(rows, cols, chans))}
    columns = np.array([key[(int(r), int(c), int(ch))] for r, c, ch in zip(table.rows, table.cols, table.channels)],
                       dtype=np.int64)
    onset_paths = [train[np.flatnonzero(tr_ok)[k]] for k in table.onset_index]
    return {"train": train, "test": test, "W": W[:, columns], "S": S[:, columns], "tau": tau, "iso": iso,
            "time": times, "ok": ok,
            "table": table, "onset_paths": onset_paths, "n_candidates": int(rows.size)}


def fg_side_arrays(feats: dict) -> dict:
    """The keyword arguments of the Fridrich–Goljan model for a run's images: local noise levels,
    and exposure times and ISO where any image of the run has them (NaN where unknown)."""
    side = {"sigma": feats["S"]}
    if np.isfinite(feats["tau"]).any():
        side["exposure"] = feats["tau"]
    if np.isfinite(feats["iso"]).any():
        side["iso"] = feats["iso"]
    return side
