"""The audit's acceptance scenarios on the synthetic aging camera, with the CNN: a reproducible table.

    python -m pipeline.audit_scenarios [--scenarios no_bias,scene_bias,processing_bias,default]
                                       [--seeds 5] [--size 1024x768] [--threads 1] [--out DIR] [-q | -v]

For each scenario a synthetic dataset is generated (or taken from the cache) with the
override below, and the full audit runs on it with the given CNN settings; ``no_bias`` runs
``--seeds`` times, changing both the dataset's seed and the audit's. Printed: every check's
verdict and stress-test verdict, and every judged figure with its screening interval; written:
``scenarios.json`` and one audit folder per run under ``--out``.

=================  ======================================================
scenario           dataset overrides
=================  ======================================================
no_bias            ``scenes.scene_bias = 0``, ``processing.processing_bias = 0``
scene_bias         ``scenes.scene_bias = 1``
processing_bias    ``processing.processing_bias = 1``, ``scenes.scene_bias = 0``
default            none (the shipped default: ``scene_bias = 0.5``)
=================  ======================================================

With ``--size`` smaller than the default 1024 x 768 the defect rate is scaled by the area, so
that a crop holds as many defects as in the default (a denser sensor would give the CNN a
genuine, position-free age cue: the number of hot pixels).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.analysis.audit.cnn import CnnSettings
from pipeline.analysis.audit.run import AuditConfig, run_audit
from pipeline.analysis.provenance import package_versions, utc_now, write_json
from pipeline.cli import comma_list, new_parser, run_command
from pipeline.data.manifest import load_manifest
from pipeline.sim import default_dataset

SCENARIOS = {
    "no_bias": {"scenes.scene_bias": 0.0, "processing.processing_bias": 0.0},
    "scene_bias": {"scenes.scene_bias": 1.0},
    "processing_bias": {"processing.processing_bias": 1.0, "scenes.scene_bias": 0.0},
    "default": {},
}
DEFAULT_SIZE = (1024, 768)
DEFAULT_SEED = 20141006
DEFAULT_RATE = 20.0


def _overrides(name: str, size: tuple[int, int], sim_seed: int, images_per_class: int | None) -> dict:
    overrides = dict(SCENARIOS[name])
    if size != DEFAULT_SIZE:
        for model in ("alpha", "beta", "gamma"):
            overrides[f"models.{model}.width"], overrides[f"models.{model}.height"] = size
        overrides["defects.rate_per_year"] = DEFAULT_RATE * size[0] * size[1] / (DEFAULT_SIZE[0] * DEFAULT_SIZE[1])
    if sim_seed != DEFAULT_SEED:
        overrides["seed"] = sim_seed
    if images_per_class is not None:
        overrides["capture.images_per_class"] = images_per_class
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m pipeline.audit_scenarios``."""
    p = new_parser("python -m pipeline.audit_scenarios", __doc__.split("\n\n")[0])
    p.add_argument("--scenarios", type=comma_list(SCENARIOS, "scenario"), default=",".join(SCENARIOS),
                   help=f"comma-separated, from {','.join(SCENARIOS)}")
    p.add_argument("--seeds", type=int, default=5, help="runs of no_bias (dataset and audit seed both change)")
    p.add_argument("--size", default="1024x768", help="image size WxH of the synthetic devices")
    p.add_argument("--images-per-class", type=int, default=None, help="images per class and device (default 60)")
    p.add_argument("--patch", type=int, default=64, help="fixed crop side of the CNN checks")
    p.add_argument("--random-patch", type=int, default=32, help="random crop side")
    p.add_argument("--epochs", type=int, default=8, help="training epochs per network")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-camera-extras", action="store_true", help="skip the Partial protocol and device "
                                                                    "identification")
    p.add_argument("--out", type=Path, default=Path("agetrace-out/audit-scenarios"), help="output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run every scenario's audit; print and write the table. Returns the exit status."""
    return run_command(_run, build_parser().parse_args(argv), ())


def _run(args: argparse.Namespace) -> int:
    names = args.scenarios
    width, height = (int(v) for v in args.size.lower().split("x"))
    cnn = CnnSettings(patch=args.patch, random_patch=args.random_patch, epochs=args.epochs, threads=args.threads,
                      camera_extras=not args.no_camera_extras, device_id=not args.no_camera_extras)
    runs = []
    for name in names:
        for i in range(args.seeds if name == "no_bias" else 1):
            sim_seed = DEFAULT_SEED + i
            overrides = _overrides(name, (width, height), sim_seed, args.images_per_class)
            started = time.perf_counter()
            data = default_dataset(progress=False, **overrides)
            generated = time.perf_counter() - started
            out = args.out / f"{name}_{i}"
            result = run_audit(load_manifest(data.manifest_path), out,
                               AuditConfig(seed=i, cnn=cnn, progress=False))
            seconds = time.perf_counter() - started - generated
            checks = {r.name: {"verdict": r.verdict, "susceptibility": r.susceptibility,
                               "figures": {f.key: {"value": f.value, "chance": f.chance, "ci": list(f.ci),
                                                   "verdict": f.verdict, "role": f.role}
                                           for f in r.figures if f.role != "context" or "accuracy" in f.key}}
                      for r in result["results"]}
            runs.append({"scenario": name, "seed": i, "sim_seed": sim_seed, "overrides": overrides,
                         "dataset": str(data.root), "audit_seconds": round(seconds, 1),
                         "generate_seconds": round(generated, 1), "checks": checks})
            print(f"\n== {name} (dataset seed {sim_seed}, audit seed {i}): audit {seconds:.0f} s", flush=True)
            print(result["summary_text"], flush=True)
    write_json(args.out / "scenarios.json", {"finished": utc_now(), "cnn": cnn.to_dict(), "size": [width, height],
                                              "versions": package_versions(), "runs": runs})
    print(f"\nWrote {args.out / 'scenarios.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
