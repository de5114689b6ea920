"""A device model for dating: defects and Fridrich–Goljan fitted on all trusted images of one
camera, with the before/after likelihood ratios calibrated by cross-fitting, saved as JSON.

Fitting (:meth:`DeviceModel.fit`):

1. the device's trusted images are split into ``folds`` interleaved in time (image ``i`` of the
   time order goes to fold ``i mod folds``), plus one split that trains on all of them;
2. the experiment's two extraction passes (:func:`pipeline.analysis.experiment.device_features`)
   identify each split's defects from its training images and measure them everywhere;
3. the model of the full split dates questioned images; the model of each fold dates that fold's
   held-out trusted images, whose capture times are known. From those held-out posteriors come
   the raw log10 LR of "taken before D" against "after D" at several dates D (every onset and the
   deciles of the trusted period) with the truth, on which a logistic calibration bounded by
   ELUB is fitted (:class:`pipeline.analysis.calibration.EvidenceCalibrator`), and the coverage
   and width of the held-out credible ranges, reported with every dating. (A held-out image
   taken before the first or after the last of its fold's trusted images is left out: the prior
   spans the trusted period only, so the command never dates outside it either.)

Times are days since 1970-01-01 (naive capture times, the camera's clock).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from baselines.fridrich_goljan import FridrichGoljanClassifier
from pipeline.analysis.calibration import EvidenceCalibrator, cllr
from pipeline.analysis.experiment import (ExperimentConfig, calibrated_lr_from_table, calibration_table,
                                          device_features, fg_side_arrays)
from pipeline.analysis.provenance import package_versions, utc_now
from pipeline.data.atomic import atomic_write_text
from pipeline.data.manifest import Manifest, file_sha256
from pipeline.data.splits import Split
from pipeline.dating.posterior import time_grid, time_posterior
from pipeline.features.cache import FeatureCache
from pipeline.features.extract import SparseTask, sparse_batch

__all__ = ["DeviceModel", "ModelFormatError", "FORMAT", "FORMAT_VERSION", "days", "date_of"]

FORMAT = "agetrace-device-model"
#: bump when the saved layout or the meaning of a field changes; older files are refused
FORMAT_VERSION = 1
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
        The before/after calibration table (see :func:`~pipeline.analysis.experiment.calibration_table`)
        and the held-out figures (``coverage_nominal`` and ``median_width_days_nominal`` of the
        posterior's own ranges, ``needed_levels``, ``cllr``, ``n``); None when
        the trusted images were too few to cross-fit.
    provenance : dict
        Manifest path and SHA-256, parameters, package versions, creation time.
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
        features, info = device_features(rows, splits + [full], cfg, cache=cache)
        fg, defects = _fit_fg(features[folds], cfg)
        if not np.isfinite(fg.onset_time_).any():
            raise ValueError(f"no defect of {device} has an onset inside the trusted period "
                             f"({rows[0].captured_at:%Y-%m-%d} to {rows[-1].captured_at:%Y-%m-%d}): "
                             "there is nothing to date with")
        ok = features[folds]["ok"]
        times = features[folds]["time"][ok]
        period = (float(times.min()), float(times.max()))
        trusted = {info["sha256"][p]: p for p, good in zip(paths, ok) if good and p in info["sha256"]}
        calibration = _cross_fit(features, splits, fg, period, cfg, level)
        provenance = {"manifest": str(manifest.source), "manifest_sha256": manifest.sha256,
                      "created": utc_now(), "versions": package_versions(), "folds": folds, "level": level,
                      "parameters": {k: getattr(cfg, k) for k in ("n_blocks", "candidate_false_alarm",
                                                                  "onset_false_alarm", "fg_false_alarm")},
                      "unreadable": info["failures"]}
        return cls(device, tuple(info["frame"]), info["kind"], int(info["bit_depth"]), defects, fg, period, trusted,
                   calibration, provenance)

    # ------------------------------------------------------------------ dating
    def grid(self) -> np.ndarray:
        """The times (days) on which posteriors are evaluated: the trusted period, every onset bound."""
        return time_grid(self.period[0], self.period[1], self.fg.onset_bounds_, points=GRID_POINTS)

    def onsets(self) -> np.ndarray:
        """Sorted onset times (days) of the defects that carry information: the interval edges."""
        return np.unique(self.fg.onset_time_[np.isfinite(self.fg.onset_time_)])

    def date(self, path: str | Path, *, exposure_s: float | None = None, iso: float | None = None,
             before_after=(), level: float = 0.95, allow_trusted: bool = False) -> dict:
        """Date one questioned image.

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
        path = str(Path(path).resolve())
        digest = file_sha256(path)
        if digest in self.trusted and not allow_trusted:
            return {"image": path, "status": "refused",
                    "reason": f"its SHA-256 is that of trusted image {self.trusted[digest]}: a trusted image "
                              "cannot be dated by a model fitted on it (--allow-trusted for checks)"}
        d = self.defects
        rows, cols, chans = (np.asarray(d[k], dtype=np.int64) for k in ("rows", "cols", "channels"))
        result = sparse_batch(SparseTask((path,), rows, cols, chans, tuple(self.frame), FeatureCache(None),
                                         self.kind, self.bit_depth))
        if result.failures:
            return {"image": path, "status": "excluded", "reason": result.failures[0][1]}
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
        informative = np.flatnonzero(np.isfinite(self.fg.onset_time_))
        order = informative[np.argsort(-np.abs(lam[informative]), kind="stable")]
        contributions = [{"row": int(rows[i]), "col": int(cols[i]), "channel": int(chans[i]),
                          "onset": f"{date_of(self.fg.onset_bounds_[i, 0]):%Y-%m-%d} to "
                                   f"{date_of(self.fg.onset_bounds_[i, 1]):%Y-%m-%d}",
                          "measured": None if not np.isfinite(w[0, i]) else float(w[0, i]),
                          "log_likelihood_ratio": float(lam[i])} for i in order]
        return {"image": path, "status": "dated", "device": self.device,
                "period": {"from": f"{date_of(self.period[0]):%Y-%m-%d}", "to": f"{date_of(self.period[1]):%Y-%m-%d}"},
                "exposure_s": exposure_s, "iso": iso, "sources": sources,
                "interval": {"from": f"{date_of(bounds[best]):%Y-%m-%d}", "to": f"{date_of(bounds[best + 1]):%Y-%m-%d}",
                             "probability": float(mass[best])},
                "intervals": [{"from": f"{date_of(a):%Y-%m-%d}", "to": f"{date_of(b):%Y-%m-%d}", "probability": float(p)}
                              for a, b, p in zip(bounds[:-1], bounds[1:], mass)],
                "credible_range": {"level": level, "posterior_level": used, "from": f"{date_of(low):%Y-%m-%d}",
                                   "to": f"{date_of(high):%Y-%m-%d}", "from_days": low, "to_days": high},
                "before_after": lrs, "contributions": contributions,
                "held_out": None if self.calibration is None else
                {k: self.calibration[k] for k in ("coverage_nominal", "median_width_days_nominal", "cllr", "n")}}

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
        raw = float(np.clip(posterior.log10_lr_before(when), -RAW_LR_CLIP, RAW_LR_CLIP))
        entry = {"date": f"{date_of(when):%Y-%m-%d %H:%M}", "raw_log10_lr": raw, "log10_lr": None, "bounds": None}
        if self.calibration is not None:
            table = self.calibration["table"]
            entry["log10_lr"] = float(calibrated_lr_from_table(table, np.array([[0.0, raw * np.log(10)]]))[0, 1])
            entry["bounds"] = table["bounds"]
        return entry

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the model as one JSON file (no pickle): format, version, every fitted value."""
        body = {"format": FORMAT, "version": FORMAT_VERSION, "device": self.device, "frame": list(self.frame),
                "kind": self.kind, "bit_depth": self.bit_depth, "defects": self.defects,
                "fridrich_goljan": self.fg.to_params(), "period_days": list(self.period),
                "trusted_sha256": self.trusted, "calibration": self.calibration, "provenance": self.provenance}
        atomic_write_text(path, json.dumps(body, indent=1, default=_plain))

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> DeviceModel:
        """Read a model written by :meth:`save`.

        Raises
        ------
        ModelFormatError
            If the file is not a device model, is of another format version, or is of another
            device than ``device``.
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
        return cls(body["device"], tuple(body["frame"]), body["kind"], int(body["bit_depth"]), body["defects"],
                   FridrichGoljanClassifier.from_params(body["fridrich_goljan"]), tuple(body["period_days"]),
                   body["trusted_sha256"], body["calibration"], body["provenance"])


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


def _cross_fit(features, splits, full_fg, period, cfg, level) -> dict | None:
    """Held-out posteriors of each fold's images under that fold's model: calibration pairs of
    (raw log10 LR before D, truth) and the coverage of the credible ranges."""
    scores, truths, covered, widths, needed = [], [], [], [], []
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
        grid = time_grid(train_time.min(), train_time.max(), fg.onset_bounds_, points=GRID_POINTS)
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
    truths = np.asarray(truths)
    if len(covered) == 0 or truths.size == 0 or truths.min() == truths.max():
        return None
    natural = np.column_stack([np.zeros(len(scores)), np.asarray(scores) * np.log(10)])
    calibrator = EvidenceCalibrator(method="logistic", random_state=0).fit(natural, truths, classes=[0, 1])
    table = calibration_table(calibrator, natural)
    calibrated = calibrator.log10_lr(natural)[:, 1]
    return {"table": table, "n": int(len(covered)), "n_pairs": int(truths.size),
            "coverage_nominal": float(np.mean(covered)), "median_width_days_nominal": float(np.median(widths)),
            "needed_levels": sorted(needed),
            "cllr": float(cllr(calibrated, truths.astype(bool))),
            "cllr_raw": float(cllr(np.asarray(scores), truths.astype(bool)))}
