"""The dating benchmark of issue 14: how well ``python -m pipeline.date`` dates held-out images
of a camera from the others, against a reference that knows the true defect onsets.

    python benchmarks/bench_dating.py [--folds 5] [--work /tmp/agetrace-dating] [--out FILE] [--sets ...]
        [--data-seeds 0 1]

Sets (capture times spread continuously over the whole period, not two classes):

* ``synthetic``: the embedded synthetic default (four simulated cameras, 1024×768 JPEG) with
  its two classes replaced by one span of every acquisition slot (``classes`` slots 1–12 and
  13–25, 60 images each: 120 images per camera over 25 slots, 672 days);
* ``real-dng`` and ``real-jpeg``: the real Bayer mosaics of three cameras with injected defects
  (``tests/real_mosaics.py``, ``capture_times="continuous"``: 80 captures per camera uniform over
  2019-03-01 .. 2020-12-01), as CFA DNG and as LibRaw-developed JPEG; ``--data-seeds`` draws
  independent defects, scenes, times and exposures (seeds 0 and 1, as in ``VALIDATION.md``).

Protocol: per camera, the images in time order are dealt into ``--folds`` folds (image ``i`` to
fold ``i mod folds``); each fold in turn is questioned and the others are the trusted images:
:meth:`pipeline.dating.model.DeviceModel.fit` on them (its own five inner folds calibrate the
range), then :meth:`~pipeline.dating.model.DeviceModel.date` on each questioned image, with the
exposure and ISO it reads from the file's EXIF. A questioned image taken before the first or
after the last trusted image is outside what any model here can date (the prior spans the
trusted period) and is counted apart.

The reference (``tests/age_reference.py``, which imports nothing of the project) is given the
true defects and onsets: on DNG the exact generative likelihood (:class:`RawReference`), on JPEG
per-defect densities before and after each true onset learned on the same trusted images
(:class:`JpegTimeReference`); the same uniform prior over the trusted period; its own
equal-tailed 95 % range (:func:`time_credible_range`). Its intervals are those between the true
onsets.

Reported per set: the coverage of the 95 % ranges (share of questioned images whose true capture
time lies inside), the median width in days, the reference's coverage and median width, the
ratio of the two widths, and the share of questioned images whose true time lies in the most
probable inter-onset interval (the model's own intervals for the model, the true ones for the
reference). Per-image rows go to ``<work>/dating_<set>_seed<data seed>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import commit, cpu  # noqa: E402
from csv_rows import read_csv, write_rows  # noqa: E402
from age_reference import JpegTimeReference, RawReference, Truth, parse_time, time_credible_range  # noqa: E402

from pipeline.analysis.config import ExperimentConfig  # noqa: E402
from pipeline.data.manifest import load_manifest  # noqa: E402
from pipeline.dating.model import DeviceModel  # noqa: E402
from pipeline.features.cache import FeatureCache  # noqa: E402

SETS = ("synthetic", "real-dng", "real-jpeg")
FOUND_RADIUS = 2
SYNTHETIC = {"classes": [{"label": 0, "slots": [1, 12]}, {"label": 1, "slots": [13, 25]}]}
DAY = 86400.0
LOG = logging.getLogger("bench_dating")


def build_set(name: str, work: Path, seed: int = 0) -> tuple[Path, str]:
    """The set's folder (built once) and the reference's kind."""
    if name == "synthetic":
        from pipeline.sim import default_dataset

        return Path(default_dataset(progress=False, **SYNTHETIC).manifest_path).parent, "jpeg"
    import real_mosaics

    kind = name.split("-")[1]
    folder = work / f"{name}-continuous-seed{seed}"
    if not (folder / "manifest.csv").exists():
        real_mosaics.build(folder, seed=seed, kind=kind, capture_times="continuous")
    return folder, "raw" if kind == "dng" else "jpeg"


def _rows(folder: Path) -> list[dict]:
    rows = read_csv(folder / "manifest.csv")
    for row in rows:
        row["path"] = str((folder / row["path"]).resolve())
    return rows


def _days(text: str) -> float:
    return float(parse_time(text).astype("datetime64[s]").astype(np.int64)) / DAY


def _reference_range(reference, path: str, info, onsets_s, start_s: int, end_s: int, level: float,
                     true_s: float | None = None):
    """The reference's range (days), its most probable interval (days) and, given the true time,
    the level its equal-tailed range needs to reach it (``2·|F(t) − 1/2|``)."""
    low, high, edges, mass = time_credible_range(lambda t: reference.time_log_likelihood(path, info, t),
                                                 start_s, end_s, onsets_s, level)
    best = int(np.argmax(mass))
    need = None
    if true_s is not None:
        k = int(np.clip(np.searchsorted(edges, true_s, side="right") - 1, 0, len(mass) - 1))
        cdf = mass[:k].sum() + mass[k] * (true_s - edges[k]) / max(edges[k + 1] - edges[k], 1)
        need = min(1.0, 2 * abs(cdf - 0.5))
    return low / DAY, high / DAY, edges[best] / DAY, edges[best + 1] / DAY, need


def conformal_level(needs, level: float) -> float:
    """The ``⌈(n + 1)·level⌉``-th smallest needed level (the rule the dating model uses on its
    held-out trusted images), 1 beyond the sample."""
    needs = np.sort(np.asarray(needs, dtype=float))
    rank = int(np.ceil((needs.size + 1) * level))
    return 1.0 if rank > needs.size else max(level, float(needs[rank - 1]))


def date_set(name: str, work: Path, *, folds: int = 5, level: float = 0.95, workers: int | None = None,
             devices=None, detection: dict | None = None, seed: int = 0) -> list[dict]:
    """Every questioned image of one set, dated by the model and by the reference (one dict each)."""
    folder, kind = build_set(name, work, seed)
    truth = Truth.find(folder)
    rows = _rows(folder)
    cache = FeatureCache(work / "feature-cache")
    again = []  # (record, reference key, what recomputes its range) for the coverage-matched widths
    cfg = ExperimentConfig(workers=workers, progress=False, **(detection or {}))
    out = []
    for device in sorted({r["device"] for r in rows}):
        if devices and device not in devices:
            continue
        ordered = sorted((r for r in rows if r["device"] == device), key=lambda r: r["captured_at"])
        defects = truth.defects[device]
        for fold in range(folds):
            questioned = ordered[fold::folds]
            trusted = [r for i, r in enumerate(ordered) if i % folds != fold]
            manifest = load_manifest(write_rows(work / f"trusted-{name}-{seed}-{device}-{fold}.csv", trusted),
                                     needs_labels=False)
            started = time.perf_counter()
            model = DeviceModel.fit(manifest, device, cfg, cache=cache, level=level)
            seconds = time.perf_counter() - started
            trusted_paths = [r["path"] for r in trusted]
            infos = truth.capture_info(trusted_paths)
            times_s = np.array([_days(r["captured_at"]) * DAY for r in trusted]).astype(np.int64)
            start_s, end_s = int(times_s.min()), int(times_s.max())
            onsets_s_all = defects.onset.astype("datetime64[s]").astype(np.int64)
            found = _found(defects, model, 0 if kind == "raw" else FOUND_RADIUS)
            references = {}
            for key, which in (("ref", defects), ("same", defects.take(np.flatnonzero(found)))):
                references[key] = (RawReference(which) if kind == "raw" else
                                   JpegTimeReference(which).fit(trusted_paths, infos),
                                   which.onset.astype("datetime64[s]").astype(np.int64))
            for row in questioned:
                true_day = _days(row["captured_at"])
                result = model.date(row["path"], level=level)
                record = {"set": name, "device": device, "fold": fold, "path": row["path"], "true_day": true_day,
                          "inside": start_s / DAY <= true_day <= end_s / DAY, "status": result["status"],
                          "fit_seconds": round(seconds, 1), "n_onsets": len(model.onsets())}
                if result["status"] == "dated":
                    rng = result["credible_range"]
                    interval = result["interval"]
                    record.update(low=rng["from_days"], high=rng["to_days"], posterior_level=rng["posterior_level"],
                                  interval_low=interval["from_days"], interval_high=interval["to_days"],
                                  interval_probability=interval["probability"])
                else:
                    record["reason"] = result["reason"]
                if record["inside"]:
                    info = truth.capture(row["path"])
                    for key, (reference, onsets_s) in references.items():
                        low, high, a, b, need = _reference_range(reference, row["path"], info, onsets_s, start_s,
                                                                 end_s, level, true_day * DAY)
                        record.update({f"{key}_low": low, f"{key}_high": high, f"{key}_interval_low": a,
                                       f"{key}_interval_high": b, f"{key}_need": need})
                        again.append((record, key, reference, row["path"], info, onsets_s, start_s, end_s))
                    record["found"] = int(found.sum())
                    record["true_in_period"] = int(((onsets_s_all > start_s) & (onsets_s_all < end_s)).sum())
                out.append(record)
            LOG.info("%s %s fold %d: fitted in %.0f s, %d onsets", name, device, fold, seconds, len(model.onsets()))
    # the references' ranges at the level that covers `level` of this set's questioned images: an
    # overconfident reference (the JPEG one's densities come from few images) is compared at the
    # coverage the model is held to, not at its own narrower nominal level
    matched = {key: conformal_level([r[f"{key}_need"] for r in out if f"{key}_need" in r], level)
               for key in ("ref", "same")}
    for record, key, reference, path, info, onsets_s, start_s, end_s in again:
        low, high, _, _, _ = _reference_range(reference, path, info, onsets_s, start_s, end_s, matched[key])
        record.update({f"{key}_matched_low": low, f"{key}_matched_high": high, f"{key}_matched_level": matched[key]})
    return out


def _found(defects, model, radius: int) -> np.ndarray:
    """Which true defects the model identified (an identified defect within ``radius`` pixels,
    Chebyshev: demosaicing and JPEG move the strongest response of a defect by a pixel or two)."""
    rows, cols = (np.asarray(model.defects[k], dtype=np.int64) for k in ("rows", "cols"))
    informative = np.isfinite(model.fg.onset_time_)
    rows, cols = rows[informative], cols[informative]
    return np.array([bool(np.any((np.abs(rows - r) <= radius) & (np.abs(cols - c) <= radius)))
                     for r, c in zip(defects.row, defects.col)], dtype=bool)


def summarise(records: list[dict]) -> dict:
    """Coverage, widths and interval shares over the questioned images inside their trusted period."""
    inside = [r for r in records if r["inside"]]
    dated = [r for r in inside if r["status"] == "dated"]
    covered = [r["low"] <= r["true_day"] <= r["high"] for r in dated]
    widths = [r["high"] - r["low"] for r in dated]
    ref_covered = [r["ref_low"] <= r["true_day"] <= r["ref_high"] for r in inside]
    ref_widths = [r["ref_high"] - r["ref_low"] for r in inside]
    same_covered = [r["same_low"] <= r["true_day"] <= r["same_high"] for r in inside]
    same_widths = [r["same_high"] - r["same_low"] for r in inside]
    hits = [r["interval_low"] <= r["true_day"] < r["interval_high"] for r in dated]
    ref_hits = [r["ref_interval_low"] <= r["true_day"] < r["ref_interval_high"] for r in inside]
    return {"n": len(records), "inside": len(inside), "dated": len(dated),
            "not_dated": len(inside) - len(dated),
            "coverage": float(np.mean(covered)) if covered else float("nan"),
            "width": float(np.median(widths)) if widths else float("nan"),
            "ref_coverage": float(np.mean(ref_covered)), "ref_width": float(np.median(ref_widths)),
            "ratio": float(np.median(widths) / np.median(ref_widths)) if widths else float("nan"),
            "same_coverage": float(np.mean(same_covered)), "same_width": float(np.median(same_widths)),
            "same_ratio": float(np.median(widths) / np.median(same_widths)) if widths else float("nan"),
            **{f"{key}_matched_{what}": value for key in ("ref", "same") for what, value in (
                ("level", inside[0][f"{key}_matched_level"] if inside else float("nan")),
                ("coverage", float(np.mean([r[f"{key}_matched_low"] <= r["true_day"] <= r[f"{key}_matched_high"]
                                            for r in inside]))),
                ("width", float(np.median([r[f"{key}_matched_high"] - r[f"{key}_matched_low"] for r in inside]))))},
            "found": float(np.mean([r["found"] / max(r["true_in_period"], 1) for r in inside])),
            "interval_share": float(np.mean(hits)) if hits else float("nan"), "ref_interval_share": float(np.mean(ref_hits)),
            "interval_width": float(np.median([r["interval_high"] - r["interval_low"] for r in dated])) if dated else float("nan"),
            "ref_interval_width": float(np.median([r["ref_interval_high"] - r["ref_interval_low"] for r in inside]))}


def table(summaries: dict, args, seconds: dict) -> str:
    """The markdown tables of the benchmark (one row per set)."""
    head = (f"Commit {commit()}, {datetime.date.today()}. Machine: {cpu()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}. Command: `python benchmarks/bench_dating.py --folds {args.folds}"
            f"{' --sets ' + ' '.join(args.sets) if tuple(args.sets) != SETS else ''}"
            f"{' --data-seeds ' + ' '.join(map(str, args.data_seeds)) if args.data_seeds != [0] else ''}`.")
    lines = [head, "",
             "| set | questioned (inside the trusted period) | coverage of the 95 % ranges | median width (days) "
             "| oracle at its own 95 %: coverage, median width | width / oracle's "
             "| oracle at matched coverage: level, coverage, median width | width / oracle's "
             "| true date in the most probable interval: model, oracle | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        lines.append(
            f"| {name} | {s['n']} ({s['inside']}; {s['not_dated']} not dated) | {100 * s['coverage']:.1f} % "
            f"| {s['width']:.0f} | {100 * s['ref_coverage']:.1f} %, {s['ref_width']:.0f} | {s['ratio']:.2f} "
            f"| {100 * s['ref_matched_level']:.1f} %, {100 * s['ref_matched_coverage']:.1f} %, "
            f"{s['ref_matched_width']:.0f} | {s['width'] / s['ref_matched_width']:.2f} "
            f"| {100 * s['interval_share']:.1f} %, {100 * s['ref_interval_share']:.1f} % | {seconds[name] / 60:.1f} |")
    lines += ["", "Where the gap comes from: the same comparison against a reference given only the true defects "
              "the model identified (their true onsets and amplitudes), the share of the true in-period defects "
              "identified, and the median length of the most probable interval.", "",
              "| set | same defects, true onsets, own 95 %: coverage, median width | width / theirs "
              "| same, matched coverage: level, median width | width / theirs | true in-period defects identified "
              "| median interval (days): model, oracle |",
              "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        lines.append(
            f"| {name} | {100 * s['same_coverage']:.1f} %, {s['same_width']:.0f} | {s['same_ratio']:.2f} "
            f"| {100 * s['same_matched_level']:.1f} %, {s['same_matched_width']:.0f} "
            f"| {s['width'] / s['same_matched_width']:.2f} | {100 * s['found']:.0f} % "
            f"| {s['interval_width']:.0f}, {s['ref_interval_width']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folds", type=int, default=5, help="outer folds per camera (default 5)")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--devices", nargs="+", help="only these cameras (for a quick look)")
    p.add_argument("--data-seeds", nargs="+", type=int, default=[0], help="data seeds of the real sets (default 0)")
    p.add_argument("--work", type=Path, default=Path("/tmp/agetrace-dating"))
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    p.add_argument("--onset-false-alarm", type=float, help="override the dating model's (for experiments)")
    p.add_argument("--fg-false-alarm", type=float, help="override the dating model's (for experiments)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    summaries, seconds = {}, {}
    runs = [(name, seed) for name in args.sets for seed in ([0] if name == "synthetic" else args.data_seeds)]
    for name, seed in runs:
        label = name if name == "synthetic" else f"{name}, data seed {seed}"
        started = time.perf_counter()
        detection = {k: v for k, v in (("onset_false_alarm", args.onset_false_alarm),
                                       ("fg_false_alarm", args.fg_false_alarm)) if v is not None}
        records = date_set(name, args.work, folds=args.folds, workers=args.workers, devices=args.devices,
                           detection=detection, seed=seed)
        seconds[label] = time.perf_counter() - started
        with open(args.work / f"dating_{name}_seed{seed}.csv", "w", newline="") as fh:
            columns = sorted({k for r in records for k in r})
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
        summaries[label] = summarise(records)
        LOG.info("%s: %s", label, summaries[label])
    text = table(summaries, args, seconds)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
