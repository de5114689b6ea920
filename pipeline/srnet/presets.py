"""Configuration of SRNet five-crop training, with the ``paper`` and ``cpu`` presets.

``paper`` is the published setting (Jöchl & Uhl, after Boroumand et al.): 256x256 crops,
80 epochs, batch 4, Adamax with lr 1e-3 dropping to 1e-4 after epoch 60, weight decay 2e-4,
minority class oversampled.

``cpu`` keeps the network, optimiser, schedule shape (lr drop after 75 % of the epochs) and
oversampling, and shrinks what costs time so that the default synthetic study (4 devices x
5 crops, ~110 training images per device, the first of its split runs) trains and predicts
in about 7 minutes on 2 otherwise idle CPU cores: 64x64 crops (16x fewer pixels than
256x256), 8 epochs with the lr drop after epoch 6, and batch 8.  Measured with
``benchmarks/bench_srnet.py`` (2 threads, RGB input, fp32), a training step runs at about
50-65 images/s at 64x64 with batch 8 (45-55 with batch 4, 65 with batch 16), 17 at 128x128
and 2-3 at 256x256; a 64x64 epoch of 110 images took 2.3 s inside ``train_crop_model``, so
20 networks x 8 epochs is about 6 minutes, plus checkpoints (~0.1 s each) and reading.
Batch 8 keeps 14 optimiser steps per epoch on 110 images (112 in all, enough for the
BatchNorm running statistics to settle) while taking most of the larger-batch speed-up.
Torch's OpenMP threads slow down many times over when other processes compete for the
cores, so time it on an otherwise idle machine.  ``max_runs=1`` tells the caller to train
SRNet on the first of the run's split files only.  The preset name is stored in the
configuration, which every run records.

torch is not imported here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from pipeline.srnet.crops import CHANNEL_MODES, CROP_NAMES, INPUT_MODES, input_channels

FUSION_METHODS = ("mean", "vote")

ARCHITECTURES = ("srnet", "resnet34")
"""Crop-network families: SRNet (every preset's default) or ResNet-34 (:mod:`pipeline.srnet.resnet`)."""

STEM_MODES = ("plain", "constrained")
"""SRNet as published, or with Bayar & Stamm's constrained prediction-error layer in front."""
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


@dataclasses.dataclass(frozen=True)
class SRNetConfig:
    """Everything that determines an SRNet five-crop training and prediction.

    Parameters
    ----------
    preset : str
        Name of the preset this configuration came from (recorded, not interpreted).
    epochs : int
        Training epochs per crop network.
    batch_size : int
        Training minibatch size.
    lr, lr_after_drop : float
        Adamax learning rate before and after ``lr_drop_epoch`` epochs.
    lr_drop_epoch : int
        Number of epochs trained at ``lr`` (the drop happens after this epoch).
    weight_decay : float
        L2 factor on convolution weights only (the original's ``l2_regularizer``).
    patch : int
        Crop side in pixels.
    crops : tuple of str
        Which crops to train and fuse, from ``('tl', 'tr', 'bl', 'br', 'ce')``.
    fusion : {'mean', 'vote'}
        Mean of the crop networks' softmax outputs, or a majority vote of their labels.
    channels : {'rgb', 'luma', 'cfa-plane'}
        Network input: 3 RGB channels, or one luminance / CFA-plane channel.
    input : {'pixels', 'median-residual'}
        ``'median-residual'`` feeds each channel's 3x3 median-filter residual
        (:func:`kernels.median_residual`) instead of its pixels, so that scene content is
        suppressed before the network sees it (method ``srnet-res``).
    stem : {'plain', 'constrained'}
        ``'constrained'`` puts a constrained prediction-error convolution (Bayar & Stamm 2016/2018:
        every kernel's centre fixed at -1, its other weights summing to 1, re-projected after each
        optimiser step) in front of layer 1 (method ``srnet-cs``).
    constrained_filters, constrained_kernel : int
        Number and side of the constrained kernels (3 and 5 in Bayar & Stamm).
    conv_bias : bool
        Biases on the convolutions (redundant before BatchNorm; off by default).
    oversample : bool
        Oversample minority classes to the size of the largest class in every epoch.
    device : str
        ``'auto'`` (CUDA when available, CPU otherwise), ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
    seed : int
        Seed of network initialisation and epoch order; crop networks derive their own.
    max_runs : int or None
        Train SRNet on the first ``max_runs`` split runs only (None: all runs).
    num_threads : int or None
        CPU threads for torch (None: all cores available to this process).
    checkpoint_every_s : float
        With a checkpoint path, write the checkpoint after an epoch only when this many seconds
        have passed since the last one (0: after every epoch); the last epoch, and the last
        completed epoch when training is interrupted between epochs, are always written. A
        checkpoint is 57 MB during training, so writing one per epoch costs more than a short
        epoch on a GPU. Does not change the trained weights.
    eval_batch_size : int
        Minibatch size for prediction.
    deterministic : bool
        Use deterministic algorithms on CPU, so that a seed repeats a run exactly.
    architecture : {'srnet', 'resnet34'}
        The crop network: SRNet, or a randomly initialised ResNet-34 with a 3x3 stem for small
        crops (:class:`pipeline.srnet.resnet.ResNet34`; the audit's second architecture family).
        ``stem``, ``constrained_*`` and ``conv_bias`` apply to SRNet only.
    """

    preset: str = "paper"
    epochs: int = 80
    batch_size: int = 4
    lr: float = 1e-3
    lr_drop_epoch: int = 60
    lr_after_drop: float = 1e-4
    weight_decay: float = 2e-4
    patch: int = 256
    crops: tuple[str, ...] = CROP_NAMES
    fusion: str = "mean"
    channels: str = "rgb"
    input: str = "pixels"
    stem: str = "plain"
    constrained_filters: int = 3
    constrained_kernel: int = 5
    conv_bias: bool = False
    oversample: bool = True
    device: str = "auto"
    seed: int = 0
    max_runs: int | None = None
    num_threads: int | None = None
    checkpoint_every_s: float = 60.0
    eval_batch_size: int = 32
    deterministic: bool = True
    architecture: str = "srnet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "crops", tuple(self.crops))
        for name in ("epochs", "batch_size", "patch", "eval_batch_size"):
            _check_positive_int(name, getattr(self, name))
        if isinstance(self.lr_drop_epoch, bool) or int(self.lr_drop_epoch) != self.lr_drop_epoch or self.lr_drop_epoch < 0:
            raise ValueError(f"lr_drop_epoch must be an integer >= 0, got {self.lr_drop_epoch!r}")
        for name in ("lr", "lr_after_drop"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not float(self.weight_decay) >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.crops or len(set(self.crops)) != len(self.crops) or not set(self.crops) <= set(CROP_NAMES):
            raise ValueError(f"crops must be distinct names from {', '.join(CROP_NAMES)}, got {self.crops!r}")
        if self.fusion not in FUSION_METHODS:
            raise ValueError(f"fusion must be one of {', '.join(FUSION_METHODS)}, got {self.fusion!r}")
        if self.input not in INPUT_MODES:
            raise ValueError(f"input must be one of {', '.join(INPUT_MODES)}, got {self.input!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        if self.architecture != "srnet" and self.stem != "plain":
            raise ValueError(f"stem {self.stem!r} is an SRNet option; architecture {self.architecture!r} has its own stem")
        if self.stem not in STEM_MODES:
            raise ValueError(f"stem must be one of {', '.join(STEM_MODES)}, got {self.stem!r}")
        _check_positive_int("constrained_filters", self.constrained_filters)
        _check_positive_int("constrained_kernel", self.constrained_kernel)
        if self.constrained_kernel % 2 == 0 or self.constrained_kernel < 3:
            raise ValueError(f"constrained_kernel must be an odd integer >= 3 (a kernel needs a centre), "
                             f"got {self.constrained_kernel!r}")
        if self.channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {', '.join(CHANNEL_MODES)}, got {self.channels!r}")
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.match(self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.max_runs is not None:
            _check_positive_int("max_runs", self.max_runs)
        if self.num_threads is not None:
            _check_positive_int("num_threads", self.num_threads)
        if isinstance(self.checkpoint_every_s, bool) or not float(self.checkpoint_every_s) >= 0:
            raise ValueError(f"checkpoint_every_s must be a number >= 0, got {self.checkpoint_every_s!r}")

    @property
    def in_channels(self) -> int:
        """Network input channels implied by ``channels``."""
        return input_channels(self.channels)

    def lr_at_epoch(self, epoch: int) -> float:
        """Learning rate used during (0-based) ``epoch``."""
        return float(self.lr if epoch < self.lr_drop_epoch else self.lr_after_drop)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict of every field (crops as a list)."""
        values = dataclasses.asdict(self)
        values["crops"] = list(self.crops)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SRNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SRNet configuration keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> SRNetConfig:
        """A copy with some fields changed (validated like the original)."""
        return dataclasses.replace(self, **changes)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


PRESETS: dict[str, SRNetConfig] = {
    "paper": SRNetConfig(preset="paper"),
    "cpu": SRNetConfig(
        preset="cpu",
        epochs=8,
        batch_size=8,
        lr_drop_epoch=6,
        patch=64,
        max_runs=1,
    ),
}


def preset_config(name: str = "paper", **overrides: Any) -> SRNetConfig:
    """The named preset (``'paper'`` or ``'cpu'``) with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown SRNet preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]



SRNET_VARIANTS: dict[str, dict[str, Any]] = {
    "srnet": {},
    "srnet-res": {"input": "median-residual"},
    "srnet-cs": {"stem": "constrained"},
}
"""The SRNet-family methods and what each changes in the preset.

Each variant keeps everything else of the preset it is trained with (crops, epochs, batch,
optimiser, schedule, oversampling, fusion), for the ``cpu`` preset and the ``paper`` preset
alike: the three are compared on the same split files, and a difference between them must come
from the constraint (what the network is allowed to see), not from a different training budget.
``srnet-res`` costs a median filter per crop on top of SRNet (negligible beside training);
``srnet-cs`` adds one 5x5 convolution with 3 outputs, about 1 % more multiply-adds at layer 1.
"""


def variant_config(method: str, preset: str = "paper", **overrides: Any) -> SRNetConfig:
    """The configuration of an SRNet-family method: the preset, the variant's changes, ``overrides``.

    Raises
    ------
    ValueError
        ``method`` is not one of :data:`SRNET_VARIANTS`.
    """
    if method not in SRNET_VARIANTS:
        raise ValueError(f"unknown SRNet variant {method!r}; use one of {', '.join(SRNET_VARIANTS)}")
    return preset_config(preset, **{**overrides, **SRNET_VARIANTS[method]})
