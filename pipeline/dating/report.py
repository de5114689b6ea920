"""The evidence report of one dated questioned image: a self-contained HTML page and its numbers.

``python -m pipeline.date ... --report DIR`` writes, for each dated questioned image,
``DIR/<stem>.html`` (every figure embedded as a ``data:`` URI: vector SVG, or PNG at 300 dpi for
the pixel crops; no external file, no network, no script) and ``DIR/<stem>.json`` holding every
value behind every table and figure. The page has, each with a caption written for an examiner
who does not read the code:

1. the defect table (position, colour channel, hot or stuck, onset date range, dark current,
   offset, the questioned image's residual and its log-likelihood ratio present vs absent);
2. residual crops around the defects that carry the most evidence: the questioned image beside
   the trusted images' mean before and after the onset;
3. the same defects' timelines: the trusted images' residual against capture date;
4. the posterior over capture date with the credible range and the most probable interval;
5. the sensor's defect map, coloured by onset date;
6. the calibration of the before/after likelihood ratios on held-out trusted images (Tippett
   plot, Cllr);
7. the exact configuration: model format, hashes, versions, parameters, command line.

:func:`build_report` gathers the numbers (a JSON-ready dict) from a :class:`~pipeline.dating.model.DeviceModel`
and a :class:`~pipeline.dating.model.DatingEvidence`; one function per figure draws from those
numbers only (so the JSON holds what the figures show); :func:`render_html` lays out the page and
:func:`write_report` writes both files atomically.

Times in the JSON are days since 1970-01-01 (the camera's clock), with calendar dates beside them;
residuals are in the image's own pixel-value units (DN).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
from pathlib import Path

import numpy as np

from pipeline.analysis.calibration import cllr, cllr_min, tippett_figure
from pipeline.analysis.experiment import calibrated_lr_from_table
from pipeline.analysis.provenance import package_versions, utc_now
from pipeline.data.atomic import atomic_write_text
from pipeline.dating.crops import measure_crops
from pipeline.dating.model import EPOCH, FORMAT, FORMAT_VERSION, DatingEvidence, DeviceModel, date_of

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "TOP_DEFECTS", "SECTIONS", "build_report", "render_html",
           "write_report", "report_stems", "run_record", "crops_figure", "timelines_figure", "posterior_figure",
           "defect_map_figure", "calibration_figure"]

logger = logging.getLogger(__name__)

REPORT_FORMAT = "agetrace-dating-report"
REPORT_VERSION = 1
#: defects shown in the crop and timeline figures (those with the largest |LLR|)
TOP_DEFECTS = 12
#: figure width in inches: fits an A4 or US-letter page with margins
PAGE_WIDTH_IN = 7.5
PNG_DPI = 300
#: section id -> heading, in page order
SECTIONS = {
    "summary": "Summary",
    "defects": "1. Defects and the evidence each carries",
    "crops": "2. The defects up close: questioned image against trusted images",
    "timelines": "3. Defect timelines in the trusted images",
    "posterior": "4. Probability of each capture date",
    "defect-map": "5. Where the defects are on the sensor",
    "calibration": "6. How reliable the likelihood ratios are",
    "configuration": "7. Exact configuration and file hashes",
}
_CHANNEL_NAMES = {0: "R", 1: "G", 2: "B"}
_TABLE_COLUMNS = (("rank", "#"), ("row", "row"), ("col", "col"), ("channel_name", "channel"), ("type", "type"),
                  ("onset_from", "onset from"), ("onset_to", "onset to"), ("dark_current", "dark current D (DN/s)"),
                  ("offset", "offset c (DN)"), ("expected_if_present", "expected if present (DN)"),
                  ("measured", "measured residual (DN)"), ("noise_sigma", "local noise σ (DN)"),
                  ("log_likelihood_ratio", "LLR present vs absent"))


# ----------------------------------------------------------------------------------------------
# numbers
# ----------------------------------------------------------------------------------------------

def _num(value):
    """A float for JSON, None for NaN/inf/None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _nums(values) -> list:
    return [_num(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def _grid(values) -> list:
    return [_nums(row) for row in np.asarray(values, dtype=np.float64)]


def _day(value) -> str | None:
    value = _num(value)
    return None if value is None else f"{date_of(value):%Y-%m-%d}"


def _channel_name(kind: str, channel: int) -> str:
    if kind == "gray":
        return "gray"
    return _CHANNEL_NAMES.get(int(channel), "unknown")


def _defect_type(fg, i: int) -> str:
    """hot when the dark-current term dominates at the trusted images' median exposure, stuck when
    the offset does; undetermined when the model has no exposure times (the two are not separable)."""
    if not np.isfinite(fg.onset_time_[i]):
        return "—"
    if not fg.uses_exposure_:
        return "undetermined"
    tau = float(np.median(fg.condition_samples_[:, 0]))
    dark = (tau ** fg.tone_exponent_) * float(fg.dark_current_[i])
    return "hot" if dark >= float(fg.offset_[i]) else "stuck"


def report_stems(paths) -> list[str]:
    """File stems of the reports of ``paths``, unique (case-insensitively) within the list.

    The image's own stem, with characters other than letters, digits, ``.``, ``_`` and ``-``
    replaced by ``_``; a stem already taken gets ``-2``, ``-3``, ... (in the order given).
    """
    used, stems = set(), []
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._") or "image"
        stem, n = base, 2
        while stem.lower() in used:
            stem, n = f"{base}-{n}", n + 1
        used.add(stem.lower())
        stems.append(stem)
    return stems


def run_record(command_line: str, *, model_file: str | Path | None = None, source: str = "") -> dict:
    """What a report records about the run that made it: when, the command, the model's files.

    Parameters
    ----------
    command_line : str
    model_file : str or Path, optional
        The saved model (JSON) used or written; its SHA-256 and its npz companion's are recorded.
    source : str
        How the model came to be, in words (e.g. "fitted in this run on trusted.csv").
    """
    import json

    from pipeline.data.manifest import file_sha256
    from pipeline.dating.model import companion_path

    record = {"created": utc_now(), "command_line": command_line, "model_source": source, "model_file": None,
              "model_sha256": None, "model_arrays_file": None, "model_arrays_sha256": None}
    if model_file is not None:
        model_file = Path(model_file).resolve()
        try:  # the npz the JSON names (what DeviceModel.load reads and checks), not a guess from its name
            named = json.loads(model_file.read_text(encoding="utf-8"))["arrays"]["file"]
            arrays = model_file.parent / Path(named).name
        except (OSError, ValueError, KeyError, TypeError):
            arrays = companion_path(model_file)
        record.update(model_file=str(model_file), model_sha256=file_sha256(model_file),
                      model_arrays_file=str(arrays), model_arrays_sha256=file_sha256(arrays))
    return record


def build_report(model: DeviceModel, dating: DatingEvidence, *, top: int = TOP_DEFECTS, run: dict | None = None,
                 before_after=()) -> dict:
    """The numbers of one dated image's evidence report (JSON-ready: NaN written as null).

    Parameters
    ----------
    model : DeviceModel
        The model that dated the image (fitted, or loaded with its npz companion).
    dating : DatingEvidence
        :meth:`DeviceModel.evidence` of the image; it must be dated.
    top : int, default 12
        Defects shown in the crop and timeline figures: the informative ones with the largest |LLR|.
    run : dict, optional
        :func:`run_record` of the run (default: now, no command line, no model file).
    before_after : sequence of datetime
        The ``--before-after`` dates asked for (recorded in the configuration).

    Returns
    -------
    dict
        ``format``, ``version``, ``image``, ``dating`` (what :meth:`DeviceModel.date` returned),
        ``units``, ``defects``, ``crops``, ``timelines``, ``posterior``, ``defect_map``,
        ``calibration``, ``configuration``, ``run`` and ``captions``.

    Raises
    ------
    ValueError
        If the image was not dated, or the model has no evidence arrays.
    """
    result = dating.result
    if result.get("status") != "dated":
        raise ValueError(f"{result.get('image')} was not dated ({result.get('status')}: {result.get('reason')}); "
                         "there is no evidence to report")
    if not model.arrays:
        raise ValueError("this device model has no evidence arrays (trusted residuals, crops, calibration pairs): "
                         "fit it with this agetrace, or load it with its npz companion")
    fg = model.fg
    d = model.defects
    rows, cols, chans = (np.asarray(d[k], dtype=np.int64) for k in ("rows", "cols", "channels"))
    informative = np.isfinite(fg.onset_time_)
    lam = np.asarray(dating.llr, dtype=float)
    inf_idx = np.flatnonzero(informative)
    order = np.concatenate([inf_idx[np.argsort(-np.abs(lam[inf_idx]), kind="stable")], np.flatnonzero(~informative)])
    shown = [int(i) for i in order[:max(0, int(top))] if informative[i]]
    rank = {int(i): r + 1 for r, i in enumerate(order)}
    defects = []
    for i in order:
        i = int(i)
        defects.append({
            "rank": rank[i], "index": i, "row": int(rows[i]), "col": int(cols[i]), "channel": int(chans[i]),
            "channel_name": _channel_name(model.kind, chans[i]), "type": _defect_type(fg, i),
            "informative": bool(informative[i]),
            "onset_from": _day(fg.onset_bounds_[i, 0]), "onset_to": _day(fg.onset_bounds_[i, 1]),
            "onset_from_days": _num(fg.onset_bounds_[i, 0]), "onset_to_days": _num(fg.onset_bounds_[i, 1]),
            "dark_current": _num(fg.dark_current_[i]), "offset": _num(fg.offset_[i]),
            "expected_if_present": _num(dating.expected[i]) if informative[i] else None,
            "measured": _num(dating.residuals[i]), "noise_sigma": _num(dating.sigma[i]),
            "log_likelihood_ratio": _num(lam[i])})
    arrays = model.arrays
    k = arrays["crop_before_mean"].shape[-1]
    radius = (k - 1) // 2
    questioned_crops = np.full((len(shown), k, k), np.nan, dtype=np.float32)
    if shown:
        questioned_crops, failures = measure_crops((result["image"],), rows[shown], cols[shown], chans[shown],
                                                   model.frame, model.kind, model.bit_depth, radius=radius)
        if failures:
            raise ValueError(f"{result['image']}: cannot be read again for its crops ({failures[0][1]})")
        questioned_crops = questioned_crops[0]
    crops = []
    for j, i in enumerate(shown):
        panels = [questioned_crops[j], arrays["crop_before_mean"][i], arrays["crop_after_mean"][i]]
        finite = np.concatenate([p[np.isfinite(p)] for p in panels] + [np.ones(1)])
        crops.append({"rank": rank[i], "row": int(rows[i]), "col": int(cols[i]),
                      "channel_name": _channel_name(model.kind, chans[i]),
                      "pixel_step": 2 if model.kind == "cfa" else 1,
                      "radius": radius, "log_likelihood_ratio": _num(lam[i]),
                      "questioned": _grid(questioned_crops[j]),
                      "before_mean": _grid(arrays["crop_before_mean"][i]),
                      "before_count": arrays["crop_before_count"][i].astype(int).tolist(),
                      "after_mean": _grid(arrays["crop_after_mean"][i]),
                      "after_count": arrays["crop_after_count"][i].astype(int).tolist(),
                      "colour_limit": float(np.max(np.abs(finite)))})
    trusted_days = arrays["trusted_days"]
    timelines = {"trusted_days": _nums(trusted_days), "trusted_dates": [_day(t) for t in trusted_days],
                 "defects": [{"rank": rank[i], "row": int(rows[i]), "col": int(cols[i]),
                              "channel_name": _channel_name(model.kind, chans[i]),
                              "trusted_residuals": _nums(arrays["trusted_residuals"][:, i]),
                              "onset_from_days": _num(fg.onset_bounds_[i, 0]),
                              "onset_to_days": _num(fg.onset_bounds_[i, 1]),
                              "onset_days": _num(fg.onset_time_[i]), "questioned_residual": _num(dating.residuals[i]),
                              "expected_if_present": _num(dating.expected[i]), "log_likelihood_ratio": _num(lam[i])}
                             for i in shown]}
    posterior = dating.posterior
    credible = result["credible_range"]
    post = {"grid_days": _nums(posterior.grid), "density_per_day": _nums(posterior.density),
            "credible_from_days": _num(credible["from_days"]), "credible_to_days": _num(credible["to_days"]),
            "level": credible["level"], "posterior_level": credible["posterior_level"],
            "interval_from_days": _num(dating.interval_days[0]), "interval_to_days": _num(dating.interval_days[1]),
            "interval_probability": result["interval"]["probability"], "onsets_days": _nums(model.onsets()),
            "period_days": _nums(model.period)}
    defect_map = {"frame": [int(v) for v in model.frame], "rows": rows.tolist(), "cols": cols.tolist(),
                  "onset_days": _nums(np.where(informative, fg.onset_time_, np.nan)),
                  "informative": informative.tolist(), "rank": [rank[i] if i in shown else None
                                                                for i in range(rows.size)]}
    content = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "image": {"path": result["image"], "sha256": dating.sha256, "is_trusted_image": dating.sha256 in model.trusted},
        "dating": result,
        "units": {"time": "days since 1970-01-01 00:00 on the camera's clock (dates beside them)",
                  "residual": f"pixel-value units (DN) of the {model.bit_depth}-bit {model.kind} image: the pixel "
                              "minus the median of its 3×3 same-colour neighbourhood",
                  "log_likelihood_ratio": "natural log", "log10_lr": "base-10 log"},
        "defects": defects, "crops": crops, "timelines": timelines, "posterior": post, "defect_map": defect_map,
        "calibration": _calibration_numbers(model),
        "configuration": _configuration(model, dating, top, radius, before_after),
        "run": dict(run) if run is not None else {"created": utc_now(), "command_line": None, "model_source": "",
                                                   "model_file": None, "model_sha256": None,
                                                   "model_arrays_file": None, "model_arrays_sha256": None},
    }
    content["captions"] = _captions(content, model)
    return content


def _calibration_numbers(model: DeviceModel) -> dict:
    arrays = model.arrays
    raw = np.asarray(arrays["calibration_raw_log10_lr"], dtype=float)
    before = np.asarray(arrays["calibration_before"], dtype=bool)
    out = {"available": model.calibration is not None and raw.size > 0, "raw_log10_lr": _nums(raw),
           "calibrated_log10_lr": None, "before": before.tolist(),
           "probe_days": _nums(arrays["calibration_probe_days"]), "true_days": _nums(arrays["calibration_true_days"]),
           "n_pairs": int(raw.size), "n_images": None, "cllr": None, "cllr_min": None, "cllr_raw": None,
           "bounds": None, "coverage_nominal": None, "median_width_days_nominal": None}
    has_both = raw.size > 0 and before.any() and (~before).any()
    if has_both:
        out["cllr_raw"] = _num(cllr(raw, before))
    if model.calibration is not None and raw.size:
        table = model.calibration["table"]
        calibrated = calibrated_lr_from_table(table, np.column_stack([np.zeros(raw.size), raw * np.log(10)]))[:, 1]
        out.update(calibrated_log10_lr=_nums(calibrated), n_images=model.calibration["n"],
                   bounds=[float(v) for v in table["bounds"][1]],
                   coverage_nominal=model.calibration["coverage_nominal"],
                   median_width_days_nominal=model.calibration["median_width_days_nominal"])
        if has_both:
            # the best any monotone recalibration of the model's own values could reach (PAV on the raw ones)
            out.update(cllr=_num(cllr(calibrated, before)), cllr_min=_num(cllr_min(raw, before)))
    return out


def _configuration(model: DeviceModel, dating: DatingEvidence, top: int, radius: int, before_after) -> dict:
    prov = model.provenance
    result = dating.result
    return {
        "model": {"format": FORMAT, "version": FORMAT_VERSION, "device": model.device, "frame": list(model.frame),
                  "kind": model.kind, "bit_depth": model.bit_depth, "created": prov.get("created"),
                  "folds": prov.get("folds"), "level": prov.get("level"), "parameters": prov.get("parameters"),
                  "trusted_images": len(model.arrays["trusted_days"]), "defects": len(model.defects["rows"]),
                  "informative_defects": int(np.isfinite(model.fg.onset_time_).sum()),
                  "unreadable_trusted_images": len(prov.get("unreadable") or {}),
                  "fridrich_goljan": {**model.fg.get_params(), "tone_exponent": float(model.fg.tone_exponent_),
                                      "base_iso": model.fg.base_iso_, "uses_exposure": bool(model.fg.uses_exposure_),
                                      "uses_iso": bool(model.fg.uses_iso_)},
                  "period": [_day(model.period[0]), _day(model.period[1])]},
        "manifest": {"path": prov.get("manifest"), "sha256": prov.get("manifest_sha256")},
        "questioned": {"path": result["image"], "sha256": dating.sha256,
                       "exposure_s": result["exposure_s"], "exposure_source": result["sources"]["exposure"],
                       "iso": result["iso"], "iso_source": result["sources"]["iso"],
                       "model_uses_exposure": bool(model.fg.uses_exposure_),
                       "model_uses_iso": bool(model.fg.uses_iso_)},
        "report": {"format": REPORT_FORMAT, "version": REPORT_VERSION, "level": result["credible_range"]["level"],
                   "before_after": [f"{moment:%Y-%m-%d %H:%M}" for moment in before_after],
                   "top_defects": int(top), "crop_radius": int(radius)},
        "versions": {"model_fit": prov.get("versions"), "report": package_versions()},
    }


def _fmt_exposure(result: dict) -> str:
    src = result["sources"]
    exposure = (f"{result['exposure_s']:g} s ({src['exposure']})" if result["exposure_s"]
                else "unknown (averaged over the trusted images' exposures)")
    iso = f"{result['iso']:g} ({src['iso']})" if result["iso"] else "unknown (averaged over the trusted images' ISO)"
    return f"exposure {exposure}, ISO {iso}"


def _captions(content: dict, model: DeviceModel) -> dict:
    result = content["dating"]
    post = content["posterior"]
    cal = content["calibration"]
    n_trusted = len(content["timelines"]["trusted_days"])
    n_shown = len(content["crops"])
    side = 2 * content["configuration"]["report"]["crop_radius"] + 1
    cfa = model.kind == "cfa"
    plane = ("on the defect's own colour plane (the same-colour pixels, two sensor pixels apart, that its residual "
             "is computed from)" if cfa else "in the defect's colour channel")
    tau = float(np.median(model.fg.condition_samples_[:, 0]))
    kappa = float(model.fg.tone_exponent_)
    scale = ("D is in DN per second of exposure and c in DN, both at base ISO (the residual of a present defect "
             "is g·(τ·D + c) for exposure τ and gain g = ISO / base ISO)" if kappa == 1 else
             f"D and c are on the model's compressed scale: the residual of a present defect is g^κ·(τ^κ·D + c) "
             f"for exposure τ and gain g = ISO / base ISO, with κ = {kappa:g} standing in for the camera's tone "
             "curve")
    typing = (f"Dark current D and offset c: {scale}. "
              f"Type: 'hot' when the part that grows with exposure time (dark current D) is the larger at the "
              f"trusted images' median exposure ({tau:.3g} s), 'stuck' when the fixed excess (offset c) is."
              if model.fg.uses_exposure_ else
              "Type is 'undetermined': without exposure times the dark current and the offset cannot be told apart.")
    captions = {
        "summary": (f"The questioned image was dated with the defects of device {model.device}, found in "
                    f"{n_trusted} trusted images taken from {result['period']['from']} to {result['period']['to']}. "
                    "The model can only place the image within that period. Conditions used: "
                    f"{_fmt_exposure(result)}. A likelihood ratio (LR) above 1 supports 'taken before D', below 1 "
                    "'taken after D', both within the trusted period (from its first day to D, and from D to its "
                    "last); the calibrated values are bounded by what the trusted images can support."),
        "defects": ("Each row is one sensor defect: a pixel that, from some date on, reads brighter than its "
                    "neighbours and stays so. Row and column give its position on the sensor (0, 0 is the top-left "
                    "pixel); channel is the colour in which it shows. " + typing + " Onset from/to: the model's 99 % range "
                    "for the date the defect appeared, from the trusted images (a probability under the model, not "
                    "a certainty; at its narrowest, from the last trusted image without it to the first with it). The residual is "
                    "the pixel's value minus the median of its 3×3 same-colour neighbourhood, in the image's "
                    "pixel-value units (DN). 'Expected if present' is the residual the model expects at the "
                    "questioned image's exposure and ISO (the trusted images' median where they are unknown) once "
                    "the defect exists; 'measured' is the questioned "
                    "image's own ('clipped': a saturated neighbour made it unmeasurable, and it counts for "
                    "nothing); local noise σ is the local noise level measured there (the model scales it "
                    "per defect by how the healthy residuals actually spread before the onset). LLR is the natural-log likelihood ratio 'defect present in this image' against "
                    "'absent' (at the conditions used; shown for reading, the posterior averages over unknown "
                    "ones): positive supports 'taken after the onset', negative 'before', 0 nothing. Defects "
                    "with an onset inside the trusted period come first, largest |LLR| first; the others (present "
                    "throughout, or never confirmed) carry no dating evidence and come last."),
        "crops": (f"The {n_shown} defects with the largest |LLR|, one per block, numbered as in the table. Left: the "
                  f"questioned image's residual around the defect, {side}×{side} pixels {plane}. Middle: the mean "
                  "residual of the trusted images taken before the defect's onset; right: of those taken after it "
                  "(n: images averaged at the defect pixel). The defect pixel is outlined. Red is brighter than "
                  "its neighbourhood, blue darker, white neither; the three panels of a block share one colour "
                  "scale (DN). A questioned image whose defect pixel stands out like the 'after' mean is consistent "
                  "with a capture after the onset, one that looks like the 'before' mean with one before it; a "
                  "single defect can be masked (short exposure, texture), and the LLR is the model's measure. Grey: no value "
                  "(outside the frame, or a saturated neighbourhood)."),
        "timelines": ("The same defects followed through time. Each dot is one trusted image: its residual at the "
                      "defect (DN) against its capture date; grey dots were taken before the onset, black after. "
                      "The shaded band is the onset's 99 % date range (as in the table) and the vertical line the onset "
                      "date the model splits the images at. The red line is the questioned image's residual at "
                      "that defect; the dashed line is the level the model expects for a present defect at the "
                      "questioned image's exposure and ISO; the dotted line at 0 is a healthy pixel's. Trusted "
                      "images whose neighbourhood is saturated have no value and are not drawn."),
        "posterior": (f"How probable each capture date is, given the defects, over the trusted period (the model "
                      f"takes every date in it as equally likely beforehand and cannot date outside it). The "
                      f"vertical scale is probability per day: the area under the curve is 1. Shaded: the "
                      f"{100 * post['level']:.0f} % credible range, {_day(post['credible_from_days'])} to "
                      f"{_day(post['credible_to_days'])}" +
                      (f" (the model's own {100 * post['posterior_level']:.2f} % range, widened so that "
                       f"{100 * post['level']:.0f} % of held-out trusted images fell inside)"
                       if post["posterior_level"] != post["level"] else "") +
                      f". Green band: the most probable interval between consecutive defect onsets, "
                      f"{_day(post['interval_from_days'])} to {_day(post['interval_to_days'])} (probability "
                      f"{post['interval_probability']:.3f}). Ticks along the bottom: the defect onsets."),
        "defect-map": (f"The sensor's frame as its images store it, {model.frame[1]} pixels wide and "
                       f"{model.frame[0]} high, row 0 at the top. Filled circles: defects with an onset inside the "
                       "trusted period, coloured by onset date (colour bar: the onset the model splits the trusted images at, "
                       "inside the 99 % range of the table). Grey crosses: defects without one (no dating information). Numbers: the defects of "
                       "sections 2 and 3 (their row in the table)."),
        "configuration": ("What is needed to repeat this dating (with the model file; a model fitted and not "
                          "saved has no file hash here): the model's format and how it was fitted, the "
                          "trusted manifest and the questioned file with their SHA-256 hashes, the exposure and ISO "
                          "used and where they came from, the software versions, and the command that made this "
                          "report."),
    }
    if cal["available"]:
        captions["calibration"] = (
            f"A check of the 'taken before D' against 'taken after D' likelihood ratios on the trusted images "
            f"themselves. Each trusted image was held out in turn ({model.provenance.get('folds')} folds), dated by "
            f"a model fitted without it, and its LR computed for several dates D (every onset and the deciles of the "
            f"period): {cal['n_pairs']} image-date pairs from {cal['n_images']} images. Solid curves: pairs in which "
            "the image was truly taken before D; dashed: truly after. Each curve gives the proportion of pairs "
            "whose log10 LR is at least the value on the horizontal axis. A good system has its solid curves far "
            "to the right of 0 and its dashed curves far to the left; a dashed curve right of 0 or a solid curve "
            "left of it is misleading evidence. 'Calibrated' are the values this report gives (fitted on these "
            "same pairs, so slightly optimistic); 'model's own' are the uncalibrated ones. Cllr summarises the "
            f"cost in bits (0 perfect, 1 no information, above 1 misleading): calibrated {cal['cllr']:.3f} "
            f"(the best a monotone recalibration could reach: {cal['cllr_min']:.3f}), model's own "
            f"{cal['cllr_raw']:.3f}. Values beyond the axis are drawn at its edge.")
    else:
        captions["calibration"] = ("The trusted images were too few (or all on one side of every date) to check "
                                   "the likelihood ratios on held-out images: they are the model's own, "
                                   "uncalibrated.")
    return captions


# ----------------------------------------------------------------------------------------------
# figures (each from the report's numbers only)
# ----------------------------------------------------------------------------------------------

def _mpl_days(values):
    """Matplotlib date numbers of days since 1970 (whatever matplotlib's epoch)."""
    import matplotlib.dates as mdates

    return np.asarray(values, dtype=float) + mdates.date2num(EPOCH)


def _date_axis(axis, *, max_ticks: int = 6):
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=2, maxticks=max_ticks)
    axis.set_major_locator(locator)
    axis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _array(grid) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)


def crops_figure(content: dict):
    """Residual crops of the defects with the most evidence (section 2).

    Returns
    -------
    matplotlib.figure.Figure or None
        Two defects per row; for each, the questioned image's crop, the trusted mean before and
        after the onset on one diverging colour scale (DN), the defect pixel outlined. None when no
        defect is shown.
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    crops = content["crops"]
    if not crops:
        return None
    # a fixed layout in inches (a constrained layout of 36 panels costs seconds per report)
    per_row, left, right, top, bottom = 2, 0.55, 0.1, 0.08, 0.36
    panel, gap, bar_gap, bar_w = 0.82, 0.08, 0.07, 0.09
    block_w = (PAGE_WIDTH_IN - left - right) / per_row
    block_h = 1.5
    n_rows = math.ceil(len(crops) / per_row)
    height = top + n_rows * block_h + bottom
    fig = Figure(figsize=(PAGE_WIDTH_IN, height))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.75")

    def box(x, y, w, h):  # inches from the top-left corner -> figure fraction
        return [x / PAGE_WIDTH_IN, 1 - (y + h) / height, w / PAGE_WIDTH_IN, h / height]

    for j, c in enumerate(crops):
        x0 = left + (j % per_row) * block_w
        y0 = top + (j // per_row) * block_h
        step, radius = c["pixel_step"], c["radius"]
        half = radius * step + step / 2
        limit = max(c["colour_limit"], 1.0)
        before_n = c["before_count"][radius][radius]
        after_n = c["after_count"][radius][radius]
        titles = ("questioned\nimage", f"trusted, before\nonset (n={before_n})", f"trusted, after\nonset (n={after_n})")
        image = None
        for q, (key, title) in enumerate(zip(("questioned", "before_mean", "after_mean"), titles)):
            ax = fig.add_axes(box(x0 + q * (panel + gap), y0 + 0.5, panel, panel))
            image = ax.imshow(_array(c[key]), cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest",
                              extent=(-half, half, half, -half))
            ax.add_patch(Rectangle((-step / 2, -step / 2), step, step, fill=False, edgecolor="black", linewidth=1.2))
            ax.set_title(title, fontsize=7, pad=2)
            ticks = [-radius * step, 0, radius * step]
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.tick_params(labelsize=6, length=2, pad=1)
            if q:
                ax.set_yticklabels([])
        cax = fig.add_axes(box(x0 + 3 * panel + 2 * gap + bar_gap, y0 + 0.5, bar_w, panel))
        bar = fig.colorbar(image, cax=cax)
        bar.set_label("residual (DN)", fontsize=6.5, labelpad=1)
        bar.ax.tick_params(labelsize=6, length=2, pad=1)
        llr = c["log_likelihood_ratio"]
        fig.text((x0 + 1.5 * panel + gap) / PAGE_WIDTH_IN, 1 - (y0 + 0.08) / height,
                 f"#{c['rank']}: row {c['row']}, col {c['col']}, {c['channel_name']}; LLR "
                 f"{'n/a' if llr is None else f'{llr:+.2f}'}", fontsize=8, fontweight="bold", ha="center", va="top")
    fig.text(0.5, 0.12 / height, "horizontal offset from the defect (sensor pixels; the defect is at 0, outlined)",
             fontsize=7.5, ha="center", va="bottom")
    fig.text(0.12 / PAGE_WIDTH_IN, 0.5, "vertical offset from the defect (sensor pixels)", fontsize=7.5,
             rotation=90, ha="left", va="center")
    return fig


def timelines_figure(content: dict):
    """The shown defects' residual in the trusted images against capture date (section 3).

    Returns
    -------
    matplotlib.figure.Figure or None
        Small multiples, three per row, one per defect; None when no defect is shown.
    """
    from matplotlib.figure import Figure

    data = content["timelines"]
    shown = data["defects"]
    if not shown:
        return None
    per_row = 3
    n_rows = math.ceil(len(shown) / per_row)
    fig = Figure(figsize=(PAGE_WIDTH_IN, 1.95 * n_rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, per_row, sharex=True, squeeze=False)).reshape(-1)
    days = np.asarray(data["trusted_days"], dtype=float)
    x = _mpl_days(days)
    handles = {}
    for j, ax in enumerate(axes):
        if j >= len(shown):
            ax.set_visible(False)
            continue
        d = shown[j]
        w = np.array([np.nan if v is None else v for v in d["trusted_residuals"]], dtype=float)
        after = days >= d["onset_days"]
        lo, hi = _mpl_days([d["onset_from_days"], d["onset_to_days"]])
        handles["onset"] = ax.axvspan(lo, hi, color="tab:orange", alpha=0.35, linewidth=0, label="onset range")
        ax.axvline(_mpl_days([d["onset_days"]])[0], color="tab:orange", linewidth=0.9)
        handles["zero"] = ax.axhline(0.0, color="0.5", linestyle=":", linewidth=0.8, label="healthy level (0)")
        if d["expected_if_present"] is not None:
            handles["expected"] = ax.axhline(d["expected_if_present"], color="0.3", linestyle="--", linewidth=0.8,
                                             label="expected if present")
        handles["before"] = ax.scatter(x[~after], w[~after], s=6, color="0.6", linewidths=0,
                                       label="trusted image, before onset")
        handles["after"] = ax.scatter(x[after], w[after], s=6, color="black", linewidths=0,
                                      label="trusted image, after onset")
        if d["questioned_residual"] is not None:
            handles["questioned"] = ax.axhline(d["questioned_residual"], color="tab:red", linewidth=1.3,
                                               label="questioned image")
        llr = d["log_likelihood_ratio"]
        ax.set_title(f"#{d['rank']} ({d['row']}, {d['col']}) {d['channel_name']}, LLR "
                     f"{'n/a' if llr is None else f'{llr:+.2f}'}", fontsize=7.5)
        ax.tick_params(labelsize=6.5)
        ax.grid(True, linestyle=":", linewidth=0.5)
        _date_axis(ax.xaxis, max_ticks=5)
        if j % per_row == 0:
            ax.set_ylabel("residual (DN)", fontsize=7)
        if j >= len(shown) - per_row:
            ax.set_xlabel("capture date", fontsize=7)
            ax.xaxis.set_tick_params(labelbottom=True)
    order = [key for key in ("before", "after", "onset", "questioned", "expected", "zero") if key in handles]
    fig.legend([handles[key] for key in order], [handles[key].get_label() for key in order], loc="outside upper center",
               ncols=3, fontsize=7, frameon=False)
    return fig


def posterior_figure(content: dict):
    """The posterior density over capture date (section 4).

    Returns
    -------
    matplotlib.figure.Figure
        Top: the whole trusted period; bottom: a zoom on the credible range. Density per day
        against date, the credible range shaded between dashed lines, the most probable interval
        in a hatched green band, the onsets as ticks along the bottom.
    """
    from matplotlib.figure import Figure

    p = content["posterior"]
    grid = np.asarray(p["grid_days"], dtype=float)
    density = np.asarray(p["density_per_day"], dtype=float)
    x = _mpl_days(grid)
    fig = Figure(figsize=(PAGE_WIDTH_IN, 6.8), layout="constrained")
    axes = fig.subplots(2, 1)
    start, end = _mpl_days(p["period_days"])
    c_lo, c_hi = _mpl_days([p["credible_from_days"], p["credible_to_days"]])
    i_lo, i_hi = _mpl_days([p["interval_from_days"], p["interval_to_days"]])
    margin = max(0.25 * (c_hi - c_lo), 10.0)
    views = ((start, end, "the whole trusted period"),
             (max(start, min(c_lo, i_lo) - margin), min(end, max(c_hi, i_hi) + margin), "zoom on the credible range"))
    inside = (grid >= p["credible_from_days"]) & (grid <= p["credible_to_days"])
    onsets = _mpl_days(p["onsets_days"])
    top = 1.12 * float(np.max(density)) if density.size else 1.0
    for ax, (lo, hi, title) in zip(axes, views):
        ax.axvspan(i_lo, i_hi, facecolor="tab:green", alpha=0.10, edgecolor="tab:green", hatch="///", linewidth=0.8,
                   zorder=1, label=f"most probable interval between onsets (p = {p['interval_probability']:.3f})")
        ax.fill_between(x, 0, density, where=inside, color="tab:blue", alpha=0.3, linewidth=0, zorder=2,
                        label=f"{100 * p['level']:.0f} % credible range")
        for edge in (c_lo, c_hi):
            ax.axvline(edge, color="tab:blue", linestyle="--", linewidth=0.9, zorder=2)
        ax.plot(x, density, color="tab:blue", linewidth=1.4, zorder=3, label="posterior density")
        ax.plot(onsets, np.zeros_like(onsets), linestyle="none", marker="|", markersize=11, markeredgewidth=1.3,
                color="black", transform=ax.get_xaxis_transform(), clip_on=True, zorder=4, label="defect onsets")
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, top)
        _date_axis(ax.xaxis, max_ticks=9)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("density (probability per day)", fontsize=8.5)
        ax.tick_params(labelsize=8)
        ax.grid(True, linestyle=":", linewidth=0.6)
    axes[1].set_xlabel("capture date (camera clock)", fontsize=8.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=2, fontsize=7.5, frameon=False)
    return fig


def defect_map_figure(content: dict):
    """The sensor's defects, coloured by onset date (section 5).

    Returns
    -------
    matplotlib.figure.Figure
        The frame outline in sensor pixels (row 0 at the top), defects with an onset as filled
        circles coloured by onset date (colour bar in dates), the others as grey crosses, the
        shown defects numbered.
    """
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    m = content["defect_map"]
    height, width = m["frame"]
    rows, cols = np.asarray(m["rows"], dtype=float), np.asarray(m["cols"], dtype=float)
    informative = np.asarray(m["informative"], dtype=bool)
    onset = np.array([np.nan if v is None else v for v in m["onset_days"]], dtype=float)
    plot_w = PAGE_WIDTH_IN - 1.6
    fig = Figure(figsize=(PAGE_WIDTH_IN, min(9.0, plot_w * height / width + 1.0)), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.08, h_pad=0.08)
    ax = fig.subplots()
    ax.add_patch(Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor="black", linewidth=1.2))
    if (~informative).any():
        ax.scatter(cols[~informative], rows[~informative], marker="x", s=28, color="0.55", linewidths=1.0)
    if informative.any():
        dots = ax.scatter(cols[informative], rows[informative], c=_mpl_days(onset[informative]), cmap="viridis", s=42,
                          edgecolors="black", linewidths=0.5)
        bar = fig.colorbar(dots, ax=ax, shrink=0.9, pad=0.02)
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        bar.ax.yaxis.set_major_locator(locator)
        bar.ax.yaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
        bar.set_label("onset date")
        bar.ax.tick_params(labelsize=7)
    for r, c, rank in zip(rows, cols, m["rank"]):
        if rank is not None:
            ax.annotate(str(rank), (c, r), xytext=(4, 3), textcoords="offset points", fontsize=7, fontweight="bold")
    ax.set_xlim(-0.5 - 0.02 * width, width - 0.5 + 0.02 * width)
    ax.set_ylim(height - 0.5 + 0.02 * height, -0.5 - 0.02 * height)
    ax.set_aspect("equal")
    ax.set_xlabel("column (sensor pixels)")
    ax.set_ylabel("row (sensor pixels)")
    proxies = []
    if informative.any():
        proxies.append(Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor="0.8",
                              markeredgecolor="black", markeredgewidth=0.5,
                              label="onset inside the trusted period (colour: onset date)"))
    if (~informative).any():
        proxies.append(Line2D([], [], linestyle="none", marker="x", markersize=6, color="0.55",
                              label="no onset inside the trusted period"))
    ax.legend(handles=proxies, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2, fontsize="small",
              frameon=False)
    return fig


def calibration_figure(content: dict):
    """Tippett plot of the cross-fitted before/after-D log10 LRs (section 6).

    Returns
    -------
    matplotlib.figure.Figure or None
        :func:`pipeline.analysis.calibration.tippett_figure` of the calibrated and the model's own
        log10 LRs, truly-before pairs solid, truly-after dashed; None without a calibration.
    """
    cal = content["calibration"]
    if not cal["available"]:
        return None
    raw = np.asarray(cal["raw_log10_lr"], dtype=float)
    calibrated = np.asarray(cal["calibrated_log10_lr"], dtype=float)
    before = np.asarray(cal["before"], dtype=bool)
    reach = max(abs(cal["bounds"][0]), abs(cal["bounds"][1]), 1.0) + 2.0
    fig = tippett_figure({f"calibrated (Cllr {cal['cllr']:.3f})": (calibrated, before),
                          f"model's own (Cllr {cal['cllr_raw']:.3f})": (raw, before)},
                         f"Held-out trusted images: {cal['n_pairs']} image–date pairs",
                         xlabel="log10 LR 'taken before D' vs 'taken after D'", h1_name="before D",
                         h2_name="after D", xlim=(-reach, reach))
    fig.set_size_inches(PAGE_WIDTH_IN, 5.4)
    ax = fig.axes[0]
    ax.set_ylabel("Proportion of image–date pairs with log10 LR ≥ x")
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=7.5, frameon=False)
    return fig


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------

def _embed(fig, fmt: str, alt: str) -> str:
    """An <img> holding the figure as a data: URI (SVG, or PNG at 300 dpi), shown at print size."""
    import matplotlib

    buffer = io.BytesIO()
    if fmt == "svg":
        with matplotlib.rc_context({"svg.hashsalt": "agetrace-report", "svg.fonttype": "path"}):
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        mime = "image/svg+xml"
    else:
        fig.savefig(buffer, format="png", dpi=PNG_DPI)
        mime = "image/png"
    width_in = fig.get_size_inches()[0]
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<img class="figure" style="width: {width_in:.2f}in" src="data:{mime};base64,{data}" '
            f'alt="{html.escape(alt)}">')


def _cell(value, kind: str = "num") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)) or kind == "text":
        return html.escape(str(value))
    if kind == "signed":
        return f"{value:+.4g}"
    return f"{value:.4g}"


def _defect_table(content: dict) -> str:
    head = "".join(f'<th scope="col">{html.escape(title)}</th>' for _, title in _TABLE_COLUMNS)
    body = []
    for d in content["defects"]:
        cells = []
        for key, _ in _TABLE_COLUMNS:
            value = d[key]
            if key == "measured" and value is None:
                text = "clipped"
            elif key in ("channel_name", "type", "onset_from", "onset_to"):
                text = _cell(value, "text")
            else:
                text = _cell(value, "signed" if key == "log_likelihood_ratio" else "num")
            cls = ' class="date"' if key in ("onset_from", "onset_to") else ""
            cells.append(f"<td{cls}>{text}</td>")
        cls = "" if d["informative"] else ' class="uninformative"'
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<table id="defect-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _lr_table(result: dict) -> str:
    rows = []
    for entry in result["before_after"]:
        if entry.get("note"):
            rows.append(f"<tr><td>{html.escape(entry['date'])}</td>"
                        f"<td colspan=\"4\">{html.escape(entry['note'])}</td></tr>")
        elif entry["log10_lr"] is None:
            rows.append(f"<tr><td>{html.escape(entry['date'])}</td><td>not calibrated</td><td>—</td><td>—</td>"
                        f"<td>{entry['raw_log10_lr']:+.2f}</td></tr>")
        else:
            lo, hi = entry["bounds"][1]
            rows.append(f"<tr><td>{html.escape(entry['date'])}</td><td>{entry['log10_lr']:+.2f}</td>"
                        f"<td>{10 ** entry['log10_lr']:.3g}</td><td>{lo:+.2f} to {hi:+.2f}</td>"
                        f"<td>{entry['raw_log10_lr']:+.2f}</td></tr>")
    return ('<table id="lr-table"><thead><tr><th scope="col">date D</th>'
            '<th scope="col">log10 LR (before D vs after D)</th>'
            '<th scope="col">LR</th><th scope="col">bounds of log10 LR</th><th scope="col">model\'s own log10 LR</th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _key_values(pairs) -> str:
    rows = "".join(f'<tr><th scope="row">{html.escape(str(k))}</th><td>{html.escape(v)}</td></tr>' for k, v in pairs)
    return f'<table class="config"><tbody>{rows}</tbody></table>'


def _versions_table(versions: dict) -> str:
    fit, now = versions.get("model_fit") or {}, versions.get("report") or {}
    names = list(dict.fromkeys([*fit, *now]))
    rows = "".join(f'<tr><th scope="row">{html.escape(name)}</th><td>{html.escape(str(fit.get(name, "—")))}</td>'
                   f'<td>{html.escape(str(now.get(name, "—")))}</td></tr>' for name in names)
    return ('<table class="config" id="versions-table"><thead><tr><th scope="col">software</th>'
            '<th scope="col">version when the model was fitted</th><th scope="col">version making this report</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _flat(prefix: str, value) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out.extend(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    if isinstance(value, list):
        return [(prefix, ", ".join("—" if v is None else str(v) for v in value))]
    return [(prefix, "—" if value is None else str(value))]


_STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 10.5pt; max-width: 8in; margin: 0.4in auto;
       color: #111; line-height: 1.4; }
h1 { font-size: 16pt; margin-bottom: 0.1in; }
h2 { font-size: 13pt; margin-top: 0.35in; border-bottom: 1px solid #999; page-break-after: avoid; }
section { page-break-inside: auto; }
figure { margin: 0.1in 0; page-break-inside: avoid; }
figcaption, p.caption { font-size: 9.5pt; color: #222; margin-top: 0.05in; }
img.figure { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 8.5pt; margin: 0.08in 0; }
th, td { border: 1px solid #bbb; padding: 2px 5px; text-align: right; vertical-align: top; }
th { background: #eee; }
table.config th { text-align: left; font-weight: normal; background: #f4f4f4; }
table.config td { text-align: left; word-break: break-all; }
td.date { white-space: nowrap; }
tr.uninformative td { color: #777; }
p.warning { border: 2px solid #b00; padding: 4px 8px; color: #900; }
#summary-table { font-size: 10pt; width: 100%; }
#summary-table th { width: 2.4in; font-weight: bold; }
#defect-table { font-size: 8pt; }
#defect-table th { vertical-align: bottom; }
"""


def render_html(content: dict) -> str:
    """The report page: the content's tables, its figures embedded, a caption under each.

    Parameters
    ----------
    content : dict
        :func:`build_report`.

    Returns
    -------
    str
        A complete HTML5 document with no external resource and no script.
    """
    result = content["dating"]
    captions = content["captions"]
    esc = html.escape
    crange = result["credible_range"]

    def section(key: str, body: str) -> str:
        return f'<section id="{key}"><h2>{esc(SECTIONS[key])}</h2>{body}</section>'

    def figure(fig, fmt: str, key: str, alt: str) -> str:
        if fig is None:
            return f'<p class="caption">{esc(captions[key])}</p>'
        return f"<figure>{_embed(fig, fmt, alt)}<figcaption>{esc(captions[key])}</figcaption></figure>"

    warnings = []
    if content["image"]["is_trusted_image"]:
        warnings.append("This file is one of the trusted images the model was fitted on (dated with "
                        "--allow-trusted, for checks only): its evidence is optimistic and must not be used as a "
                        "dating.")
    summary = [
        ("questioned image", result["image"]), ("SHA-256", content["image"]["sha256"] or "—"),
        ("device", result["device"]),
        ("trusted period", f"{result['period']['from']} to {result['period']['to']}"),
        ("most probable interval between onsets", f"{result['interval']['from']} to {result['interval']['to']} "
                                                  f"(probability {result['interval']['probability']:.3f})"),
        (f"{100 * crange['level']:.0f} % credible range", f"{crange['from']} to {crange['to']}"),
        ("exposure and ISO used", _fmt_exposure(result)),
    ]
    summary_html = ('<table class="config" id="summary-table"><tbody>'
                    + "".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in summary)
                    + "</tbody></table>" + "".join(f'<p class="warning">{esc(w)}</p>' for w in warnings)
                    + f'<p class="caption">{esc(captions["summary"])}</p>' + _lr_table(result))
    config = content["configuration"]
    run = content["run"]
    config_pairs = _flat("run", run) + _flat("model", config["model"]) + _flat("manifest", config["manifest"]) \
        + _flat("questioned", config["questioned"]) + _flat("report", config["report"])
    parts = [
        section("summary", summary_html),
        section("defects", f'<p class="caption">{esc(captions["defects"])}</p>' + _defect_table(content)),
        section("crops", figure(crops_figure(content), "png", "crops",
                                "Residual crops around the defects with the most evidence")),
        section("timelines", figure(timelines_figure(content), "svg", "timelines",
                                    "Residual at each defect in the trusted images against capture date")),
        section("posterior", figure(posterior_figure(content), "svg", "posterior",
                                    "Posterior probability density over capture date")),
        section("defect-map", figure(defect_map_figure(content), "svg", "defect-map",
                                     "Map of the sensor's defects coloured by onset date")),
        section("calibration", figure(calibration_figure(content), "svg", "calibration",
                                      "Tippett plot of held-out before/after likelihood ratios")),
        section("configuration", f'<p class="caption">{esc(captions["configuration"])}</p>' + _key_values(config_pairs)
                + _versions_table(config["versions"])),
    ]
    title = f"Dating evidence: {Path(result['image']).name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1>" + "".join(parts) + "</body></html>\n")


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _num(value)
    return value


def write_report(content: dict, folder: str | Path, stem: str) -> tuple[Path, Path]:
    """Write ``folder/stem.html`` and ``folder/stem.json`` atomically (the JSON first).

    Returns
    -------
    (Path, Path)
        The HTML and JSON paths.
    """
    folder = Path(folder)
    html_path, json_path = folder / f"{stem}.html", folder / f"{stem}.json"
    atomic_write_text(json_path, json.dumps(_json_ready(content), indent=1, allow_nan=False) + "\n")
    atomic_write_text(html_path, render_html(content))
    logger.info("evidence report of %s: %s", content["dating"]["image"], html_path)
    return html_path, json_path
