"""Date questioned images in calendar time from a camera's trusted, dated images.

    python -m pipeline.date QUESTIONED... --trusted MANIFEST [--device ID] [--save-model FILE]
    python -m pipeline.date QUESTIONED... --model FILE
        [--before-after DATE]... [--level 0.95] [--json FILE] [--report DIR] [--allow-trusted] [-q | -v]

Fits the defects and the Fridrich–Goljan model on **all** trusted images of the device (or loads
a saved model), and for each questioned image prints the most probable interval between
consecutive defect onsets, a credible date range, and the calibrated likelihood ratio of "taken
before D" against "taken after D" for each interval edge and each ``--before-after`` date, with
the defects that carry the evidence. A questioned file that is one of the trusted images (same
SHA-256) is refused; one of another frame is excluded with the reason. The prior over capture
time is uniform over the trusted period (first to last trusted image): an image taken outside it
is placed at the nearer end, so the trusted images should span the period in question.

With --report DIR, each dated image also gets an evidence report: DIR/<image stem>.html, a
self-contained page (figures embedded, nothing fetched, no script) with the defect table, crops of
the defects in the questioned and the trusted images, the defects' timelines, the posterior over
capture date, the sensor's defect map, the calibration check and the exact configuration, each
captioned for an examiner; and DIR/<image stem>.json with every number behind it. Two questioned
images with the same stem get -2, -3, ... in the order given.

The saved model is two files: FILE (JSON) and its companion with the suffix .npz beside it (the
trusted images' residuals at the defects, the mean crops, the calibration pairs), whose SHA-256 the
JSON records; keep them together.

Exit status: 0 every questioned image dated; 1 some refused or excluded (each says why);
2 error (manifest, model, too few trusted images, no dated defects, a report that could not be
written).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from pipeline.analysis.config import ExperimentConfig
from pipeline.cli import add_run_options, new_parser, run_command
from pipeline.data.atomic import atomic_write_text
from pipeline.data.errors import ManifestError
from pipeline.data.manifest import load_manifest, parse_capture_time
from pipeline.dating.model import DatingEvidence, DeviceModel, ModelFormatError
from pipeline.dating.report import build_report, report_stems, run_record, write_report

EXIT_OK, EXIT_SOME_NOT_DATED, EXIT_ERROR = 0, 1, 2

#: the errors that are the user's to fix
ERRORS = (ManifestError, ModelFormatError, ValueError, OSError)


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("python -m pipeline.date", __doc__.split("\n\n")[0], __doc__.split("\n\n", 1)[1])
    p.add_argument("questioned", nargs="+", type=Path, help="image(s) to date")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--trusted", type=Path, help="manifest of the trusted, dated images")
    source.add_argument("--model", type=Path, help="a device model saved with --save-model")
    p.add_argument("--device", help="device id (default: the manifest's only device)")
    p.add_argument("--save-model", type=Path,
                   help="write the fitted device model here (JSON, with its .npz companion beside it)")
    p.add_argument("--before-after", action="append", default=[], metavar="DATE",
                   help="a date D for the likelihood ratio 'before D' vs 'after D' (repeatable)")
    p.add_argument("--level", type=float, default=0.95, help="credible level of the date range")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds for the calibration")
    p.add_argument("--json", type=Path, help="also write every result as JSON to this file")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="write an evidence report (HTML + JSON) of each dated image into this folder")
    p.add_argument("--allow-trusted", action="store_true", help="date trusted images too (for checks only)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    add_run_options(p, strict=False)
    return p


def _model(args) -> DeviceModel:
    if args.model is not None:
        return DeviceModel.load(args.model, device=args.device)
    manifest = load_manifest(args.trusted, needs_labels=False)
    device = args.device
    if device is None:
        if len(manifest.devices) != 1:
            raise ValueError(f"{args.trusted} holds {len(manifest.devices)} devices "
                             f"({', '.join(manifest.devices)}): say which one took the questioned images with --device")
        device = manifest.devices[0]
    cfg = ExperimentConfig(workers=args.workers, progress=not args.no_progress)
    model = DeviceModel.fit(manifest, device, cfg, folds=args.folds, level=args.level)
    if args.save_model is not None:
        model.save(args.save_model)
    return model


def format_dating(result: dict) -> str:
    """One questioned image's dating as plain text."""
    if result["status"] != "dated":
        return f"{result['image']}: not dated ({result['status']}): {result['reason']}"
    unknown = "unknown (averaged over the trusted images' conditions)"
    src = result["sources"]
    lines = [f"{result['image']}  (device {result['device']}; trusted period {result['period']['from']} to "
             f"{result['period']['to']}, the only time the model can date within)",
             f"  exposure: {str(result['exposure_s']) + ' s (' + src['exposure'] + ')' if result['exposure_s'] else unknown}; "
             f"ISO: {str(result['iso']) + ' (' + src['iso'] + ')' if result['iso'] else unknown}",
             f"  most probable interval between onsets: {result['interval']['from']} to {result['interval']['to']} "
             f"(posterior {result['interval']['probability']:.3f})",
             f"  {100 * result['credible_range']['level']:.0f} % range: {result['credible_range']['from']} "
             f"to {result['credible_range']['to']}"]
    held = result.get("held_out")
    if held:
        used = result["credible_range"]["posterior_level"]
        lines.append(f"  (the posterior's {100 * used:.2f} % range: on the trusted images, held out in turn, the "
                     f"posterior's own {100 * result['credible_range']['level']:.0f} % ranges held "
                     f"{100 * held['coverage_nominal']:.1f} % of true dates (n = {held['n']}), so the range is widened "
                     f"until {100 * result['credible_range']['level']:.0f} % did; calibrated LR Cllr {held['cllr']:.3f} bits)")
    else:
        lines.append("  (the posterior's own range: too few trusted images to check it on held-out ones)")
    lines.append("  likelihood ratio 'taken before D' vs 'taken after D':")
    for entry in result["before_after"]:
        if entry.get("note"):
            lines.append(f"    D = {entry['date']}: {entry['note']}")
        elif entry["log10_lr"] is None:
            lines.append(f"    D = {entry['date']}: not calibrated (too few trusted images); model's own "
                         f"log10 LR {entry['raw_log10_lr']:+.2f}")
        else:
            lo, hi = entry["bounds"][1]
            lines.append(f"    D = {entry['date']}: log10 LR {entry['log10_lr']:+.2f} (LR {10 ** entry['log10_lr']:.3g}; "
                         f"bounded to {lo:+.2f} .. {hi:+.2f}); model's own {entry['raw_log10_lr']:+.2f}")
    lines.append("  defects carrying the evidence (largest |log-likelihood ratio| first):")
    for c in result["contributions"][:10]:
        measured = "clipped" if c["measured"] is None else f"{c['measured']:.1f}"
        lines.append(f"    ({c['row']}, {c['col']}, ch {c['channel']}) onset (99 % range) {c['onset']}: "
                     f"measured {measured}, LLR present vs absent {c['log_likelihood_ratio']:+.2f}")
    return "\n".join(lines)


def _run_record(args, argv) -> dict:
    command = "python -m pipeline.date " + shlex.join(str(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.model is not None:
        return run_record(command, model_file=args.model, source=f"loaded from {args.model}")
    source = f"fitted in this run on {args.trusted}" + (f", saved to {args.save_model}" if args.save_model else "")
    return run_record(command, model_file=args.save_model, source=source)


def _write_report(model: DeviceModel, dating: DatingEvidence, folder: Path, stem: str, run: dict, dates) -> bool:
    try:
        html_path, _ = write_report(build_report(model, dating, run=run, before_after=dates), folder, stem)
    except (OSError, ValueError) as exc:
        print(f"error: no evidence report for {dating.result['image']}: {exc}", file=sys.stderr)
        return False
    print(f"  evidence report: {html_path}")
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the end of ``--help``)."""
    return run_command(lambda args: _date(args, argv), build_parser().parse_args(argv), ERRORS, status=EXIT_ERROR)


def _date(args: argparse.Namespace, argv: list[str] | None) -> int:
    dates = [parse_capture_time(text) for text in args.before_after]
    model = _model(args)
    run = _run_record(args, argv) if args.report is not None else None
    if args.report is not None:
        stems = report_stems(args.questioned)
    results, reports_ok = [], True
    for n, path in enumerate(args.questioned):
        try:
            dating = model.evidence(path, before_after=dates, level=args.level, allow_trusted=args.allow_trusted)
        except OSError as exc:
            dating = DatingEvidence({"image": str(path), "status": "excluded",
                                     "reason": f"cannot read it ({exc.strerror or exc})"})
        results.append(dating.result)
        print(format_dating(dating.result))
        if args.report is not None and dating.result["status"] == "dated":
            reports_ok &= _write_report(model, dating, args.report, stems[n], run, dates)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"device": model.device, "provenance": model.provenance,
                                                 "results": results}, indent=1))
    if not reports_ok:
        return EXIT_ERROR
    return EXIT_OK if all(r["status"] == "dated" for r in results) else EXIT_SOME_NOT_DATED


if __name__ == "__main__":
    sys.exit(main())
