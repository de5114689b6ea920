"""Bias audit: is the age label predictable from things that are not age?

    python -m pipeline.audit [--manifest M] [--classes SPEC] [--out DIR] [--seed S]
                             [--checks content,camera,position,patch] [--no-cnn] [--runs 10]
                             [--test-size 0.1] [--cnn-test-size 0.3] [--patch 64] [--epochs 8]

With no manifest it audits the embedded synthetic default (generated once and cached). It
writes audit.json, audit.md and plots to --out and prints every verdict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.analysis.audit.run import CHECKS, AuditConfig, run_audit
from pipeline.data.errors import ImageReadError, ManifestError
from pipeline.data.manifest import load_manifest


def _checks(text: str) -> tuple[str, ...]:
    checks = tuple(c.strip().lower() for c in text.split(",") if c.strip())
    bad = [c for c in checks if c not in CHECKS]
    if bad or not checks:
        raise argparse.ArgumentTypeError(f"unknown check(s) {bad}; choose from {','.join(CHECKS)}")
    return checks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.audit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Checks: content (content-only baselines), camera (Balanced/Partial/Disjoint, "
                                       "device identification), position (left->right, five-crop positions), patch "
                                       "(random small crops, colour jitter, grayscale). Verdicts: 'no bias found', "
                                       "'bias suspected', 'bias found', decided by Bonferroni-adjusted intervals "
                                       "(see audit.md).")
    p.add_argument("--manifest", type=Path, help="CSV manifest of dated images (default: the synthetic dataset)")
    p.add_argument("--classes", help="class specification (shipped name such as ntif/plus, or a TOML path) "
                                     "deriving labels for rows without one")
    p.add_argument("--out", type=Path, default=Path("agetrace-out/audit"), help="output folder")
    p.add_argument("--seed", type=int, default=0, help="root seed (default 0; the content check uses the "
                                                      "splits ml_age makes with the same seed)")
    p.add_argument("--checks", type=_checks, default=CHECKS, help=f"comma-separated, from {','.join(CHECKS)} "
                                                                  "(default: all)")
    p.add_argument("--no-cnn", action="store_true", help="skip every CNN part (minutes -> seconds)")
    p.add_argument("--runs", type=int, default=10, help="the experiment's repeated splits for the content check")
    p.add_argument("--test-size", type=float, default=0.1, help="the experiment's test fraction per class")
    p.add_argument("--cnn-test-size", type=float, default=0.3, help="held-out fraction of each (device, class) "
                                                                     "for the CNN checks' balanced test set")
    p.add_argument("--srnet-preset", default="cpu", choices=["cpu", "paper"], help="SRNet preset the CNN "
                                                                                    "settings start from")
    p.add_argument("--patch", type=int, default=None, help="fixed crop side for the CNN checks (default: the "
                                                          "preset's, 64 for cpu)")
    p.add_argument("--random-patch", type=int, default=32, help="random crop side (default 32, Table V)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per network (default: the preset's, "
                                                           "8 for cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="training minibatch (default: the preset's, 8 "
                                                               "for cpu)")
    p.add_argument("--max-train", type=int, default=1000, help="cap on one network's training images")
    p.add_argument("--no-camera-extras", action="store_true", help="skip the Partial protocol and device "
                                                                    "identification (context only; 2 networks fewer)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores; 1 is often "
                                                           "faster on a machine busy with other jobs)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise level for 'bias suspected' (0.05)")
    p.add_argument("--alpha-found", type=float, default=0.01, help="family-wise level for 'bias found' (0.01)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _default_manifest(log, progress: bool) -> tuple[Path, dict]:
    from pipeline.data.simulator import default_dataset

    log("No --manifest: auditing the embedded synthetic aging camera (generated once, then cached).")
    dataset = default_dataset(progress=progress)
    return Path(dataset.manifest_path), {"synthetic": {"root": str(dataset.root),
                                                       "defects": str(dataset.defects_path)}}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = print
    try:
        from pipeline.analysis.audit.cnn import CnnSettings
        from pipeline.srnet.presets import preset_config

        preset = preset_config(args.srnet_preset)
        cnn = None if args.no_cnn else CnnSettings(preset=args.srnet_preset, patch=args.patch or preset.patch,
                                                   random_patch=args.random_patch,
                                                   epochs=args.epochs or preset.epochs,
                                                   batch_size=args.batch_size or preset.batch_size,
                                                   test_size=args.cnn_test_size,
                                                   max_train=args.max_train, threads=args.threads,
                                                   camera_extras=not args.no_camera_extras)
        config = AuditConfig(checks=args.checks, seed=args.seed, runs=args.runs, test_size=args.test_size, cnn=cnn,
                             alpha_suspect=args.alpha, alpha_found=args.alpha_found, strict=args.strict,
                             progress=not args.no_progress)
        if args.manifest is None:
            manifest_path, extra = _default_manifest(log, not args.no_progress)
        else:
            manifest_path, extra = args.manifest, {}
        manifest = load_manifest(manifest_path, class_spec=args.classes)
        log(f"Manifest {manifest.source} ({len(manifest.rows)} images, {len(manifest.devices)} devices, "
            f"sha256 {manifest.sha256[:12]}…); checks {','.join(config.checks)}"
            f"{' (no CNN)' if cnn is None else ''}; out {args.out}")
        result = run_audit(manifest, args.out, config, extra_record=extra, log=log)
    except (ManifestError, ImageReadError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(result["summary_text"])
    print(f"\nWrote {result['out']}/: " + ", ".join(result["files"]))
    print(f"Runtime {result['record']['seconds_total']:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
