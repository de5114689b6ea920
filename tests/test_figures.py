"""Notebook-safe plotting and figures fit for a paper (issue 18, items 2 and 3).

A notebook picks its own matplotlib backend; the library must never change it nor leave figures
in pyplot's registry (they would be shown, and kept in memory, by the notebook). Every plotting
function of the library is called here on small synthetic inputs under the ``svg`` backend,
which must still be the backend afterwards with no pyplot figure open. The files are checked
with other code than the one that wrote them: Pillow reads the PNGs' size and resolution,
ElementTree parses the SVGs, and the SVGs' text (kept as text) is searched for what a reader
needs: display names, the runs behind each box, chance levels and percent units.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from pipeline.analysis.audit.camera import CameraResult
from pipeline.analysis.audit.common import CheckResult
from pipeline.analysis.audit.report import make_plots
from pipeline.analysis.audit.stats import AuditLevels, paired_difference_figure, proportion_figure
from pipeline.analysis.calibration_figures import reliability_figure, tippett_figure
from pipeline.analysis.experiment_aggregates import boxplot_title, write_calibration_figures
from pipeline.analysis.figures import save_figure
from pipeline.analysis.matrix_figures import plot_boxes, plot_heatmap
from pipeline.analysis.perturbation_energy import draw_perturbations
from pipeline.analysis.report import METHOD_NAMES, plot_accuracy_boxes
from pipeline.analysis.saliency.defect_cnn import defect_cnn_figure
from pipeline.analysis.saliency.figures import contact_sheet
from pipeline.dating.figures import (calibration_figure, crops_figure, defect_map_figure, posterior_figure,
                                     timelines_figure)

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("kernels", "baselines", "pipeline")
#: every library module that draws figures, and the test below that calls each of its functions
DRAWING_MODULES = {
    "pipeline.analysis.report": "plot_accuracy_boxes",
    "pipeline.analysis.matrix_figures": "plot_heatmap, plot_boxes",
    "pipeline.analysis.calibration_figures": "reliability_figure, tippett_figure",
    "pipeline.analysis.audit.report": "make_plots",
    "pipeline.analysis.saliency.figures": "contact_sheet",
    "pipeline.analysis.perturbation_energy": "draw_perturbations",
    "pipeline.analysis.saliency.defect_cnn": "defect_cnn_figure",
    "pipeline.dating.figures": "crops_figure, timelines_figure, posterior_figure, defect_map_figure, "
                               "calibration_figure",
}


def _modules():
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            yield name, ast.parse(path.read_text(encoding="utf-8"))


def test_no_library_module_selects_a_backend_or_uses_pyplot():
    offenders, drawing = [], set()
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "matplotlib":
                offenders.append(f"{name}: matplotlib.use")
            if isinstance(node, ast.Import):
                offenders += [f"{name}: import {a.name}" for a in node.names if a.name.startswith("matplotlib.pyplot")]
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("matplotlib.pyplot") or (
                        node.module == "matplotlib" and any(a.name == "pyplot" for a in node.names)):
                    offenders.append(f"{name}: from {node.module} import ...")
                if node.module == "matplotlib.figure":
                    drawing.add(name)
    assert not offenders, offenders
    # a new drawing module must be added to DRAWING_MODULES, and so to the backend test below
    assert drawing == set(DRAWING_MODULES), drawing ^ set(DRAWING_MODULES)


@pytest.fixture
def svg_backend():
    """The ``svg`` backend, as a notebook might choose one; the previous one restored afterwards."""
    before = matplotlib.get_backend()
    plt.close("all")
    matplotlib.use("svg")
    yield "svg"
    plt.close("all")
    matplotlib.use(before)


def _png(path: Path, figure_size=None) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.5), path
        if figure_size is not None:
            assert image.size == tuple(round(300 * s) for s in figure_size)


def _svg_text(path: Path) -> str:
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg", path
    return "\n".join(t.strip() for t in root.itertext() if t.strip())


def _saved(paths, vector="svg") -> str:
    """Check a figure's PNG (300 dpi) and vector file; return the SVG's text ('' for a PDF)."""
    png, other = (Path(p) for p in paths)
    assert png.suffix == ".png" and other == png.with_suffix(f".{vector}") and other.stat().st_size > 0
    _png(png)
    return _svg_text(other) if vector == "svg" else other.read_bytes()[:5].decode("latin-1")


# ----------------------------------------------------------------------- synthetic inputs

def _accuracy_metrics():
    rng = np.random.default_rng(3)
    rows = [{"device": "cam-A", "method": m, "run": r, "accuracy": float(rng.uniform(0.6, 1.0))}
            for m in ("fg", "nb", "svm") for r in range(10)]
    rows.append({"device": "cam-A", "method": "srnet", "run": 0, "accuracy": 0.75})
    rows += [{"device": "cam-B", "method": m, "run": r, "accuracy": float(rng.uniform(0.3, 0.9))}
             for m in ("fg", "nb", "svm") for r in range(10)]
    return rows


def _cross_rows():
    names = ["cam-A", "cam-B", "cam-C"]
    chance = {"cam-A": 0.5, "cam-B": 0.5, "cam-C": 1 / 3}
    metrics = [{"train_device": a, "test_device": b, "run": r, "accuracy": 0.9 if a == b else 0.5 + 0.05 * r}
               for a in names[:2] for b in names for r in range(3 if a == "cam-A" else 1)]
    rows = []
    for a in names[:2]:
        for b in names:
            acc = np.array([m["accuracy"] for m in metrics if m["train_device"] == a and m["test_device"] == b])
            rows.append({"train_device": a, "test_device": b, "runs": acc.size, "mean_accuracy": acc.mean(),
                         "std_accuracy": acc.std(ddof=1) if acc.size > 1 else float("nan"), "chance": chance[b]})
    return names, metrics, rows


def _audit_results():
    levels = AuditLevels(family_size=4)
    content = CheckResult("content", "Content-only baselines", "?", figures=[
        proportion_figure("thumbnail_accuracy", "thumbnails", 80, 100, 0.5, levels),
        proportion_figure("thumbnail_accuracy_cam-A", "on cam-A", 40, 50, 0.5, levels, role="context"),
        proportion_figure("thumbnail_accuracy_cam-B", "on cam-B", 20, 30, 1 / 3, levels, role="context")])
    camera = CameraResult("camera", "Camera", "?", groups={"0": ["cam-A"], "1": ["cam-B"]},
                          shares={"colour-disjoint": {"cam-A": {"0": 0.9, "1": 0.1}, "cam-B": {"0": 0.2, "1": 0.8}}},
                          figures=[proportion_figure("device_label_association", "device", 55, 100, 0.5, levels,
                                                     role="susceptibility")])
    position = CheckResult("position", "Position", "?", figures=[
        proportion_figure("position_tl_accuracy", "tl", 30, 40, 0.5, levels, role="context"),
        proportion_figure("other_positions_accuracy", "others", 90, 160, 0.5, levels)])
    right = np.arange(60) % 3 != 0
    patch = CheckResult("patch", "Patch", "?", figures=[
        proportion_figure(k, k, v, 60, 0.5, levels, role="context")
        for k, v in (("balanced_accuracy", 45), ("random_crop_accuracy", 40), ("jitter_accuracy", 41),
                     ("grayscale_accuracy", 39))] + [paired_difference_figure("jitter_drop", "drop", right, right[::-1],
                                                                             levels)])
    results = [content, camera, position, patch]
    for r in results:
        r.settle()
    return results, levels


def _dating_content():
    days = np.linspace(0, 700, 40)
    grid = np.linspace(0, 700, 200)
    density = np.exp(-0.5 * ((grid - 400) / 30) ** 2)
    density /= density.sum() * (grid[1] - grid[0])
    crop = np.linspace(-3, 3, 25).reshape(5, 5).tolist()
    counts = np.full((5, 5), 12).tolist()
    defect = {"rank": 1, "row": 10, "col": 12, "channel_name": "G1", "log_likelihood_ratio": 2.5}
    return {
        "crops": [{**defect, "pixel_step": 2, "radius": 2, "colour_limit": 4.0, "before_count": counts,
                   "after_count": counts, "questioned": crop, "before_mean": crop, "after_mean": crop}],
        "timelines": {"trusted_days": days.tolist(), "defects": [{
            **defect, "trusted_residuals": np.where(days > 300, 5.0, 0.0).tolist(), "onset_days": 300.0,
            "onset_from_days": 280.0, "onset_to_days": 310.0, "expected_if_present": 5.0,
            "questioned_residual": 4.5}]},
        "posterior": {"grid_days": grid.tolist(), "density_per_day": density.tolist(), "period_days": [0.0, 700.0],
                      "credible_from_days": 350.0, "credible_to_days": 450.0, "interval_from_days": 300.0,
                      "interval_to_days": 500.0, "interval_probability": 0.9, "level": 0.95,
                      "onsets_days": [300.0, 500.0]},
        "defect_map": {"frame": [64, 96], "rows": [10.0, 40.0], "cols": [12.0, 70.0], "informative": [True, False],
                       "onset_days": [300.0, None], "rank": [1, None]},
        "calibration": {"available": True, "raw_log10_lr": [2.0, 1.0, -1.0, -3.0], "calibrated_log10_lr":
                        [1.0, 0.5, -0.5, -1.0], "before": [True, True, False, False], "bounds": [-2.0, 2.0],
                        "cllr": 0.4, "cllr_raw": 0.9, "n_pairs": 4},
    }


class _Positions:
    def for_image(self, device, run, path):
        return np.array([[4, 6], [20, 30]])


def _contact_sheet(path: Path):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    n, crops, patch = 4, ("tl", "c"), 32
    stacked = {c: rng.uniform(0, 1, (n, 1, patch, patch)).astype(np.float32) for c in crops}
    maps = {m: rng.uniform(-1, 3, (1, n, len(crops), 4, 4)).astype(np.float32) for m in ("cam", "gradcam")}
    targets = {m: np.zeros((1, n, len(crops)), np.int64) for m in maps}
    boxes = [{c: (0, 0, patch, patch, 1) for c in crops}] * n
    return contact_sheet(path, "cam-A", [f"img_{i}.png" for i in range(n)], np.array([0, 1, 0, 1]), stacked, maps,
                         targets, np.ones((1, n), bool), boxes, _Positions(), [0], [0, 1],
                         SimpleNamespace(crops=crops), SimpleNamespace(sheet_images=2))


# ----------------------------------------------------------------------- the tests

def test_every_plotting_function_leaves_the_notebooks_backend_alone(svg_backend, tmp_path):
    """Each function of DRAWING_MODULES is called; the backend stays ``svg`` and pyplot stays empty."""
    metrics = _accuracy_metrics()
    written = plot_accuracy_boxes(metrics, ["fg", "nb", "svm", "srnet"], tmp_path / "box.png",
                                  chance={"cam-A": 0.5, "cam-B": 1 / 3})
    names, cross, rows = _cross_rows()
    written += plot_heatmap(tmp_path / "heat.png", rows, names, "Fridrich–Goljan")
    written += plot_boxes(tmp_path / "cbox.png", cross, rows, names, "Fridrich–Goljan")
    truth = np.array([0, 1] * 10)
    proba = np.where(truth[:, None] == [0, 1], 0.8, 0.2)
    figures = [reliability_figure({"SVM": (proba.max(1), truth == 1)}, "r"),
               tippett_figure({"SVM": (np.linspace(-2, 2, 20), truth == 1)}, "t")]
    predictions = [{"device": "cam-A", "method": "fg", "run": r, "true": int(t), "p_0": 0.7 - 0.4 * t,
                    "p_1": 0.3 + 0.4 * t, "log10_lr_0": -0.4 * (2 * t - 1), "log10_lr_1": 0.4 * (2 * t - 1)}
                   for r in range(2) for t in truth]
    written += write_calibration_figures(tmp_path / "calibration", predictions, ["fg"], [0, 1], METHOD_NAMES)
    results, levels = _audit_results()
    plots = make_plots(tmp_path / "audit", results, levels.confidence)
    written += [tmp_path / "audit" / name for name in plots.values()]
    content = _dating_content()
    figures += [crops_figure(content), timelines_figure(content), posterior_figure(content),
                defect_map_figure(content), calibration_figure(content)]
    written += _contact_sheet(tmp_path / "sheets" / "cam-A.png")
    rng = np.random.default_rng(1)
    crops = rng.uniform(0, 1, (2, 3, 16, 16)).astype(np.float32)
    figures.append(draw_perturbations({"crops": crops, "deltas": {"m": crops - 0.5}, "flipped": {"m": [True, False]},
                                       "points": [np.array([[3, 4]]), np.zeros((0, 2), int)], "labels": [0, 1],
                                       "devices": ["cam-A", "cam-A"]}))
    examples = [{"image": "img_0.png", "true": 0, "predicted": 0, "patches": rng.uniform(0, 1, (2, 3, 32, 32)),
                 "maps": rng.uniform(0, 1, (2, 32, 32)), "contributions": np.array([0.4, -0.1]),
                 "positions": [(10, 12), (40, 8)]}]
    figures.append(defect_cnn_figure("cam-A", examples, 2, "gradcam"))

    assert matplotlib.get_backend() == "svg"
    assert plt.get_fignums() == []
    assert all(type(f).__name__ == "Figure" for f in figures)
    assert set(plots) == {"overview", "content", "camera", "position", "patch"}
    for path in written:
        assert Path(path).stat().st_size > 0, path
        if Path(path).suffix == ".png":
            _png(path)
            vector = [p for p in (Path(path).with_suffix(".svg"), Path(path).with_suffix(".pdf")) if p.is_file()]
            assert len(vector) == 1, path


def test_save_figure_writes_a_300_dpi_png_and_a_vector_file_beside_it(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.0, 1.5))
    fig.subplots().plot([0, 1], [0, 1], label="line")
    fig.axes[0].set_title("a title")
    svg, pdf = save_figure(fig, tmp_path / "f.png"), save_figure(fig, tmp_path / "g.png", vector="pdf")
    _png(tmp_path / "f.png", figure_size=(2.0, 1.5))
    assert "a title" in _saved(svg)
    assert _saved(pdf, "pdf") == "%PDF-"
    # the same figure gives the same bytes (no date, no random ids)
    first = svg[1].read_bytes()
    save_figure(fig, tmp_path / "f.png")
    assert svg[1].read_bytes() == first
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="must end in .png"):
        save_figure(fig, tmp_path / "f.jpg")
    with pytest.raises(ValueError, match="vector format"):
        save_figure(fig, tmp_path / "h.png", vector="eps")


def test_the_accuracy_box_plot_says_what_was_run(tmp_path):
    metrics = _accuracy_metrics()
    methods = ["fg", "nb", "svm", "srnet"]
    title = boxplot_title(metrics, methods, METHOD_NAMES, 0.25)
    assert title == ("Test accuracy per split run (stratified 75/25)\nFridrich–Goljan on 10 splits; Naive Bayes "
                     "on 10 splits; SVM on 10 splits; SRNet (5-crop) on 1 split")
    assert boxplot_title([m for m in metrics if m["method"] != "srnet"], methods, METHOD_NAMES, 0.25) == \
        "Test accuracy per split run (10 stratified 75/25 splits, every method)"
    text = _saved(plot_accuracy_boxes(metrics, methods, tmp_path / "box.png", title=title,
                                      chance={"cam-A": 0.5, "cam-B": 1 / 3}))
    lines = text.splitlines()
    for name in ("Fridrich–Goljan", "Naive Bayes", "SVM", "SRNet (5-crop)"):
        assert name in lines
    assert "fg" not in lines and "srnet" not in lines
    # SRNet's single run is shown as n=1, every classical method's ten as n=10 (two devices)
    assert lines.count("n=1") == 1 and lines.count("n=10") == 6
    assert "chance 50 %" in lines and "chance 33 %" in lines
    assert "test accuracy (%)" in lines and "100" in lines
    assert " ".join(title.split()) in " ".join(text.split())  # the title, wrapped to the figure's width


def test_the_cross_device_figures_are_in_percent_with_chance_and_runs(tmp_path):
    names, metrics, rows = _cross_rows()
    heat = _saved(plot_heatmap(tmp_path / "heat.png", rows, names, "Naive Bayes"))
    assert "mean test accuracy (%)" in heat and "100" in heat.splitlines()
    assert heat.count("chance 50 %") == 2 and heat.count("chance 33 %") == 1
    assert "90.0" in heat and "n=3" in heat and "n=1" in heat
    boxes = _saved(plot_boxes(tmp_path / "box.png", metrics, rows, names, "Naive Bayes")).splitlines()
    assert "test accuracy (%)" in boxes and any(t.startswith("chance") for t in boxes)
    assert "cam-A (own), n=3" in boxes and "cam-B (own), n=1" in boxes
    assert sum(t.endswith(", n=3") for t in boxes) == 3 and sum(t.endswith(", n=1") for t in boxes) == 3
    assert any(t.startswith("Naive Bayes: per-run test accuracy") for t in boxes)


def test_the_audit_plots_are_in_percent_and_listed_with_their_vector_files(tmp_path):
    results, levels = _audit_results()
    plots = make_plots(tmp_path, results, levels.confidence)
    content = _svg_text(tmp_path / "content.svg")
    assert "accuracy (%)" in content and "n=100" in content and "chance" in content
    assert re.search(r"accuracy with its \d+\.\d\d % screening interval", content)
    assert "percentage points" in _svg_text(tmp_path / "overview.svg")
    assert "share of the device's test images (%)" in _svg_text(tmp_path / "camera_fig3.svg")
    for name in plots.values():
        _png(tmp_path / name)


def test_the_contact_sheet_has_readable_labels_and_a_colour_bar_per_method(tmp_path):
    png, svg = _contact_sheet(tmp_path / "sheet.png")
    text = _svg_text(svg).splitlines()
    # display names, one overlay row per method and crop (the row labels of the first column)
    assert text.count("CAM") == 2 and text.count("Grad-CAM") == 2 and "cam" not in text
    # a colour bar per overlay row (2 crops x 2 methods), each from 0 to the method's largest value
    assert text.count("0") == 4
    sizes = [float(s) for s in re.findall(r"font-size: ?([\d.]+)px", svg.read_text())]
    assert sizes and min(sizes) >= 7  # no text under 7 pt (matplotlib's SVG: 1 pt = 1 px)
    _png(png)
