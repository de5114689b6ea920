"""SRNet five-crop fusion, the learned comparator of the defect-based age estimators.

Importing this package does not import torch: the configuration (:mod:`.presets`) and the
crop geometry (:mod:`.crops`) need only numpy, and the torch-backed names below are loaded
on first use, so ``import pipeline.srnet`` works where torch is not installed.

Modules: :mod:`.model` (the network), :mod:`.crops` (crop boxes and input scaling),
:mod:`.presets` (configuration), :mod:`.train` (one crop network), :mod:`.fusion` (five crops,
fused; :func:`fit_predict` for the experiment pipeline), :mod:`.checkpoint`, :mod:`.runtime`.
"""

from __future__ import annotations

import importlib
from typing import Any

from pipeline.srnet.crops import CROP_NAMES, crop_box, crop_boxes, extract_crops, to_tensor_input
from pipeline.srnet.presets import PRESETS, SRNetConfig, preset_config

_LAZY = {
    "SRNet": "pipeline.srnet.model",
    "train_crop_model": "pipeline.srnet.train",
    "load_crop_model": "pipeline.srnet.train",
    "predict_crop_proba": "pipeline.srnet.train",
    "FiveCropSRNet": "pipeline.srnet.fusion",
    "fit_predict": "pipeline.srnet.fusion",
    "fuse_probabilities": "pipeline.srnet.fusion",
    "fused_labels": "pipeline.srnet.fusion",
}

__all__ = [
    "CROP_NAMES",
    "PRESETS",
    "SRNetConfig",
    "crop_box",
    "crop_boxes",
    "extract_crops",
    "preset_config",
    "to_tensor_input",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
