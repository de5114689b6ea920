"""The HTML page of the dating evidence report: tables, embedded figures and captions.

:func:`render_html` lays out the content that :func:`pipeline.dating.report.build_report` gathers as
one self-contained HTML5 page: every figure of :mod:`pipeline.dating.figures` embedded as a
``data:`` URI (vector SVG, or PNG at 300 dpi for the pixel crops), no external file, no script.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib
import numpy as np

from pipeline.dating.figures import (calibration_figure, crops_figure, defect_map_figure, posterior_figure,
                                     timelines_figure)

__all__ = ["PNG_DPI", "SECTIONS", "exposure_text", "render_html"]

PNG_DPI = 300
#: section id -> heading, in page order
SECTIONS = {
    "summary": "Summary",
    "defects": "1. Defects and the evidence each carries",
    "crops": "2. The defects up close: questioned image against trusted images",
    "timelines": "3. Defect timelines in the trusted images",
    "posterior": "4. Probability of each capture date",
    "defect-map": "5. Where the defects are on the sensor",
    "calibration": "6. How reliable the likelihood ratios are",
    "configuration": "7. Exact configuration and file hashes",
}
_TABLE_COLUMNS = (("rank", "#"), ("row", "row"), ("col", "col"), ("channel_name", "channel"), ("type", "type"),
                  ("onset_from", "onset from"), ("onset_to", "onset to"), ("dark_current", "dark current D (DN/s)"),
                  ("offset", "offset c (DN)"), ("expected_if_present", "expected if present (DN)"),
                  ("measured", "measured residual (DN)"), ("noise_sigma", "local noise σ (DN)"),
                  ("log_likelihood_ratio", "LLR present vs absent"))


def exposure_text(result: dict) -> str:
    """The exposure and ISO a dating used, with where each came from, in words."""
    src = result["sources"]
    exposure = (f"{result['exposure_s']:g} s ({src['exposure']})" if result["exposure_s"]
                else "unknown (averaged over the trusted images' exposures)")
    iso = f"{result['iso']:g} ({src['iso']})" if result["iso"] else "unknown (averaged over the trusted images' ISO)"
    return f"exposure {exposure}, ISO {iso}"


def _embed(fig, fmt: str, alt: str) -> str:
    """An <img> holding the figure as a data: URI (SVG, or PNG at 300 dpi), shown at print size."""
    buffer = io.BytesIO()
    if fmt == "svg":
        with matplotlib.rc_context({"svg.hashsalt": "agetrace-report", "svg.fonttype": "path"}):
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        mime = "image/svg+xml"
    else:
        fig.savefig(buffer, format="png", dpi=PNG_DPI)
        mime = "image/png"
    width_in = fig.get_size_inches()[0]
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<img class="figure" style="width: {width_in:.2f}in" src="data:{mime};base64,{data}" '
            f'alt="{html.escape(alt)}">')


def _cell(value, kind: str = "num") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)) or kind == "text":
        return html.escape(str(value))
    if kind == "signed":
        return f"{value:+.4g}"
    return f"{value:.4g}"


def _defect_table(content: dict) -> str:
    head = "".join(f'<th scope="col">{html.escape(title)}</th>' for _, title in _TABLE_COLUMNS)
    body = []
    for d in content["defects"]:
        cells = []
        for key, _ in _TABLE_COLUMNS:
            value = d[key]
            if key == "measured" and value is None:
                text = "clipped"
            elif key in ("channel_name", "type", "onset_from", "onset_to"):
                text = _cell(value, "text")
            else:
                text = _cell(value, "signed" if key == "log_likelihood_ratio" else "num")
            cls = ' class="date"' if key in ("onset_from", "onset_to") else ""
            cells.append(f"<td{cls}>{text}</td>")
        cls = "" if d["informative"] else ' class="uninformative"'
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<table id="defect-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _lr_table(result: dict) -> str:
    rows = []
    for entry in result["before_after"]:
        if entry.get("note"):
            rows.append(f"<tr><td>{html.escape(entry['date'])}</td>"
                        f"<td colspan=\"4\">{html.escape(entry['note'])}</td></tr>")
        elif entry["log10_lr"] is None:
            rows.append(f"<tr><td>{html.escape(entry['date'])}</td><td>not calibrated</td><td>—</td><td>—</td>"
                        f"<td>{entry['raw_log10_lr']:+.2f}</td></tr>")
        else:
            lo, hi = entry["bounds"][1]
            rows.append(f"<tr><td>{html.escape(entry['date'])}</td><td>{entry['log10_lr']:+.2f}</td>"
                        f"<td>{10 ** entry['log10_lr']:.3g}</td><td>{lo:+.2f} to {hi:+.2f}</td>"
                        f"<td>{entry['raw_log10_lr']:+.2f}</td></tr>")
    return ('<table id="lr-table"><thead><tr><th scope="col">date D</th>'
            '<th scope="col">log10 LR (before D vs after D)</th>'
            '<th scope="col">LR</th><th scope="col">bounds of log10 LR</th><th scope="col">model\'s own log10 LR</th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _key_values(pairs) -> str:
    rows = "".join(f'<tr><th scope="row">{html.escape(str(k))}</th><td>{html.escape(v)}</td></tr>' for k, v in pairs)
    return f'<table class="config"><tbody>{rows}</tbody></table>'


def _versions_table(versions: dict) -> str:
    fit, now = versions.get("model_fit") or {}, versions.get("report") or {}
    names = list(dict.fromkeys([*fit, *now]))
    rows = "".join(f'<tr><th scope="row">{html.escape(name)}</th><td>{html.escape(str(fit.get(name, "—")))}</td>'
                   f'<td>{html.escape(str(now.get(name, "—")))}</td></tr>' for name in names)
    return ('<table class="config" id="versions-table"><thead><tr><th scope="col">software</th>'
            '<th scope="col">version when the model was fitted</th><th scope="col">version making this report</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _flat(prefix: str, value) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out.extend(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    if isinstance(value, list):
        return [(prefix, ", ".join("—" if v is None else str(v) for v in value))]
    return [(prefix, "—" if value is None else str(value))]


_STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 10.5pt; max-width: 8in; margin: 0.4in auto;
       color: #111; line-height: 1.4; }
h1 { font-size: 16pt; margin-bottom: 0.1in; }
h2 { font-size: 13pt; margin-top: 0.35in; border-bottom: 1px solid #999; page-break-after: avoid; }
section { page-break-inside: auto; }
figure { margin: 0.1in 0; page-break-inside: avoid; }
figcaption, p.caption { font-size: 9.5pt; color: #222; margin-top: 0.05in; }
img.figure { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 8.5pt; margin: 0.08in 0; }
th, td { border: 1px solid #bbb; padding: 2px 5px; text-align: right; vertical-align: top; }
th { background: #eee; }
table.config th { text-align: left; font-weight: normal; background: #f4f4f4; }
table.config td { text-align: left; word-break: break-all; }
td.date { white-space: nowrap; }
tr.uninformative td { color: #777; }
p.warning { border: 2px solid #b00; padding: 4px 8px; color: #900; }
#summary-table { font-size: 10pt; width: 100%; }
#summary-table th { width: 2.4in; font-weight: bold; }
#defect-table { font-size: 8pt; }
#defect-table th { vertical-align: bottom; }
"""


def render_html(content: dict) -> str:
    """The report page: the content's tables, its figures embedded, a caption under each.

    Parameters
    ----------
    content : dict
        :func:`pipeline.dating.report.build_report`.

    Returns
    -------
    str
        A complete HTML5 document with no external resource and no script.
    """
    result = content["dating"]
    captions = content["captions"]
    esc = html.escape
    crange = result["credible_range"]

    def section(key: str, body: str) -> str:
        return f'<section id="{key}"><h2>{esc(SECTIONS[key])}</h2>{body}</section>'

    def figure(fig, fmt: str, key: str, alt: str) -> str:
        if fig is None:
            return f'<p class="caption">{esc(captions[key])}</p>'
        return f"<figure>{_embed(fig, fmt, alt)}<figcaption>{esc(captions[key])}</figcaption></figure>"

    warnings = []
    if content["image"]["is_trusted_image"]:
        warnings.append("This file is one of the trusted images the model was fitted on (dated with "
                        "--allow-trusted, for checks only): its evidence is optimistic and must not be used as a "
                        "dating.")
    summary = [
        ("questioned image", result["image"]), ("SHA-256", content["image"]["sha256"] or "—"),
        ("device", result["device"]),
        ("trusted period", f"{result['period']['from']} to {result['period']['to']}"),
        ("most probable interval between onsets", f"{result['interval']['from']} to {result['interval']['to']} "
                                                  f"(probability {result['interval']['probability']:.3f})"),
        (f"{100 * crange['level']:.0f} % credible range", f"{crange['from']} to {crange['to']}"),
        ("exposure and ISO used", exposure_text(result)),
    ]
    summary_html = ('<table class="config" id="summary-table"><tbody>'
                    + "".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in summary)
                    + "</tbody></table>" + "".join(f'<p class="warning">{esc(w)}</p>' for w in warnings)
                    + f'<p class="caption">{esc(captions["summary"])}</p>' + _lr_table(result))
    config = content["configuration"]
    run = content["run"]
    config_pairs = _flat("run", run) + _flat("model", config["model"]) + _flat("manifest", config["manifest"]) \
        + _flat("questioned", config["questioned"]) + _flat("report", config["report"])
    parts = [
        section("summary", summary_html),
        section("defects", f'<p class="caption">{esc(captions["defects"])}</p>' + _defect_table(content)),
        section("crops", figure(crops_figure(content), "png", "crops",
                                "Residual crops around the defects with the most evidence")),
        section("timelines", figure(timelines_figure(content), "svg", "timelines",
                                    "Residual at each defect in the trusted images against capture date")),
        section("posterior", figure(posterior_figure(content), "svg", "posterior",
                                    "Posterior probability density over capture date")),
        section("defect-map", figure(defect_map_figure(content), "svg", "defect-map",
                                     "Map of the sensor's defects coloured by onset date")),
        section("calibration", figure(calibration_figure(content), "svg", "calibration",
                                      "Tippett plot of held-out before/after likelihood ratios")),
        section("configuration", f'<p class="caption">{esc(captions["configuration"])}</p>' + _key_values(config_pairs)
                + _versions_table(config["versions"])),
    ]
    title = f"Dating evidence: {Path(result['image']).name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1>" + "".join(parts) + "</body></html>\n")
