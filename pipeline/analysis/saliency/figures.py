"""The contact sheet of a device's saliency maps (``sheets/<device>.png`` and ``.svg``) and its
faithfulness curves (``faithfulness/<device>.png`` and ``.svg``).

Drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot, no backend to choose) and saved as a
PNG at 300 dpi and an SVG (:func:`pipeline.analysis.figures.save_figure`). The maps are upsampled
to their crops with :func:`pipeline.srnet.cam.upsample_maps`, so torch is imported when a sheet is
drawn. The layout is fixed in inches (a constrained layout of a hundred panels costs seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pipeline.analysis.figures import save_figure
from pipeline.analysis.saliency.inputs import points_in_crop

__all__ = ["METHOD_NAMES", "contact_sheet", "faithfulness_figure"]

#: display names of the saliency methods
METHOD_NAMES = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM"}

#: the sheet's layout, in inches: panel side, gaps between panels, margins
_PANEL, _GAP_W, _GAP_H = 1.3, 0.12, 0.34
_LEFT, _RIGHT, _TOP, _BOTTOM = 0.95, 0.85, 1.2, 0.2
_FONT = 8


def contact_sheet(path, device, usable, truth, stacked, maps, targets, held_out, boxes, positions, runs,
                  classes, srnet_config, config) -> list[Path]:
    """Draw one device's contact sheet into the PNG file ``path`` and an SVG beside it.

    Per shown image a row of its crops (defects circled in cyan), then one row of overlays per
    method, on one colour scale per method (0 to the largest positive saliency of the device's
    maps of that method, shown by the colour bar at the end of each overlay row), so that weak and
    strong maps look different.  The images are test images of the first run, alternating
    between the true classes.

    Parameters
    ----------
    path : Path
        The PNG file to write.
    device : str
        The device's name.
    usable : list of str
        The paths of the explained images.
    truth : ndarray of int, (images,)
        Their labels.
    stacked : dict
        Per crop name, the network inputs of every image, (images, C, P, P).
    maps, targets : dict
        Per method, the raw maps (runs, images, crops, h, w) and the classes they explain
        (runs, images, crops; column indices into ``classes``).
    held_out : ndarray of bool, (runs, images)
        The test images of each run.
    boxes : list of dict
        Per image, the :func:`~pipeline.analysis.saliency.inputs.crop_geometry` of each crop.
    positions : DefectPositions
        The defect positions.
    runs : list of int
        The run numbers (first axis of the maps).
    classes : list of int
        The label of each output column of the networks.
    srnet_config : SRNetConfig
        The run's SRNet settings (its crops).
    config : SaliencyConfig
        The analysis settings (``sheet_images``).

    Returns
    -------
    list of Path
        The PNG and the SVG.
    """
    from pipeline.srnet.cam import upsample_maps  # torch

    run_index = 0
    candidates = np.flatnonzero(held_out[run_index])
    # alternate the true classes so both appear
    by_class: dict[int, list[int]] = {}
    for i in candidates:
        by_class.setdefault(int(truth[i]), []).append(int(i))
    chosen: list[int] = []
    while len(chosen) < min(config.sheet_images, len(candidates)):
        for members in by_class.values():
            if members and len(chosen) < config.sheet_images:
                chosen.append(members.pop(0))
    methods = list(maps)
    crops = list(srnet_config.crops)
    per_crop = 1 + len(methods)
    rows, cols = len(crops) * per_crop, max(len(chosen), 1)
    width = _LEFT + cols * _PANEL + (cols - 1) * _GAP_W + _RIGHT
    height = _TOP + rows * _PANEL + (rows - 1) * _GAP_H + _BOTTOM
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=_LEFT / width, right=1 - _RIGHT / width, top=1 - _TOP / height,
                        bottom=_BOTTOM / height, wspace=_GAP_W / _PANEL, hspace=_GAP_H / _PANEL)
    axes = fig.subplots(rows, cols, squeeze=False)
    scale = {m: float(np.maximum(maps[m][run_index], 0).max()) or 1.0 for m in methods}
    grey = {"cmap": "gray", "vmin": 0, "vmax": 1}
    for k, i in enumerate(chosen):
        points = positions.for_image(device, runs[run_index], usable[i])
        for c, crop_name in enumerate(crops):
            crop = stacked[crop_name][i]
            colour = crop.shape[0] == 3
            shown = np.clip(np.moveaxis(crop, 0, 2) if colour else crop[0], 0, 1)
            local = points_in_crop(points, boxes[i][crop_name])
            ax = axes[c * per_crop, k]
            ax.imshow(shown, **({} if colour else grey))
            if len(local):
                ax.scatter(local[:, 1], local[:, 0], s=30, facecolors="none", edgecolors="cyan", linewidths=0.8)
            if c == 0:
                ax.set_title(f"{Path(usable[i]).stem}\ntrue class {truth[i]}", fontsize=_FONT - 1)
            if k == 0:
                ax.set_ylabel(f"crop {crop_name}\n(input)", fontsize=_FONT)
            for m, method in enumerate(methods):
                ax = axes[c * per_crop + 1 + m, k]
                raw = np.maximum(maps[method][run_index, i, c], 0)[None]
                heat = upsample_maps(raw, crop.shape[1:], normalise=False)[0]
                ax.imshow(shown, **({} if colour else grey))
                ax.imshow(heat, cmap="inferno", alpha=0.55, vmin=0, vmax=scale[method])
                if len(local):
                    ax.scatter(local[:, 1], local[:, 0], s=30, facecolors="none", edgecolors="cyan", linewidths=0.6)
                ax.set_xlabel(f"explains class {classes[targets[method][run_index, i, c]]}", fontsize=_FONT - 1,
                              labelpad=1)
                if k == 0:
                    ax.set_ylabel(f"{METHOD_NAMES.get(method, method)}\n(crop {crop_name})", fontsize=_FONT)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    # one colour bar per overlay row: the method's scale (the same in every row of that method)
    for c in range(len(crops)):
        for m, method in enumerate(methods):
            box = axes[c * per_crop + 1 + m, -1].get_position()
            cax = fig.add_axes((box.x1 + 0.1 / width, box.y0, 0.12 / width, box.height))
            bar = fig.colorbar(ScalarMappable(Normalize(0, scale[method]), cmap="inferno"), cax=cax)
            bar.set_ticks([0, scale[method]], labels=["0", f"{scale[method]:.2g}"])
            bar.ax.tick_params(labelsize=_FONT - 1)
    fig.suptitle(f"{device}: SRNet saliency maps, test images of run {runs[run_index]}", fontsize=_FONT + 2,
                 y=1 - 0.12 / height, va="top")
    fig.text(0.5, 1 - 0.42 / height, "cyan circles: defect positions; overlay: positive saliency (arbitrary units),\n"
             "one colour scale per method, from 0 to its largest value on this device", ha="center", va="top",
             fontsize=_FONT - 1)
    return save_figure(fig, path, vector="svg")


_BASELINE_NAMES = {"blur": "blurred crop", "zero": "zeros", "mean": "crop's mean colour"}


def faithfulness_figure(path, device, records, run, config) -> list[Path]:
    """Draw one device's mean deletion and insertion curves per method into ``path`` (PNG) and an SVG.

    One column per checked method: deletion on top, insertion below, each the mean over the
    informative crops of the probability of the explained class (band: one standard error) along
    the map's pixel order and along the random order, with their mean areas under the curves in
    the legend; the method's faithfulness and its randomisation figure in its title.  A method
    without informative crops gets a note instead of curves.

    Parameters
    ----------
    path : Path
        The PNG file to write.
    device : str
        The device's name.
    records : dict
        Per method, the ``faithfulness`` record of ``saliency.json`` (``curves``, ``auc``,
        ``label``, ``n_informative``, ``n_scanned``, ``median_span_scanned``,
        ``randomisation_median_abs_rho``).
    run : int
        The run whose networks and test images were checked.
    config : SaliencyConfig
        The analysis settings (``faithfulness_baseline``).

    Returns
    -------
    list of Path
        The PNG and the SVG.
    """
    from pipeline.srnet.faithfulness import BLUR_SIGMA  # torch

    methods = [m for m, record in records.items() if record.get("n_crops")]
    cols = max(len(methods), 1)
    fig = Figure(figsize=(0.6 + 3.2 * cols, 6.6), layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False, sharex=True, sharey=True)
    baseline = _BASELINE_NAMES.get(config.faithfulness_baseline, config.faithfulness_baseline)
    if config.faithfulness_baseline == "blur":
        baseline += f" (Gaussian, σ = {BLUR_SIGMA:g} px)"
    for k, method in enumerate(methods):
        record = records[method]
        curves = record.get("curves")
        for row, (kind, verb) in enumerate((("deletion", "removed"), ("insertion", "restored"))):
            ax = axes[row, k]
            ax.set_xlim(0, 1)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.set_xlabel(f"fraction of pixels {verb} (most salient first)", fontsize=8)
            if k == 0:
                ax.set_ylabel(f"{kind.capitalize()}\nprobability of the explained class", fontsize=8)
            ax.tick_params(labelsize=7)
            if not curves:
                span = record.get("median_span_scanned") or 0.0
                ax.text(0.5, 0.5, f"no informative crop:\non each of the {record.get('n_scanned', 0)} crops scanned,\n"
                                  f"the baseline lowers the probability\nof the explained class by less than "
                                  f"{record.get('min_span', 0.1):g}\n(median change "
                                  f"{'0.000' if abs(span) < 5e-4 else format(-span, '+.3f')})",
                        ha="center", va="center", fontsize=8, transform=ax.transAxes, color="0.3")
                continue
            fractions = np.asarray(curves["fractions"])
            for name, label, style in ((kind, "map order", {"color": "C3", "marker": "o", "markersize": 3}),
                                       (f"{kind}_random", "random order", {"color": "0.35", "linestyle": "--"})):
                mean = np.asarray(curves[name])
                ax.plot(fractions, mean, label=f"{label} (AUC {record['auc'][name]:.3f})", linewidth=1.4, **style)
                if curves.get(f"{name}_se") is not None:
                    se = np.asarray(curves[f"{name}_se"])
                    ax.fill_between(fractions, mean - se, mean + se, color=style["color"], alpha=0.15, linewidth=0)
            ax.legend(fontsize=7, loc="lower right" if kind == "insertion" else "upper right")
        label = record["label"].replace(" — its verdicts are not used", " (verdicts not used)")
        rho = record.get("randomisation_median_abs_rho")
        rho_text = "" if rho is None else f"\nrandomised weights: median |ρ| = {rho:.2f}"
        axes[0, k].set_title(f"{METHOD_NAMES.get(method, method)}: {label}{rho_text}\n"
                             f"{record.get('n_informative', 0)} informative crops of {record.get('n_scanned', 0)}",
                             fontsize=8, color="C3" if record.get("faithful") is False else "black")
    fig.suptitle(f"{device}: do SRNet's saliency maps point at the pixels it uses? (test crops of run {run})\n"
                 f"Removed pixels become the {baseline}; mean over the informative crops, band ±1 standard error.\n"
                 f"A faithful map's deletion curve falls below the random order's and its insertion curve rises "
                 f"above it.", fontsize=9)
    return save_figure(fig, path, vector="svg")
