"""Where does defect-cnn look?  Explanations of a finished run's defect-centred networks.

defect-cnn (:mod:`pipeline.srnet.defect_cnn`) sees only 32x32 patches centred on the defects a
run identified, one network shared by every defect slot, its patch logits fused per image. It has
no crop network, so the SRNet analysis of :mod:`.explain` does not apply; two questions do:

which defects carry the decision?
    The image's logit margin of its explained class splits exactly into one **contribution**
    per defect slot (:func:`pipeline.srnet.defect_cam.explain_defect_patches`). Reported: the
    share of the total absolute contribution carried by the top tenth of the slots, and the
    slots with the largest mean absolute contribution over the test images.
does the patch network look at the defect or at the scene around it?
    Grad-CAM and Grad-CAM++ maps of the patch network for the image's explained class,
    upsampled to the patch. The **centre share** is the map's mass (ReLU) in the box of side
    ``2 * neighbourhood + 1`` around the patch centre, where the defect is, against the box's
    share of the area. Null: the same box at every position of the patch at least one box side
    away from the centre, the mean share over all patches at each; ``p`` is the share of those
    positions whose mean reaches the centre's. The maps are *centred on the defects* when the
    lift is at least :data:`~.stats.DEFECT_LIFT` and ``p`` at most :data:`~.stats.SIGNIFICANCE`.

Every finished run of each device is explained on its own test images with its own defects.
Outputs (in ``out``): ``saliency.json``, ``saliency.md``, ``saliency_defect_cnn.csv`` (one row
per test image and defect slot) and ``defect_cnn/<device>.png`` and ``.svg`` (the patches of the
strongest defects of one test image per class, with their maps).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from pipeline.analysis.figures import save_figure
from pipeline.analysis.provenance import command_line, package_versions, utc_now, write_json
from pipeline.analysis.runfolder import RunFolder
from pipeline.analysis.saliency.inputs import srnet_runs
from pipeline.analysis.saliency.stats import DEFECT_LIFT, SIGNIFICANCE
from pipeline.data.atomic import atomic_write_text
from pipeline.features.device import shown_path
from pipeline.logs import get_logger

__all__ = ["TOP_SHARE", "centre_shares", "centre_statistics", "defect_cnn_figure", "explain_defect_cnn_run"]

logger = get_logger(__name__)

TOP_SHARE = 0.1
"""The top fraction of defect slots whose share of the absolute contributions is reported."""
_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
_COLUMNS = ["device", "run", "image", "true", "predicted", "slot", "row", "col", "weight", "contribution"]


def centre_shares(maps: np.ndarray, neighbourhood: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shares of each map's mass in a box at the centre and at every position away from it.

    Parameters
    ----------
    maps : ndarray, (N, P, P)
        Maps upsampled to the patch (negative values count as 0).
    neighbourhood : int
        Box half-side: boxes are ``2 * neighbourhood + 1`` pixels square.

    Returns
    -------
    centre : ndarray, (N,)
        Share of each map's mass in the box centred on pixel ``(P // 2, P // 2)`` (NaN for a map
        without mass).
    away : ndarray, (N, M)
        The same share for the M box positions whose centre lies at least one box side (Chebyshev)
        from the patch centre.
    area : float
        The box's share of the patch.
    """
    maps = np.maximum(np.asarray(maps, dtype=np.float64), 0.0)
    n, side = maps.shape[0], maps.shape[-1]
    box = 2 * int(neighbourhood) + 1
    if box > side:
        raise ValueError(f"a box of {box} pixels does not fit patches of {side}")
    total = maps.reshape(n, -1).sum(axis=1)
    padded = np.pad(np.cumsum(np.cumsum(maps, axis=1), axis=2), ((0, 0), (1, 0), (1, 0)))
    sums = padded[:, box:, box:] - padded[:, :-box, box:] - padded[:, box:, :-box] + padded[:, :-box, :-box]
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = sums / total[:, None, None]                  # box with top-left (i, j)
    centre_top = side // 2 - int(neighbourhood)
    tops = np.arange(shares.shape[1])
    far = np.maximum(np.abs(tops[:, None] - centre_top), np.abs(tops[None, :] - centre_top)) >= box
    return shares[:, centre_top, centre_top], shares[:, far], box * box / side ** 2


def centre_statistics(maps: np.ndarray, neighbourhood: int) -> dict:
    """The centre figure of a set of patch maps: mean share, area share, lift, null and ``p``."""
    centre, away, area = centre_shares(maps, neighbourhood)
    ok = np.isfinite(centre)
    if not ok.any():
        return {"n_maps": 0, "share": None, "area_share": area, "lift": None, "null_mean": None, "null_p95": None,
                "p_value": None, "verdict": "no maps with saliency"}
    share, null = float(centre[ok].mean()), away[ok].mean(axis=0)
    p = float((1 + np.sum(null >= share)) / (1 + null.size))
    lift = share / area
    centred = lift >= DEFECT_LIFT and p <= SIGNIFICANCE
    return {"n_maps": int(ok.sum()), "share": share, "area_share": area, "lift": lift, "null_mean": float(null.mean()),
            "null_p95": float(np.quantile(null, 0.95)), "p_value": p,
            "verdict": "centred on the defects" if centred else "not centred on the defects"}


def _runs_with_models(folder: RunFolder, device: str):
    found = srnet_runs(folder, device, (), "defect-cnn")
    usable = []
    for run in found.runs:
        if (folder.learned_dir("defect-cnn", device, run) / "defect_cnn.pt").is_file():
            usable.append(run)
        else:
            found.skipped[run] = "no defect_cnn.pt: no defects were identified, so the run fell back to chance"
    found.runs = usable
    return found


def explain_defect_cnn_run(run_dir: Path, out: Path, config, record: dict, root: Path | None) -> dict:
    """Explain every finished defect-cnn run of an ``ml_age`` output folder (see the module text).

    Parameters
    ----------
    run_dir, out : Path
        The run folder and the output folder.
    config : SaliencyConfig
        Its ``methods`` (``cam`` and ``scorecam`` are left out: not defined for, or not
        implemented on, the patch network), ``neighbourhood``, ``device``, ``num_threads`` and
        ``progress`` are used.
    record : dict
        The run's ``config.json``.
    root : Path or None
        The manifest's folder (image paths are shown relative to it).

    Returns
    -------
    dict
        The content of ``saliency.json`` plus ``verdict_text`` and ``files``.
    """
    from pipeline.srnet.defect_cam import DEFECT_CAM_METHODS, explain_defect_patches
    from pipeline.srnet.defect_cnn import defect_cnn_patches, load_defect_cnn
    from pipeline.srnet.defect_presets import DefectCNNConfig
    from pipeline.srnet.runtime import resolve_device, torch_runtime

    methods = [m for m in config.methods if m in DEFECT_CAM_METHODS]
    if not methods:
        raise ValueError(f"defect-cnn can be explained by {', '.join(DEFECT_CAM_METHODS)} only; give --methods "
                         "gradcam,gradcam++")
    folder = RunFolder(run_dir)
    defect_config = DefectCNNConfig.from_dict(record["learned"]["defect-cnn"]).replace(device=config.device)
    devices, rows, files = {}, [], []
    for device in folder.learned_devices("defect-cnn"):
        found = _runs_with_models(folder, device)
        if not found.runs:
            logger.info(f"{device}: no finished defect-cnn run ({'; '.join(found.skipped.values()) or 'none'}); "
                        "skipped")
            continue
        maps = {m: [] for m in methods}
        contributions, correct, per_run, examples = [], [], {}, None
        with torch_runtime(config.num_threads or defect_config.num_threads, resolve_device(config.device),
                           deterministic=False):
            for run in found.runs:
                model, slot_rows, slot_cols = load_defect_cnn(
                    folder.learned_dir("defect-cnn", device, run) / "defect_cnn.pt", defect_config)
                paths = [p for p, _ in found.test[run]]
                truth = np.array([y for _, y in found.test[run]])
                patches = defect_cnn_patches(paths, slot_rows, slot_cols, defect_config, progress=config.progress)
                classes = np.asarray(found.classes) if len(found.classes) == model.patch_net.n_classes else (
                    np.unique(truth))
                explanations = {m: explain_defect_patches(model, patches, m) for m in methods}
                for m, result in explanations.items():
                    maps[m].append(result.maps.reshape((-1,) + result.maps.shape[2:]))
                explained = explanations[methods[0]]  # contributions and targets do not depend on the method
                predicted = classes[explained.targets]
                correct += (predicted == truth).tolist()
                contributions.append(explained.contributions)
                weights = model.defect_weights().detach().cpu().numpy()
                per_run[str(run)] = {"defects": int(len(slot_rows)), "test_images": int(len(paths)),
                                     "accuracy": float(np.mean(predicted == truth))}
                for i, path in enumerate(paths):
                    for d in range(len(slot_rows)):
                        rows.append({"device": device, "run": run, "image": shown_path(path, root), "true": int(truth[i]),
                                     "predicted": int(predicted[i]), "slot": d, "row": int(slot_rows[d]),
                                     "col": int(slot_cols[d]), "weight": float(weights[d]),
                                     "contribution": float(explained.contributions[i, d])})
                if examples is None:
                    examples = _examples(patches, explained, truth, predicted, slot_rows, slot_cols, paths, root)
        summary = {"runs": found.runs, "runs_skipped": {str(k): v for k, v in found.skipped.items()},
                   "n_test_images": len(correct), "accuracy": float(np.mean(correct)), "per_run": per_run,
                   "contributions": _contribution_summary(device, rows),
                   "methods": {m: centre_statistics(np.concatenate(maps[m]), config.neighbourhood) for m in methods}}
        devices[device] = summary
        files += save_figure(defect_cnn_figure(device, examples, config.neighbourhood, methods[0]),
                             out / "defect_cnn" / f"{device}.png", vector="svg")
    if not devices:
        raise FileNotFoundError(f"{run_dir}: no finished defect-cnn run with a model (defect-cnn/<device>/run_XX/"
                                "defect_cnn.pt); run `python -m pipeline.ml_age --methods fg,defect-cnn` first")
    report = {"tool": "pipeline.saliency", "created": utc_now(), "run": str(Path(run_dir).resolve()),
              "run_manifest": record.get("manifest", {}), "model": "defect-cnn",
              "settings": {"methods": methods, "neighbourhood_px": config.neighbourhood,
                           "target": "each image's predicted class", "top_share": TOP_SHARE,
                           "thresholds": {"defect_lift": DEFECT_LIFT, "significance": SIGNIFICANCE}},
              "defect_cnn": defect_config.to_dict(), "versions": package_versions(), "command": command_line(),
              "devices": devices}
    text = defect_cnn_markdown(report)
    csv_path, json_path, md_path = out / "saliency_defect_cnn.csv", out / "saliency.json", out / "saliency.md"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(md_path, text)
    files = [json_path, md_path, csv_path] + files
    report["files"] = [str(p) for p in files]
    write_json(json_path, report)
    return {**report, "verdict_text": text, "files": files}


def _contribution_summary(device: str, rows: list[dict]) -> dict:
    mine = [r for r in rows if r["device"] == device]
    by_slot: dict[tuple, list[float]] = {}
    for r in mine:
        by_slot.setdefault((r["run"], r["row"], r["col"]), []).append(r["contribution"])
    mean_abs = {key: float(np.mean(np.abs(v))) for key, v in by_slot.items()}
    ordered = sorted(mean_abs, key=mean_abs.get, reverse=True)
    total = sum(mean_abs.values())
    top = max(1, int(np.ceil(TOP_SHARE * len(ordered))))
    return {"slots": len(ordered), "top_share": float(sum(mean_abs[k] for k in ordered[:top]) / total) if total else None,
            "top_slots": top,
            "strongest": [{"run": k[0], "row": k[1], "col": k[2], "mean_abs_contribution": mean_abs[k],
                           "mean_contribution": float(np.mean(by_slot[k]))} for k in ordered[:10]]}


def _examples(patches, explained, truth, predicted, rows, cols, paths, root, per_image: int = 6) -> list[dict]:
    """The strongest slots of the first test image of each class (for the figure)."""
    chosen = []
    for label in np.unique(truth):
        i = int(np.flatnonzero(truth == label)[0])
        order = np.argsort(-np.abs(explained.contributions[i]), kind="stable")[:per_image]
        chosen.append({"image": shown_path(paths[i], root), "true": int(truth[i]), "predicted": int(predicted[i]),
                       "patches": patches[i, order], "maps": explained.maps[i, order],
                       "contributions": explained.contributions[i, order],
                       "positions": [(int(rows[d]), int(cols[d])) for d in order]})
    return chosen


def defect_cnn_figure(device: str, examples: list[dict], neighbourhood: int, method: str):
    """The strongest defects of one test image per class: their patches and their maps (a Figure)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    n_cols = max(len(e["contributions"]) for e in examples)
    fig = Figure(figsize=(1.7 * n_cols + 0.4, 3.6 * len(examples) + 0.8), layout="constrained")
    grid = fig.subfigures(len(examples), 1, squeeze=False)[:, 0]
    for sub, example in zip(grid, examples):
        axes = sub.subplots(2, n_cols, squeeze=False)
        sub.suptitle(f"{example['image']}: class {example['true']}, predicted {example['predicted']}; the "
                     f"{len(example['contributions'])} defects with the largest |contribution|", fontsize=8)
        for k in range(n_cols):
            top, bottom = axes[0][k], axes[1][k]
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
            if k >= len(example["contributions"]):
                top.set_visible(False)
                bottom.set_visible(False)
                continue
            patch = np.transpose(example["patches"][k], (1, 2, 0))
            shown = patch[..., 0] if patch.shape[2] == 1 else patch
            low, high = np.percentile(shown, (1, 99))
            top.imshow(np.clip((shown - low) / max(high - low, 1e-12), 0, 1), cmap="gray", interpolation="nearest")
            saliency = np.maximum(example["maps"][k], 0)
            bottom.imshow(saliency, cmap="magma", vmin=0, vmax=max(float(saliency.max()), 1e-12),
                          interpolation="nearest")
            side = patch.shape[0]
            box = 2 * neighbourhood + 1
            for ax in (top, bottom):
                ax.add_patch(Rectangle((side // 2 - neighbourhood - 0.5,) * 2, box, box, fill=False, edgecolor="lime",
                                       lw=0.8))
            row, col = example["positions"][k]
            top.set_title(f"({row}, {col})\ncontribution {example['contributions'][k]:+.2f}", fontsize=7)
        axes[0][0].set_ylabel("patch", fontsize=7)
        axes[1][0].set_ylabel(_NAMES.get(method, method), fontsize=7)
    fig.suptitle(f"defect-cnn, {device}: patches at the defects (contrast stretched), and where the patch network "
                 f"looks\n({_NAMES.get(method, method)} for the predicted class; green: the box around the defect at "
                 "the patch centre)",
                 fontsize=8)
    return fig


def defect_cnn_markdown(report: dict) -> str:
    """The text of ``saliency.md`` for a defect-cnn explanation."""
    settings = report["settings"]
    box = 2 * settings["neighbourhood_px"] + 1
    lines = ["# Where does defect-cnn look?", "",
             f"Run: `{report['run']}`. Every finished defect-cnn run, on its own test images and defects.", "",
             f"| device | runs | accuracy | method | centre share vs area ({box}x{box} box; lift, p) | maps are |",
             "|---|---|---|---|---|---|"]
    for device, summary in report["devices"].items():
        for method, figure in summary["methods"].items():
            shown = ("n/a" if not figure["n_maps"] else
                     f"{100 * figure['share']:.1f}% vs {100 * figure['area_share']:.1f}% ({figure['lift']:.1f}×, "
                     f"p={figure['p_value']:.3f})")
            lines.append(f"| {device} | {', '.join(map(str, summary['runs']))} | {100 * summary['accuracy']:.0f}% | "
                         f"{method} | {shown} | {figure['verdict']} |")
    lines += ["", "Which defects carry the decisions:", ""]
    for device, summary in report["devices"].items():
        c = summary["contributions"]
        strongest = ", ".join(f"({s['row']}, {s['col']}) {s['mean_abs_contribution']:.2f}" for s in c["strongest"][:5])
        share = "n/a" if c["top_share"] is None else f"{100 * c['top_share']:.0f}%"
        lines.append(f"- **{device}**: the strongest tenth of the defect slots ({c['top_slots']} of {c['slots']}) "
                     f"carries {share} of the absolute contributions; strongest (sensor row, col, mean "
                     f"|contribution|): {strongest}.")
    lines += ["", (f"Reading: a defect's contribution is its exact part of the image's logit margin for the predicted "
                   f"class. The maps are *centred on the defects* when their share in the {box}x{box} box at the patch "
                   f"centre is at least {DEFECT_LIFT}× the box's share of the area and no more than "
                   f"{100 * SIGNIFICANCE:.0f}% of the box positions away from the centre reach it. Figures: "
                   "`defect_cnn/<device>.png`."), ""]
    return "\n".join(lines)
