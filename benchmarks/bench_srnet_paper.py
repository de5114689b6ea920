"""SRNet at ``--preset paper`` on one device of the synthetic default: images/s and time per epoch.

Run as a script (it is not collected by pytest), on a machine with a CUDA GPU::

    python benchmarks/bench_srnet_paper.py                      # SIM-alpha01, all five crops, 80 epochs
    python benchmarks/bench_srnet_paper.py --device-name SIM-beta01 --out /tmp/paper

It runs exactly what ``python -m pipeline.ml_age --methods srnet --srnet-preset paper --runs 1``
runs, on a manifest holding one device of the default dataset (the first split of that device,
the same split file the other methods use), then reads each crop network's per-epoch history from
its checkpoint and reports the training rate (inputs per second after oversampling, checkpoint
writes excluded), the median time per epoch, the wall time of the whole run, the fused test
accuracy, the GPU's name and the versions. The report is printed as a markdown table and written
to ``OUT/bench_srnet_paper.json``.

``--epochs`` and ``--crops`` shorten the run for a smoke check on a CPU; the figures are then not
the paper preset's and the report says so.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.analysis.config import ExperimentConfig
from pipeline.analysis.experiment import run_experiment
from pipeline.data.manifest import load_manifest
from pipeline.sim import default_dataset
from pipeline.srnet.checkpoint import load_checkpoint
from pipeline.srnet.crops import CROP_NAMES


def one_device_manifest(device: str, path: Path) -> Path:
    """Write the default dataset's rows of ``device`` (absolute paths) to ``path``."""
    dataset = default_dataset(progress=False)
    with open(dataset.manifest_path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["device"] == device]
    if not rows:
        raise SystemExit(f"bench_srnet_paper: no device {device!r} in the synthetic default")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "path": str(Path(dataset.root) / r["path"])} for r in rows)
    return path


def device_description(requested: str) -> str:
    import torch

    if requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available()):
        index = torch.device(requested if requested != "auto" else "cuda").index or 0
        return f"{torch.cuda.get_device_name(index)} (CUDA {torch.version.cuda})"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device-name", default="SIM-alpha01", help="device of the default dataset (default SIM-alpha01)")
    p.add_argument("--out", type=Path, default=Path("agetrace-out/bench_srnet_paper"), help="output folder")
    p.add_argument("--torch-device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's 80 epochs (smoke checks only)")
    p.add_argument("--crops", default=None, help=f"comma-separated subset of {','.join(CROP_NAMES)} (smoke checks only)")
    args = p.parse_args(argv)

    overrides: dict = {"device": args.torch_device}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
        overrides["lr_drop_epoch"] = min(60, args.epochs)
    if args.crops:
        overrides["crops"] = args.crops.split(",")
    manifest = one_device_manifest(args.device_name, args.out / "manifest.csv")
    cfg = ExperimentConfig(methods=("srnet",), runs=1, srnet_preset="paper", srnet_overrides=overrides, workers=1)
    run_dir = args.out / "run"
    started = time.perf_counter()
    result = run_experiment(load_manifest(manifest), run_dir, cfg)
    wall = time.perf_counter() - started

    recorded = json.loads((run_dir / "config.json").read_text())
    srnet = recorded["srnet"]
    crops = {}
    for crop in srnet["crops"]:
        history = load_checkpoint(run_dir / "srnet" / args.device_name / "run_00" / f"srnet_{crop}.pt")["history"]
        if any("images" not in r for r in history):
            raise SystemExit(f"{run_dir}: checkpoints from an older agetrace without per-epoch image counts; "
                             "use a fresh --out")
        seconds = [r["seconds"] for r in history]
        crops[crop] = {"epochs": len(history), "median_epoch_s": statistics.median(seconds),
                       "images_per_s": sum(r["images"] for r in history) / sum(seconds),
                       "train_s": sum(seconds), "final_loss": history[-1]["loss"],
                       "final_train_accuracy": history[-1]["accuracy"]}
    accuracy = [m["accuracy"] for m in result["metrics"] if m["method"] == "srnet"]
    report = {
        "device": device_description(srnet["device"]),
        "preset": "paper" if args.epochs is None and args.crops is None else "paper, SHORTENED (not the preset's figures)",
        "srnet": srnet, "dataset_device": args.device_name, "wall_s": wall,
        "fused_test_accuracy": float(np.mean(accuracy)) if accuracy else None, "crops": crops,
        "python": sys.version.split()[0], "torch": __import__("torch").__version__,
    }
    (args.out / "bench_srnet_paper.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{report['device']}; preset {report['preset']}; patch {srnet['patch']}, batch {srnet['batch_size']}; "
          f"{args.device_name}, first split; whole run {wall:.0f} s; fused test accuracy "
          f"{report['fused_test_accuracy']:.3f}\n")
    print("| crop | epochs | median s/epoch | training images/s | training s |\n|---|---:|---:|---:|---:|")
    for crop, c in crops.items():
        print(f"| {crop} | {c['epochs']} | {c['median_epoch_s']:.2f} | {c['images_per_s']:.1f} | {c['train_s']:.0f} |")
    print(f"\nwritten: {args.out / 'bench_srnet_paper.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
