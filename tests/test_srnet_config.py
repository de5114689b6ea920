"""SRNet configuration presets, and that importing the package does not need torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.srnet.presets import PRESETS, SRNetConfig, preset_config


def test_paper_preset_is_the_published_setting():
    config = preset_config("paper")
    assert (config.epochs, config.batch_size, config.lr, config.lr_drop_epoch, config.lr_after_drop) == (80, 4, 1e-3, 60, 1e-4)
    assert (config.weight_decay, config.patch, config.oversample, config.fusion) == (2e-4, 256, True, "mean")
    assert config.crops == ("tl", "tr", "bl", "br", "ce")
    assert config.max_runs is None


def test_cpu_preset_is_smaller_and_keeps_the_optimiser_and_oversampling():
    paper, cpu = PRESETS["paper"], PRESETS["cpu"]
    assert cpu.preset == "cpu" and cpu.patch < paper.patch and cpu.epochs < paper.epochs
    assert cpu.patch % 16 == 0 and cpu.lr_drop_epoch < cpu.epochs
    assert (cpu.lr, cpu.lr_after_drop, cpu.weight_decay, cpu.oversample) == (paper.lr, paper.lr_after_drop, paper.weight_decay, True)
    assert cpu.max_runs == 1


def test_learning_rate_drops_after_the_drop_epoch():
    config = preset_config("paper")
    assert [config.lr_at_epoch(e) for e in (0, 59, 60, 79)] == [1e-3, 1e-3, 1e-4, 1e-4]


def test_configuration_round_trips_through_json():
    config = preset_config("cpu", crops=["ce", "tl"], seed=7, num_threads=2, fusion="vote")
    restored = SRNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and restored.crops == ("ce", "tl")


def test_in_channels_follow_the_channel_mode():
    assert SRNetConfig(channels="rgb").in_channels == 3
    assert SRNetConfig(channels="luma").in_channels == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 0},
        {"batch_size": 2.5},
        {"lr": 0},
        {"lr_drop_epoch": -1},
        {"weight_decay": -1e-4},
        {"crops": ("tl", "tl")},
        {"crops": ("middle",)},
        {"crops": ()},
        {"fusion": "max"},
        {"channels": "hsv"},
        {"device": "gpu"},
        {"seed": -1},
        {"max_runs": 0},
        {"num_threads": 0},
    ],
)
def test_invalid_settings_are_rejected(changes):
    with pytest.raises(ValueError):
        SRNetConfig(**changes)


def test_unknown_presets_and_keys_are_rejected():
    with pytest.raises(ValueError, match="preset"):
        preset_config("gpu")
    with pytest.raises(ValueError, match="unknown"):
        SRNetConfig.from_dict({"epochs": 3, "learning_rate": 1e-3})


def test_importing_the_package_does_not_import_torch():
    code = (
        "import sys, pipeline.srnet; "
        "pipeline.srnet.preset_config('cpu'); pipeline.srnet.crop_boxes((64, 64), 32); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
