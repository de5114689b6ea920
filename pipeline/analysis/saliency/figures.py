"""The contact sheet of a device's saliency maps (``sheets/<device>.png``).

Drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot, no backend to choose). The maps
are upsampled to their crops with :func:`pipeline.srnet.cam.upsample_maps`, so torch is
imported when a sheet is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.analysis.saliency.inputs import points_in_crop
from pipeline.data.atomic import atomic_write

__all__ = ["contact_sheet"]


def contact_sheet(path, device, usable, truth, stacked, maps, targets, held_out, boxes, positions, runs,
                  classes, srnet_config, config) -> None:
    """Draw one device's contact sheet into the PNG file ``path``.

    Per shown image a row of its crops (defects circled in cyan), then one row of overlays per
    method, on one colour scale per method (the largest positive saliency of the device's maps of
    that method), so that weak and strong maps look different.  The images are test images of
    the first run, alternating between the true classes.

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
    fig = Figure(figsize=(1.6 * cols + 0.9, 1.6 * rows + 0.6))
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
                ax.set_title(f"{Path(usable[i]).stem}\nclass {truth[i]}", fontsize=6)
            if k == 0:
                ax.set_ylabel(f"crop {crop_name}", fontsize=7)
            for m, method in enumerate(methods):
                ax = axes[c * per_crop + 1 + m, k]
                raw = np.maximum(maps[method][run_index, i, c], 0)[None]
                heat = upsample_maps(raw, crop.shape[1:], normalise=False)[0]
                ax.imshow(shown, **({} if colour else grey))
                ax.imshow(heat, cmap="inferno", alpha=0.55, vmin=0, vmax=scale[method])
                if len(local):
                    ax.scatter(local[:, 1], local[:, 0], s=30, facecolors="none", edgecolors="cyan", linewidths=0.6)
                ax.set_xlabel(f"→ class {classes[targets[method][run_index, i, c]]}", fontsize=6, labelpad=1)
                if k == 0:
                    ax.set_ylabel(method, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{device}: SRNet saliency, run {runs[run_index]} (cyan: defect positions; "
                 "one colour scale per method)", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
