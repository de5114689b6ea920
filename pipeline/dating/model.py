"""A device model for dating: defects and Fridrich–Goljan fitted on all trusted images of one
camera, with the before/after likelihood ratios calibrated by cross-fitting, saved as JSON with an
npz companion (the trusted images' data behind the evidence report).

Fitting (:meth:`DeviceModel.fit`):

1. the device's trusted images are split into ``folds`` interleaved in time (image ``i`` of the
   time order goes to fold ``i mod folds``), plus one split that trains on all of them;
2. the experiment's two extraction passes (:func:`pipeline.features.device.device_features`)
   identify each split's defects from its training images and measure them everywhere;
3. the model of the full split dates questioned images; the model of each fold dates that fold's
   held-out trusted images, whose capture times are known. From those held-out posteriors come
   the raw log10 LR of "taken before D" against "after D" at several dates D (every onset and the
   deciles of the trusted period) with the truth, on which a logistic calibration bounded by
   ELUB is fitted (:class:`pipeline.analysis.calibration.EvidenceCalibrator`), and the coverage
   and width of the held-out credible ranges, reported with every dating. (A held-out image
   taken before the first or after the last of its fold's trusted images is left out: the prior
   spans the trusted period only, so the command never dates outside it either.)
4. for the evidence report, the model keeps what the trusted images show at each defect: their
   residuals there against capture time, the mean residual crop around each defect before and
   after its onset (:mod:`pipeline.dating.crops`: one more pass over the full split's trusted
   images, each read once, in the worker pool, summing crops per defect), and the cross-fitted
   (raw log10 LR, truth) pairs behind the calibration.

Times are days since 1970-01-01 (naive capture times, the camera's clock).

Saved format (version 2)
------------------------
A model is two files side by side, written atomically by :meth:`DeviceModel.save`: ``NAME.json``
and its companion ``NAME.npz`` (no pickle anywhere). The JSON holds

``format`` (``"agetrace-device-model"``), ``version`` (2), ``device``, ``frame`` ([height, width]),
``kind`` (``"rgb"``, ``"gray"`` or ``"cfa"``), ``bit_depth``, ``defects`` (the identified defects:
``rows``, ``cols``, ``channels``, ``onset_index``, ``dark_current``, ``offset``, ``llr``, ``spread``,
``onset_path``), ``fridrich_goljan`` (:meth:`~baselines.fridrich_goljan.FridrichGoljanClassifier.to_params`),
``period_days`` ([first, last] trusted capture time), ``trusted_sha256`` (SHA-256 -> path of each
trusted image; image paths here, in ``onset_path`` and in ``unreadable`` are relative to the trusted
manifest's folder, absolute outside it), ``calibration`` (the before/after calibration table and the held-out figures, or
null), ``provenance`` (manifest path and SHA-256, creation time, package versions, folds, level,
detection parameters, unreadable images) and ``arrays``: ``file`` (the npz's name, in the same
folder), ``sha256`` (of the npz's bytes; a model whose npz is missing or does not match is
refused) and ``fields`` (name -> [dtype, shape]).

The npz holds, for the ``n`` readable trusted images in time order and the ``m`` defects
(``k = 2·CROP_RADIUS + 1``):

=============================  ================  =====================================================
``trusted_days``               (n,) float64      capture time of each trusted image (days)
``trusted_residuals``          (n, m) float32    their residual at each defect (NaN: clipped window)
``trusted_exposure_s``         (n,) float64      exposure time (NaN: unknown)
``trusted_iso``                (n,) float64      ISO (NaN: unknown)
``crop_before_mean``           (m, k, k) float32 mean residual crop of the trusted images before
                                                 the defect's onset (NaN: no image had a value)
``crop_before_count``          (m, k, k) int32   images averaged at each crop pixel
``crop_after_mean``            (m, k, k) float32 the same after the onset (a defect without an
``crop_after_count``           (m, k, k) int32   onset inside the period has none)
``calibration_raw_log10_lr``   (p,) float64      cross-fitted raw log10 LR "before D" vs "after D"
``calibration_before``         (p,) bool         whether the held-out image was taken before D
``calibration_probe_days``     (p,) float64      the date D of each pair (days)
``calibration_true_days``      (p,) float64      the held-out image's capture time (days)
=============================  ================  =====================================================

Crops are on the defect's colour channel (RGB) or colour plane (CFA: sites two pixels apart).

Why one module: over 600 lines (a tenth of them this description), because fitting,
saving and loading are the methods of one class over the same fields, and the saved format above
is the contract between :meth:`DeviceModel.save` and :meth:`DeviceModel.load`, kept beside the
code that writes and checks it. The pieces that are separate jobs live elsewhere: features in
:mod:`pipeline.features`, crops in :mod:`pipeline.dating.crops`, the posterior in
:mod:`pipeline.dating.posterior`.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from baselines.fridrich_goljan import FridrichGoljanClassifier
from pipeline.analysis.calibration import EvidenceCalibrator, calibrated_lr_from_table, calibration_table
from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.metrics import cllr
from pipeline.analysis.provenance import code_fingerprint, package_versions, utc_now
from pipeline.data.atomic import atomic_write, atomic_write_text
from pipeline.data.manifest import Manifest, file_sha256
from pipeline.data.splits import Split
from pipeline.dating.crops import CROP_RADIUS, CropTask, crop_batch, merge_crop_sums
from pipeline.dating.posterior import TimePosterior, time_grid, time_posterior
from pipeline.features.cache import FeatureCache
from pipeline.features.device import device_features, fg_side_arrays, shown_path
from pipeline.features.executor import batched, make_pool, map_batches
from pipeline.features.extract import SparseTask, sparse_batch
from pipeline.logs import get_logger

__all__ = ["DeviceModel", "DatingEvidence", "ModelFormatError", "FORMAT", "FORMAT_VERSION", "ARRAY_FIELDS", "days",
           "date_of", "companion_path"]

logger = get_logger(__name__)

FORMAT = "agetrace-device-model"
#: bump when the saved layout or the meaning of a field changes; older files are refused
FORMAT_VERSION = 2  # 2: the npz companion (trusted residuals, crops, calibration pairs) for the evidence report
#: the npz companion's arrays: name -> (dtype, axes); n trusted images, m defects, k crop side, p pairs
ARRAY_FIELDS = {
    "trusted_days": ("float64", ("n",)),
    "trusted_residuals": ("float32", ("n", "m")),
    "trusted_exposure_s": ("float64", ("n",)),
    "trusted_iso": ("float64", ("n",)),
    "crop_before_mean": ("float32", ("m", "k", "k")),
    "crop_before_count": ("int32", ("m", "k", "k")),
    "crop_after_mean": ("float32", ("m", "k", "k")),
    "crop_after_count": ("int32", ("m", "k", "k")),
    "calibration_raw_log10_lr": ("float64", ("p",)),
    "calibration_before": ("bool", ("p",)),
    "calibration_probe_days": ("float64", ("p",)),
    "calibration_true_days": ("float64", ("p",)),
}
EPOCH = datetime(1970, 1, 1)
#: a raw log10 LR beyond this is clipped before calibration (the calibration is bounded anyway)
RAW_LR_CLIP = 30.0
GRID_POINTS = 2001


class ModelFormatError(ValueError):
    """A saved device model that cannot be used here (another format, version or device)."""


def days(moment: datetime) -> float:
    """Days since 1970-01-01 of a naive datetime."""
    return (moment - EPOCH).total_seconds() / 86400.0


def date_of(value: float) -> datetime:
    """The naive datetime ``value`` days after 1970-01-01."""
    return EPOCH + timedelta(days=float(value))


def companion_path(path: str | Path) -> Path:
    """The npz companion of a model file: ``model.json`` -> ``model.npz`` (same folder)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        raise ValueError(f"{path}: a device model is saved as JSON with an .npz companion beside it; "
                         "give the JSON's name (e.g. model.json), not an .npz")
    return path.with_suffix(".npz")


@dataclass(frozen=True)
class DatingEvidence:
    """One questioned image's dating with what stands behind it (:meth:`DeviceModel.evidence`).

    Attributes
    ----------
    result : dict
        Exactly what :meth:`DeviceModel.date` returns.
    sha256 : str or None
        SHA-256 of the questioned file.
    posterior : TimePosterior or None
        The posterior over capture time (days); None unless the image was dated.
    residuals, sigma : ndarray or None
        The image's residual at each defect (NaN: clipped window) and its local noise level.
    llr : ndarray or None
        Each defect's log-likelihood ratio "present" vs "absent" (0 for a defect without an onset
        inside the trusted period), as
        :meth:`~baselines.fridrich_goljan.FridrichGoljanClassifier.defect_log_likelihood_ratios`.
    expected : ndarray or None
        The residual each defect is expected to show if present, at the conditions ``llr`` used.
    interval_days : tuple of float or None
        The most probable interval between onsets (days), as ``result["interval"]`` gives it in dates.
    """

    result: dict
    sha256: str | None = None
    posterior: TimePosterior | None = None
    residuals: np.ndarray | None = None
    sigma: np.ndarray | None = None
    llr: np.ndarray | None = None
    expected: np.ndarray | None = None
    interval_days: tuple | None = None


@dataclass
class DeviceModel:
    """Defects and the Fridrich–Goljan model of one device, fitted on all its trusted images.

    Attributes
    ----------
    device : str
    frame : tuple of int
        Sensor frame (height, width); questioned images of another frame are not dated.
    kind : str
    bit_depth : int
    defects : dict
        The identified defects (``rows``, ``cols``, ``channels``, ``onset_index``,
        ``dark_current``, ``offset``, ``llr``, ``spread``, ``onset_path``).
    fg : FridrichGoljanClassifier
        Fitted with capture days as time.
    period : tuple of float
        First and last trusted capture time (days).
    trusted : dict
        SHA-256 of each trusted image -> its path.
    calibration : dict or None
        The before/after calibration table (see :func:`~pipeline.analysis.calibration.calibration_table`)
        and the held-out figures (``coverage_nominal`` and ``median_width_days_nominal`` of the
        posterior's own ranges, ``needed_levels``, ``cllr``, ``n``); None when
        the trusted images were too few to cross-fit.
    provenance : dict
        Manifest path and SHA-256, parameters, package versions, creation time.
    arrays : dict
        What the evidence report shows of the trusted images (:data:`ARRAY_FIELDS`, described in
        the module docstring): their residuals at the defects against capture time, the mean
        residual crops before and after each onset, the cross-fitted calibration pairs.
    """

    device: str
    frame: tuple
    kind: str
    bit_depth: int
    defects: dict
    fg: FridrichGoljanClassifier
    period: tuple
    trusted: dict
    calibration: dict | None
    provenance: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, manifest: Manifest, device: str, cfg: ExperimentConfig | None = None, *, folds: int = 5,
            level: float = 0.95, cache: FeatureCache | None = None) -> DeviceModel:
        """Fit on every trusted image of ``device`` in ``manifest`` (see the module docstring).

        Raises
        ------
        ValueError
            If the device is not in the manifest, an image has no capture time, there are fewer
            than ``4 * folds`` readable images, or no defect with an onset inside the trusted
            period was found (nothing to date with).
        """
        cfg = cfg or ExperimentConfig(progress=False)
        rows = manifest.for_device(device)
        if not rows:
            raise ValueError(f"device {device!r} is not in {manifest.source} (devices: {', '.join(manifest.devices)})")
        undated = [r.line for r in rows if r.captured_at is None]
        if undated:
            raise ValueError(f"dating needs the capture time (captured_at) of every trusted image; lines "
                             f"{', '.join(map(str, undated[:10]))} of {manifest.source} have none")
        if folds < 2:
            raise ValueError(f"folds must be at least 2, got {folds}")
        if len(rows) < 4 * folds:
            raise ValueError(f"{device} has {len(rows)} trusted image(s): dating needs at least {4 * folds} "
                             f"(four per cross-fitting fold) to locate onsets and calibrate")
        paths = [str(r.path) for r in rows]
        splits = []
        for k in range(folds):  # fold k holds out every folds-th image in time order, from the k-th
            train, held = [p for i, p in enumerate(paths) if i % folds != k], paths[k::folds]
            splits.append(Split(k, k, tuple(train), (0,) * len(train), tuple(held), (0,) * len(held)))
        full = Split(folds, folds, tuple(paths), (0,) * len(paths), (), ())
        with make_pool(cfg.executor, workers=cfg.workers, scheduler=cfg.scheduler) as pool:
            features, info = device_features(rows, splits + [full], cfg, pool=pool, cache=cache)
            fg, defects = _fit_fg(features[folds], cfg)
            if not np.isfinite(fg.onset_time_).any():
                raise ValueError(f"no defect of {device} has an onset inside the trusted period "
                                 f"({rows[0].captured_at:%Y-%m-%d} to {rows[-1].captured_at:%Y-%m-%d}): "
                                 "there is nothing to date with")
            feats = features[folds]
            ok = feats["ok"]
            times = feats["time"][ok]
            crops = _trusted_crops(device, [p for p, good in zip(feats["train"], ok) if good], times, defects, fg,
                                   info, cfg, pool)
        period = (float(times.min()), float(times.max()))
        # image paths are kept relative to the manifest's folder (absolute outside it), as in every output
        root = manifest.source.parent.resolve()
        defects["onset_path"] = [shown_path(str(p), root) for p in defects["onset_path"]]
        trusted = {info["sha256"][p]: shown_path(p, root) for p, good in zip(paths, ok) if good and p in info["sha256"]}
        calibration, pairs = _cross_fit(features, splits, fg, period, cfg, level)
        before_mean, after_mean = crops.means()
        arrays = {"trusted_days": times.astype(np.float64),
                  "trusted_residuals": np.asarray(feats["W"][ok], dtype=np.float32),
                  "trusted_exposure_s": np.asarray(feats["tau"][ok], dtype=np.float64),
                  "trusted_iso": np.asarray(feats["iso"][ok], dtype=np.float64),
                  "crop_before_mean": before_mean, "crop_before_count": crops.before_count.astype(np.int32),
                  "crop_after_mean": after_mean, "crop_after_count": crops.after_count.astype(np.int32),
                  **pairs}
        provenance = {"manifest": str(manifest.source), "manifest_sha256": manifest.sha256,
                      "created": utc_now(), "versions": package_versions(), "code": code_fingerprint(),
                      "folds": folds, "level": level,
                      "parameters": {k: getattr(cfg, k) for k in ("n_blocks", "candidate_false_alarm",
                                                                  "onset_false_alarm", "fg_false_alarm")},
                      "unreadable": {shown_path(p, root): why for p, why in info["failures"].items()}}
        return cls(device, tuple(info["frame"]), info["kind"], int(info["bit_depth"]), defects, fg, period, trusted,
                   calibration, provenance, arrays)

    # ------------------------------------------------------------------ dating
    def grid(self) -> np.ndarray:
        """The times (days) on which posteriors are evaluated: the trusted period, every onset bound."""
        return time_grid(self.period[0], self.period[1], _grid_times(self.fg), points=GRID_POINTS)

    def onsets(self) -> np.ndarray:
        """Sorted onset times (days) of the defects that carry information: the interval edges."""
        return np.unique(self.fg.onset_time_[np.isfinite(self.fg.onset_time_)])

    def date(self, path: str | Path, *, exposure_s: float | None = None, iso: float | None = None,
             before_after=(), level: float = 0.95, allow_trusted: bool = False) -> dict:
        """Date one questioned image (the ``result`` of :meth:`evidence`).

        Parameters
        ----------
        path : str or Path
        exposure_s, iso : float, optional
            Given values; otherwise read from the file's EXIF, else unknown (marginalised).
        before_after : sequence of datetime
            Dates D for which to report the likelihood ratio "before D" vs "after D" (the interval
            edges are always reported).
        level : float
            Credible level of the range.
        allow_trusted : bool
            Date a file whose SHA-256 is one of the trusted images' (for checks only).

        Returns
        -------
        dict
            ``status`` ``"dated"``, ``"refused"`` or ``"excluded"`` with a ``reason``; for a dated
            image the interval, range, LRs, contributions and the exposure/ISO used.
        """
        return self.evidence(path, exposure_s=exposure_s, iso=iso, before_after=before_after, level=level,
                             allow_trusted=allow_trusted).result

    def evidence(self, path: str | Path, *, exposure_s: float | None = None, iso: float | None = None,
                 before_after=(), level: float = 0.95, allow_trusted: bool = False) -> DatingEvidence:
        """Date one questioned image and keep what stands behind the dating (for the evidence report).

        Parameters are those of :meth:`date`.

        Returns
        -------
        DatingEvidence
            ``result`` is what :meth:`date` returns; for a dated image also the posterior, the
            image's residuals, noise levels, per-defect log-likelihood ratios and expected levels.
        """
        path = str(Path(path).resolve())
        digest = file_sha256(path)
        if digest in self.trusted and not allow_trusted:
            return DatingEvidence({"image": path, "status": "refused",
                                   "reason": f"its SHA-256 is that of trusted image {self.trusted[digest]}: a trusted "
                                             "image cannot be dated by a model fitted on it (--allow-trusted for "
                                             "checks)"}, digest)
        d = self.defects
        rows, cols, chans = (np.asarray(d[k], dtype=np.int64) for k in ("rows", "cols", "channels"))
        result = sparse_batch(SparseTask((path,), rows, cols, chans, tuple(self.frame), FeatureCache(None),
                                         self.kind, self.bit_depth))
        if result.failures:
            return DatingEvidence({"image": path, "status": "excluded", "reason": result.failures[0][1]}, digest)
        sources = {"exposure": "given" if exposure_s else None, "iso": "given" if iso else None}
        if not exposure_s and result.exposures.get(path):
            exposure_s, sources["exposure"] = result.exposures[path], "EXIF"
        if not iso and result.isos.get(path):
            iso, sources["iso"] = result.isos[path], "EXIF"
        w, s = result.residuals[:1].astype(float), result.sigma[:1].astype(float)
        side = {"sigma": s,
                "exposure": np.array([exposure_s or np.nan]) if self.fg.uses_exposure_ else None,
                "iso": np.array([iso or np.nan]) if self.fg.uses_iso_ else None}
        grid = self.grid()
        posterior = time_posterior(self.fg.time_log_likelihood(w, grid, **side)[0], grid)
        edges = self.onsets()
        mass = posterior.interval_probabilities(edges)
        bounds = np.concatenate([[self.period[0]], edges, [self.period[1]]])
        best = int(np.argmax(mass))
        used = self.range_level(level)
        low, high = posterior.credible_range(used) if used < 1 else (self.period[0], self.period[1])
        dates = sorted({*edges.tolist(), *(days(moment) for moment in before_after)})
        lrs = [self._lr(posterior, when) for when in dates]
        lam = self.fg.defect_log_likelihood_ratios(w, **side)[0]
        expected = self._expected_at(side)
        informative = np.flatnonzero(np.isfinite(self.fg.onset_time_))
        order = informative[np.argsort(-np.abs(lam[informative]), kind="stable")]
        contributions = [{"row": int(rows[i]), "col": int(cols[i]), "channel": int(chans[i]),
                          "onset": f"{date_of(self.fg.onset_bounds_[i, 0]):%Y-%m-%d} to "
                                   f"{date_of(self.fg.onset_bounds_[i, 1]):%Y-%m-%d}",
                          "measured": None if not np.isfinite(w[0, i]) else float(w[0, i]),
                          "log_likelihood_ratio": float(lam[i])} for i in order]
        dated = {"image": path, "status": "dated", "device": self.device,
                 "period": {"from": f"{date_of(self.period[0]):%Y-%m-%d}", "to": f"{date_of(self.period[1]):%Y-%m-%d}"},
                 "exposure_s": exposure_s, "iso": iso, "sources": sources,
                 "interval": {"from": f"{date_of(bounds[best]):%Y-%m-%d}",
                              "to": f"{date_of(bounds[best + 1]):%Y-%m-%d}", "probability": float(mass[best]),
                              "from_days": float(bounds[best]), "to_days": float(bounds[best + 1])},
                 "intervals": [{"from": f"{date_of(a):%Y-%m-%d}", "to": f"{date_of(b):%Y-%m-%d}",
                                "probability": float(p)} for a, b, p in zip(bounds[:-1], bounds[1:], mass)],
                 "credible_range": {"level": level, "posterior_level": used, "from": f"{date_of(low):%Y-%m-%d}",
                                    "to": f"{date_of(high):%Y-%m-%d}", "from_days": low, "to_days": high},
                 "before_after": lrs, "contributions": contributions,
                 "held_out": None if self.calibration is None else
                 {k: self.calibration[k] for k in ("coverage_nominal", "median_width_days_nominal", "cllr", "n")}}
        return DatingEvidence(dated, digest, posterior, w[0].copy(), s[0].copy(), np.asarray(lam, dtype=float),
                              expected, (float(bounds[best]), float(bounds[best + 1])))

    def _expected_at(self, side: dict) -> np.ndarray:
        """Each defect's expected residual if present at the conditions of
        :meth:`~baselines.fridrich_goljan.FridrichGoljanClassifier.defect_log_likelihood_ratios`
        (an unknown exposure or ISO replaced by the trusted images' median condition)."""
        fg = self.fg
        median = np.median(fg.condition_samples_, axis=0)
        tau = float(side["exposure"][0]) if side.get("exposure") is not None else 1.0
        gain = float(side["iso"][0]) / fg.base_iso_ if side.get("iso") is not None else 1.0
        tau = tau if np.isfinite(tau) else float(median[0])
        gain = gain if np.isfinite(gain) else float(median[1])
        expected = fg.expected_residual(np.array([tau]), np.array([gain]))[0]
        return np.where(np.isfinite(fg.onset_time_), expected, 0.0)

    def range_level(self, level: float) -> float:
        """The posterior level whose equal-tailed range held ``level`` of the held-out trusted dates.

        The posterior's own ranges are too narrow when the model misses a source of uncertainty
        (an onset located an image off, a masked defect). Each held-out trusted image needs the
        level ``2·|F(t) − 1/2|`` for its range to reach its true time ``t``; the range reported
        at ``level`` uses the ``⌈(n + 1)·level⌉``-th smallest of those needs (a split-conformal
        choice), 1 (the whole period) when that exceeds the held-out images. Without a
        calibration the posterior's own level is used.
        """
        if not 0 < level < 1:
            raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
        if self.calibration is None:
            return level
        needed = self.calibration["needed_levels"]
        rank = int(np.ceil((len(needed) + 1) * level))
        return 1.0 if rank > len(needed) else max(level, float(needed[rank - 1]))

    def _lr(self, posterior, when: float) -> dict:
        entry = {"date": f"{date_of(when):%Y-%m-%d %H:%M}", "raw_log10_lr": None, "log10_lr": None, "bounds": None}
        if not self.period[0] < when < self.period[1]:
            # the prior spans the trusted period only: "before D" or "after D" would be empty, and
            # its LR the prior's edge, not evidence (nor was such a D ever calibrated)
            entry["note"] = (f"D lies outside the trusted period ({date_of(self.period[0]):%Y-%m-%d} to "
                             f"{date_of(self.period[1]):%Y-%m-%d}): the model cannot weigh 'before D' against "
                             "'after D' there")
            return entry
        raw = float(np.clip(posterior.log10_lr_before(when), -RAW_LR_CLIP, RAW_LR_CLIP))
        entry["raw_log10_lr"] = raw
        if self.calibration is not None:
            table = self.calibration["table"]
            entry["log10_lr"] = float(calibrated_lr_from_table(table, np.array([[0.0, raw * np.log(10)]]))[0, 1])
            entry["bounds"] = table["bounds"]
        return entry

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the model as JSON plus its npz companion (no pickle): see the module docstring.

        ``model.json`` gets ``model.npz`` beside it; the JSON records the npz's name and SHA-256.
        Both are written atomically (the npz first).
        """
        path = Path(path)
        arrays_path = companion_path(path)
        missing = sorted(set(ARRAY_FIELDS) - set(self.arrays))
        if missing:
            raise ValueError(f"this model has no {', '.join(missing)}: only a model from DeviceModel.fit (or load) "
                             "can be saved")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{name: np.asarray(self.arrays[name], dtype=dtype)
                                       for name, (dtype, _) in ARRAY_FIELDS.items()})
        data = buffer.getvalue()
        with atomic_write(arrays_path, "wb") as fh:
            fh.write(data)
        body = {"format": FORMAT, "version": FORMAT_VERSION, "device": self.device, "frame": list(self.frame),
                "kind": self.kind, "bit_depth": self.bit_depth, "defects": self.defects,
                "fridrich_goljan": self.fg.to_params(), "period_days": list(self.period),
                "trusted_sha256": self.trusted, "calibration": self.calibration, "provenance": self.provenance,
                "arrays": {"file": arrays_path.name, "sha256": hashlib.sha256(data).hexdigest(),
                           "fields": {name: [dtype, list(np.shape(self.arrays[name]))]
                                      for name, (dtype, _) in ARRAY_FIELDS.items()}}}
        atomic_write_text(path, json.dumps(body, indent=1, default=_plain))

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> DeviceModel:
        """Read a model written by :meth:`save` (the JSON file; its npz companion is found beside it).

        Raises
        ------
        ModelFormatError
            If the file is not a device model, is of another format version, is of another
            device than ``device``, or its npz companion is missing, altered or incomplete.
        """
        try:
            body = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{path} is not a readable device model ({exc})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ModelFormatError(f"{path} is not an agetrace device model (no format {FORMAT!r})")
        if body.get("version") != FORMAT_VERSION:
            raise ModelFormatError(f"{path} is a device model of format version {body.get('version')}; this "
                                   f"agetrace reads version {FORMAT_VERSION}: fit it again with --save-model")
        if device is not None and body["device"] != device:
            raise ModelFormatError(f"{path} is the model of device {body['device']!r}, not of {device!r}")
        fg = FridrichGoljanClassifier.from_params(body["fridrich_goljan"])
        arrays = _load_arrays(Path(path), body, n_defects=len(fg.onset_time_))
        return cls(body["device"], tuple(body["frame"]), body["kind"], int(body["bit_depth"]), body["defects"],
                   fg, tuple(body["period_days"]), body["trusted_sha256"], body["calibration"], body["provenance"],
                   arrays)


def _load_arrays(path: Path, body: dict, n_defects: int) -> dict:
    """The npz companion of a model, checked against the SHA-256 and the shapes its JSON records."""
    record = body.get("arrays")
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) or "sha256" not in record:
        raise ModelFormatError(f"{path} does not name its npz companion (no 'arrays' record): fit it again with "
                               "--save-model")
    arrays_path = path.parent / Path(record["file"]).name
    try:
        data = arrays_path.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"{path} needs its companion {arrays_path.name} beside it, which is missing: a device "
                               f"model is two files ({path.name} and {arrays_path.name}); copy them together, or fit "
                               "again with --save-model") from None
    except OSError as exc:
        raise ModelFormatError(f"cannot read {arrays_path}, the companion of {path} ({exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != record["sha256"]:
        raise ModelFormatError(f"{arrays_path} is not the companion {path.name} was saved with: its SHA-256 is "
                               f"{digest}, the model records {record['sha256']} (altered, or from another model); "
                               "restore the original file or fit again with --save-model")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError) as exc:
        raise ModelFormatError(f"{arrays_path} is not a readable npz file ({exc})") from None
    missing = sorted(set(ARRAY_FIELDS) - set(arrays))
    if missing:
        raise ModelFormatError(f"{arrays_path} lacks {', '.join(missing)}: fit the model again with --save-model")
    sizes = {"m": n_defects, "n": arrays["trusted_days"].shape[0], "p": arrays["calibration_raw_log10_lr"].shape[0],
             "k": arrays["crop_before_mean"].shape[-1]}
    for name, (dtype, axes) in ARRAY_FIELDS.items():
        expected = tuple(sizes[a] for a in axes)
        if arrays[name].dtype != np.dtype(dtype) or arrays[name].shape != expected:
            raise ModelFormatError(f"{arrays_path}: {name} is {arrays[name].dtype} {arrays[name].shape}, expected "
                                   f"{dtype} {expected}: fit the model again with --save-model")
    return {name: arrays[name] for name in ARRAY_FIELDS}


def _grid_times(fg: FridrichGoljanClassifier) -> np.ndarray:
    """Times that must be grid points: every onset bound and every trusted time at which some
    onset's posterior CDF bends (it is linear only between consecutive trusted times)."""
    times = [np.asarray(fg.onset_bounds_, dtype=float).reshape(-1)]
    if getattr(fg, "onset_cdf_", None) is not None and fg.onset_cdf_.size:
        moving = np.any((fg.onset_cdf_ > 0) & (fg.onset_cdf_ < 1), axis=0)
        moving |= np.concatenate([moving[1:], [False]])  # the knot before a gap that holds mass
        times.append(np.asarray(fg.onset_knots_, dtype=float)[moving])
    return np.concatenate(times)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a device model")


def _fit_fg(feats: dict, cfg: ExperimentConfig) -> tuple[FridrichGoljanClassifier, dict]:
    """Fridrich–Goljan on a split's training images, time = capture days."""
    n_train = len(feats["train"])
    ok = np.flatnonzero(feats["ok"][:n_train])
    side = {k: v[ok] for k, v in fg_side_arrays(feats).items()}
    time = feats["time"][ok]
    halves = (time >= np.median(time)).astype(int)  # classes only name the model's halves; dating uses time
    if np.unique(halves).size < 2:
        halves[: halves.size // 2] = 0
    fg = FridrichGoljanClassifier(false_alarm=cfg.fg_false_alarm).fit(feats["W"][ok], halves, **side, time=time)
    defects = feats["table"].as_dict()
    defects["onset_path"] = feats["onset_paths"]
    return fg, defects


def _trusted_crops(device: str, paths: list[str], times: np.ndarray, defects: dict, fg: FridrichGoljanClassifier,
                   info: dict, cfg: ExperimentConfig, pool):
    """Sum the residual crops around every defect over the trusted images, before and after its onset:
    one pass, each image read once, batches in the worker pool (:mod:`pipeline.dating.crops`)."""
    rows, cols, chans = (np.asarray(defects[k], dtype=np.int64) for k in ("rows", "cols", "channels"))
    onset = np.asarray(fg.onset_time_, dtype=np.float64)
    order = list(range(len(paths)))
    tasks = [CropTask(tuple(paths[i] for i in chunk), tuple(float(times[i]) for i in chunk), rows, cols, chans, onset,
                      tuple(info["frame"]), info["kind"], int(info["bit_depth"]), CROP_RADIUS)
             for chunk in batched(order, cfg.batch_size)]
    parts = map_batches(crop_batch, tasks, pool=pool, weights=[len(t.paths) for t in tasks], unit="img",
                        desc=f"{device}: residual crops at {rows.size} defects (for the evidence report)",
                        progress=cfg.progress)
    total = merge_crop_sums(parts, rows.size, CROP_RADIUS)
    for image, reason in total.failures:
        logger.warning("%s: left out of the evidence report's mean crops (%s)", image, reason)
    return total


def _cross_fit(features, splits, full_fg, period, cfg, level) -> tuple[dict | None, dict]:
    """Held-out posteriors of each fold's images under that fold's model: calibration pairs of
    (raw log10 LR before D, truth) and the coverage of the credible ranges.

    Returns the calibration (None when it cannot be fitted) and the pairs as arrays (the
    ``calibration_*`` fields of :data:`ARRAY_FIELDS`)."""
    scores, truths, covered, widths, needed, probes, true_days = [], [], [], [], [], [], []
    edges = np.unique(full_fg.onset_time_[np.isfinite(full_fg.onset_time_)])
    probe_dates = np.unique(np.concatenate([edges, np.quantile(np.linspace(*period, 101), np.arange(1, 10) / 10)]))
    for split in splits:
        feats = features[split.run]
        n_train = len(feats["train"])
        test = n_train + np.flatnonzero(feats["ok"][n_train:])
        if test.size == 0:
            continue
        fg, _ = _fit_fg(feats, cfg)
        train_time = feats["time"][:n_train][feats["ok"][:n_train]]
        grid = time_grid(train_time.min(), train_time.max(), _grid_times(fg), points=GRID_POINTS)
        side = {k: v[test] for k, v in fg_side_arrays(feats).items()}
        ll = fg.time_log_likelihood(feats["W"][test], grid, **side)
        for row, true_time in zip(ll, feats["time"][test]):
            if not grid[0] <= true_time <= grid[-1]:
                continue  # before the fold's first or after its last trusted image: nothing to date it by
            posterior = time_posterior(row, grid)
            low, high = posterior.credible_range(level)
            covered.append(low <= true_time <= high)
            widths.append(high - low)
            # the smallest equal-tailed level whose range holds the true time
            needed.append(min(1.0, 2 * abs(posterior.probability_before(true_time) - 0.5)))
            for when in probe_dates:
                if grid[0] < when < grid[-1]:
                    scores.append(float(np.clip(posterior.log10_lr_before(when), -RAW_LR_CLIP, RAW_LR_CLIP)))
                    truths.append(int(true_time < when))
                    probes.append(float(when))
                    true_days.append(float(true_time))
    truths = np.asarray(truths, dtype=int)
    pairs = {"calibration_raw_log10_lr": np.asarray(scores, dtype=np.float64),
             "calibration_before": truths.astype(bool), "calibration_probe_days": np.asarray(probes, dtype=np.float64),
             "calibration_true_days": np.asarray(true_days, dtype=np.float64)}
    if len(covered) == 0 or truths.size == 0 or truths.min() == truths.max():
        return None, pairs
    natural = np.column_stack([np.zeros(len(scores)), np.asarray(scores) * np.log(10)])
    calibrator = EvidenceCalibrator(method="logistic", random_state=0).fit(natural, truths, classes=[0, 1])
    table = calibration_table(calibrator, natural)
    calibrated = calibrator.log10_lr(natural)[:, 1]
    return {"table": table, "n": int(len(covered)), "n_pairs": int(truths.size),
            "coverage_nominal": float(np.mean(covered)), "median_width_days_nominal": float(np.median(widths)),
            "needed_levels": sorted(needed),
            "cllr": float(cllr(calibrated, truths.astype(bool))),
            "cllr_raw": float(cllr(np.asarray(scores), truths.astype(bool)))}, pairs
