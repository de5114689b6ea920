"""The written results of a saliency analysis: ``saliency.json``, ``saliency.md``, the per-map,
per-crop faithfulness and per-crop adversarial CSVs and the raw maps.

:func:`verdict_markdown` turns the content of ``saliency.json`` into the short verdict of
``saliency.md``; :func:`write_report` writes the five report files, :func:`write_maps` one
device's raw maps (``maps/<device>.npz``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.analysis.provenance import write_json
from pipeline.analysis.saliency.adversarial import ADVERSARIAL_COLUMNS
from pipeline.analysis.saliency.stats import CONTENT_RHO, DEFECT_LIFT, NO_FAITHFUL_METHOD, SIGNIFICANCE
from pipeline.data.atomic import atomic_write, atomic_write_text

__all__ = ["FAITHFULNESS_COLUMNS", "faithfulness_settings", "verdict_markdown", "write_maps", "write_report"]

_ROW_COLUMNS = ["device", "run", "image", "crop", "method", "true", "target", "rho_luminance", "rho_texture",
                "rho_colour", "defects_in_crop", "defect_share", "area_share", "saliency_mass"]
FAITHFULNESS_COLUMNS = ["device", "run", "image", "crop", "method", "target", "span", "probability",
                        "baseline_probability", "deletion_auc", "deletion_auc_random", "deletion_gain",
                        "insertion_auc", "insertion_auc_random", "insertion_gain", "randomisation_rho"]
"""Columns of ``saliency_faithfulness.csv``, one row per method and checked crop: the explained
class (``target``, a label); ``span``, how much the baseline image lowers its probability; for the
crops with curves (informative: span at least 0.1) the probability on the crop and on its baseline
image, the areas under the deletion and insertion curves of the map's pixel order and of the
random order and their gains (``random - map`` for deletion, ``map - random`` for insertion:
positive is better than chance); for the crops of the randomisation check the Spearman rho between
the maps of the trained and of the randomised network.  A value a crop was not checked for is
empty."""


def _write_rows(path: Path, rows: list[dict], columns: list[str] = _ROW_COLUMNS) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def faithfulness_settings(config) -> dict[str, Any]:
    """What the faithfulness checks of a :class:`~.explain.SaliencyConfig` do, for ``saliency.json``."""
    from pipeline.srnet.faithfulness import BLUR_SIGMA, MIN_SPAN, RANDOMISATION_RHO  # torch
    from pipeline.srnet.faithfulness import SIGNIFICANCE as GAIN_SIGNIFICANCE

    return {
        "crops_per_device": config.faithfulness_crops,
        "selection": "test images of the device's first SRNet run, alternating their true classes, each with every "
                     "crop network in turn: the first crops_per_device (image, crop) pairs for the randomisation "
                     "check, the first crops_per_device informative ones (the baseline lowers the probability of "
                     "the explained class by at least informative_span) for deletion and insertion",
        "steps": config.faithfulness_steps,
        "baseline": config.faithfulness_baseline,
        "blur_sigma_px": BLUR_SIGMA if config.faithfulness_baseline == "blur" else None,
        "target": "the class each map explains (the crop network's prediction)",
        "random_reference": "one seeded random pixel order per crop, also breaking ties in the maps",
        "seed": config.faithfulness_seed,
        "randomisation": "every weight of a copy of the crop network re-initialised (SRNet's own initialisation), "
                         "then the same method on the same crops for the same class; Spearman rho of the raw maps"
                         + ("; also cascading from the head down" if config.faithfulness_cascade else ""),
        "thresholds": {"randomisation_median_abs_rho_below": RANDOMISATION_RHO,
                       "gain_test_alpha": GAIN_SIGNIFICANCE, "informative_span": MIN_SPAN},
        "rule": "a method is unfaithful (its verdicts are not used) when its maps barely change under randomisation, "
                "or when neither its deletion gain nor its insertion gain over the random order is positive by a "
                "one-sided Wilcoxon signed-rank test over the informative crops (each test at gain_test_alpha / 2); "
                "with fewer than 6 informative crops that part is inconclusive",
    }


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def verdict_markdown(report: dict) -> str:
    """The short text verdict of ``saliency.md`` from the content of ``saliency.json``."""
    settings = report["settings"]
    lines = [
        "# Where does SRNet look?",
        "",
        (f"Run: `{report['run']}`. Maps of each crop network for its predicted class; defect neighbourhood "
         f"{settings['neighbourhood']}; defect positions: {settings['defect_source']}."),
        "",
        ("| device | method (layer, map) | accuracy | consistency (runs / images) | "
         "content ρ, own − other images (feature) | defect share vs area (lift, p) | maps follow |"),
        "|---|---|---|---|---|---|---|",
    ]
    for device, summary in report["devices"].items():
        accuracy = ", ".join(f"{100 * v:.0f}%" for v in summary["srnet_accuracy"].values())
        for method, figures in summary["methods"].items():
            consistency = figures["consistency"]
            runs_text = (consistency.get("across_runs_note", "n/a") if consistency["across_runs"] is None
                         else _fmt(consistency["across_runs"]))
            content = figures["content"]
            feature = content.get("feature")
            content_text = ("n/a" if feature is None else
                            f"{_fmt(content[feature]['systematic'])} ± {_fmt(content[feature]['se'])} ({feature})")
            defects = figures["defects"]
            defect_text = ("n/a" if defects.get("n_maps", 0) == 0 else
                           f"{100 * defects['share']:.1f}% vs {100 * defects['area_share']:.1f}% "
                           f"({_fmt(defects['lift'])}×, p={_fmt(defects['p_value'], '.3f')})")
            shape = f"{figures['map_shape'][0]}x{figures['map_shape'][1]}"
            images_text = _fmt(consistency["across_images"])
            follows = figures["verdict"] + (" — not used: unfaithful" if figures.get("verdict_used") is False else "")
            lines.append(f"| {device} | {method} ({figures['layer']}, {shape}) | {accuracy} | {runs_text} / "
                         f"{images_text} | {content_text} | {defect_text} | {follows} |")
    lines += _faithfulness_lines(report)
    lines += _adversarial_lines(report)
    lines += ["", "Verdict:", ""]
    for device, summary in report["devices"].items():
        lines.append(f"- **{device}**: {_device_sentence(summary)}")
        coarse = [f"{m} ({f['layer']}, {f['map_shape'][0]}x{f['map_shape'][1]})"
                  for m, f in summary["methods"].items() if np.prod(f["map_shape"]) <= 16]
        if coarse:
            lines.append(f"  Maps of {', '.join(coarse)} have at most 4x4 cells: each cell sees nearly the whole crop, "
                         "so they cannot localise anything and do not vote (CAM exists only at layer12; the other "
                         "methods can explain a finer layer, --layer layer9).")
    lines += [
        "",
        (f"Reading: a method's maps *follow defects* when their share of saliency on the defect neighbourhoods is "
         f"at least {DEFECT_LIFT}× the neighbourhoods' share of the area and no more than {100 * SIGNIFICANCE:.0f}% "
         f"of circularly shifted defect masks reach it; they *follow content* when their Spearman ρ with the "
         f"luminance, texture or colour of their own image exceeds their ρ with those of the other test images "
         f"(same crop, cells away from defects) by at least {CONTENT_RHO}, in one direction over the maps explained "
         f"as a class, and by more than three standard errors. Maps driven by age traces should also agree across "
         f"images of a class and across runs; maps driven by content do not."),
        "",
    ]
    return "\n".join(lines)


def _faithfulness_lines(report: dict) -> list[str]:
    """The faithfulness table of ``saliency.md`` (nothing when the checks were not run)."""
    settings = report["settings"].get("faithfulness")
    records = [(device, method, figures["faithfulness"]) for device, summary in report["devices"].items()
               for method, figures in summary["methods"].items() if figures.get("faithfulness", {}).get("n_crops")]
    if not settings or not records:
        return []
    baseline = {"blur": f"a Gaussian blur of the crop (σ = {_fmt(settings.get('blur_sigma_px'), 'g')} px)",
                "zero": "zeros", "mean": "the crop's mean colour"}.get(settings["baseline"], settings["baseline"])
    thresholds = settings["thresholds"]
    lines = [
        "",
        "## Are the maps faithful?",
        "",
        (f"On held-out crops of each device's first run: the pixels are removed (deletion) or restored "
         f"(insertion) most salient first, in {settings['steps']} steps, replaced by {baseline}; the area under the "
         f"curve of the explained class's probability is compared with that of a random pixel order (gain: median "
         f"over crops, positive is better than chance; p: one-sided Wilcoxon signed-rank test), on up to "
         f"{settings['crops_per_device']} *informative* crops, whose baseline lowers that probability by at least "
         f"{thresholds['informative_span']:g} (on the others every order gives the same flat curve). "
         f"Randomisation: median |Spearman ρ|, over {settings['crops_per_device']} crops, between the maps of the "
         f"trained network and of a copy with re-initialised weights (below "
         f"{thresholds['randomisation_median_abs_rho_below']:g}: the maps depend on the weights). A method fails "
         f"when its maps do not change under randomisation, or when neither gain is positive (each test at "
         f"p ≤ {thresholds['gain_test_alpha'] / 2:g}); its verdicts are then not used."),
        "",
        "| device | method | informative / scanned crops | deletion AUC: map / random (gain, p) | "
        "insertion AUC: map / random (gain, p) | randomisation median \\|ρ\\| | faithfulness |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for device, method, record in records:
        auc = record.get("auc")
        cells = []
        for kind in ("deletion", "insertion"):
            gain = record.get(f"{kind}_gain")
            if auc is None or gain is None:
                cells.append("n/a: no informative crop")
                continue
            cells.append(f"{_fmt(auc[kind], '.3f')} / {_fmt(auc[f'{kind}_random'], '.3f')} "
                         f"({_fmt(gain['median'], '+.3f')}, p={_fmt(gain['p_value'], '.2g')})")
        label = record["label"]
        shown = f"**{label}**" if record["faithful"] is False else label
        lines.append(f"| {device} | {method} | {record.get('n_informative', 0)} / {record.get('n_scanned', 0)} | "
                     f"{cells[0]} | {cells[1]} | {_fmt(record.get('randomisation_median_abs_rho'))} | {shown} |")
        notes += [f"- {device}, {method}: {reason}." for reason in record["reasons"]]
    return lines + ([""] + notes if notes else [])


def _adversarial_lines(report: dict) -> list[str]:
    """The adversarial-perturbation table of ``saliency.md`` (nothing when it was not run)."""
    settings = report["settings"].get("adversarial")
    records = [(device, summary["adversarial"]) for device, summary in report["devices"].items()
               if (summary.get("adversarial") or {}).get("n_crops")]
    if not settings or not records:
        return []
    level = f"{100 * settings['confidence']:.0f} %"
    lines = [
        "",
        "## Where must a crop change for its class to flip?",
        "",
        (f"Held-out crops of each device's first run, each pushed by gradient steps (L-inf {settings['step']:g} each, "
         f"at most {settings['max_steps']}, within ±{settings['epsilon']:g} of the crop) until its crop network's "
         f"class flips (the camera-bias paper's Fig. 5). Columns: crops whose perturbation energy share on edges "
         f"(the top quartile of local gradient, outside the defect boxes) exceeds the edges' share of the area, and "
         f"the same in the {settings['defect_box']}x{settings['defect_box']} boxes around the device's defects, "
         f"whatever their onset (crops holding one only: a network that reads defects turns a young crop old by "
         f"painting hot pixels where later defects appear), with exact {level} intervals; chance is 50 %. "
         f"Figures: `adversarial/<device>.png`."),
        "",
        "| device | run | flipped / crops | edges: crops above area share ({0}) | mean energy / area share on edges | "
        "defects: crops above area share ({0}) | mean energy / area share at defects | perturbation concentrates on |"
        .format(level),
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(figure: dict) -> tuple[str, str]:
        if not figure.get("n"):
            return "n/a: no crop", "n/a"
        low, high = figure["ci"]
        return (f"{figure['above_area']}/{figure['n']} ({100 * low:.0f}–{100 * high:.0f} %)",
                f"{_fmt(figure['mean_energy_share'], '.3f')} / {_fmt(figure['mean_area_share'], '.3f')}")

    for device, record in records:
        edges, edge_means = cell(record["edges"])
        defects, defect_means = cell(record["defects"])
        lines.append(f"| {device} | {record['run']} | {record['flipped']}/{record['n_crops']} | {edges} | {edge_means} "
                     f"| {defects} | {defect_means} | {record['reading']} |")
    return lines


def _device_sentence(summary: dict) -> str:
    verdict = summary["verdict"]
    accuracy = np.mean(list(summary["srnet_accuracy"].values()))
    unfaithful = summary.get("unfaithful_methods") or []
    if verdict == NO_FAITHFUL_METHOD:
        return (f"no reading: every saliency method ({', '.join(unfaithful)}) failed the faithfulness checks, so "
                f"none of their verdicts is used; SRNet test accuracy {100 * accuracy:.0f}%.")
    reading = {
        "content": "SRNet reads image content, not sensor defects",
        "defects": "SRNet looks at the sensor defects (age traces)",
        "both content and defects": "SRNet's maps follow both image content and the defects",
        "neither content nor defects": "SRNet's maps follow neither image structure nor the defects",
    }.get(verdict, verdict)
    caveat = (" (its accuracy is near chance, so its maps say little)"
              if accuracy < summary["chance_accuracy"] + 0.1 else "")
    left_out = f" ({', '.join(unfaithful)}: unfaithful, not used)" if unfaithful else ""
    return (f"{reading}{caveat}; majority of {', '.join(summary['verdict_methods'])}{left_out}, SRNet test accuracy "
            f"{100 * accuracy:.0f}%.")



def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def write_report(out: Path, report: dict, rows: list[dict], files: list[Path],
                 faithfulness_rows: list[dict] | None = None, adversarial_rows: list[dict] | None = None) -> dict:
    """Write ``saliency.json``, ``saliency.md`` and the per-map, faithfulness and adversarial CSVs.

    Parameters
    ----------
    out : Path
        The output folder.
    report : dict
        The content of ``saliency.json`` (NaN and infinite values are written as null).
    rows : list of dict
        One row per map for ``saliency_maps.csv``.
    files : list of Path
        The files already written (maps, contact sheets, faithfulness figures), listed after the
        five report files.
    faithfulness_rows : list of dict, optional
        One row per method and checked crop for ``saliency_faithfulness.csv``
        (:data:`FAITHFULNESS_COLUMNS`; the file holds only its header when there are none).
    adversarial_rows : list of dict, optional
        One row per perturbed crop for ``saliency_adversarial.csv``
        (:data:`~pipeline.analysis.saliency.adversarial.ADVERSARIAL_COLUMNS`; header only when none).

    Returns
    -------
    dict
        The report as written, plus ``verdict_text`` (the markdown) and ``files`` (every path
        written, as ``Path``).
    """
    report = _finite(report)
    text = verdict_markdown(report)
    rows_path = out / "saliency_maps.csv"
    _write_rows(rows_path, rows)
    faithfulness_path = out / "saliency_faithfulness.csv"
    _write_rows(faithfulness_path, faithfulness_rows or [], FAITHFULNESS_COLUMNS)
    adversarial_path = out / "saliency_adversarial.csv"
    _write_rows(adversarial_path, adversarial_rows or [], ADVERSARIAL_COLUMNS)
    json_path, md_path = out / "saliency.json", out / "saliency.md"
    atomic_write_text(md_path, text)
    files = [json_path, md_path, rows_path, faithfulness_path, adversarial_path] + files
    report["files"] = [str(p) for p in files]
    write_json(json_path, report)
    return {**report, "verdict_text": text, "files": files}


def write_maps(path: Path, *, runs: Sequence[int], images: Sequence[str], crops: Sequence[str],
               held_out: np.ndarray, true: np.ndarray, maps: dict[str, np.ndarray],
               targets: dict[str, np.ndarray]) -> None:
    """Write one device's raw maps and their targets, compressed, to ``path`` (``.npz``).

    The arrays are ``runs``, ``images``, ``crops``, ``held_out`` (runs, images), ``true`` (the
    images' labels) and, per method ``m`` of ``maps``, ``maps_m`` (runs, images, crops, h, w) and
    ``targets_m`` (runs, images, crops).
    """
    buffer = io.BytesIO()
    np.savez_compressed(buffer, runs=np.array(runs), images=np.array(images), crops=np.array(crops),
                        held_out=held_out, true=true,
                        **{f"maps_{m}": maps[m] for m in maps},
                        **{f"targets_{m}": targets[m] for m in maps})
    with atomic_write(path, "wb") as fh:
        fh.write(buffer.getvalue())
