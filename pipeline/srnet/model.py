"""SRNet (Boroumand, Chen & Fridrich, IEEE TIFS 2019) in PyTorch.

The layer layout, normalisation and initialisation follow the authors' official TensorFlow
code:

* layers 1-2 (type 1): conv 3x3 + BN + ReLU (in -> 64, 64 -> 16);
* layers 3-7 (type 2): five residual blocks at 16 channels, conv-BN-ReLU-conv-BN + identity;
* layers 8-11 (type 3): pooled blocks 16->16, 16->64, 64->128, 128->256; main branch
  conv-BN-ReLU-conv-BN then 3x3 average pooling with stride 2, shortcut 1x1 conv with
  stride 2 + BN;
* layer 12 (type 4): conv 256->512 + BN + ReLU, conv 512->512 + BN, then global average
  pooling (kept as the separate stage ``gap`` so that the pre-pooling map can be hooked);
* ``head``: a linear layer to the class logits.

There is no ReLU after the second BN of a block, after a shortcut or after an addition.

Differences from a naive port, all chosen to match the TensorFlow original:

* BatchNorm uses ``momentum=0.1`` (TF ``decay=0.9``) and ``eps=1e-3`` (TF default).
* The 3x3/2 average pooling reproduces TF ``padding='SAME'``: on an even size TF pads one
  pixel at the end only (PyTorch's ``padding=1`` pads both sides and shifts every window by
  one pixel) and the padding never enters the mean.  :class:`SamePaddingAvgPool2d` does
  exactly that for even and odd sizes (256 -> 128 -> 64 -> 32 -> 16).
* Convolution weights use TF's ``variance_scaling_initializer()`` (He/fan-in, truncated
  normal with standard deviation ``sqrt(1.3 * 2 / fan_in)`` cut at two standard deviations,
  which has variance ``2 / fan_in``); conv biases, when enabled, start at 0.2; the head is
  N(0, 0.01) with zero bias.
* Conv biases are off by default (``conv_bias=False``): every convolution feeds a BatchNorm,
  which subtracts the per-channel mean in training and folds a constant into its running
  mean, so a bias in front of it changes nothing the network computes.  Turn them on to get
  the original's exact parameter set.

Parameter counts (verified by the tests): 4,776,962 for 1 input channel and 2 classes
without conv biases, 4,779,618 with them; 3 input channels add 1,152 (2 x 64 x 9).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_MOMENTUM = 0.1
"""PyTorch momentum equivalent to the TensorFlow BatchNorm ``decay=0.9`` of the original."""
BN_EPSILON = 1e-3
"""TensorFlow's default BatchNorm epsilon, used by the original."""
CONV_BIAS_INIT = 0.2
HEAD_WEIGHT_STD = 0.01

STAGE_NAMES = tuple(f"layer{i}" for i in range(1, 13)) + ("gap", "head")
"""Names of the network's stages, in forward order."""


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


def _conv3x3(in_channels: int, out_channels: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)


class SamePaddingAvgPool2d(nn.Module):
    """3x3 average pooling with stride 2 and TensorFlow ``'SAME'`` padding.

    The output has ``ceil(n / 2)`` rows and columns.  For an even size TF pads one pixel after
    the end only; for an odd size one pixel on each side.  Padded pixels are excluded from the
    mean, as in ``tf.nn.avg_pool``.  ``ceil_mode`` supplies the trailing half window for even
    sizes and ``count_include_pad=False`` keeps padding out of the divisor.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        return F.avg_pool2d(
            x,
            kernel_size=3,
            stride=2,
            padding=(height % 2, width % 2),
            ceil_mode=True,
            count_include_pad=False,
        )


class ConvBNReLU(nn.Module):
    """SRNet layer type 1: conv 3x3, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool) -> None:
        super().__init__()
        self.conv = _conv3x3(in_channels, out_channels, bias)
        self.bn = _batch_norm(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    """SRNet layer type 2: ``x + BN(conv(ReLU(BN(conv(x)))))``, no activation after the sum."""

    def __init__(self, channels: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels, bias)
        self.bn1 = _batch_norm(channels)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(channels, channels, bias)
        self.bn2 = _batch_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.relu(self.bn1(self.conv1(x)))
        return x + self.bn2(self.conv2(branch))


class PooledBlock(nn.Module):
    """SRNet layer type 3: pooled residual block halving the spatial size.

    Main branch conv-BN-ReLU-conv-BN followed by 3x3/2 average pooling; shortcut 1x1 conv with
    stride 2 and BN; the two are added with no activation after the sum.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, bias)
        self.bn1 = _batch_norm(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels, bias)
        self.bn2 = _batch_norm(out_channels)
        self.pool = SamePaddingAvgPool2d()
        self.shortcut_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=2, bias=bias)
        self.shortcut_bn = _batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.relu(self.bn1(self.conv1(x)))
        branch = self.pool(self.bn2(self.conv2(branch)))
        return branch + self.shortcut_bn(self.shortcut_conv(x))


class FinalBlock(nn.Module):
    """SRNet layer type 4 without its pooling: conv-BN-ReLU-conv-BN.

    Its output is the map that global average pooling reduces (16x16 for a 256 input); the
    CAM family of explanations works on it.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, bias)
        self.bn1 = _batch_norm(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels, bias)
        self.bn2 = _batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class ConstrainedConv2d(nn.Conv2d):
    """Bayar & Stamm's constrained prediction-error convolution (no bias, stride 1, same size).

    Every 2-D kernel slice ``w[k, c]`` is held at ``w[k, c, centre] = -1`` with its other weights
    summing to 1, so each slice computes "weighted mean of the neighbours minus the pixel": a
    prediction error that is 0 on any locally constant or linear-in-mean region, which suppresses
    scene content and keeps local noise (Bayar & Stamm, IH&MMSec 2016; IEEE TIFS 2018).  The
    constraint is restored by :meth:`project_` after every optimiser step (the training loop calls
    it through :meth:`SRNet.project_constraints`), and at initialisation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=kernel_size // 2, bias=False)

    @torch.no_grad()
    def project_(self) -> None:
        """Re-impose the constraint in place: centre -1, the others rescaled to sum to 1.

        A slice whose off-centre weights sum to (nearly) zero cannot be rescaled; it is reset to
        the uniform neighbour mean, the simplest prediction-error filter.
        """
        weight = self.weight
        centre = self.kernel_size[0] // 2
        weight[:, :, centre, centre] = 0.0
        sums = weight.sum(dim=(2, 3), keepdim=True)
        degenerate = sums.abs() < 1e-6
        neighbours = self.kernel_size[0] * self.kernel_size[1] - 1
        uniform = torch.full_like(weight, 1.0 / neighbours)
        uniform[:, :, centre, centre] = 0.0
        weight.copy_(torch.where(degenerate, uniform, weight / torch.where(degenerate, torch.ones_like(sums), sums)))
        weight[:, :, centre, centre] = -1.0


class GlobalAvgPool(nn.Module):
    """Mean over the spatial axes: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class SRNet(nn.Module):
    """Steganalysis Residual Network used as the learned image-age comparator.

    Parameters
    ----------
    in_channels : int, default 1
        1 for luminance or a CFA plane, 3 for RGB.
    n_classes : int, default 2
        Number of output logits.
    conv_bias : bool, default False
        Give every convolution a bias (initialised to 0.2 as in the original).  Functionally
        redundant in front of BatchNorm; see the module docstring.
    stem : {'plain', 'constrained'}, default 'plain'
        ``'constrained'`` puts a :class:`ConstrainedConv2d` (``constrained_filters`` kernels of
        ``constrained_kernel`` squared pixels) in front of layer 1, as the attribute ``stem``.
    constrained_filters, constrained_kernel : int, default 3 and 5
        The constrained layer's kernels (Bayar & Stamm's three 5x5 filters).

    Notes
    -----
    Stages are the attributes named in :data:`STAGE_NAMES` (``layer1`` ... ``layer12``,
    ``gap``, ``head``), so that ``model.layer12`` can be hooked for the pre-pooling feature
    map, which :meth:`feature_map` also returns directly.  A constrained model runs ``stem``
    before them.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, conv_bias: bool = False, *, stem: str = "plain",
                 constrained_filters: int = 3, constrained_kernel: int = 5) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 (luminance or a CFA plane) or 3 (RGB), got {in_channels!r}")
        if int(n_classes) != n_classes or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        self.in_channels = int(in_channels)
        self.n_classes = int(n_classes)
        self.conv_bias = bool(conv_bias)
        if stem not in ("plain", "constrained"):
            raise ValueError(f"stem must be 'plain' or 'constrained', got {stem!r}")
        self.stem_mode = stem
        bias = self.conv_bias

        first_in = in_channels
        if stem == "constrained":
            self.stem = ConstrainedConv2d(in_channels, int(constrained_filters), int(constrained_kernel))
            first_in = int(constrained_filters)
        self.layer1 = ConvBNReLU(first_in, 64, bias)
        self.layer2 = ConvBNReLU(64, 16, bias)
        self.layer3 = ResidualBlock(16, bias)
        self.layer4 = ResidualBlock(16, bias)
        self.layer5 = ResidualBlock(16, bias)
        self.layer6 = ResidualBlock(16, bias)
        self.layer7 = ResidualBlock(16, bias)
        self.layer8 = PooledBlock(16, 16, bias)
        self.layer9 = PooledBlock(16, 64, bias)
        self.layer10 = PooledBlock(64, 128, bias)
        self.layer11 = PooledBlock(128, 256, bias)
        self.layer12 = FinalBlock(256, 512, bias)
        self.gap = GlobalAvgPool()
        self.head = nn.Linear(512, self.n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every parameter as the original TensorFlow code does."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                std = math.sqrt(1.3 * 2.0 / fan_in)
                nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
                if module.bias is not None:
                    nn.init.constant_(module.bias, CONV_BIAS_INIT)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=HEAD_WEIGHT_STD)
                nn.init.zeros_(module.bias)
        self.project_constraints()

    def project_constraints(self) -> None:
        """Restore the constrained stem's constraint (a no-op for the plain network)."""
        if self.stem_mode == "constrained":
            self.stem.project_()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Layer-12 output before global average pooling, (N, 512, ceil(P/16), ceil(P/16))."""
        if self.stem_mode == "constrained":
            x = self.stem(x)
        for name in STAGE_NAMES[:12]:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, n_classes) for inputs (N, in_channels, P, P)."""
        return self.head(self.gap(self.feature_map(x)))

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups: L2 ``weight_decay`` on conv weights only.

        The original adds ``l2_regularizer(2e-4)`` (gradient ``2e-4 * w``) for convolution
        kernels only -- not for conv biases, BatchNorm or the head -- which is what a coupled
        ``weight_decay`` on this group reproduces.
        """
        conv_weights, others = [], []
        for module in self.modules():
            for name, parameter in module.named_parameters(recurse=False):
                # the constrained kernels are re-projected after each step: decay would only fight that
                if isinstance(module, nn.Conv2d) and not isinstance(module, ConstrainedConv2d) and name == "weight":
                    conv_weights.append(parameter)
                else:
                    others.append(parameter)
        return [
            {"params": conv_weights, "weight_decay": float(weight_decay)},
            {"params": others, "weight_decay": 0.0},
        ]
