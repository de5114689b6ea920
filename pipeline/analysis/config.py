"""The settings of an age experiment, the methods it knows, and what may change on a resume.

:class:`ExperimentConfig` is what ``python -m pipeline.ml_age`` (and the cross-device and dating
tools, which reuse its detection settings) run with; every field is recorded in the run folder's
``config.json``. The fields that change no result (:data:`NON_RESULT_KEYS`) may differ when a run
is resumed; the others must match (:class:`ConfigMismatchError` otherwise).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from pipeline.srnet.presets import preset_config

__all__ = ["DEFECT_METHODS", "SRNET_METHODS", "CONSTRAINED_METHODS", "LEARNED_METHODS", "ALL_METHODS", "NON_RESULT_KEYS", "ConfigMismatchError", "ExperimentConfig",
           "result_config", "srnet_crops", "srnet_run_count"]

#: the defect-based methods (Fridrich–Goljan, Naive Bayes, SVM)
DEFECT_METHODS = ("fg", "nb", "svm")
#: SRNet and its content-suppressed variants (five-crop fusion each; :data:`pipeline.srnet.presets.SRNET_VARIANTS`)
SRNET_METHODS = ("srnet", "srnet-res", "srnet-cs")
#: the learned models constrained to age traces: median residual, constrained first layer, defect patches
CONSTRAINED_METHODS = ("srnet-res", "srnet-cs", "defect-cnn")
#: every learned method (trained on the first split runs only, calibrated on a held-back part)
LEARNED_METHODS = ("srnet",) + CONSTRAINED_METHODS
ALL_METHODS = DEFECT_METHODS + LEARNED_METHODS

#: configuration keys that do not change any result (so a resumed run may differ in them)
NON_RESULT_KEYS = frozenset({"methods", "workers", "progress", "strict", "batch_size", "srnet_runs", "pooled",
                             "executor", "scheduler", "cache_dir"})


class ConfigMismatchError(RuntimeError):
    """The output folder holds a run made with a different configuration or manifest."""


@dataclass
class ExperimentConfig:
    """Parameters of an experiment (all recorded in ``config.json``).

    Parameters
    ----------
    methods : tuple of str
        Any of :data:`ALL_METHODS`: ``fg``, ``nb``, ``svm`` (defect-based), ``srnet``, and the
        constrained learned models ``srnet-res``, ``srnet-cs``, ``defect-cnn``.
    runs : int
        Repetitions of the stratified split (the papers use 10).
    test_size : float
        Fraction of each class held out per run.
    seed : int
        Root seed; each device's split seed derives from it and the device id.
    n_blocks : int
        Contiguous time blocks of trusted images for defect screening.
    candidate_false_alarm, onset_false_alarm : float
        See :class:`baselines.defects.DefectIdentifier`. The screening level only decides
        which pixels the onset test examines (thousands of candidates per device on the
        synthetic default); the false alarms of the result are controlled by the onset test.
        On the synthetic default, 5e-2 screens ~3,000–7,000 candidates per device and run
        and raises recall from 0.86 (at 1e-3) to 0.93 at the same precision.
    fg_false_alarm : float
        See :class:`baselines.fridrich_goljan.FridrichGoljanClassifier`.
    svm_inner_folds : int
        Inner cross-validation folds for the SVM's C and γ.
    calibration_folds : int
        Folds of the cross-fitting inside each training split from which every defect-based
        method's scores are calibrated (:mod:`pipeline.analysis.calibration`).
    calibration_method : {'logistic', 'isotonic'}
        Calibrator of the scores (ELUB-bounded either way).
    srnet_calibration_fraction : float
        Share of each training split (stratified) that SRNet does not train on and that calibrates
        its scores instead: cross-fitting would train the five crop networks several times over.
        0 trains on the whole split and claims no evidence (LR 1, probabilities = training priors):
        for studies of what SRNet learns, never for evidence.
    srnet_preset : str
        ``cpu`` or ``paper`` (see :mod:`pipeline.srnet.presets`), for every learned method
        (``defect-cnn`` takes its own preset of that name, :mod:`pipeline.srnet.defect_presets`).
    srnet_runs : int or None
        Train the learned methods on the first k runs only (None: the preset's choice).
    srnet_overrides : dict
        Fields of the SRNet preset to override (e.g. ``{"epochs": 2}``), for the SRNet-family
        methods; recorded.
    strict : bool
        Stop at the first unreadable image instead of recording it and going on.
    workers, batch_size, progress, pooled
        Execution and reporting only.
    executor : {'local', 'dask'}
        Where per-image work runs: local worker processes, or a Dask cluster.
    scheduler : str, optional
        Address of a Dask scheduler (``executor='dask'``); None starts a ``LocalCluster``
        of ``workers`` single-threaded worker processes.
    cache_dir : str, optional
        Folder of the per-image feature cache (default ``<out>/cache``); may be shared
        between runs, since entries are keyed by file content and parameters.
    """

    methods: tuple = ("fg", "nb", "svm")
    runs: int = 10
    test_size: float = 0.1
    seed: int = 0
    n_blocks: int = 8
    candidate_false_alarm: float = 5e-2
    onset_false_alarm: float = 1e-3
    fg_false_alarm: float = 1e-3
    svm_inner_folds: int = 3
    calibration_folds: int = 5
    calibration_method: str = "logistic"
    srnet_calibration_fraction: float = 0.2
    srnet_preset: str = "cpu"
    srnet_runs: int | None = None
    srnet_overrides: dict = field(default_factory=dict)
    strict: bool = False
    workers: int | None = None
    batch_size: int = 8
    progress: bool = True
    pooled: bool = False
    executor: str = "local"
    scheduler: str | None = None
    cache_dir: str | None = None

    def __post_init__(self):
        self.methods = tuple(self.methods)
        # as config.json will hold them (tuples become lists), so that a resume or a cross evaluation
        # compares like with like
        self.srnet_overrides = json.loads(json.dumps(dict(self.srnet_overrides)))
        if self.executor not in ("local", "dask"):
            raise ValueError(f"executor must be 'local' or 'dask', got {self.executor!r}")
        if self.scheduler is not None and self.executor != "dask":
            raise ValueError("a scheduler address needs executor='dask'")
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown}: choose from {', '.join(ALL_METHODS)}")
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1), got {self.test_size}")
        if self.n_blocks < 2:
            raise ValueError(f"n_blocks must be >= 2, got {self.n_blocks}")
        if self.calibration_folds < 2:
            raise ValueError(f"calibration_folds must be >= 2, got {self.calibration_folds}")
        if self.calibration_method not in ("logistic", "isotonic"):
            raise ValueError(f"calibration_method must be 'logistic' or 'isotonic', got {self.calibration_method!r}")
        if not 0 <= self.srnet_calibration_fraction < 0.5:
            raise ValueError(f"srnet_calibration_fraction must be in [0, 0.5), got {self.srnet_calibration_fraction}")


def result_config(cfg: ExperimentConfig) -> dict:
    """The settings of ``cfg`` that change results (those a resumed run must repeat)."""
    return {k: v for k, v in asdict(cfg).items() if k not in NON_RESULT_KEYS}


def srnet_crops(cfg: ExperimentConfig) -> tuple[str, ...] | None:
    """The crops SRNet fuses under ``cfg`` (None when SRNet is not one of its methods)."""
    if "srnet" not in cfg.methods:
        return None
    return preset_config(cfg.srnet_preset, **cfg.srnet_overrides).crops


def learned_methods(cfg: ExperimentConfig) -> list[str]:
    """The learned methods of ``cfg``, in :data:`LEARNED_METHODS` order."""
    return [m for m in LEARNED_METHODS if m in cfg.methods]


def srnet_run_count(cfg: ExperimentConfig) -> int:
    """How many of the first split runs the learned methods train on (0 when there are none)."""
    if not learned_methods(cfg):
        return 0
    if cfg.srnet_runs is not None:
        return min(cfg.srnet_runs, cfg.runs)
    preset_runs = preset_config(cfg.srnet_preset).max_runs
    return cfg.runs if preset_runs is None else min(preset_runs, cfg.runs)
