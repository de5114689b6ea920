"""Explanations of defect-cnn: which defects carry an image's decision, and where in each patch it looks.

A :class:`~pipeline.srnet.defect_cnn.DefectImageModel` is a sum over defect slots, so its
decision splits exactly into per-defect parts: with fusion weights ``w_d`` and patch logits
``z_d``, the image's logit of class ``t`` minus its mean logit is

    Z_t - mean_k Z_k = sum_d w_d (z_dt - mean_k z_dk),

and the term of slot ``d`` is that defect's **contribution** (positive: evidence for ``t``).
Inside each patch a CAM-family map of the patch network (:mod:`pipeline.srnet.cam`, Grad-CAM or
Grad-CAM++, for the *image's* explained class) shows whether the network looks at the defect in
the patch centre or at the scene around it. CAM itself is not defined here: the patch network's
head reads the pooled features *and* the response at the centre, not the pooled features alone.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from pipeline.srnet.cam import saliency_method, upsample_maps

__all__ = ["DEFECT_CAM_METHODS", "PATCH_LAYER", "DefectExplanation", "explain_defect_patches"]

DEFECT_CAM_METHODS = ("gradcam", "gradcam++")
"""The CAM-family methods defined for the patch network."""
PATCH_LAYER = "features"
"""The patch network's last feature map (the input of its pooling and centre read-out)."""


class DefectExplanation(NamedTuple):
    """Result of :func:`explain_defect_patches` for a batch of images.

    Attributes
    ----------
    maps : ndarray, float32, (B, D, P, P)
        Each patch's map for the image's explained class, upsampled to the patch, not normalised.
    contributions : ndarray, float64, (B, D)
        Each defect slot's part of the explained class's logit margin (they sum to ``margin``).
    margin : ndarray, float64, (B,)
        The explained class's image logit minus the mean image logit.
    targets : ndarray, int64, (B,)
        Explained class index per image (its predicted class unless given).
    logits : ndarray, float64, (B, K)
        Image logits.
    """

    maps: np.ndarray
    contributions: np.ndarray
    margin: np.ndarray
    targets: np.ndarray
    logits: np.ndarray


def explain_defect_patches(model, patches: np.ndarray, method: str = "gradcam", targets=None,
                           batch_size: int = 256) -> DefectExplanation:
    """Per-defect contributions and per-patch maps of a defect-cnn image model.

    Parameters
    ----------
    model : DefectImageModel
        A finished model (its mode is restored afterwards).
    patches : ndarray, float32, (B, D, C, P, P)
        The images' patches (:func:`pipeline.srnet.defect_cnn.defect_cnn_patches`).
    method : {'gradcam', 'gradcam++'}
    targets : int or array-like of int, optional
        Class index to explain per image (default: the image's predicted class).
    batch_size : int
        Patches per pass of the patch network.

    Returns
    -------
    DefectExplanation
    """
    if method not in DEFECT_CAM_METHODS:
        raise ValueError(f"defect-cnn can be explained by {', '.join(DEFECT_CAM_METHODS)}, not {method!r} (CAM needs "
                         "a head on pooled features alone; the patch network's head also reads the centre)")
    patches = np.ascontiguousarray(patches, dtype=np.float32)
    if patches.ndim != 5 or patches.shape[1] != model.n_defects:
        raise ValueError(f"patches must be (images, {model.n_defects}, C, P, P), got shape {patches.shape}")
    n_images, n_defects = patches.shape[:2]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tensor = torch.from_numpy(patches).to(device)
            patch_logits = torch.cat([model.patch_logits(tensor[i:i + 1]) for i in range(n_images)]).double()
            weights = model.defect_weights().double()
        image_logits = torch.einsum("d,bdk->bk", weights, patch_logits)
        chosen = (image_logits.argmax(dim=1) if targets is None else
                  torch.as_tensor(np.broadcast_to(np.asarray(targets, dtype=np.int64), (n_images,)).copy(),
                                  device=device))
        centred = patch_logits - patch_logits.mean(dim=2, keepdim=True)
        contributions = weights[None, :] * centred.gather(2, chosen[:, None, None].expand(-1, n_defects, 1))[..., 0]
        margin = image_logits.gather(1, chosen[:, None])[:, 0] - image_logits.mean(dim=1)
        flat = patches.reshape((-1,) + patches.shape[2:])
        result = saliency_method(method, model.patch_net, target_layer=PATCH_LAYER,
                                 batch_size=batch_size)(flat, np.repeat(chosen.cpu().numpy(), n_defects))
        maps = upsample_maps(result.maps, patches.shape[3:], normalise=False)
    finally:
        model.train(was_training)
    return DefectExplanation(maps.reshape(n_images, n_defects, *patches.shape[3:]).astype(np.float32),
                             contributions.cpu().numpy(), margin.cpu().numpy(), chosen.cpu().numpy(),
                             image_logits.cpu().numpy())
