"""Where SRNet looks: CAM, Grad-CAM, Grad-CAM++ and Score-CAM saliency maps.

One small class per method over a shared base, :class:`SaliencyMethod`.  An instance is a
context manager: entering it puts the model in eval mode and registers a forward hook on the
target layer; leaving it (also after an exception) removes the hook and restores the model's
training flag.  Calling an instance outside a ``with`` block enters and leaves around that one
call::

    with GradCAM(model) as explain:            # default target layer: model.layer12
        result = explain(crops)                # crops: float32 (N, C, P, P), as from crops.py
    result.maps                                # (N, h, w) raw maps, comparable across crops/runs
    result.upsampled()                         # (N, P, P), min-max normalised per map

Inputs are network inputs exactly as training saw them (:func:`pipeline.srnet.crops.extract_crops`
/ :func:`~pipeline.srnet.crops.to_tensor_input`); nothing here rescales pixels.  The device is the
model's.  The model is put in eval mode, so BatchNorm uses its running statistics and every
image's map is independent of the others in its batch.

Notation: ``A`` is the target layer's output (N, K, h, w), ``S_c`` the logit of class ``c``,
``g = dS_c/dA``, ``Z = h * w``.

* **CAM** (Zhou et al. 2016): ``M = sum_k w_ck A_k`` with the linear head's weights.  Defined only
  for the tensor that global average pooling reduces (SRNet's ``layer12`` output), where
  ``mean(M) + b_c = S_c`` exactly.  The raw CAM keeps its sign (no ReLU).
* **Grad-CAM** (Selvaraju et al. 2017): ``alpha_k = mean(g_k)``, ``M = ReLU(sum_k alpha_k A_k)``.
  At the pooling input ``g_k = w_ck / Z``, so Grad-CAM there is ``ReLU(CAM) / Z``.
* **Grad-CAM++** (Chattopadhay et al. 2018), in the usual closed form for an exponential of the
  score: ``a_ij = g^2 / (2 g^2 + sum_ab A_ab g^3)`` (0 where the denominator is 0),
  ``w_k = sum_ij a_ij ReLU(g_ij)``, ``M = ReLU(sum_k w_k A_k)``.  The derivation assumes
  ``A >= 0``; SRNet's ``layer12`` ends in BatchNorm without a ReLU, so ``sum_ab A_ab`` can be
  negative there and some weights change sign or grow large.  Pick a post-ReLU tensor (for
  example ``target_layer='layer12.relu'``, inside the final block) where that matters.
* **Score-CAM** (Wang et al. 2020): ``H_k`` = ``A_k`` upsampled to the input size (bilinear,
  ``align_corners=False``) and min-max normalised to [0, 1] per map (a constant map gives a zero
  mask); ``C_k = f_c(X * H_k) - f_c(0)`` with ``f_c`` the softmax probability of class ``c``
  (``score='probability'``, as in the paper) or its logit (``score='logit'``);
  ``w = softmax_k(C)``; ``M = ReLU(sum_k w_k A_k)``.  The ``K`` masked forward passes per image
  run in batches of ``batch_size``.

The raw maps are never normalised: normalising each map on its own hides differences between
crops and runs.  :meth:`SaliencyMaps.upsampled` (or :func:`upsample_maps`) gives the normalised
map at the input size for display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CAM",
    "METHODS",
    "GradCAM",
    "GradCAMPlusPlus",
    "SaliencyMaps",
    "SaliencyMethod",
    "ScoreCAM",
    "saliency_method",
    "upsample_maps",
]

DEFAULT_TARGET_LAYER = "layer12"
"""SRNet's final block: its output (N, 512, P/16, P/16) is what global average pooling reduces."""
SCORE_KINDS = ("probability", "logit")


@dataclass(frozen=True)
class SaliencyMaps:
    """Result of one saliency method on a batch of network inputs.

    Attributes
    ----------
    method : str
        Name of the method (a key of :data:`METHODS`).
    maps : ndarray, float32, (N, h, w)
        Raw maps at the target layer's resolution, not normalised (comparable across images,
        crops and runs of one method).  CAM keeps its sign; the other methods end in a ReLU.
    weights : ndarray, float32, (N, K)
        Channel weights the map combines: the head's row of the target class (CAM), ``alpha``
        (Grad-CAM), ``w`` (Grad-CAM++), ``softmax(C)`` (Score-CAM).
    targets : ndarray, int64, (N,)
        Class index explained for each image.
    logits : ndarray, float32, (N, n_classes)
        The model's logits for the unmodified inputs.
    input_size : (int, int)
        Height and width of the inputs.
    scores : ndarray or None
        Score-CAM only: the increases ``C`` (N, K) before the softmax.
    """

    method: str
    maps: np.ndarray
    weights: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    input_size: tuple[int, int]
    scores: np.ndarray | None = field(default=None)

    @property
    def predicted(self) -> np.ndarray:
        """Most probable class index per image (N,)."""
        return self.logits.argmax(axis=1)

    def upsampled(self, size: tuple[int, int] | None = None, *, normalise: bool = True) -> np.ndarray:
        """The maps resized to ``size`` (default: the input size); see :func:`upsample_maps`."""
        return upsample_maps(self.maps, self.input_size if size is None else size, normalise=normalise)


def upsample_maps(maps: np.ndarray, size: tuple[int, int], *, normalise: bool = True) -> np.ndarray:
    """Resize maps (N, h, w) to ``size`` bilinearly, optionally min-max normalised per map.

    Parameters
    ----------
    maps : ndarray, (N, h, w)
        Raw maps, e.g. :attr:`SaliencyMaps.maps`.
    size : (int, int)
        Output height and width (usually the network input's).
    normalise : bool, default True
        Scale each upsampled map to [0, 1] by its own minimum and maximum (a constant map
        becomes zeros).  Use False to keep the raw scale, e.g. to compare maps.

    Returns
    -------
    ndarray, float32, (N, H, W)
        Bilinear interpolation with ``align_corners=False`` (pixel centres, as
        :func:`torch.nn.functional.interpolate`).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (N, h, w), got {maps.shape}; add a leading axis for one map")
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive integers (height, width), got {size!r}")
    if len(maps) == 0:
        return np.zeros((0, height, width), np.float32)
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(maps))[:, None], size=(height, width),
                            mode="bilinear", align_corners=False)[:, 0]
    if normalise:
        resized = _minmax(resized, dims=(1, 2))
    return resized.numpy()


class SaliencyMethod:
    """Shared machinery of the CAM family: target layer, hook, eval mode, batching, targets.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits (N, n_classes), e.g. :class:`pipeline.srnet.model.SRNet`
        as loaded by :func:`pipeline.srnet.train.load_crop_model`.  Its device is used.
    target_layer : str or torch.nn.Module, optional
        The layer whose output is explained: a dotted submodule name (``'layer12'``,
        ``'layer11'``, ``'layer12.relu'``) or the submodule itself.  Default ``'layer12'``,
        SRNet's final block before global average pooling (16x16 for a 256 input).
    batch_size : int, optional
        Images per forward pass (default: the whole input at once).

    Notes
    -----
    Use an instance as a context manager to keep the hook over several calls; a call outside
    a ``with`` block registers and removes the hook itself.
    """

    name = "base"
    needs_gradients = False

    def __init__(self, model: nn.Module, target_layer: str | nn.Module | None = None, *, batch_size: int | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (e.g. an SRNet), got {type(model).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.model = model
        self.target_layer_name, self.target_layer = _resolve_layer(model, target_layer)
        self.batch_size = None if batch_size is None else int(batch_size)
        self._handle = None
        self._was_training: bool | None = None
        self._capture = False
        self._activations: torch.Tensor | None = None

    # ------------------------------------------------------------------ hooks
    @property
    def active(self) -> bool:
        """Whether the hook is registered (inside a ``with`` block)."""
        return self._handle is not None

    def __enter__(self) -> Self:
        if self._handle is not None:
            raise RuntimeError(f"this {type(self).__name__} is already in use; create another instance to nest")
        self._was_training = self.model.training
        self.model.eval()
        self._handle = self.target_layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hook and restore the model's training flag (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._was_training is not None:
            self.model.train(self._was_training)
            self._was_training = None
        self._activations = None
        self._capture = False

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if not self._capture:
            return None
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"target layer {self.target_layer_name!r} must output one (N, K, h, w) tensor, got {shape}; "
                "choose a convolutional stage such as 'layer12' or 'layer11'"
            )
        self._capture = False
        if self.needs_gradients:
            # The forward pass runs without autograd up to here (see _explain_batch); from here on
            # it records, starting from a leaf copy of the activations: the gradient is taken with
            # respect to it, nothing before the layer is recorded or kept, and frozen parameters
            # do not matter.  The caller's grad mode is restored when its no_grad block ends.
            torch.set_grad_enabled(True)
            leaf = output.detach().requires_grad_(True)
            self._activations = leaf
            return leaf
        self._activations = output.detach()
        return None

    def _forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the target layer's activations for one batch."""
        self._capture = True
        try:
            logits = self.model(inputs)
        finally:
            self._capture = False
        activations, self._activations = self._activations, None
        if activations is None:
            raise RuntimeError(
                f"the target layer {self.target_layer_name!r} was not run by the model's forward pass; "
                "choose a layer the forward pass uses"
            )
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            shape = getattr(logits, "shape", type(logits).__name__)
            raise ValueError(f"the model must return logits of shape (N, n_classes), got {shape}")
        return logits, activations

    # ------------------------------------------------------------------ public call
    def __call__(self, inputs: np.ndarray | torch.Tensor,
                 targets: int | Sequence[int] | np.ndarray | None = None) -> SaliencyMaps:
        """Saliency maps of a batch of network inputs.

        Parameters
        ----------
        inputs : ndarray or torch.Tensor, float32, (N, C, H, W)
            Network inputs as made by :func:`pipeline.srnet.crops.extract_crops` (stacked).
        targets : int, sequence of int or None
            Class index to explain: one for all images, one per image, or None for each
            image's predicted class.

        Returns
        -------
        SaliencyMaps
        """
        if self._handle is None:
            with self:
                return self(inputs, targets)
        batch = _validated_inputs(inputs)
        device = _model_device(self.model)
        count = batch.shape[0]
        step = count if self.batch_size is None else self.batch_size
        parts: list[tuple[np.ndarray, ...]] = []
        for start in range(0, count, max(step, 1)):
            chunk = batch[start : start + step].to(device)
            parts.append(self._explain_batch(chunk, targets, start, count))
        if not parts:
            raise ValueError("inputs hold no images; pass an (N, C, H, W) array with N >= 1")
        maps, weights, chosen, logits, scores = (
            np.concatenate([part[i] for part in parts]) if parts[0][i] is not None else None for i in range(5)
        )
        return SaliencyMaps(
            method=self.name,
            maps=maps,
            weights=weights,
            targets=chosen,
            logits=logits,
            input_size=(int(batch.shape[2]), int(batch.shape[3])),
            scores=scores,
        )

    def _explain_batch(self, inputs: torch.Tensor, targets: Any, start: int, count: int) -> tuple:
        if self.needs_gradients:
            with torch.inference_mode(False):
                with torch.no_grad():  # the hook switches autograd on at the target layer
                    logits, activations = self._forward(inputs)
                chosen = _targets(targets, logits, start, count)
                with torch.enable_grad():
                    score = logits.gather(1, chosen[:, None]).sum()
                (gradients,) = torch.autograd.grad(score, activations)
            activations, logits = activations.detach(), logits.detach()
            weights, maps = self._combine(activations, gradients.detach())
            scores = None
        else:
            with torch.no_grad():
                logits, activations = self._forward(inputs)
                chosen = _targets(targets, logits, start, count)
                weights, maps, scores = self._weights_without_gradients(inputs, activations, logits, chosen)
        return (
            maps.float().cpu().numpy(),
            weights.float().cpu().numpy(),
            chosen.cpu().numpy().astype(np.int64),
            logits.float().cpu().numpy(),
            None if scores is None else scores.float().cpu().numpy(),
        )

    def _combine(self, activations: torch.Tensor, gradients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _weights_without_gradients(self, inputs, activations, logits, chosen):
        raise NotImplementedError


class CAM(SaliencyMethod):
    """Class activation map ``sum_k w_ck A_k`` from the linear head's weights (raw, signed).

    Parameters
    ----------
    model, target_layer, batch_size
        As in :class:`SaliencyMethod`; the target layer must be the one whose output global
        average pooling reduces (SRNet's ``layer12``, the default).
    head : torch.nn.Linear, optional
        The linear layer after the pooling (default ``model.head``).
    """

    name = "cam"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module | None = None, *, head: nn.Linear | None = None,
                 batch_size: int | None = None):
        super().__init__(model, target_layer, batch_size=batch_size)
        head = getattr(model, "head", None) if head is None else head
        if not isinstance(head, nn.Linear):
            raise TypeError("CAM needs the linear layer after global average pooling: pass head=<nn.Linear> "
                             "or use a model with a .head attribute such as SRNet")
        self.head = head
        pooled_input = getattr(model, DEFAULT_TARGET_LAYER, None)
        if pooled_input is not None and hasattr(model, "gap") and self.target_layer is not pooled_input:
            raise ValueError(
                f"CAM is defined only at the input of global average pooling ({DEFAULT_TARGET_LAYER!r}), "
                f"not at {self.target_layer_name!r}; use GradCAM, GradCAMPlusPlus or ScoreCAM for other layers"
            )

    def _weights_without_gradients(self, inputs, activations, logits, chosen):
        if activations.shape[1] != self.head.in_features:
            raise ValueError(
                f"the target layer has {activations.shape[1]} channels but the head expects "
                f"{self.head.in_features}; CAM needs the layer that feeds the pooling and the head"
            )
        weights = self.head.weight.detach()[chosen].to(activations.dtype)  # (N, K)
        maps = torch.einsum("nk,nkhw->nhw", weights, activations)
        return weights, maps, None


class GradCAM(SaliencyMethod):
    """Grad-CAM: ``ReLU(sum_k mean(g_k) A_k)``; see the module docstring."""

    name = "gradcam"
    needs_gradients = True

    def _combine(self, activations, gradients):
        weights = gradients.mean(dim=(2, 3))
        maps = F.relu(torch.einsum("nk,nkhw->nhw", weights, activations))
        return weights, maps


class GradCAMPlusPlus(SaliencyMethod):
    """Grad-CAM++ with the closed-form pixel weights; see the module docstring for the caveat."""

    name = "gradcam++"
    needs_gradients = True

    def _combine(self, activations, gradients):
        squared = gradients.pow(2)
        denominator = 2.0 * squared + activations.sum(dim=(2, 3), keepdim=True) * gradients.pow(3)
        safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = torch.where(denominator != 0, squared / safe, torch.zeros_like(denominator))
        weights = (alpha * F.relu(gradients)).sum(dim=(2, 3))
        maps = F.relu(torch.einsum("nk,nkhw->nhw", weights, activations))
        return weights, maps


class ScoreCAM(SaliencyMethod):
    """Score-CAM with batched masked forward passes; see the module docstring.

    Parameters
    ----------
    model, target_layer
        As in :class:`SaliencyMethod`.
    batch_size : int, default 64
        Masked inputs per forward pass (each image needs one per channel of the target layer,
        512 for SRNet's ``layer12``); also the number of images per unmasked forward pass.
    score : {'probability', 'logit'}, default 'probability'
        What ``f_c`` is: the softmax probability of the class (the paper's choice) or its logit.
    """

    name = "scorecam"

    def __init__(self, model: nn.Module, target_layer: str | nn.Module | None = None, *, batch_size: int = 64,
                 score: str = "probability"):
        if batch_size is None or isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"ScoreCAM's batch_size must be a positive integer, got {batch_size!r}")
        super().__init__(model, target_layer, batch_size=batch_size)
        if score not in SCORE_KINDS:
            raise ValueError(f"score must be one of {', '.join(SCORE_KINDS)}, got {score!r}")
        self.mask_batch_size = int(batch_size)
        self.score = score

    def _class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1) if self.score == "probability" else logits

    def _weights_without_gradients(self, inputs, activations, logits, chosen):
        height, width = inputs.shape[2:]
        baseline = self._class_scores(self.model(torch.zeros_like(inputs[:1])))[0]  # (n_classes,)
        all_scores = []
        for index in range(inputs.shape[0]):
            masks = F.interpolate(activations[index][:, None], size=(height, width), mode="bilinear",
                                  align_corners=False)
            masks = _minmax(masks, dims=(1, 2, 3))  # (K, 1, H, W)
            target = int(chosen[index])
            image_scores = []
            for start in range(0, masks.shape[0], self.mask_batch_size):
                masked = inputs[index : index + 1] * masks[start : start + self.mask_batch_size]
                image_scores.append(self._class_scores(self.model(masked))[:, target])
            all_scores.append(torch.cat(image_scores) - baseline[target])
        scores = torch.stack(all_scores)  # (N, K)
        weights = torch.softmax(scores, dim=1)
        maps = F.relu(torch.einsum("nk,nkhw->nhw", weights, activations))
        return weights, maps, scores


METHODS: dict[str, type[SaliencyMethod]] = {
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "scorecam": ScoreCAM,
}
"""Method name -> class; the names used on the command line."""


def saliency_method(name: str, model: nn.Module, **options: Any) -> SaliencyMethod:
    """An instance of the method called ``name`` (a key of :data:`METHODS`) for ``model``."""
    key = name.strip().lower()
    if key not in METHODS:
        raise ValueError(f"unknown saliency method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[key](model, **options)


# ---------------------------------------------------------------------- helpers

def _resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Module]:
    if layer is None:
        layer = DEFAULT_TARGET_LAYER
        if not hasattr(model, layer):
            raise ValueError(f"the model has no {layer!r}; pass target_layer= (a submodule name or the module)")
    if isinstance(layer, str):
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            names = [name for name, _ in model.named_children()]
            raise ValueError(f"target layer {layer!r} is not a submodule of the model; top-level layers are "
                             f"{', '.join(names)} (dotted names reach inside them)") from None
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name or "<model>", module
        raise ValueError("target_layer is not a submodule of this model; pass one of its modules or its name")
    raise TypeError(f"target_layer must be a submodule name or an nn.Module, got {type(layer).__name__}")


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _validated_inputs(inputs: Any) -> torch.Tensor:
    if isinstance(inputs, np.ndarray):
        if inputs.dtype != np.float32:
            raise TypeError(f"inputs must be float32 network inputs (as made by pipeline.srnet.crops), "
                            f"got {inputs.dtype}")
        inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    elif isinstance(inputs, torch.Tensor):
        if inputs.dtype != torch.float32:
            raise TypeError(f"inputs must be float32 network inputs (as made by pipeline.srnet.crops), "
                            f"got {inputs.dtype}")
        inputs = inputs.detach()
        if inputs.is_inference():
            # made under torch.inference_mode(): autograd cannot record operations on it
            with torch.inference_mode(False):
                inputs = inputs.clone()
    else:
        raise TypeError(f"inputs must be a numpy array or torch tensor (N, C, H, W), got {type(inputs).__name__}")
    if inputs.ndim != 4:
        raise ValueError(f"inputs must have shape (N, C, H, W), got {tuple(inputs.shape)}; "
                         "stack crops along a first axis")
    return inputs


def _targets(targets: Any, logits: torch.Tensor, start: int, count: int) -> torch.Tensor:
    n_classes = logits.shape[1]
    rows = logits.shape[0]
    if targets is None:
        return logits.detach().argmax(dim=1)
    values = np.asarray(targets)
    if values.ndim == 0:
        values = np.full(rows, int(values))
    else:
        if values.shape != (count,):
            raise ValueError(f"targets must be one class index or one per image ({count}), got shape {values.shape}")
        values = values[start : start + rows]
    if values.dtype.kind not in "iu" and not np.all(np.equal(np.mod(values, 1), 0)):
        raise TypeError(f"targets must be integer class indices, got {values.dtype}")
    values = values.astype(np.int64)
    if values.min() < 0 or values.max() >= n_classes:
        raise ValueError(f"targets must lie in [0, {n_classes}), got values from {values.min()} to {values.max()}")
    return torch.from_numpy(values).to(logits.device)


def _minmax(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    low = values.amin(dim=dims, keepdim=True)
    span = values.amax(dim=dims, keepdim=True) - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (values - low) / safe, torch.zeros_like(values))
