"""ResNet-34 (He et al. 2016) written out here, as a second architecture family for the audit.

Why not ``torchvision.models.resnet34``: torchvision cannot be installed beside the project's
pinned ``torch==2.13.0`` CPU build (the only torchvision wheels available need a 5.5 GB CUDA
build of torch 2.14.1), and pretrained ImageNet weights cannot be fetched either, so the network
is always **randomly initialised** (Kaiming normal for convolutions, BatchNorm weight 1 and bias
0, as torchvision does). The layer table is torchvision's: BasicBlock (two 3x3 convolutions
with BatchNorm and ReLU, identity shortcut, a 1x1/2 convolution + BatchNorm shortcut where the
shape changes), stages of [3, 4, 6, 3] blocks with 64, 128, 256 and 512 channels, stride 2 at
the first block of stages 2-4, global average pooling and one linear layer.

Stem. ``stem='standard'`` is torchvision's 7x7/2 convolution + BatchNorm + ReLU + 3x3/2 max-pool
(21,797,672 parameters for 3 input channels and 1000 classes, torchvision's published figure).
``stem='small'`` (the default here) is a 3x3/1 convolution without max-pool, the usual adaptation
to small inputs (CIFAR-style): on the audit's 64-pixel crops the standard stem would shrink the
map to 16x16 before the first block and to 2x2 at the last stage, and its stride-2 sampling
discards exactly the single-pixel detail (hot pixels, noise) the age task rests on; with the
small stem the last stage sees 8x8.

The class offers what :func:`pipeline.srnet.train.train_crop_model` expects of a crop network:
``n_classes``, ``parameter_groups`` (L2 decay on convolution weights only, as SRNet),
``project_constraints`` (nothing to project) and ``feature_map``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RESNET34_LAYERS", "RESNET_STEMS", "BasicBlock", "ResNet34"]

RESNET34_LAYERS = (3, 4, 6, 3)
"""Blocks per stage of ResNet-34."""
RESNET_STEMS = ("small", "standard")
_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, ReLU after each, plus the (projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet34(nn.Module):
    """ResNet-34, randomly initialised.

    Parameters
    ----------
    in_channels : int
        Input channels (3 for RGB, 1 for luma or a CFA plane).
    n_classes : int
        Outputs of the linear head (>= 2).
    stem : {'small', 'standard'}
        3x3/1 convolution without max-pool (small crops, default) or torchvision's 7x7/2 + 3x3/2 max-pool.
    """

    def __init__(self, in_channels: int = 3, n_classes: int = 2, *, stem: str = "small") -> None:
        super().__init__()
        if int(n_classes) != n_classes or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if stem not in RESNET_STEMS:
            raise ValueError(f"stem must be one of {', '.join(RESNET_STEMS)}, got {stem!r}")
        self.n_classes = int(n_classes)
        self.in_channels = int(in_channels)
        self.stem_kind = stem
        if stem == "standard":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(inplace=True))
        stages, channels = [], 64
        for i, (blocks, width) in enumerate(zip(RESNET34_LAYERS, _WIDTHS)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(channels, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(512, self.n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialisation: Kaiming normal (fan-out) convolutions, BN (1, 0), default linear."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map (N, 512, h, w)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, n_classes) for inputs (N, in_channels, P, P)."""
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.feature_map(x), 1), 1))

    def project_constraints(self) -> None:
        """Nothing to project (the training loop calls it after every step)."""

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer groups: L2 ``weight_decay`` on convolution weights only (as SRNet's)."""
        conv, others = [], []
        for module in self.modules():
            for name, parameter in module.named_parameters(recurse=False):
                (conv if isinstance(module, nn.Conv2d) and name == "weight" else others).append(parameter)
        return [{"params": conv, "weight_decay": float(weight_decay)}, {"params": others, "weight_decay": 0.0}]
