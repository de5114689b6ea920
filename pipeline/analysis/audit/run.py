"""Run a bias audit: read the images once, make the splits, run the chosen checks, write the report."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.analysis.audit import adversarial, binary_mask, camera, content, location, patch_colour, position
from pipeline.analysis.audit.cnn import CnnSettings, ModelStore, disjoint_groups
from pipeline.analysis.audit.common import AuditContext
from pipeline.analysis.audit.data import load_bank
from pipeline.analysis.audit.report import start_record, write_report
from pipeline.analysis.audit.splits import cnn_split, content_splits
from pipeline.analysis.audit.stats import JUDGED, AuditLevels
from pipeline.logs import get_logger

__all__ = ["CHECKS", "AuditConfig", "planned_figures", "run_audit"]

logger = get_logger(__name__)

CHECKS = ("content", "camera", "position", "patch", "location", "binary_mask", "adversarial")
"""Check names, in the order they run and are reported."""
CNN_CHECKS = ("camera", "position", "patch", "location", "binary_mask", "adversarial")
"""Checks that need the balanced CNN split (the camera check's data-level figures run without the CNN)."""


@dataclass
class AuditConfig:
    """Parameters of an audit (all recorded in ``audit.json``).

    Parameters
    ----------
    checks : tuple of str
        Which checks to run, from :data:`CHECKS`.
    seed : int
        Root seed: the experiment's split seed for the content check, and the seed of the CNN
        split, subsamples, random crops, jitter and network initialisation.
    runs, test_size : int, float
        The experiment's repeated stratified splits used by the content check (as
        ``python -m pipeline.ml_age --runs --test-size``).
    cnn : CnnSettings or None
        Settings of the CNN checks; None runs only the scikit-learn parts (content, the
        camera check's data-level and colour-statistics figures).
    alpha_suspect, alpha_found : float
        Family-wise levels of the verdict rule (see :mod:`pipeline.analysis.audit.stats`).
    strict : bool
        Stop at the first unreadable image.
    progress : bool
        Show progress bars.
    """

    checks: tuple = CHECKS
    seed: int = 0
    runs: int = 10
    test_size: float = 0.1
    cnn: CnnSettings | None = field(default_factory=CnnSettings)
    alpha_suspect: float = 0.05
    alpha_found: float = 0.01
    strict: bool = False
    progress: bool = True

    def __post_init__(self):
        self.checks = tuple(dict.fromkeys(self.checks))
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown or not self.checks:
            raise ValueError(f"unknown check(s) {unknown}: choose from {', '.join(CHECKS)}")
        if isinstance(self.runs, bool) or int(self.runs) != self.runs or self.runs < 1:
            raise ValueError(f"runs must be a positive integer, got {self.runs!r}")
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must lie in (0, 1), got {self.test_size!r}")
        AuditLevels(1, self.alpha_suspect, self.alpha_found)  # validates the levels

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["checks"] = list(self.checks)
        data["cnn"] = None if self.cnn is None else self.cnn.to_dict()
        return data


def planned_figures(config: AuditConfig, *, has_content_splits: bool, has_groups: bool) -> dict:
    """Number of judged figures each selected check will report (the Bonferroni family)."""
    cnn = config.cnn is not None
    plan = {}
    for name in config.checks:
        if name == "content":
            plan[name] = (content.N_FIGURES + (content.N_FIGURES_CNN if cnn else 0)) if has_content_splits else 0
        elif name == "camera":
            stress = camera.N_SUSCEPTIBILITY + (camera.N_SUSCEPTIBILITY_CNN if cnn else 0)
            plan[name] = camera.N_VERDICT + (stress if has_groups else 0)
        elif name == "adversarial":
            plan[name] = (adversarial.N_FIGURES if has_groups else 1) if cnn else 0
        else:
            module = {"position": position, "patch": patch_colour, "location": location,
                      "binary_mask": binary_mask}[name]
            plan[name] = module.N_FIGURES if cnn else 0
    return plan


def _check_function(name: str):
    return {"content": content.content_check, "camera": camera.camera_check, "position": position.position_check,
            "patch": patch_colour.patch_colour_check, "location": location.location_check,
            "binary_mask": binary_mask.binary_mask_check, "adversarial": adversarial.adversarial_check}[name]


def run_audit(manifest, out_dir: str | Path | None, config: AuditConfig, *,
              extra_record: dict | None = None) -> dict:
    """Run the checks of ``config`` on ``manifest`` and write the report to ``out_dir``.

    Parameters
    ----------
    manifest : Manifest
        Validated, labelled manifest (:func:`pipeline.data.manifest.load_manifest`).
    out_dir : str, Path or None
        Output folder; None computes without writing anything.
    config : AuditConfig
    extra_record : dict, optional
        Further entries for ``audit.json`` (e.g. the synthetic dataset's location).

    Progress lines go to this module's logger (``agetrace.analysis.audit.run``) at INFO.

    Returns
    -------
    dict
        ``results`` (list of check results), ``record`` (what ``audit.json`` holds),
        ``summary_text`` (the printed summary), ``files`` (paths written) and ``out``.
    """
    started = time.perf_counter()
    out = None if out_dir is None else Path(out_dir)
    record = start_record(out, config, manifest, extra_record or {})
    cnn = config.cnn
    needs_crops = cnn is not None and any(c in config.checks for c in CHECKS)
    randoms = needs_crops and any(c in config.checks for c in ("patch", "location"))
    bank = load_bank(manifest, patch=cnn.patch if needs_crops else None,
                     random_patch=cnn.random_patch if randoms else None,
                     n_random=max(cnn.n_random_train, cnn.n_random_test) if randoms else 0,
                     grid=location.GRID if needs_crops and "location" in config.checks else 0,
                     seed=config.seed, strict=config.strict, progress=config.progress)
    logger.info(f"Read {len(bank.samples)} image(s) of {len(set(bank.devices.tolist()))} device(s)"
        + (f"; {len(bank.failures)} left out" if bank.failures else ""))
    splits = content_splits(manifest, bank, runs=config.runs, test_size=config.test_size, seed=config.seed,
                            out=out) if "content" in config.checks else None
    split = None
    if any(c in config.checks for c in CNN_CHECKS) or needs_crops:
        try:
            split = cnn_split(bank, test_size=cnn.test_size if cnn else CnnSettings().test_size, seed=config.seed,
                              out=out, usable=None if needs_crops else np.ones(len(bank.samples), bool))
        except ValueError as exc:
            logger.info(f"No balanced split possible ({exc}); the {', '.join(CNN_CHECKS)} checks are skipped")
    groups = disjoint_groups(split, bank)[0] if split is not None else {}
    plan = planned_figures(config, has_content_splits=bool(splits), has_groups=bool(groups))
    if split is None:
        plan.update({c: 0 for c in CNN_CHECKS if c in plan})
        if "content" in plan and cnn is not None and plan["content"]:
            plan["content"] -= content.N_FIGURES_CNN
    levels = AuditLevels(max(1, sum(plan.values())), config.alpha_suspect, config.alpha_found)
    ctx = AuditContext(bank, levels, config.seed, out, splits, split, cnn if split is not None else None,
                       ModelStore(config.progress, None if out is None else out / "models"),
                       config.progress)
    results = []
    for name in config.checks:
        if name != "content" and split is None:
            continue
        logger.info(f"Check '{name}' ...")
        result = _check_function(name)(ctx)
        planned = plan.get(name, 0)
        got = sum(f.role in JUDGED for f in result.figures)
        if got > planned:
            raise RuntimeError(f"check {name!r} reported {got} judged figures but {planned} were planned "
                               "for the Bonferroni family; this is a bug")
        stress = "" if result.susceptibility is None else f"; stress test: {result.susceptibility}"
        logger.info(f"  {result.title}: {result.verdict or 'not run'}{stress} ({result.seconds:.1f} s)")
        results.append(result)
    record["seconds_total"] = round(time.perf_counter() - started, 2)
    return write_report(out, record, results, bank, levels, plan, manifest)
