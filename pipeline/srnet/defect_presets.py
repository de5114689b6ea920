"""Configuration of the defect-centred CNN ("defect-cnn"), with the ``paper`` and ``cpu`` presets.

defect-cnn looks only at small patches centred on the defects a run identified on its
training images (:mod:`pipeline.srnet.defect_cnn`), so its cost grows with the number of
defects, not with the image size: the default synthetic study identifies 12 to 26 defects per
device, that is at most 26 patches of 32x32 per image, against five 64x64 crops for SRNet's
``cpu`` preset.

``paper`` is the thorough setting, the one to report and the one for a GPU: 60 epochs of Adam
at lr 1e-3 dropping to 1e-4 after epoch 45 (the same three-quarter point as SRNet's 80/60),
batch 16 images, every split run (``max_runs=None``) and up to 256 defects per image (the
strongest by llr). It trains 4 times as many epochs as ``cpu``: on the synthetic study the
training loss is still falling after ``cpu``'s 15 epochs (0.003-0.014) and reaches about 0.001
at 60. It has not been timed on a GPU (none was at hand); with a network this small (24k parameters,
a few hundred patches per batch) a GPU should be bound by reading the images, so a run should
take little more than reading them (an expectation, not a measurement).
On 2 CPU cores it is affordable too: 12 s per device and split run on an otherwise idle
machine (SIM-gamma01, 17 defects), 15-31 s per device with 1 thread while another process
held the other core.

``cpu`` must train the default synthetic study's four devices (about 110 training images each)
in well under a minute per device on 2 cores, and it does every split run since one is cheap:
15 epochs with the lr drop after epoch 11, batch 8 images (14 optimiser steps per epoch, 210 in
all), and up to 64 defects per image: the synthetic study never reaches that limit (12 to 26
defects per device), and it bounds the cost on real cameras with hundreds of hot pixels, since
time grows linearly with the number of defects. Measured on the 2-core development machine
(torch 2.13 CPU, ``num_threads=2``, otherwise idle) on split run 0 of the default synthetic
study, 108 training and 12 test images per device, residual RGB patches: a whole
:func:`~pipeline.srnet.defect_cnn.fit_predict_defect_cnn` call, reading the 120 JPEGs
(1024x768) included, took 5.9 s (SIM-alpha01, 21 defects), 2.6 s (SIM-alpha02, 12), 5.7 s
(SIM-beta01, 26) and 3.8 s (SIM-gamma01, 17) with mean fusion, and 6.8, 2.9, 4.9 and 3.5 s
with attention fusion; an epoch took 0.13-0.32 s. Torch's threads slow down several times over
when other processes compete for the cores: with another process busy on one core the same
calls took 5-14 s with ``num_threads=1``, and one took 28 s with 2 threads. The timing script
is not shipped; it called the function on the study's ``splits/<device>/run_00.csv`` and
``defects/<device>/run_00.csv`` of an ``ml_age`` run folder.

Both presets share the rest, for these reasons: 32x32 patches (the issue's size) hold the few
pixels over which demosaicking and JPEG spread a hot pixel plus context to judge the local
noise; ``residual`` input (the image minus its 3x3 median, what the defect-based methods look
at too) removes most scene content; weight decay 1e-4 is light because the network is small;
when there are more than ``max_defects`` defects the strongest by the table's log-likelihood
ratio are kept.

torch is not imported here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

SOURCES = ("residual", "pixels")
CHANNELS = ("rgb", "luma")
FUSIONS = ("mean", "attention")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


@dataclasses.dataclass(frozen=True)
class DefectCNNConfig:
    """Everything that determines a defect-cnn training and prediction.

    Parameters
    ----------
    preset : str
        Name of the preset this configuration came from (recorded, not interpreted).
    patch : int
        Side of the square patch centred on each defect; even, at least 8. The defect pixel
        lands at index ``(patch // 2, patch // 2)``.
    source : {'residual', 'pixels'}
        Patch content: the 3x3 median residual of the scaled image (per channel), or the scaled
        pixels themselves.
    channels : {'rgb', 'luma'}
        Three RGB channels or one BT.601 luminance channel; 2-D images (grey, RAW mosaics)
        always give one channel.
    fusion : {'mean', 'attention'}
        How an image's patch logits become its logits: their mean, or a weighted sum with one
        learned weight per defect (softmax over the defects).
    max_defects : int
        At most this many defects are used; with more, the strongest by the table's ``llr``.
    epochs : int
        Training epochs.
    batch_size : int
        Training minibatch size, in images (each brings all its defect patches).
    lr, lr_after_drop : float
        Adam learning rate before and after ``lr_drop_epoch`` epochs.
    lr_drop_epoch : int
        Number of epochs trained at ``lr`` (the drop happens after this epoch).
    weight_decay : float
        L2 factor on convolution and linear weights (not on BatchNorm, biases or the attention).
    device : str
        ``'auto'`` (CUDA when available, CPU otherwise), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or
        ``'mps'``.
    seed : int
        Seed of network initialisation and epoch order.
    max_runs : int or None
        Train defect-cnn on the first ``max_runs`` split runs only (None: all runs); for the caller.
    num_threads : int or None
        CPU threads for torch (None: all cores available to this process).
    deterministic : bool
        Use deterministic algorithms on CPU, so that a seed repeats a run exactly.
    eval_batch_size : int
        Minibatch size for prediction, in images.
    """

    preset: str = "paper"
    patch: int = 32
    source: str = "residual"
    channels: str = "rgb"
    fusion: str = "mean"
    max_defects: int = 256
    epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-3
    lr_drop_epoch: int = 45
    lr_after_drop: float = 1e-4
    weight_decay: float = 1e-4
    device: str = "auto"
    seed: int = 0
    max_runs: int | None = None
    num_threads: int | None = None
    deterministic: bool = True
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or not self.preset:
            raise ValueError(f"preset must be a non-empty name, got {self.preset!r}")
        _check_int("patch", self.patch, 8)
        if self.patch % 2:
            raise ValueError(
                f"patch must be even (the defect sits at index patch // 2), got {self.patch!r}; use {self.patch + 1}"
            )
        _check_choice("source", self.source, SOURCES)
        _check_choice("channels", self.channels, CHANNELS)
        _check_choice("fusion", self.fusion, FUSIONS)
        for name in ("max_defects", "epochs", "batch_size", "eval_batch_size"):
            _check_int(name, getattr(self, name), 1)
        _check_int("lr_drop_epoch", self.lr_drop_epoch, 0)
        for name in ("lr", "lr_after_drop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        value = self.weight_decay
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ValueError(f"weight_decay must be a finite number >= 0 (0 switches it off), got {value!r}")
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.match(self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        _check_int("seed", self.seed, 0)
        if self.max_runs is not None:
            _check_int("max_runs", self.max_runs, 1, "or None for all runs")
        if self.num_threads is not None:
            _check_int("num_threads", self.num_threads, 1, "or None for all available cores")
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"deterministic must be True or False, got {self.deterministic!r}")

    def lr_at_epoch(self, epoch: int) -> float:
        """Learning rate used during (0-based) ``epoch``."""
        return float(self.lr if epoch < self.lr_drop_epoch else self.lr_after_drop)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DefectCNNConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown defect-cnn configuration keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(values))

    def replace(self, **changes: Any) -> DefectCNNConfig:
        """A copy with some fields changed (validated like the original)."""
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: Any, minimum: int, alternative: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        suffix = f" {alternative}" if alternative else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{suffix}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


DEFECT_CNN_PRESETS: dict[str, DefectCNNConfig] = {
    "paper": DefectCNNConfig(preset="paper"),
    "cpu": DefectCNNConfig(
        preset="cpu",
        max_defects=64,
        epochs=15,
        batch_size=8,
        lr_drop_epoch=11,
    ),
}


def defect_cnn_preset(name: str = "paper", **overrides: Any) -> DefectCNNConfig:
    """The named preset (``'paper'`` or ``'cpu'``) with optional field overrides.

    Parameters
    ----------
    name : {'paper', 'cpu'}
        Which preset.
    **overrides
        Fields to change, validated like the preset itself.

    Raises
    ------
    ValueError
        An unknown preset or field, or an invalid value.
    """
    if name not in DEFECT_CNN_PRESETS:
        raise ValueError(f"unknown defect-cnn preset {name!r}; use one of {', '.join(DEFECT_CNN_PRESETS)}")
    base = DEFECT_CNN_PRESETS[name]
    if not overrides:
        return base
    return DefectCNNConfig.from_dict({**base.to_dict(), **overrides})
