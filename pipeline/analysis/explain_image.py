"""The evidence behind one image's estimated age, defect by defect, as an examiner reports it.

    python -m pipeline.ml_age explain IMAGE --run DIR [--device D] [--split-run R]

For the device's defects identified in run R of a finished ``ml_age`` output folder, prints each
defect's position, onset (the first trusted image showing it), the residual expected if it is
present (``g^κ(τ^κ·D + c)``, with its spread), the residual measured in IMAGE with its local noise level, and its
log-likelihood ratio "present" vs "absent"; then the log-likelihood and posterior of every age
class under the Fridrich–Goljan model of that run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from pipeline.analysis.calibration import calibrated_lr_from_table, posterior_from_lr
from pipeline.analysis.runfolder import RunFolder, RunRecord
from pipeline.data.errors import ImageReadError, ManifestError
from pipeline.data.manifest import file_sha256, load_manifest
from pipeline.features.extract import SparseTask, sparse_batch

__all__ = ["explain_image", "format_evidence"]


def explain_image(image: str | Path, run_dir: str | Path, *, device: str | None = None, split_run: int = 0) -> dict:
    """Collect the per-defect evidence and the class posterior for one image.

    Returns
    -------
    dict
        ``device``, ``run``, ``exposure_s``, ``defects`` (list of per-defect dicts),
        ``classes``, ``log_likelihood`` and ``posterior``.

    Raises
    ------
    FileNotFoundError
        If the run folder or its part for this device and run is missing.
    pipeline.analysis.config.ConfigMismatchError
        If the folder was written by another version of agetrace (another run-folder schema).
    ValueError
        If the device cannot be determined or the run has no Fridrich–Goljan model for it.
    ImageReadError
        If the image cannot be read.
    """
    run_dir, image = Path(run_dir), Path(image).resolve()
    folder = RunFolder(run_dir)
    record = folder.record
    exposure = iso = None
    try:
        manifest = load_manifest(record.manifest.path, check_files=False)
        row = next((r for r in manifest.rows if r.path == image), None)
    except (ManifestError, FileNotFoundError):
        manifest, row = None, None
    if row is not None:
        device = device or row.device
        exposure, iso = row.exposure_s, row.iso
    if device is None:
        raise ValueError(f"{image} is not in the run's manifest: say which device took it with --device")
    part = folder.part(device, split_run)
    model = part.fg_classifier()
    d = part.defects
    rows, cols, chans = (np.asarray(v, dtype=np.int64) for v in (d.rows, d.cols, d.channels))
    result = sparse_batch(SparseTask((str(image),), rows, cols, chans, part.frame))
    if result.failures:
        raise ImageReadError(image, result.failures[0][1])
    sources = {"exposure": "manifest" if exposure else None, "iso": "manifest" if iso else None}
    if not exposure and result.exposures.get(str(image)):
        exposure, sources["exposure"] = result.exposures[str(image)], "EXIF"
    if not iso and result.isos.get(str(image)):
        iso, sources["iso"] = result.isos[str(image)], "EXIF"
    w, s = result.residuals[0], result.sigma[0]
    tau = np.array([exposure if exposure else np.nan])
    isos = np.array([iso if iso else np.nan])
    side = {"sigma": s[None], "exposure": tau if model.uses_exposure_ else None, "iso": isos if model.uses_iso_ else None}
    ll = model.class_log_likelihood(w[None], **side)[0]
    posterior = np.exp(ll - ll.max())
    posterior /= posterior.sum()
    lam = model.defect_log_likelihood_ratios(w[None], **side)[0]
    med_tau, med_gain = np.median(model.condition_samples_, axis=0)
    tau_used = exposure if (exposure and model.uses_exposure_) else (med_tau if model.uses_exposure_ else 1.0)
    gain_used = (iso / model.base_iso_ if (iso and model.uses_iso_) else (med_gain if model.uses_iso_ else 1.0))
    mu = model.expected_residual(np.array([tau_used]), np.array([gain_used]))[0]
    s_eff = np.where(np.isfinite(s), s, model.sigma_)
    defects = []
    for i in range(rows.size):
        onset_class = int(model.onset_[i])
        defects.append({
            "row": int(rows[i]), "col": int(cols[i]), "channel": int(chans[i]),
            "onset_image": d.onset_path[i] if d.onset_path else None,
            "onset_class": model.classes_[onset_class].item() if onset_class < len(model.classes_) else None,
            "expected_residual": float(mu[i]), "spread": float(model.spread_[i]),
            "measured_residual": None if not np.isfinite(w[i]) else float(w[i]),
            "sigma": float(s_eff[i]), "log_likelihood_ratio": float(lam[i]),
        })
    calibrated = None
    table = part.calibration.get("fg")
    if table is not None:
        scores = ll - logsumexp(ll)
        llr = calibrated_lr_from_table(table, scores[None])[0]
        calibrated = {"log10_lr": llr.tolist(), "posterior": posterior_from_lr(llr[None], table["priors"])[0].tolist(),
                      "priors": table["priors"], "bounds": table["bounds"], "n_calibration": table["n_calibration"],
                      "held_out": _held_out_quality(run_dir, device)}
    return {"image": str(image), "device": device, "run": split_run, "exposure_s": exposure, "iso": iso,
            "sources": sources, "classes": model.classes_.tolist(), "log_likelihood": ll.tolist(),
            "posterior": posterior.tolist(), "calibrated": calibrated, "defects": defects,
            "splits": split_membership(run_dir, device, image, record),
            "class_ranges": class_ranges(manifest, device) if manifest is not None else {}}


def split_membership(run_dir: Path, device: str, image: Path, record: RunRecord | None = None) -> dict:
    """The split runs of `device` in which `image` is a training image and those in which it is a
    test image, found by path or, failing that, by content (the same file bytes under another name).

    Returns
    -------
    dict
        ``train`` and ``test``: sorted lists of run numbers; ``by``: ``"path"``, ``"content"``
        or None (the image is in no split of the device).
    """
    loaded = RunFolder(run_dir).splits(device)
    found = {"train": [], "test": [], "by": None}
    for split in loaded:
        for subset, paths in (("train", split.train_paths), ("test", split.test_paths)):
            if any(Path(path).resolve() == image for path in paths):
                found[subset].append(split.run)
    if found["train"] or found["test"]:
        found["by"] = "path"
        return found
    try:
        digest = file_sha256(image)
    except OSError:
        return found
    cache = ((record.feature_cache if record is not None else None) or {}).get("folder")
    if cache and Path(cache).is_dir() and not any((Path(cache) / "screen" / digest[:2]).glob(f"{digest}-*")):
        return found  # the run never saw these bytes: no need to hash every image of its splits
    digests: dict[str, str | None] = {}
    for split in loaded:
        for subset, paths in (("train", split.train_paths), ("test", split.test_paths)):
            for path in paths:
                if path not in digests:
                    try:
                        digests[path] = file_sha256(path)
                    except OSError:
                        digests[path] = None
                if digests[path] == digest:
                    found[subset].append(split.run)
                    break
    if found["train"] or found["test"]:
        found["by"] = "content"
    return found


def class_ranges(manifest, device: str) -> dict:
    """Each class's capture-date (or slot) range and image count among the device's manifest rows."""
    ranges = {}
    for label in sorted({r.label for r in manifest.rows if r.device == device}):
        rows = [r for r in manifest.rows if r.device == device and r.label == label]
        times = sorted(r.captured_at for r in rows if r.captured_at is not None)
        slots = sorted(r.timeslot for r in rows if r.timeslot is not None)
        if times:
            span = f"{times[0]:%Y-%m-%d} to {times[-1]:%Y-%m-%d}"
        elif slots:
            span = f"slots {slots[0]} to {slots[-1]}"
        else:
            span = "no capture times"
        ranges[str(label)] = f"{span} ({len(rows)} images)"
    return ranges


def _held_out_quality(run_dir: Path, device: str) -> dict | None:
    """The run's pooled test-set calibration figures of Fridrich–Goljan on this device."""
    path = run_dir / "calibration.csv"
    if not path.exists():
        return None
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["device"] == device and row["method"] == "fg":
                return row
    return None


def format_evidence(ev: dict) -> str:
    """The evidence as a plain-text report."""
    unknown = "unknown: the likelihood is averaged over the trusted images' conditions"
    src = ev.get("sources", {})
    lines = []
    member = ev.get("splits") or {}
    if ev["run"] in member.get("train", []):
        held_out = [r for r in member.get("test", [])]
        how = "this file" if member.get("by") == "path" else "a file with the same bytes"
        lines += [f"WARNING: {how} is one of the TRAINING images of split run {ev['run']}: the defects and the model "
                  "below were fitted on it, so its posterior and likelihood ratios are optimistic and are not "
                  "evidence about it.",
                  (f"         It is held out in split run(s) {', '.join(map(str, held_out))}: use --split-run "
                   f"{held_out[0]}." if held_out else "         It is held out in no split run of this folder."),
                  ""]
    elif ev["run"] in member.get("test", []):
        lines += [f"(This image is one of the held-out test images of split run {ev['run']}.)", ""]
    lines += [f"Image   {ev['image']}", f"Device  {ev['device']} (defects and model of split run {ev['run']})",
             f"Exposure time: {str(ev['exposure_s']) + ' s (from ' + src.get('exposure', '?') + ')' if ev['exposure_s'] else unknown}",
             f"ISO: {str(ev['iso']) + ' (from ' + src.get('iso', '?') + ')' if ev.get('iso') else unknown}",
             "",
             f"{'row':>6} {'col':>6} {'ch':>3} {'onset class':>11} {'expected':>9} {'spread':>7} {'measured':>9} "
             f"{'sigma':>7} {'LLR':>8}  first trusted image showing it"]
    for d in ev["defects"]:
        measured = "clipped" if d["measured_residual"] is None else f"{d['measured_residual']:9.2f}"
        onset = "never" if d["onset_class"] is None else str(d["onset_class"])
        lines.append(f"{d['row']:6d} {d['col']:6d} {d['channel']:3d} {onset:>11} {d['expected_residual']:9.2f} "
                     f"{d['spread']:7.2f} {measured:>9} {d['sigma']:7.2f} {d['log_likelihood_ratio']:8.2f}  "
                     f"{d['onset_image'] or ''}")
    lines.append("")
    lines.append("Age class   log-likelihood   posterior   dates of the class's images in the manifest")
    best = int(np.argmax(ev["posterior"]))
    ranges = ev.get("class_ranges", {})
    for i, (c, ll, p) in enumerate(zip(ev["classes"], ev["log_likelihood"], ev["posterior"])):
        lines.append(f"{c!s:>9}   {ll:14.2f}   {p:9.4f}   {ranges.get(str(c), '')}"
                     f"{'   <- estimate' if i == best else ''}")
    cal = ev.get("calibrated")
    if cal is not None:
        lines.append("")
        lines.append(f"Calibrated evidence (logistic calibration on {cal['n_calibration']} cross-fitted trusted "
                     f"images, bounded by ELUB; priors = trusted class shares {', '.join(f'{p:.2f}' for p in cal['priors'])}):")
        for c, lr, p, (lo, hi) in zip(ev["classes"], cal["log10_lr"], cal["posterior"], cal["bounds"]):
            lines.append(f"  class {c!s:>4}: log10 LR {lr:+6.2f} (LR {10 ** lr:.3g}; bounds {lo:+.2f} .. {hi:+.2f}), "
                         f"posterior {p:.4f}")
        q = cal.get("held_out")
        if q:
            lines.append(f"  How well this calibration held on the run's test images ({q['device']}, {q['n']} images "
                         f"over {q['runs']} runs): Cllr {float(q['cllr']):.3f} bits (1 = no information), Cllr_min "
                         f"{float(q['cllr_min']):.3f}, ECE {100 * float(q['ece']):.1f} %, wrong with p >= 0.99: "
                         f"{100 * float(q['confident_wrong']):.1f} %")
        else:
            lines.append("  (the run's calibration.csv is missing: the run did not finish)")
    lines.append("")
    lines.append("A defect counts for the images taken after its onset (located in time between two trusted "
                 "images); a present defect that is missing costs at most -log(masking probability), so no single "
                 "defect decides. Defects with onset 'never' were not confirmed in the trusted images and carry "
                 "no weight. The posterior above is the model's own (uniform prior, uncalibrated).")
    return "\n".join(lines)

