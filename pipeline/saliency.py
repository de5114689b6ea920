"""Where does SRNet look: at sensor defects or at image content?

    python -m pipeline.saliency [--run DIR] [--methods cam,gradcam,gradcam++,scorecam] [--out DIR] [-q | -v]

For every test image of a finished ``python -m pipeline.ml_age --methods ...,srnet`` run, the
saliency maps of each SRNet crop network (CAM, Grad-CAM, Grad-CAM++, Score-CAM), contact sheets
of overlays per device, and three figures per device and method: consistency of the maps across
runs and across images, correlation with local image structure (content), and the share of
saliency on the defect positions against their share of the area (defects); summarised in
saliency.json and a short verdict in saliency.md.

With no --run: explains agetrace-out/ml_age if it holds a finished run with SRNet; otherwise
runs (or resumes, or reuses when complete) `python -m pipeline.ml_age --methods srnet --out
agetrace-out/ml_age_srnet` on the embedded synthetic dataset -- SRNet preset 'cpu', about
7 minutes on 2 cores -- and explains that.  Output goes to DIR/saliency unless --out is given.

Exit status: 0 done; 2 error (one line on stderr naming the problem).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.analysis.provenance import read_json
from pipeline.analysis.runfolder import RunFolder
from pipeline.analysis.saliency import ALL_METHODS, DEFAULT_METHODS, SaliencyConfig, explain_run
from pipeline.analysis.saliency.explain import EXPLAINED_MODELS
from pipeline.cli import add_run_options, comma_list, new_parser, run_command, verbosity
from pipeline.logs import get_logger
from pipeline.ml_age import main as ml_age_main

__all__ = ["DEFAULT_RUN", "MAIN_RUN", "build_parser", "default_run", "has_srnet", "main"]

logger = get_logger(__name__)

#: exit statuses of the command
EXIT_OK, EXIT_ERROR = 0, 2

#: the errors that are the user's to fix
ERRORS = (FileNotFoundError, ValueError, RuntimeError)

#: the run explained with no --run when the main command's output holds no SRNet run
DEFAULT_RUN = Path("agetrace-out/ml_age_srnet")
#: the main command's output folder, explained with no --run when it holds a finished SRNet run
MAIN_RUN = Path("agetrace-out/ml_age")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m pipeline.saliency``."""
    paragraphs = __doc__.split("\n\n")
    parser = new_parser("python -m pipeline.saliency", paragraphs[2], "\n\n".join(paragraphs[3:]))
    parser.add_argument("--run", type=Path, help="ml_age output folder with SRNet checkpoints (default: see below)")
    parser.add_argument("--methods", type=comma_list(ALL_METHODS, "method", unique=True), default=DEFAULT_METHODS,
                        help=f"comma-separated, from {','.join(ALL_METHODS)} (scorecam costs 512 forward passes "
                             "per crop)")
    parser.add_argument("--model", choices=list(EXPLAINED_MODELS), default="srnet",
                        help="which of the run's learned methods to explain (srnet-res: on the median residual; "
                             "srnet-cs: behind the constrained layer; defect-cnn: which defects carry each decision "
                             "and where its patch network looks, with --methods gradcam,gradcam++)")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN/saliency)")
    parser.add_argument("--layer", default="auto",
                        help="SRNet layer Grad-CAM, Grad-CAM++ and Score-CAM explain: layer12 (the map before global "
                             "average pooling, 1 cell per 16 px), layer10, layer9 (1 per 4 px), ... or auto: "
                             "layer12 when its map has >= 8x8 cells (patch >= 113 px), else layer9; CAM always "
                             "uses layer12")
    parser.add_argument("--neighbourhood", type=int, default=2,
                        help="defect neighbourhood radius in pixels (Chebyshev; 2 is a 5x5 box)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--sheet-images", type=int, default=4, help="test images per device in the contact sheet")
    parser.add_argument("--adversarial-crops", type=int, default=16, metavar="N",
                        help="held-out crops per device perturbed until their class flips, to see whether the "
                             "change concentrates on content edges or at the defects (0: skip; default 16)")
    add_run_options(parser, strict=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    return run_command(_run, build_parser().parse_args(argv), ERRORS, status=EXIT_ERROR)


def _run(args: argparse.Namespace) -> int:
    config = SaliencyConfig(methods=args.methods, neighbourhood=args.neighbourhood, device=args.device,
                            sheet_images=args.sheet_images, layer=args.layer, progress=not args.no_progress,
                            model=args.model, adversarial_crops=args.adversarial_crops)
    run = args.run if args.run is not None else default_run(progress=not args.no_progress,
                                                            verbosity=verbosity(args))
    report = explain_run(run, args.out, config)
    print()
    print(report["verdict_text"])
    print("Wrote:")
    for path in report["files"]:
        print(f"  {path}")
    return EXIT_OK


def has_srnet(run_dir: Path) -> bool:
    """Whether ``run_dir`` is an ml_age output folder with at least one finished SRNet run."""
    if not (run_dir / "config.json").is_file():
        return False
    try:
        record = read_json(run_dir / "config.json")
    except (OSError, ValueError):
        return False
    if "srnet" not in record or record.get("status") != "complete":
        return False
    return any((run_dir / "parts" / device).is_dir() and any(
        "srnet" in read_json(part).get("methods", []) for part in (run_dir / "parts" / device).glob("run_*.json"))
        for device in RunFolder(run_dir).srnet_devices())


def default_run(*, progress: bool = True, verbosity: int = 0) -> Path:
    """The run folder to explain when none is given.

    Parameters
    ----------
    progress : bool
        Show progress bars if SRNet has to be trained.
    verbosity : int
        ``-q`` (-1) or the number of ``-v``, passed on to ``ml_age`` if it runs.

    Returns
    -------
    Path
        :data:`MAIN_RUN` if it already holds a finished run with SRNet; otherwise
        :data:`DEFAULT_RUN`, made (or resumed; a complete one is reused as it is) by running
        ``ml_age --methods srnet`` with its defaults (the embedded synthetic dataset, 10 splits,
        SRNet ``cpu`` preset, which trains on the first split only).

    Raises
    ------
    RuntimeError
        When that ``ml_age`` run fails (it has said why on standard error).
    """
    if has_srnet(MAIN_RUN):
        logger.info(f"No --run: explaining {MAIN_RUN}, which holds a finished run with SRNet.")
        return MAIN_RUN
    if has_srnet(DEFAULT_RUN):
        logger.info(f"No --run: reusing the finished SRNet run in {DEFAULT_RUN}.")
        return DEFAULT_RUN
    logger.info(f"No --run: training SRNet (preset 'cpu') on the embedded synthetic dataset into {DEFAULT_RUN} with "
                f"`python -m pipeline.ml_age --methods srnet --out {DEFAULT_RUN}` (about 7 minutes on 2 cores; "
                "resumed if interrupted).")
    argv = ["--methods", "srnet", "--out", str(DEFAULT_RUN)] + ([] if progress else ["--no-progress"])
    status = ml_age_main(argv + (["-q"] if verbosity < 0 else ["-v"] * verbosity))
    if status != 0:
        raise RuntimeError(f"`python -m pipeline.ml_age {' '.join(argv)}` failed (exit status {status}); see above")
    return DEFAULT_RUN


if __name__ == "__main__":
    sys.exit(main())
