"""The constrained learned models of issue 15 beside SRNet: what each learns, measured with ground truth.

    python benchmarks/bench_constrained_cnns.py [--parts content,defects,cross,real] [--seeds 0,1,2]
        [--work /tmp/agetrace-constrained] [--out benchmarks/constrained_cnns.md]

Every figure comes from ``pipeline.analysis.experiment.run_experiment`` (the code ``python -m
pipeline.ml_age`` runs: same split files, calibration part, checkpoints) with the ``cpu`` preset,
``num_threads=1`` and ``device='cpu'`` pinned, so that a seed repeats a row exactly:

* **content** -- one synthetic device (SIM-alpha01, 256x192, 50 images per class) with
  ``scenes.scene_bias = 1`` and ``defects.rate_per_year = 0``: the two classes differ in scene
  content only (indoor against outdoor scenes and light) and carry no age trace at all. A method above
  chance here reads content. One split per seed (30 % held out, 30 test images); the pooled count over
  the seeds gets an exact (Clopper-Pearson) 99 % interval.
* **audit** -- ``run_audit`` with the content check and each SRNet-family model on that content-only
  data: the audited model's accuracy with isolated-pixel traces scrubbed, and the verdict.
* **defects** -- the same device with ``scene_bias = 0`` and the default defects: only defects carry age.
  Accuracy of every method on the same splits.
* **cross** -- two devices (SIM-alpha01, SIM-alpha02) with ``scene_bias = 0``: each method's accuracy
  on its own device and on the other (``run_cross_device``).
* **epochs** -- per-epoch training time of each method at the ``cpu`` preset, interleaved
  (:func:`part_epochs`); run it on an idle machine.
* **real** -- the real-mosaic sets of the evidence issue (``tests/real_mosaics.py``: three real Bayer
  raws with injected defects, DNG and developed JPEG, data seed 0), one split; on DNG (read as the CFA
  mosaic) the SRNet family sees one CFA plane (``channels='cfa-plane'``).

Per-epoch training time at the ``cpu`` preset is the mean of the recorded per-epoch seconds of the
content part's trainings (one thread). Writes a markdown report (printed too).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from machine import commit, cpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

METHODS = ("fg", "nb", "svm", "srnet", "srnet-res", "srnet-cs", "defect-cnn")
LEARNED = ("srnet", "srnet-res", "srnet-cs", "defect-cnn")
DEVICE = {"name": "SIM-alpha01", "model": "alpha", "serial": "SA1-00417"}
SECOND = {"name": "SIM-alpha02", "model": "alpha", "serial": "SA1-00523"}
SMALL = {"seed": 20141006, "models.alpha.width": 256, "models.alpha.height": 192, "capture.images_per_class": 50}
PINNED = {"num_threads": 1, "device": "cpu"}


def _experiment(manifest_path: Path, out: Path, methods, seed: int, runs: int = 1, test_size: float = 0.3,
                overrides: dict | None = None):
    from pipeline.analysis.config import ExperimentConfig
    from pipeline.analysis.experiment import run_experiment
    from pipeline.data.manifest import load_manifest

    cfg = ExperimentConfig(methods=tuple(methods), runs=runs, test_size=test_size, seed=seed, workers=1,
                           progress=False, srnet_preset="cpu", srnet_overrides={**PINNED, **(overrides or {})})
    started = time.perf_counter()
    run_experiment(load_manifest(manifest_path), out, cfg)
    return time.perf_counter() - started


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _dataset(work: Path, name: str, devices, **overrides):
    from pipeline.sim import default_dataset

    return default_dataset(work / f"data_{name}", workers=1, progress=False, devices=devices, **SMALL, **overrides)


def _correct(out: Path, method: str) -> tuple[int, int]:
    rows = [p for p in _rows(out / "predictions.csv") if p["method"] == method]
    return sum(p["true"] == p["predicted"] for p in rows), len(rows)


def _epoch_seconds(out: Path, method: str) -> list[float]:
    """Recorded seconds of every training epoch of ``method`` in the run (its checkpoints keep ``history``)."""
    import torch

    seconds = []
    folder = "srnet" if method == "srnet" else method
    for checkpoint in (out / folder).rglob("*.pt"):
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        seconds += [float(h["seconds"]) for h in state.get("history", [])]
    return seconds


def part_epochs(repeats: int = 3) -> list[str]:
    """Per-epoch training time at the cpu preset, the four methods interleaved (A/B/C/D, ``repeats`` rounds).

    SRNet family: one crop network on 110 crops of 64x64 RGB (the cpu preset's patch, ~the training
    images of one device of the default), batch 8, one thread. defect-cnn: 110 images of 256x192 with
    20 defects, its cpu preset, one thread. Inputs are prepared before timing (srnet-res's residual:
    see the last column); the figure is the median of the epochs' recorded seconds.
    """
    from pipeline.srnet.crops import median_residual_inputs
    from pipeline.srnet.defect_cnn import fit_predict_defect_cnn
    from pipeline.srnet.defect_presets import defect_cnn_preset
    from pipeline.srnet.presets import variant_config
    from pipeline.srnet.train import train_crop_model

    rng = np.random.default_rng(0)
    crops = rng.random((110, 3, 64, 64), dtype=np.float32)
    labels = np.arange(110) % 2
    median_residual_inputs(crops[:2])  # compile the kernel before timing it
    started = time.perf_counter()
    residual = median_residual_inputs(crops)
    residual_ms = 1000 * (time.perf_counter() - started) / len(crops)
    images = [(rng.random((192, 256, 3)) * 255).astype(np.uint8) for _ in range(110)]
    rows, cols = rng.integers(8, 184, 20), rng.integers(8, 248, 20)
    seconds = {m: [] for m in LEARNED}
    for _ in range(repeats):
        for method in LEARNED:
            if method == "defect-cnn":
                config = defect_cnn_preset("cpu", epochs=2, num_threads=1, device="cpu")
                with tempfile.TemporaryDirectory() as folder:
                    result = fit_predict_defect_cnn(list(range(110)), labels, [], rows, cols, config, folder,
                                                    load=lambda i: images[i], progress=False)
                seconds[method] += [h["seconds"] for h in result["history"]]
            else:
                config = variant_config(method, "cpu", epochs=2, num_threads=1, device="cpu")
                inputs = residual if method == "srnet-res" else crops
                trained = train_crop_model(inputs, labels, config, progress=False)
                seconds[method] += [h["seconds"] for h in trained.history]
    lines = ["## Per-epoch training time at the cpu preset (1 thread, interleaved, median)", "",
             "| method | s per epoch | relative to SRNet | note |", "|---|---:|---:|---|"]
    base = np.median(seconds["srnet"])
    notes = {"srnet": "one of five crop networks: 110 crops of 64x64",
             "srnet-res": f"same, on residual crops (the residual itself: {residual_ms:.2f} ms per crop, once)",
             "srnet-cs": "same, behind the 3x5x5 constrained layer",
             "defect-cnn": "the whole model: 110 images x 20 defect patches of 32x32"}
    for m in LEARNED:
        lines.append(f"| {m} | {np.median(seconds[m]):.2f} | {np.median(seconds[m]) / base:.2f} | {notes[m]} |")
    return lines + [""]


def part_content(work: Path, seeds) -> list[str]:
    dataset = _dataset(work, "content", [DEVICE], **{"scenes.scene_bias": 1.0, "defects.rate_per_year": 0.0})
    counts = {m: [0, 0] for m in LEARNED}
    per_seed = {m: [] for m in LEARNED}
    epoch = {m: [] for m in LEARNED}
    for seed in seeds:
        out = work / f"content_seed{seed}"
        _experiment(dataset.manifest_path, out, LEARNED, seed)
        for m in LEARNED:
            k, n = _correct(out, m)
            counts[m][0] += k
            counts[m][1] += n
            per_seed[m].append(f"{k}/{n}")
            epoch[m] += _epoch_seconds(out, m)
    lines = ["## Content only (scene_bias = 1, no defects): a method above chance reads scene content", "",
             "| method | correct per seed | pooled accuracy | exact 99 % interval | contains 0.5 and upper ≤ 0.65 | "
             "s per epoch here (1 thread, under this run's load) |", "|---|---|---:|---|---|---:|"]
    for m in LEARNED:
        k, n = counts[m]
        low, high = binomtest(k, n).proportion_ci(0.99, method="exact")
        at_chance = low <= 0.5 <= high and high <= 0.65
        lines.append(f"| {m} | {', '.join(per_seed[m])} | {k / n:.3f} | [{low:.3f}, {high:.3f}] | "
                     f"{'yes' if at_chance else '**no**'} | "
                     f"{f'{np.mean(epoch[m]):.2f}' if epoch[m] else '— (no defects: nothing trained)'} |")
    return lines + [""]


def part_audit(work: Path) -> list[str]:
    """The audit's content check of each SRNet-family model on the content-only data (``--methods``)."""
    from pipeline.analysis.audit.cnn import CnnSettings
    from pipeline.analysis.audit.run import AuditConfig, run_audit
    from pipeline.data.manifest import load_manifest

    dataset = _dataset(work, "content", [DEVICE], **{"scenes.scene_bias": 1.0, "defects.rate_per_year": 0.0})
    lines = ["## The audit's content check of each model on the content-only data", "",
             "`run_audit(checks=('content',), cnn=CnnSettings(method=M, threads=1))`: the audited model's Balanced "
             "network (one 64x64 crop) scored on balanced test crops with isolated-pixel traces scrubbed.", "",
             "| method | accuracy as is | accuracy scrubbed | strict interval (family-wise 99 %) | verdict |",
             "|---|---:|---:|---|---|"]
    for method in ("srnet", "srnet-res", "srnet-cs"):
        cnn = CnnSettings(threads=1, camera_extras=False, overrides={"device": "cpu"}, method=method)
        result = run_audit(load_manifest(dataset.manifest_path), work / f"audit_{method}",
                           AuditConfig(checks=("content",), runs=3, test_size=0.3, cnn=cnn, progress=False))
        content = next(r for r in result["results"] if r.name == "content")
        figure = content.figure("learned_without_traces")
        learned = content.details["learned_model"]
        lines.append(f"| {method} | {100 * learned['accuracy_as_is']:.1f} % | {100 * learned['accuracy_scrubbed']:.1f} % "
                     f"(n={learned['test_images']}) | [{100 * figure.ci_strict[0]:.1f}, {100 * figure.ci_strict[1]:.1f}] | "
                     f"{figure.verdict} |")
    return lines + [""]


def part_defects(work: Path, seeds) -> list[str]:
    dataset = _dataset(work, "defects", [DEVICE], **{"scenes.scene_bias": 0.0})
    lines = ["## Defects only (scene_bias = 0, default defects): accuracy on the same splits", "",
             "| seed | " + " | ".join(METHODS) + " | defect-cnn − best defect method (points) |",
             "|---|" + "---:|" * (len(METHODS) + 1)]
    for seed in seeds:
        out = work / f"defects_seed{seed}"
        _experiment(dataset.manifest_path, out, METHODS, seed)
        acc = {m: _correct(out, m) for m in METHODS}
        share = {m: k / n for m, (k, n) in acc.items()}
        best = max(share[m] for m in ("fg", "nb", "svm"))
        lines.append(f"| {seed} | " + " | ".join(f"{100 * share[m]:.1f}" for m in METHODS)
                     + f" | {100 * (share['defect-cnn'] - best):+.1f} |")
    return lines + [""]


def part_cross(work: Path, seeds) -> list[str]:
    from pipeline.analysis.cross_device import run_cross_device
    from pipeline.analysis.config import ExperimentConfig
    from pipeline.data.manifest import load_manifest

    dataset = _dataset(work, "cross", [DEVICE, SECOND], **{"scenes.scene_bias": 0.0})
    lines = ["## Cross-device (two SIM Alpha bodies, scene_bias = 0): own device against the other", "",
             "| seed | method | own device % | other device % | other-device chance % |", "|---|---|---:|---:|---:|"]
    for seed in seeds[:1]:
        exp = work / f"cross_seed{seed}" / "experiment"
        _experiment(dataset.manifest_path, exp, METHODS, seed)
        cfg = ExperimentConfig(methods=METHODS, runs=1, test_size=0.3, seed=seed, workers=1, progress=False,
                               srnet_preset="cpu", srnet_overrides=dict(PINNED))
        out = work / f"cross_seed{seed}" / "cross"
        run_cross_device(load_manifest(dataset.manifest_path), out, cfg, experiment_dir=exp)
        for m in METHODS:
            rows = [r for r in _rows(out / "cross_metrics.csv") if r["method"] == m]
            own = [float(r["accuracy"]) for r in rows if r["train_device"] == r["test_device"]]
            other = [float(r["accuracy"]) for r in rows if r["train_device"] != r["test_device"]]
            chance = [float(r["chance"]) for r in rows if r["train_device"] != r["test_device"]]
            lines.append(f"| {seed} | {m} | {100 * np.mean(own):.1f} | {100 * np.mean(other):.1f} | "
                         f"{100 * np.mean(chance):.1f} |")
    return lines + [""]


def part_real(work: Path) -> list[str]:
    import real_mosaics

    lines = ["## Real-mosaic sets (three real Bayer raws with injected defects, data seed 0, one split)", "",
             "| set | device | " + " | ".join(METHODS) + " |", "|---|---|" + "---:|" * len(METHODS)]
    for kind in ("dng", "jpeg"):
        built = real_mosaics.build(work / f"real_{kind}", seed=0, kind=kind, overwrite=True)
        out = work / f"real_{kind}_run"
        # a DNG is read as its CFA mosaic: SRNet's crops are then one CFA plane
        _experiment(built.manifest, out, METHODS, 0, overrides={"channels": "cfa-plane"} if kind == "dng" else None)
        rows = _rows(out / "predictions.csv")
        for device in sorted({r["device"] for r in rows}):
            share = {}
            for m in METHODS:
                mine = [r for r in rows if r["device"] == device and r["method"] == m]
                share[m] = sum(r["true"] == r["predicted"] for r in mine) / len(mine) if mine else float("nan")
            lines.append(f"| {kind} | {device} | " + " | ".join(f"{100 * share[m]:.1f}" for m in METHODS) + " |")
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="epochs,content,audit,defects,cross,real")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--work", type=Path, default=Path("/tmp/agetrace-constrained"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = args.parts.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lines = ["# Constrained learned models beside SRNet (issue 15)", "",
             f"Commit {commit()}, machine {cpu()}; command: `python benchmarks/bench_constrained_cnns.py "
             f"--parts {args.parts} --seeds {args.seeds}`; cpu preset, 1 torch thread, device cpu.", ""]
    functions = {"epochs": lambda: part_epochs(), "content": lambda: part_content(args.work, seeds),
                 "audit": lambda: part_audit(args.work), "defects": lambda: part_defects(args.work, seeds),
                 "cross": lambda: part_cross(args.work, seeds), "real": lambda: part_real(args.work)}
    unknown = [part for part in parts if part not in functions]
    if unknown:
        p.error(f"unknown part(s) {unknown}; choose from {', '.join(functions)}")
    for part in parts:
        lines += functions[part]()
        # each part as soon as it is done, so that a long run shows (and keeps) what it has
        print("\n".join(lines), flush=True)
        if args.out:
            args.out.write_text("\n".join(lines) + "\n")
    lines.append(f"Wall time {time.perf_counter() - started:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(lines[-1])
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
