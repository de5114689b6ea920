"""The synthetic aging camera: a dated image dataset with known sensor defects.

Quick use::

    from pipeline.sim import default_dataset, load_config, simulate
    ds = default_dataset()                       # cached under ~/.cache/agetrace/synthetic/<hash>/
    ds = simulate(load_config(overrides={"capture.images_per_class": 8}), "/tmp/sim")

Modules, in the order a capture flows through them:

* :mod:`~pipeline.sim.config` — configuration dataclasses, the shipped TOML default, overrides and
  the configuration hash (the cache key);
* :mod:`~pipeline.sim.schedule` — each device's acquisition plan (times, exposures, scenes) and its
  random streams;
* :mod:`~pipeline.sim.scenes` — scene content (photographs and procedural scenes) and lighting;
* :mod:`~pipeline.sim.defects` — in-field defects: Poisson onsets and amplitudes;
* :mod:`~pipeline.sim.sensor` — one camera body: PRNU, defects and the raw capture;
* :mod:`~pipeline.sim.isp` — in-camera processing from the raw mosaic to the output image;
* :mod:`~pipeline.sim.writers` — JPEG, TIFF and DNG files with their EXIF;
* :mod:`~pipeline.sim.dataset` — generating a whole dataset folder and caching the default one.
"""

from pipeline.sim.config import (AgeClass, CaptureConfig, DefectConfig, DeviceConfig, IspStyle, ModelConfig,
                                 ProcessingConfig, SceneConfig, SimulationConfig, TimeConfig, apply_overrides,
                                 config_hash, load_config)
from pipeline.sim.dataset import (DEFECT_COLUMNS, GENERATOR, MANIFEST_COLUMNS, SimulatedDataset, cache_root,
                                  cached_dataset, default_dataset, simulate)
from pipeline.sim.defects import DefectSet, poisson_onsets, sample_defects
from pipeline.sim.isp import Isp, demosaic_bilinear, display_jump_8bit
from pipeline.sim.scenes import SCENE_TYPES, choose_scene, render_scene, scene_types_in
from pipeline.sim.schedule import Capture, image_rng, plan_captures
from pipeline.sim.sensor import RenderedCapture, SimulatedDevice

__all__ = [
    # configuration
    "SimulationConfig", "ModelConfig", "DeviceConfig", "AgeClass", "TimeConfig", "DefectConfig",
    "SceneConfig", "CaptureConfig", "ProcessingConfig", "IspStyle", "load_config", "apply_overrides",
    "config_hash",
    # generation
    "SimulatedDataset", "simulate", "default_dataset", "cached_dataset", "cache_root", "MANIFEST_COLUMNS",
    "DEFECT_COLUMNS", "GENERATOR",
    # lower-level pieces
    "SimulatedDevice", "RenderedCapture", "Capture", "plan_captures", "image_rng", "DefectSet",
    "poisson_onsets", "sample_defects", "Isp", "demosaic_bilinear", "display_jump_8bit", "SCENE_TYPES",
    "scene_types_in", "choose_scene", "render_scene",
]
