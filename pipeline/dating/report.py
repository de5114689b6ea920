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
and a :class:`~pipeline.dating.model.DatingEvidence`; one function per figure
(:mod:`pipeline.dating.figures`) draws from those numbers only (so the JSON holds what the figures
show); :func:`~pipeline.dating.report_html.render_html` lays out the page
(:mod:`pipeline.dating.report_html`) and :func:`write_report` writes both files atomically.

Times in the JSON are days since 1970-01-01 (the camera's clock), with calendar dates beside them;
residuals are in the image's own pixel-value units (DN).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from pipeline.analysis.calibration import calibrated_lr_from_table
from pipeline.analysis.metrics import cllr, cllr_min
from pipeline.analysis.provenance import package_versions, utc_now
from pipeline.data.atomic import atomic_write_text
from pipeline.data.manifest import file_sha256
from pipeline.dating.crops import measure_crops
from pipeline.dating.model import FORMAT, FORMAT_VERSION, DatingEvidence, DeviceModel, companion_path, date_of
from pipeline.dating.report_html import exposure_text, render_html
from pipeline.logs import get_logger

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "TOP_DEFECTS", "build_report", "write_report", "report_stems",
           "run_record"]

logger = get_logger(__name__)

REPORT_FORMAT = "agetrace-dating-report"
REPORT_VERSION = 1
#: defects shown in the crop and timeline figures (those with the largest |LLR|)
TOP_DEFECTS = 12
_CHANNEL_NAMES = {0: "R", 1: "G", 2: "B"}



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
                    f"{exposure_text(result)}. A likelihood ratio (LR) above 1 supports 'taken before D', below 1 "
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
