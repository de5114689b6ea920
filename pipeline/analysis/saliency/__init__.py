"""Does SRNet look at sensor defects or at image content?  Saliency figures for a finished run.

For every device of an ``ml_age`` output folder trained with ``--methods ...,srnet``, the crop
networks of each SRNet run (``srnet/<device>/run_XX/srnet_<crop>.pt``) explain the test images
of the runs (``splits/<device>/run_XX.csv``) with CAM-family maps
(:mod:`pipeline.srnet.cam`, target: each crop network's predicted class), and three figures
answer the question of the slides in ``../shared/papers`` with numbers:

consistency
    Pearson correlation of the raw maps of the same image and crop made by the networks of
    different runs (``"n/a: one run"`` when SRNet was trained on one run), and, within a run,
    between the maps of different test images explained as the same class.  Age traces sit
    at fixed sensor positions, the same in every image of a class, so maps driven by them
    agree across images and runs; maps driven by content follow each image's content.
content
    Spearman correlation, within each map, between saliency and local image structure at the
    map's resolution (one value per map cell, from the very crop the network saw): luminance
    (cell median of luma), texture (cell median of the squared gradient of the 3x3-median-
    filtered luma) and, for RGB inputs, colour (cell median of the chroma of the 3x3-median-
    filtered channels).  Median filter and cell medians make all three insensitive to a few
    defective pixels, so a map that follows defects does not score as "content".  The sign of
    the relation may differ between images and classes (one class may be recognised by its
    bright parts, the other by its dark parts), and smooth maps correlate with smooth features
    by chance; so the figure compares each map's ``|rho|`` with the structure of its own image
    to its mean ``|rho|`` with the structure of the other test images seen by the same network
    (same crop position), which share the smoothness and any fixed position bias but not the
    content.  Only the map cells that touch no defect neighbourhood count, so that saliency on
    the defects -- whose visibility itself depends on the scene: a hot pixel stands out in a
    dark area and drowns in a bright one -- is not taken for content.  The content figure is
    the best feature's mean difference, within each target class, between the map's rho with its
    own image and its mean rho with the other images (absolute value of the class means,
    weighted by their maps): a relation that keeps its direction over a class's maps -- "the
    evidence is in the colourful parts" -- and not merely the echo of its own image's structure
    that any intermediate layer shows (reported as ``any_relation``).
defects
    The share of saliency mass (ReLU of the raw map, bilinearly upsampled to the crop,
    ``align_corners=False``, never normalised) inside the defect neighbourhoods -- every
    pixel within ``neighbourhood`` pixels (Chebyshev distance, default 2, i.e. a 5x5 box, the
    extent of a demosaiced, JPEG-compressed hot pixel) of a defect -- against the share of the
    crop's area they cover.  Defect positions are the ground truth of a synthetic dataset
    (``defects.csv`` beside its manifest; a defect counts for an image when its onset is not
    later than the image's capture time), or else the defects the run identified from its
    trusted images (``defects/<device>/run_XX.csv``, all of them).  The significance comes
    from a permutation null: the same statistic with every defect mask shifted circularly by
    the same offset, over every offset of the crop that moves each defect out of its own map
    cell (at least one cell plus the neighbourhood radius); its mean is close to the area
    share.

faithfulness
    Whether the maps can be trusted at all (:mod:`pipeline.srnet.faithfulness`), on up to
    ``SaliencyConfig.faithfulness_crops`` held-out crops of each device's first run: deletion
    and insertion curves of the map's pixel order against a random order (on the crops whose
    baseline -- a blur, by default -- changes the network's answer), and the model-randomisation
    sanity check (the maps of a network with re-initialised weights must differ).  A method that
    fails is reported as unfaithful and its verdicts are left out of the device's verdict.

Outputs (in ``out``): ``saliency.json`` (per device and method; settings; provenance),
``saliency.md`` (a short verdict), ``saliency_maps.csv`` (one row per map),
``saliency_faithfulness.csv`` (one row per method and checked crop), ``maps/<device>.npz``
(the raw maps), ``sheets/<device>.png`` and ``.svg`` (contact sheets: crops with their defect positions,
and one overlay row per method, shown on one colour scale per device and method), and
``faithfulness/<device>.png`` and ``.svg`` (mean deletion and insertion curves per method),
``saliency_adversarial.csv`` and ``adversarial/<device>.png`` and ``.svg`` (:mod:`.adversarial`:
held-out crops perturbed until their crop network's class flips, and where the perturbation's
energy sits, on content edges or at the defects).

Modules: :mod:`.explain` (:class:`SaliencyConfig` and :func:`explain_run`, which runs the
analysis), :mod:`.inputs` (what it reads from the run folder: SRNet runs, test images, defect
positions, crop geometry), :mod:`.stats` (the three figures and the verdict rules, on arrays),
:mod:`.figures` (the contact sheets and the faithfulness curves), :mod:`.adversarial` (the
perturbations of the run's networks) and :mod:`.report`
(``saliency.json``, ``saliency.md``, the per-map and faithfulness CSVs and the maps).  The command line is ``python -m pipeline.saliency``.

Importing this package does not import torch: the torch-backed :mod:`pipeline.srnet` modules are
imported inside the functions that need them.
"""

from __future__ import annotations

from pipeline.analysis.saliency.explain import ALL_METHODS, DEFAULT_METHODS, SaliencyConfig, explain_run
from pipeline.analysis.saliency.report import verdict_markdown
from pipeline.analysis.saliency.stats import (
    CONTENT_RHO,
    DEFECT_LIFT,
    SIGNIFICANCE,
    ContentTally,
    DefectTally,
    cells_away_from_defects,
    content_correlations,
    defect_mask,
    defect_shares,
    method_verdict,
    own_and_other_correlations,
    pool_cells,
    shift_null,
    structure_features,
    summarise_defects,
)

__all__ = [
    "ALL_METHODS",
    "CONTENT_RHO",
    "DEFAULT_METHODS",
    "DEFECT_LIFT",
    "SIGNIFICANCE",
    "ContentTally",
    "DefectTally",
    "SaliencyConfig",
    "cells_away_from_defects",
    "content_correlations",
    "defect_mask",
    "defect_shares",
    "explain_run",
    "method_verdict",
    "own_and_other_correlations",
    "pool_cells",
    "shift_null",
    "structure_features",
    "summarise_defects",
    "verdict_markdown",
]
