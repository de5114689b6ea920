"""The written results of a saliency analysis: ``saliency.json``, ``saliency.md``, the per-map CSV
and the raw maps.

:func:`verdict_markdown` turns the content of ``saliency.json`` into the short verdict of
``saliency.md``; :func:`write_report` writes the three report files, :func:`write_maps` one
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
from pipeline.analysis.saliency.stats import CONTENT_RHO, DEFECT_LIFT, SIGNIFICANCE
from pipeline.data.atomic import atomic_write, atomic_write_text

__all__ = ["verdict_markdown", "write_maps", "write_report"]

_ROW_COLUMNS = ["device", "run", "image", "crop", "method", "true", "target", "rho_luminance", "rho_texture",
                "rho_colour", "defects_in_crop", "defect_share", "area_share", "saliency_mass"]


def _write_rows(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_ROW_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


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
            lines.append(f"| {device} | {method} ({figures['layer']}, {shape}) | {accuracy} | {runs_text} / "
                         f"{images_text} | {content_text} | {defect_text} | {figures['verdict']} |")
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


def _device_sentence(summary: dict) -> str:
    verdict = summary["verdict"]
    accuracy = np.mean(list(summary["srnet_accuracy"].values()))
    reading = {
        "content": "SRNet reads image content, not sensor defects",
        "defects": "SRNet looks at the sensor defects (age traces)",
        "both content and defects": "SRNet's maps follow both image content and the defects",
        "neither content nor defects": "SRNet's maps follow neither image structure nor the defects",
    }.get(verdict, verdict)
    caveat = (" (its accuracy is near chance, so its maps say little)"
              if accuracy < summary["chance_accuracy"] + 0.1 else "")
    return (f"{reading}{caveat}; majority of {', '.join(summary['verdict_methods'])}, SRNet test accuracy "
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


def write_report(out: Path, report: dict, rows: list[dict], files: list[Path]) -> dict:
    """Write ``saliency.json``, ``saliency.md`` and ``saliency_maps.csv`` into ``out``.

    Parameters
    ----------
    out : Path
        The output folder.
    report : dict
        The content of ``saliency.json`` (NaN and infinite values are written as null).
    rows : list of dict
        One row per map for ``saliency_maps.csv``.
    files : list of Path
        The files already written (maps, contact sheets), listed after the three report files.

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
    json_path, md_path = out / "saliency.json", out / "saliency.md"
    atomic_write_text(md_path, text)
    files = [json_path, md_path, rows_path] + files
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
