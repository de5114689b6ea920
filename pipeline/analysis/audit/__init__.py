"""Bias audit: is the age label predictable from things that are not age?

The camera-bias paper (Jackson et al.) shows CNNs scoring high by recognising the camera and
collapsing to chance when that correlation breaks; the age papers find learned age
classifiers reading scene content. This package measures both on a manifest, before anyone
trusts a learned model:

* :mod:`.content` — content-only baselines (colour statistics, thumbnails) on the
  experiment's own splits;
* :mod:`.camera` — the Balanced / Partial / Disjoint protocol with devices as cameras,
  per-device prediction shares (Fig. 3), device identification (Table I);
* :mod:`.position` — left half -> right half (Table VI) and the five-crop position effect;
* :mod:`.patch_colour` — random 32 x 32 crops (Table V), colour jitter and grayscale (Table IV);
* :mod:`.report` — ``audit.json``, ``audit.md``, plots.

Figures, intervals and the verdict rule are in :mod:`.stats`; the images are read once by
:mod:`.data`; :mod:`.splits` makes the splits; :mod:`.cnn` trains the project's SRNet (torch
is imported only inside its functions); :func:`run_audit` runs it all. Command line:
``python -m pipeline.audit``.
"""

from pipeline.analysis.audit.run import CHECKS, AuditConfig, run_audit
from pipeline.analysis.audit.stats import (
           FOUND,
           NO_BIAS,
           SUSPECTED,
           VERDICTS,
           AuditLevels,
           Figure,
)

__all__ = ["CHECKS", "FOUND", "NO_BIAS", "SUSPECTED", "VERDICTS", "AuditConfig", "AuditLevels", "Figure",
           "run_audit"]
