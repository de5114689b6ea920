"""Where does SRNet look: at sensor defects or at image content?

    python -m pipeline.explain [--run DIR] [--methods cam,gradcam,gradcam++,scorecam] [--out DIR]

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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.analysis.saliency import ALL_METHODS, DEFAULT_METHODS, SaliencyConfig


def _methods(text: str) -> tuple[str, ...]:
    methods = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad or not methods:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad}; choose from {','.join(ALL_METHODS)}")
    return methods


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m pipeline.explain``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.explain", description=__doc__.split("\n\n")[2],
                                     epilog=__doc__.split("\n\n")[3],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="ml_age output folder with SRNet checkpoints (default: see below)")
    parser.add_argument("--methods", type=_methods, default=DEFAULT_METHODS,
                        help=f"comma-separated, from {','.join(ALL_METHODS)} (default {','.join(DEFAULT_METHODS)}; "
                             "scorecam costs 512 forward passes per crop)")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN/saliency)")
    parser.add_argument("--layer", default="auto",
                        help="SRNet layer Grad-CAM, Grad-CAM++ and Score-CAM explain: layer12 (the map before global "
                             "average pooling, 1 cell per 16 px), layer10, layer9 (1 per 4 px), ... or auto (default): "
                             "layer12 when its map has >= 8x8 cells (patch >= 113 px), else layer9; CAM always "
                             "uses layer12")
    parser.add_argument("--neighbourhood", type=int, default=2,
                        help="defect neighbourhood radius in pixels (Chebyshev; default 2, a 5x5 box)")
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--sheet-images", type=int, default=4, help="test images per device in the contact sheet")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from pipeline.analysis.saliency import default_run, explain_run

    args = build_parser().parse_args(argv)
    try:
        config = SaliencyConfig(methods=args.methods, neighbourhood=args.neighbourhood, device=args.device,
                                sheet_images=args.sheet_images, layer=args.layer, progress=not args.no_progress)
        run = args.run if args.run is not None else default_run(progress=not args.no_progress)
        report = explain_run(run, args.out, config)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(report["verdict_text"])
    print("Wrote:")
    for path in report["files"]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
