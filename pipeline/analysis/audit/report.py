"""The audit's outputs: ``audit.json``, ``audit.md``, plots, predictions and the printed summary.

Output folder::

    audit.json          configuration, seeds, versions, manifest SHA-256, the verdict rule,
                        every check with every figure (value, chance, intervals, verdict)
    audit.md            the same for a reader, with the plots
    overview.png        every judged figure with its intervals against its chance level
    content.png camera_fig3.png position.png patch_colour.png   one plot per check that ran
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

from pipeline.analysis.audit.stats import FOUND, JUDGED, NO_BIAS, SUSPECTED
from pipeline.analysis.provenance import package_versions, utc_now, write_json
from pipeline.analysis.report import write_csv
from pipeline.data.atomic import atomic_write, atomic_write_text

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


def _save(fig, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


def _subplots(*grid, figsize, **kwargs):
    """A figure without pyplot (no global figure registry, no backend switch) and its axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def _bars(ax, figures, title):
    labels = [f.key.replace("_", " ") for f in figures]
    values = np.array([f.value for f in figures])
    lo = np.array([f.ci[0] for f in figures])
    hi = np.array([f.ci[1] for f in figures])
    ax.bar(range(len(figures)), values, color="#8fb3d9", yerr=[values - lo, hi - values], capsize=3)
    for i, f in enumerate(figures):
        ax.hlines(f.chance, i - 0.4, i + 0.4, colors="k", linestyles="--", lw=1)
    ax.set_xticks(range(len(figures)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylim(min(0.0, float(lo.min()) - 0.05), 1.02)
    ax.grid(axis="y", alpha=0.3)


def make_plots(out: Path, results) -> dict:
    """Write the plots; return check name -> file name."""
    plots = {}
    verdict_figs = [(r, f) for r in results for f in r.figures if f.role in JUDGED]
    if verdict_figs:
        fig, ax = _subplots(figsize=(7.5, 0.42 * len(verdict_figs) + 1.2))
        colours = {NO_BIAS: "#4a8f4a", SUSPECTED: "#d9a000", FOUND: "#c0392b"}
        for y, (r, f) in enumerate(reversed(verdict_figs)):
            offset = f.value - f.chance
            ax.plot([f.ci_strict[0] - f.chance, f.ci_strict[1] - f.chance], [y, y], color="0.75", lw=6,
                    solid_capstyle="butt")
            ax.plot([f.ci[0] - f.chance, f.ci[1] - f.chance], [y, y], color=colours[f.verdict], lw=2.5)
            ax.plot([offset], [y], "o", color=colours[f.verdict])
        ax.axvline(0, color="k", lw=1)
        ax.set_yticks(range(len(verdict_figs)), [f"{r.name}: {f.key}" + (" (stress)" if f.role == "susceptibility"
                                                                          else "") for r, f in reversed(verdict_figs)],
                      fontsize=7)
        ax.set_xlabel("figure minus its chance level (screening interval coloured, strict interval grey)")
        ax.set_title("Judged figures", fontsize=10)
        fig.tight_layout()
        _save(fig, out / "overview.png")
        plots["overview"] = "overview.png"
    for r in results:
        if not r.figures:
            continue
        if r.name == "content":
            fig, ax = _subplots(figsize=(max(5, 0.5 * len(r.figures) + 2), 3.6))
            _bars(ax, r.figures, "content-only baselines (accuracy, screening CI, dashed: chance)")
        elif r.name == "camera" and getattr(r, "shares", None):
            models = list(r.shares)
            fig, axes = _subplots(1, len(models), figsize=(3.2 * len(models), 3.4), squeeze=False, sharey=True)
            for ax, model in zip(axes[0], models):
                devices = list(r.shares[model])
                classes = list(next(iter(r.shares[model].values())))
                bottom = np.zeros(len(devices))
                for c in classes:
                    vals = np.array([r.shares[model][d][c] for d in devices])
                    ax.bar(range(len(devices)), vals, bottom=bottom, label=f"predicted {c}")
                    bottom += vals
                taught = {d: c for c, ds in getattr(r, "groups", {}).items() for d in ds}
                names = [f"{d}\n(taught {taught[d]})" if "disjoint" in model and d in taught else d for d in devices]
                ax.set_xticks(range(len(devices)), names, rotation=30, ha="right", fontsize=7)
                ax.set_title(model, fontsize=9)
            axes[0][0].set_ylabel("share of the device's test images")
            axes[0][-1].legend(fontsize=7)
            fig.suptitle("Predicted classes per device (cf. the paper's Fig. 3)", fontsize=10)
        elif r.name == "position":
            fig, ax = _subplots(figsize=(5.5, 3.4))
            _bars(ax, [f for f in r.figures if f.key.startswith("position_")] +
                  [r.figure("other_positions_accuracy")], "Balanced model away from its training crop")
        elif r.name == "patch":
            fig, ax = _subplots(figsize=(5.5, 3.4))
            _bars(ax, [r.figure(k) for k in ("balanced_accuracy", "random_crop_accuracy", "jitter_accuracy",
                                             "grayscale_accuracy")], "patch size and colour (accuracy)")
        else:
            continue
        fig.tight_layout()
        name = {"camera": "camera_fig3.png", "patch": "patch_colour.png"}.get(r.name, f"{r.name}.png")
        _save(fig, out / name)
        plots[r.name] = name
    return plots


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
                row = dict(row)
                try:
                    row["image"] = str(Path(row["image"]).relative_to(root))
                except ValueError:
                    pass
                rows.append(row)
        columns = ["check", "model", "run", "image", "device", "true", "predicted"]
        columns += sorted({k for row in rows for k in row if k.startswith("p_")})
        write_csv(out / "predictions.csv", rows, columns)
        write_csv(out / "failures.csv", [{"image": p, "reason": why} for p, why in bank.failures], ["image", "reason"])
        plots = make_plots(out, results)
        atomic_write_text(out / "audit.md", markdown(record, results, levels, plots, bank))
        files = ["audit.json", "audit.md", *plots.values(), "predictions.csv", "failures.csv"]
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
