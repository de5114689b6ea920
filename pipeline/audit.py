"""Bias audit: is the age label predictable from things that are not age?

    python -m pipeline.audit [--manifest M] [--classes SPEC] [--out DIR] [--seed S]
                             [--checks content,camera,position,patch,location,binary_mask] [--no-cnn] [--runs 10]
                             [--test-size 0.1] [--cnn-test-size 0.3] [--patch 64] [--epochs 8]
                             [--methods srnet|srnet-res|srnet-cs] [-q | -v]

With no manifest it audits the embedded synthetic default (generated once and cached). It
writes audit.json, audit.md and plots to --out and prints every verdict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.analysis.audit.cnn import CnnSettings
from pipeline.analysis.audit.run import CHECKS, AuditConfig, run_audit
from pipeline.cli import (add_dataset_options, add_run_options, add_split_options, comma_list, default_manifest,
                          new_parser, run_command)
from pipeline.data.errors import ImageReadError, ManifestError
from pipeline.data.manifest import load_manifest
from pipeline.logs import get_logger
from pipeline.srnet.presets import SRNET_VARIANTS, preset_config

logger = get_logger(__name__)

#: exit statuses of the command
EXIT_OK, EXIT_ERROR = 0, 2

#: the errors that are the user's to fix
ERRORS = (ManifestError, ImageReadError, ValueError, FileNotFoundError)

EPILOG = f"""\
Checks: content (content-only baselines), camera (Balanced/Partial/Disjoint, device
identification), position (left->right, five-crop positions), patch (random small crops, colour
jitter, grayscale), location (the random-crop model on an 8x8 grid of positions: heat maps
per device, permutation test of position dependence), binary_mask (a network on local-mean
binary masks: scene structure alone). Verdicts: 'no bias found', 'bias suspected', 'bias found', decided by
Bonferroni-adjusted intervals (see audit.md).

Exit status: {EXIT_OK} done; {EXIT_ERROR} error (one line on stderr naming the problem).
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = new_parser("python -m pipeline.audit", __doc__.split("\n\n")[0], EPILOG)
    add_dataset_options(p)
    add_split_options(p, runs_help="the experiment's repeated splits for the content check",
                      test_size_help="the experiment's test fraction per class",
                      seed_help="root seed (the content check uses the splits ml_age makes with the same seed)")
    p.add_argument("--out", type=Path, default=Path("agetrace-out/audit"), help="output folder")
    p.add_argument("--checks", type=comma_list(CHECKS, "check"), default=CHECKS,
                   help=f"comma-separated, from {','.join(CHECKS)}")
    cnn = p.add_argument_group("CNN checks")
    cnn.add_argument("--no-cnn", action="store_true", help="skip every CNN part (minutes -> seconds)")
    cnn.add_argument("--methods", type=_one_learned_method, default="srnet",
                     help=f"the learned model the CNN checks train and audit, one of {', '.join(SRNET_VARIANTS)} "
                          "(SRNet, on the median residual, behind a constrained layer); one per audit: audit "
                          "another into its own --out")
    cnn.add_argument("--cnn-test-size", type=float, default=0.3, help="held-out fraction of each (device, class) "
                                                                       "for the CNN checks' balanced test set")
    cnn.add_argument("--srnet-preset", default="cpu", choices=["cpu", "paper"], help="SRNet preset the CNN "
                                                                                      "settings start from")
    cnn.add_argument("--patch", type=int, default=None, help="fixed crop side for the CNN checks (default: the "
                                                            "preset's, 64 for cpu)")
    cnn.add_argument("--random-patch", type=int, default=32, help="random crop side (Table V)")
    cnn.add_argument("--epochs", type=int, default=None, help="training epochs per network (default: the preset's, "
                                                             "8 for cpu)")
    cnn.add_argument("--batch-size", type=int, default=None, help="training minibatch (default: the preset's, 8 "
                                                                 "for cpu)")
    cnn.add_argument("--max-train", type=int, default=1000, help="cap on one network's training images")
    cnn.add_argument("--no-camera-extras", action="store_true", help="skip the Partial protocol (context only; "
                                                                      "one network fewer)")
    cnn.add_argument("--device-id", action="store_true", help="also train a device-identification network and test "
                                                             "it left -> right (the paper's Table VI; context only; "
                                                             "one network more)")
    cnn.add_argument("--resnet", action="store_true", help="camera check: also train Balanced and Disjoint with a "
                                                          "randomly initialised ResNet-34 (second architecture "
                                                          "family; 2 networks more, minutes)")
    cnn.add_argument("--adversarial-images", type=int, default=24, help="balanced test crops the adversarial "
                                                                      "check perturbs per model")
    cnn.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores; 1 is often "
                                                             "faster on a machine busy with other jobs)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise level for 'bias suspected'")
    p.add_argument("--alpha-found", type=float, default=0.01, help="family-wise level for 'bias found'")
    add_run_options(p)
    return p


def _one_learned_method(text: str) -> str:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if len(methods) != 1 or methods[0] not in SRNET_VARIANTS:
        hint = (" (defect-cnn needs a run's identified defects: audit it with ml_age and cross_device)"
                if "defect-cnn" in methods else "")
        raise argparse.ArgumentTypeError(
            f"give one learned method from {', '.join(SRNET_VARIANTS)}, got {text!r}{hint}; an audit audits one "
            "model: run it again into another --out for the next")
    return methods[0]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 bad input)."""
    return run_command(_run, build_parser().parse_args(argv), ERRORS, status=EXIT_ERROR)


def _run(args: argparse.Namespace) -> int:
    preset = preset_config(args.srnet_preset)
    cnn = None if args.no_cnn else CnnSettings(preset=args.srnet_preset, patch=args.patch or preset.patch,
                                               random_patch=args.random_patch,
                                               epochs=args.epochs or preset.epochs,
                                               batch_size=args.batch_size or preset.batch_size,
                                               test_size=args.cnn_test_size,
                                               max_train=args.max_train, threads=args.threads,
                                               camera_extras=not args.no_camera_extras, device_id=args.device_id,
                                               method=args.methods,
                                               resnet=args.resnet, adversarial_images=args.adversarial_images)
    config = AuditConfig(checks=args.checks, seed=args.seed, runs=args.runs, test_size=args.test_size, cnn=cnn,
                         alpha_suspect=args.alpha, alpha_found=args.alpha_found, strict=args.strict,
                         progress=not args.no_progress)
    if args.manifest is None:
        manifest_path, extra = default_manifest(progress=not args.no_progress, action="auditing")
    else:
        manifest_path, extra = args.manifest, {}
    manifest = load_manifest(manifest_path, class_spec=args.classes)
    logger.info(f"Manifest {manifest.source} ({len(manifest.rows)} images, {len(manifest.devices)} devices, "
                f"sha256 {manifest.sha256[:12]}…); checks {','.join(config.checks)}"
                f"{' (no CNN)' if cnn is None else ''}; out {args.out}")
    result = run_audit(manifest, args.out, config, extra_record=extra)
    print()
    print(result["summary_text"])
    print(f"\nWrote {result['out']}/: " + ", ".join(result["files"]))
    print(f"Runtime {result['record']['seconds_total']:.0f} s.")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
