"""The defect-cnn networks: one patch network shared by every defect slot, its logits fused per image.

:class:`DefectPatchNet` maps one defect-centred patch to class logits; :class:`DefectImageModel`
applies it to every defect slot of an image and fuses the patch logits (their mean, or a learned
attention over slots). Training, checkpoints and prediction are in :mod:`pipeline.srnet.defect_cnn`,
explanations in :mod:`pipeline.srnet.defect_cam`.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.srnet.defect_presets import FUSIONS

__all__ = ["DefectImageModel", "DefectPatchNet"]


class DefectPatchNet(nn.Module):
    """Class logits of one defect-centred patch.

    Parameters
    ----------
    in_channels : int
        Patch channels (3 for RGB, 1 for luma or 2-D images).
    n_classes : int
        Number of classes.
    patch : int
        Patch side (even, at least 8); the defect is at index ``patch // 2``.

    Notes
    -----
    Input (N, C, patch, patch) float32, output (N, n_classes) logits. Three 3x3
    conv-BatchNorm-ReLU blocks of 16 (stride 2), 32 (stride 2) and 64 channels; the head sees
    the global average of the last map and its response at the defect's position (index
    ``patch // 2`` halved once per stride-2 block, where the defect pixel is at the centre of
    the receptive field). Striding the first block costs nothing in coverage (every pixel is
    inside some output's 3x3 window) and made a training step about 3 times faster on a CPU
    than a full-resolution first block.
    """

    def __init__(self, in_channels: int, n_classes: int, patch: int):
        super().__init__()
        if in_channels < 1 or n_classes < 2 or patch < 8:
            raise ValueError(
                f"DefectPatchNet needs in_channels >= 1, n_classes >= 2 and patch >= 8, "
                f"got {in_channels}, {n_classes}, {patch}"
            )
        self.in_channels, self.n_classes, self.patch = int(in_channels), int(n_classes), int(patch)
        self.features = nn.Sequential(
            *_block(in_channels, 16, stride=2), *_block(16, 32, stride=2), *_block(32, 64, stride=1)
        )
        # A 3x3 stride-2 conv's output j covers inputs 2j-1 .. 2j+1, so index c // 2 is centred on c.
        self.centre = (patch // 2) // 2 // 2
        self.head = nn.Linear(2 * 64, n_classes)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes) of patches (N, C, patch, patch)."""
        maps = self.features(patches)
        pooled = maps.mean(dim=(2, 3))
        centre = maps[:, :, self.centre, self.centre]
        return self.head(torch.cat([pooled, centre], dim=1))


class DefectImageModel(nn.Module):
    """Image logits from the patches at a run's defects: :class:`DefectPatchNet` per patch, fused.

    Parameters
    ----------
    in_channels, n_classes, patch : int
        As for :class:`DefectPatchNet`.
    n_defects : int
        Number of defect slots (patches per image), in the order of the run's defect table.
    fusion : {'mean', 'attention'}
        ``'mean'``: the mean of the patch logits. ``'attention'``: their weighted sum with
        weights ``softmax(a)`` over one learned scalar ``a_d`` per defect slot (all zero at
        the start, i.e. the mean).

    Notes
    -----
    Input (batch, n_defects, C, patch, patch), output (batch, n_classes) logits.
    """

    def __init__(self, in_channels: int, n_classes: int, n_defects: int, patch: int, fusion: str = "mean"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if n_defects < 1:
            raise ValueError(f"n_defects must be >= 1, got {n_defects}; with no defects there is nothing to fuse")
        self.n_defects, self.fusion = int(n_defects), fusion
        self.patch_net = DefectPatchNet(in_channels, n_classes, patch)
        self.attention = nn.Parameter(torch.zeros(n_defects)) if fusion == "attention" else None

    def patch_logits(self, patches: torch.Tensor) -> torch.Tensor:
        """Per-patch logits (batch, n_defects, n_classes)."""
        if patches.ndim != 5 or patches.shape[1] != self.n_defects:
            raise ValueError(
                f"expected patches of shape (batch, {self.n_defects}, C, P, P), got {tuple(patches.shape)}"
            )
        batch = patches.shape[0]
        logits = self.patch_net(patches.reshape((-1,) + tuple(patches.shape[2:])))
        return logits.reshape(batch, self.n_defects, -1)

    def defect_weights(self) -> torch.Tensor:
        """Fusion weight of each defect slot (n_defects,), summing to 1."""
        if self.attention is None:
            return torch.full((self.n_defects,), 1.0 / self.n_defects, device=self.patch_net.head.weight.device)
        return torch.softmax(self.attention, dim=0)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Image logits (batch, n_classes)."""
        logits = self.patch_logits(patches)
        if self.attention is None:
            return logits.mean(dim=1)
        return torch.einsum("d,bdk->bk", self.defect_weights(), logits)


def _block(in_channels: int, out_channels: int, *, stride: int) -> list[nn.Module]:
    # No conv bias: BatchNorm's shift makes it redundant.
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
