"""The audit's outputs: ``audit.json``, ``audit.md``, plots, predictions and the printed summary.

Output folder::

    audit.json          configuration, seeds, versions, manifest SHA-256, the verdict rule,
                        every check with every figure (value, chance, intervals, verdict)
    audit.md            the same for a reader, with the plots
    overview.png        every judged figure with its intervals against its chance level
    content.png camera_fig3.png position.png patch_colour.png location.png binary_mask.png
                        one plot per check that ran
                        (each plot as PNG at 300 dpi and as an SVG of the same name; percent)
    predictions.csv     every test prediction of every model
    failures.csv        images left out, with the reason
    splits/<device>/run_XX.csv   the experiment's splits (content check)
    splits_cnn/<device>.csv      the balanced CNN split
    models/<name>.pt    each CNN's training checkpoint (loaded, or resumed, when the audit runs
                        again in the same folder with the same data and settings)

Every file is written atomically; ``audit.json`` says ``"status": "complete"`` only once all
the others are written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.analysis.audit.stats import FOUND, JUDGED, NO_BIAS, PERMUTATION, SUSPECTED
from pipeline.analysis.figures import chance_segments, n_label, percent, percent_axis, save_figure, vector_path
from pipeline.analysis.provenance import command_line, package_versions, utc_now, write_json
from pipeline.analysis.report import write_csv
from pipeline.data.atomic import atomic_write_text
from pipeline.features.device import shown_path

__all__ = ["markdown", "start_record", "summary_text", "write_report"]

_MARK = {NO_BIAS: "no bias found", SUSPECTED: "**bias suspected**", FOUND: "**BIAS FOUND**", None: "not run"}


def start_record(out: Path | None, config, manifest, extra: dict) -> dict:
    """The provenance part of ``audit.json``; written at once with ``"status": "running"``."""
    record = {
        "tool": "pipeline.audit",
        "status": "running",
        "started": utc_now(),
        "config": config.to_dict(),
        "seed": config.seed,
        "manifest": {"path": str(manifest.source), "sha256": manifest.sha256, "rows": len(manifest.rows),
                     "excluded": len(manifest.excluded)},
        "versions": package_versions(),
        "command": command_line(),
        **extra,
    }
    if config.cnn is not None:
        record["srnet_base"] = config.cnn.srnet_config().to_dict()
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "audit.json", record)
    return record


def _pct(x: float) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def _signed(x: float) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:+.1f}"


def _ci(ci, signed=False) -> str:
    f = _signed if signed else _pct
    return f"[{f(ci[0])}, {f(ci[1])}]"


def _is_difference(fig) -> bool:
    return fig.method.startswith("conditional")


def _is_p(fig) -> bool:
    return fig.method == PERMUTATION


def _p(x: float) -> str:
    return f"p={x:.2g}"


def figure_table(figures, levels) -> str:
    """Markdown table of figures (percent points)."""
    screening, strict = 100 * levels.confidence, 100 * levels.confidence_strict
    lines = [f"| figure | value | chance | {screening:.2f} % CI | {strict:.2f} % CI | n | verdict |",
             "|---|---:|---:|---|---|---:|---|"]
    for f in figures:
        d = _is_difference(f)
        value = _signed(f.value) if d else _pct(f.value)
        chance = _signed(f.chance) if d else _pct(f.chance)
        verdict = {"verdict": _MARK.get(f.verdict), "susceptibility": f"stress test: {_MARK.get(f.verdict)}"}.get(
            f.role, "(context)")
        label = f.label + (f" — {f.note}" if f.note and f.role in JUDGED else "")
        if _is_p(f):
            found = f.counts.get("threshold_found", float("nan"))
            lines.append(f"| {label} | {_p(f.value)} | p ≤ {f.chance:.2g} suspected, ≤ {found:.2g} found | "
                         f"[{f.ci[0]:.2g}, {f.ci[1]:.2g}] | [{f.ci_strict[0]:.2g}, {f.ci_strict[1]:.2g}] | "
                         f"{f.n} permutations | {verdict} |")
            continue
        lines.append(f"| {label} | {value} | {chance} | {_ci(f.ci, d)} | {_ci(f.ci_strict, d)} | {f.n} | {verdict} |")
    return "\n".join(lines)


def summary_text(results, levels) -> str:
    """The printed summary: one line per check and per judged figure."""
    lines = ["Bias audit (percent; chance level; screening interval):"]
    for r in results:
        stress = "" if r.susceptibility is None else f"; stress test: {r.susceptibility}"
        lines.append(f"  {r.title}: {r.verdict or 'not run'}{stress}")
        for f in r.figures:
            if f.role not in JUDGED:
                continue
            d = _is_difference(f)
            value = _signed(f.value) if d else _pct(f.value)
            chance = _signed(f.chance) if d else _pct(f.chance)
            tag = "  [stress test]" if f.role == "susceptibility" else ""
            if _is_p(f):
                lines.append(f"    {f.verdict:15s} {_p(f.value):>6s} vs p<={f.chance:.2g} (permutation test)  {f.label}")
                continue
            lines.append(f"    {f.verdict:15s} {value:>6s} vs {chance:>6s} {_ci(f.ci, d):>16s}  {f.label}{tag}")
    lines.append(f"Rule: {levels.describe()}")
    return "\n".join(lines)


def markdown(record: dict, results, levels, plots: dict, bank) -> str:
    """``audit.md``."""
    m = record["manifest"]
    parts = ["# Bias audit", "",
             (f"Manifest `{m['path']}` ({m['rows']} images, sha256 `{m['sha256'][:16]}…`), "
              f"{len(bank.samples)} read, {len(bank.failures)} left out; seed {record['seed']}; "
              f"started {record['started']}, {record.get('seconds_total', 0):.0f} s."), "",
             ("Is the age label predictable from things that are not age — scene content, camera identity, global "
              "colour — and does a learned model read them? Each check reports its figures with their chance level "
              "and confidence intervals, and a verdict."), "",
             "**Verdict rule.** " + levels.describe() + " Only the upper side of an interval can raise a verdict, so "
             f"when nothing is biased the chance that any figure of this audit says more than '{NO_BIAS}' is at most "
             f"{100 * levels.alpha_suspect / 2:.1f} %. Drops are in percentage points, chance 0. "
             "'No bias found' is not proof of absence: the interval's upper end says how large a bias could still "
             "hide. *Stress-test* figures (the camera check's Disjoint protocol) create a device–class correlation "
             "on purpose: their verdict says whether the model would read the camera if the data let it, not that "
             "these data are biased.", "", "## Summary", "", "| check | verdict | stress test |", "|---|---|---|"]
    parts += [f"| {r.title} | {_MARK[r.verdict]} | {'—' if r.susceptibility is None else _MARK[r.susceptibility]} |"
              for r in results]
    if "overview" in plots:
        parts += ["", f"![every judged figure]({plots['overview']})"]
    for r in results:
        stress = "" if r.susceptibility is None else f" (stress test: {_MARK[r.susceptibility]})"
        parts += ["", f"## {r.title}: {_MARK[r.verdict]}{stress}", "", r.question, ""]
        if r.figures:
            parts += [figure_table(r.figures, levels), ""]
        parts += [f"- {note}" for note in r.notes]
        if r.name in plots:
            parts += ["", f"![{r.title}]({plots[r.name]})"]
        if r.name == "camera" and getattr(r, "groups", None):
            taught = "; ".join(f"class {c} from {', '.join(d)}" for c, d in r.groups.items())
            parts += ["", f"Disjoint groups: {taught}"]
        parts += ["", f"({r.seconds:.1f} s)"]
    if bank.failures:
        parts += ["", "## Images left out", "", "See `failures.csv`."]
    parts += ["", "## Configuration", "", ("Every parameter, seed, package version and the manifest's SHA-256: "
                                           "`audit.json`. Splits: `splits/` (the experiment's) and `splits_cnn/` "
                                           "(the balanced CNN split); every prediction: `predictions.csv`.")]
    return "\n".join(parts) + "\n"


def _subplots(*grid, figsize, **kwargs):
    """A figure without pyplot (no global figure registry, no backend switch) and its axes."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*grid, **kwargs)


def _tick_name(key: str) -> str:
    """A bar's name from its figure's key: ``colour_accuracy_SIM-a`` -> ``colour, SIM-a``."""
    name = key.replace("_accuracy", "")
    if name.startswith("position_"):
        return f"crop {name.removeprefix('position_')}"
    kind, _, device = name.partition("_")
    if kind in ("colour", "thumbnail"):
        return f"{kind}, {device or 'all devices'}"
    return name.replace("_", " ")


def _bars(ax, figures, title, confidence):
    """Accuracies in percent with their screening intervals, each bar's chance level and its n."""
    labels = [n_label(_tick_name(f.key), f.n, one_line=True) for f in figures]
    values = percent([f.value for f in figures])
    lo = percent([f.ci[0] for f in figures])
    hi = percent([f.ci[1] for f in figures])
    ax.bar(range(len(figures)), values, color="#8fb3d9", yerr=[values - lo, hi - values], capsize=3)
    chance_segments(ax, range(len(figures)), percent([f.chance for f in figures]), label=False)
    ax.set_xticks(range(len(figures)), labels, rotation=30, ha="right", rotation_mode="anchor", fontsize=7.5)
    ax.set_title(f"{title}\nbars: accuracy with its {100 * confidence:.2f} % screening interval; dashed: chance; "
                 "n: test images", fontsize=9)
    percent_axis(ax, "accuracy (%)")
    ax.set_ylim(min(-2.0, float(lo.min()) - 5), 102)


def make_plots(out: Path, results, confidence: float = 0.95) -> dict:
    """Write the plots, each as PNG (300 dpi) and SVG; return check name -> PNG file name.

    ``confidence`` is the screening intervals' level, named in the legends.
    """
    plots = {}
    verdict_figs = [(r, f) for r in results for f in r.figures if f.role in JUDGED and not _is_p(f)]
    if verdict_figs:
        fig, ax = _subplots(figsize=(7.5, 0.42 * len(verdict_figs) + 1.2))
        colours = {NO_BIAS: "#4a8f4a", SUSPECTED: "#d9a000", FOUND: "#c0392b"}
        for y, (r, f) in enumerate(reversed(verdict_figs)):
            offset = 100 * (f.value - f.chance)
            ax.plot(percent([f.ci_strict[0] - f.chance, f.ci_strict[1] - f.chance]), [y, y], color="0.75", lw=6,
                    solid_capstyle="butt")
            ax.plot(percent([f.ci[0] - f.chance, f.ci[1] - f.chance]), [y, y], color=colours[f.verdict], lw=2.5)
            ax.plot([offset], [y], "o", color=colours[f.verdict])
        ax.axvline(0, color="k", lw=1)
        ax.set_yticks(range(len(verdict_figs)), [f"{r.name}: {f.key}" + (" (stress)" if f.role == "susceptibility"
                                                                          else "") for r, f in reversed(verdict_figs)],
                      fontsize=7)
        ax.set_xlabel("figure minus its chance level (percentage points)\n"
                      "screening interval coloured by verdict, strict interval grey")
        ax.legend(handles=[Line2D([], [], color=c, lw=2.5, marker="o", label=v) for v, c in colours.items()]
                  + [Line2D([], [], color="0.75", lw=6, label="strict interval")],
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
        ax.set_title("Judged figures against their chance level" + (
            "\n(permutation p-values are in their check's plot)" if any(_is_p(f) for r in results for f in r.figures)
            else ""), fontsize=10)
        save_figure(fig, out / "overview.png", vector="svg")
        plots["overview"] = "overview.png"
    for r in results:
        if not r.figures:
            continue
        if r.name == "content":
            fig, ax = _subplots(figsize=(max(6.5, 0.55 * len(r.figures) + 2), 3.8))
            _bars(ax, r.figures, "Content-only baselines: accuracy per model and device", confidence)
        elif r.name == "camera" and getattr(r, "shares", None):
            models = list(r.shares)
            fig, axes = _subplots(1, len(models), figsize=(max(6.0, 3.2 * len(models)), 3.8), squeeze=False,
                                  sharey=True)
            for ax, model in zip(axes[0], models):
                devices = list(r.shares[model])
                classes = list(next(iter(r.shares[model].values())))
                bottom = np.zeros(len(devices))
                for c in classes:
                    vals = percent([r.shares[model][d][c] for d in devices])
                    ax.bar(range(len(devices)), vals, bottom=bottom, label=f"predicted class {c}")
                    bottom += vals
                taught = {d: c for c, ds in getattr(r, "groups", {}).items() for d in ds}
                names = [f"{d} (taught class {taught[d]})" if "disjoint" in model and d in taught else d for d in devices]
                ax.set_xticks(range(len(devices)), names, rotation=30, ha="right", rotation_mode="anchor", fontsize=7.5)
                ax.set_title(model, fontsize=9)
            axes[0][0].set_ylabel("share of the device's test images (%)", fontsize=9)
            axes[0][0].set_ylim(0, 100)
            handles, names = axes[0][0].get_legend_handles_labels()
            fig.legend(handles, names, loc="outside lower center", ncols=len(handles), fontsize=7.5, frameon=False)
            fig.suptitle("Predicted classes per device (cf. the paper's Fig. 3)", fontsize=10)
        elif r.name == "position":
            fig, ax = _subplots(figsize=(6.5, 3.8))
            _bars(ax, [f for f in r.figures if f.key.startswith("position_")] +
                  [r.figure("other_positions_accuracy")], "Balanced model away from its training crop", confidence)
        elif r.name == "patch":
            fig, ax = _subplots(figsize=(6.5, 3.8))
            _bars(ax, [r.figure(k) for k in ("balanced_accuracy", "random_crop_accuracy", "jitter_accuracy",
                                             "grayscale_accuracy")], "Patch size and colour: accuracy", confidence)
        elif r.name == "location" and getattr(r, "maps", None):
            fig = _location_plot(r)
        elif r.name == "binary_mask":
            fig, ax = _subplots(figsize=(6.5, 3.8))
            _bars(ax, [r.figure("balanced_accuracy"), r.figure("binary_mask_accuracy")],
                  "Binary masks (scene structure only) vs the plain crops", confidence)
        elif callable(getattr(r, "draw", None)) and (fig := r.draw()) is not None:  # a check that draws its own
            pass
        else:
            continue
        name = {"camera": "camera_fig3.png", "patch": "patch_colour.png"}.get(r.name, f"{r.name}.png")
        save_figure(fig, out / name, vector="svg")
        plots[r.name] = name
    return plots


def _location_plot(r):
    """Per-device heat maps of accuracy and single images' probability of the true class, in the sensor frame."""
    maps, examples = r.maps, r.examples
    ncols = max(len(maps), len(examples))
    fig, axes = _subplots(2 if examples else 1, ncols, figsize=(3.1 * ncols + 0.8, 6.4 if examples else 3.4),
                          squeeze=False)
    crop = r.details.get("crop", 0)

    def draw(ax, values, rows, cols, shape, title, vmin, vmax, cmap):
        values = np.asarray(values, dtype=float)
        # cells centred on the crop centres, in pixels of the sensor frame (row 0 at the top)
        centres_r = np.asarray(rows) + crop / 2
        centres_c = np.asarray(cols) + crop / 2
        half_r = (centres_r[1] - centres_r[0]) / 2 if len(rows) > 1 else crop / 2
        half_c = (centres_c[1] - centres_c[0]) / 2 if len(cols) > 1 else crop / 2
        extent = (centres_c[0] - half_c, centres_c[-1] + half_c, centres_r[-1] + half_r, centres_r[0] - half_r)
        image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest",
                          aspect="equal")
        if shape is not None:
            ax.set_xlim(0, shape[1])
            ax.set_ylim(shape[0], 0)
        ax.set_xlabel("column (pixels)", fontsize=8)
        ax.set_ylabel("row (pixels)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(title, fontsize=8)
        return image

    image = None
    for ax, (device, m) in zip(axes[0], maps.items()):
        image = draw(ax, percent(m["accuracy"]), m["rows"], m["cols"], m.get("shape"),
                     f"{device}: accuracy per crop position\n({m['images']} test images)", 0, 100, "viridis")
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), shrink=0.85, label="accuracy (%)")  # whole row: columns stay aligned
    for ax in axes[0][len(maps):]:
        ax.set_visible(False)
    if examples:
        shape_of = {d: m.get("shape") for d, m in maps.items()}
        for ax, ex in zip(axes[1], examples):
            name = ex["image"].replace("\\", "/").rsplit("/", 1)[-1]
            image = draw(ax, percent(ex["p_true"]), ex["rows"], ex["cols"], shape_of.get(ex["device"]),
                         f"{name} (class {ex['label']})\nright at {100 * ex['accuracy']:.0f} % of positions", 0, 100,
                         "magma")
        fig.colorbar(image, ax=list(axes[1]), shrink=0.85, label="probability of the true class (%)")
        for ax in axes[1][len(examples):]:
            ax.set_visible(False)
    f = r.figure("position_dependence")
    fig.suptitle(f"Where in the frame is the {crop}x{crop} crop model right? (cf. the paper's Fig. 8-9)\n"
                 f"position dependence: permutation test p = {f.value:.2g} ({f.verdict}); "
                 f"mean accuracy {100 * r.figure('grid_accuracy').value:.1f} %", fontsize=9)
    return fig


def write_report(out: Path | None, record: dict, results, bank, levels, plan: dict, manifest) -> dict:
    """Write every output file (when ``out`` is given) and return the audit's result dict."""
    record.update({
        "levels": {"family_size": levels.family_size, "alpha_suspect": levels.alpha_suspect,
                   "alpha_found": levels.alpha_found, "confidence": levels.confidence,
                   "confidence_strict": levels.confidence_strict, "rule": levels.describe(),
                   "planned_figures": plan},
        "checks": [r.to_dict() for r in results],
        "verdicts": {r.name: r.verdict for r in results},
        "susceptibility": {r.name: r.susceptibility for r in results if r.susceptibility is not None},
        "n_images": len(bank.samples), "n_failures": len(bank.failures),
    })
    text = summary_text(results, levels)
    files = []
    if out is not None:
        out = Path(out)
        root = manifest.source.parent.resolve()
        rows = []
        for r in results:
            for row in r.predictions:
                rows.append({**row, "image": shown_path(row["image"], root)})
        columns = ["check", "model", "run", "image", "device", "true", "predicted"]
        columns += sorted({k for row in rows for k in row if k.startswith("p_")})
        write_csv(out / "predictions.csv", rows, columns)
        write_csv(out / "failures.csv", [{"image": shown_path(p, root), "reason": why} for p, why in bank.failures],
                  ["image", "reason"])
        plots = make_plots(out, results, levels.confidence)
        atomic_write_text(out / "audit.md", markdown(record, results, levels, plots, bank))
        files = ["audit.json", "audit.md", *[f for png in plots.values() for f in (png, str(vector_path(png)))],
                 "predictions.csv", "failures.csv"]
        if (out / "splits").is_dir():
            files.append("splits/")
        if (out / "splits_cnn").is_dir():
            files.append("splits_cnn/")
        if (out / "models").is_dir():
            files.append("models/")
        record.update(status="complete", finished=utc_now(), files=files)
        write_json(out / "audit.json", record)
    else:
        record.update(status="complete", finished=utc_now())
    return {"results": results, "record": record, "summary_text": text, "files": files, "out": out}
