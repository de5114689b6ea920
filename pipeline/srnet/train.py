"""Training and prediction of one SRNet on one fixed crop.

Training follows the papers: Adamax, cross-entropy on the logits, learning rate ``lr`` for
``lr_drop_epoch`` epochs and ``lr_after_drop`` afterwards, L2 weight decay on convolution
weights only, and in every epoch the minority classes oversampled to the size of the largest
class.  No augmentation is applied: interpolating transforms would destroy the pixel-level
noise the network is meant to find.

Repeatability: the network is initialised from the seed, and each epoch's sample order comes
from a numpy Generator seeded with ``(seed, epoch)``, so an epoch's order does not depend on
what ran before it.  On CPU deterministic algorithms are switched on; a run interrupted after
any epoch and resumed from its checkpoint ends with the same weights, bit for bit, as an
uninterrupted run with the same seed and thread count.

The learning-rate schedule is a pure function of the epoch (:meth:`SRNetConfig.lr_at_epoch`)
so a checkpoint needs no scheduler object: it holds the model, the Adamax state, the number
of completed epochs, torch's RNG state, the loss history and a fingerprint of the
configuration and data it belongs to.  The checkpoint of a finished training keeps the model
(about 19 MB) and drops the optimizer state (another 38 MB), since it is only ever loaded.

BatchNorm running statistics start at mean 0 and variance 1 and keep ``0.9 ** steps`` of
that start, as in the original; eval-mode predictions are reliable once a training has run
several dozen optimiser steps (the ``cpu`` preset runs about 110 on 110 images).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pipeline.logs import get_logger
from pipeline.srnet.checkpoint import load_checkpoint, save_checkpoint
from pipeline.srnet.model import SRNet
from pipeline.srnet.presets import SRNetConfig
from pipeline.srnet.runtime import resolve_device, torch_runtime

logger = get_logger(__name__)

# Fields that change neither the trained weights nor their meaning; a checkpoint stays valid
# when only these differ.
_NON_TRAINING_FIELDS = ("preset", "fusion", "crops", "max_runs", "device", "num_threads", "checkpoint_every_s",
                        "eval_batch_size", "seed")


_LATER_FIELDS = {"input": "pixels", "stem": "plain", "constrained_filters": 3, "constrained_kernel": 5,
                 "architecture": "srnet"}


class TrainedCrop(NamedTuple):
    """Result of :func:`train_crop_model`: the network (eval mode) and one record per epoch.

    Each history record has ``epoch`` (1-based), ``loss`` (mean training cross-entropy),
    ``accuracy`` (training accuracy during the epoch), ``lr``, ``images`` (training inputs seen,
    after oversampling) and ``seconds`` (the epoch's wall time, checkpoint excluded).
    """

    model: SRNet
    history: list[dict[str, float]]


def oversampled_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices that bring every class to the size of the largest one, shuffled.

    Each class contributes all its samples, as many further whole copies as fit, and a random
    subset (without replacement) for the remainder.  Classes absent from ``labels`` are
    ignored.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.max()
    parts = []
    for cls, count in zip(classes, counts):
        members = np.flatnonzero(labels == cls)
        copies, remainder = divmod(target, count)
        parts.append(np.tile(members, copies))
        parts.append(rng.choice(members, size=remainder, replace=False))
    indices = np.concatenate(parts)
    rng.shuffle(indices)
    return indices


def epoch_order(labels: np.ndarray, seed: int, epoch: int, oversample: bool = True) -> np.ndarray:
    """Sample order of one (0-based) epoch, a function of ``(seed, epoch)`` only."""
    rng = np.random.default_rng([seed, epoch])
    if oversample:
        return oversampled_indices(labels, rng)
    return rng.permutation(len(labels))


def crop_seed(seed: int, crop_index: int) -> int:
    """Seed of the network of crop number ``crop_index``, derived from the run's seed."""
    return int(np.random.SeedSequence([seed, crop_index]).generate_state(1)[0])


def build_model(in_channels: int, n_classes: int, conv_bias: bool, seed: int, **architecture: Any) -> SRNet:
    """SRNet (or ResNet-34) initialised from ``seed`` without touching torch's global RNG state.

    ``architecture`` holds SRNet's keyword-only options (``stem``, ``constrained_filters``,
    ``constrained_kernel``), or ``family='resnet34'`` (and ResNet-34's ``stem``) for
    :class:`pipeline.srnet.resnet.ResNet34` (``conv_bias`` is then ignored)."""
    architecture = dict(architecture)
    family = architecture.pop("family", "srnet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "resnet34":
            from pipeline.srnet.resnet import ResNet34

            return ResNet34(in_channels=in_channels, n_classes=n_classes, **architecture)
        return SRNet(in_channels=in_channels, n_classes=n_classes, conv_bias=conv_bias, **architecture)


def architecture(config: SRNetConfig) -> dict[str, Any]:
    """The network's keyword-only architecture options that ``config`` sets (SRNet's, or ResNet-34's)."""
    if config.architecture == "resnet34":
        return {"family": "resnet34", "stem": "small"}
    return {"stem": config.stem, "constrained_filters": config.constrained_filters,
            "constrained_kernel": config.constrained_kernel}


def train_crop_model(
    crops: np.ndarray,
    labels: np.ndarray,
    config: SRNetConfig,
    *,
    n_classes: int | None = None,
    seed: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    description: str = "SRNet",
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> TrainedCrop:
    """Train one SRNet on crops of one fixed position.

    Parameters
    ----------
    crops : ndarray, float32, (N, C, P, P)
        Network inputs as made by :func:`pipeline.srnet.crops.extract_crops`; C is 1 or 3.
    labels : ndarray of int, (N,)
        Class indices in ``[0, n_classes)``.
    config : SRNetConfig
        Epochs, batch size, learning rates, weight decay, oversampling, device, threads.
    n_classes : int, optional
        Number of classes (default: ``labels.max() + 1``, at least 2).
    seed : int, optional
        Seed of initialisation and sample order (default ``config.seed``).
    checkpoint_path : path, optional
        Checkpoint written atomically after an epoch once ``config.checkpoint_every_s`` seconds
        have passed since the last one, after the last epoch, and after the last completed
        epoch when training stops between epochs (an exception from ``on_epoch_end``, Ctrl-C
        outside an epoch).  With ``resume`` and an existing
        checkpoint of the same configuration and data, training continues after its last
        epoch (a finished one is just loaded); an unreadable checkpoint or one of something
        else is replaced, with a warning.
    resume : bool, default True
        Continue from ``checkpoint_path`` when possible.
    progress : bool, default True
        Show a progress bar over epochs.
    description : str
        Label of the progress bar.
    on_epoch_end : callable, optional
        Called with each new epoch's history record (after its checkpoint, if one is due).

    Returns
    -------
    TrainedCrop
        ``(model, history)``; the model is in eval mode on the configured device.
    """
    crops, labels, n_classes = _validated_training_data(crops, labels, n_classes)
    seed = config.seed if seed is None else int(seed)
    device = resolve_device(config.device)
    fingerprint = _fingerprint(crops, labels, config, seed, n_classes)
    checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)

    # fork_rng keeps the caller's global torch RNG untouched; inside it, torch's stream is
    # seeded here and restored from a checkpoint, so anything random added later stays repeatable.
    with torch_runtime(config.num_threads, device, config.deterministic), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(crops.shape[1], n_classes, config.conv_bias, seed, **architecture(config)).to(device)
        optimizer = torch.optim.Adamax(model.parameter_groups(config.weight_decay), lr=config.lr)
        history: list[dict[str, float]] = []
        start_epoch = 0
        if checkpoint_path is not None and resume and checkpoint_path.exists():
            state = _readable_checkpoint(checkpoint_path)
            if state is not None and state.get("fingerprint") == fingerprint:
                model.load_state_dict(state["model"])
                if state["optimizer"] is not None:
                    optimizer.load_state_dict(state["optimizer"])
                torch.set_rng_state(state["torch_rng_state"])
                history = list(state["history"])
                start_epoch = int(state["epoch"])
            elif state is not None:
                logger.warning(
                    "%s belongs to another configuration or training set; training from scratch and replacing it",
                    checkpoint_path,
                )

        def write_checkpoint() -> None:
            epochs_done = len(history)
            save_checkpoint(
                checkpoint_path,
                {
                    "fingerprint": fingerprint,
                    "epoch": epochs_done,
                    "model": model.state_dict(),
                    # A finished training never resumes: drop the Adamax state, two thirds of the file.
                    "optimizer": optimizer.state_dict() if epochs_done < config.epochs else None,
                    "torch_rng_state": torch.get_rng_state(),
                    "history": history,
                    "config": config.to_dict(),
                    "seed": seed,
                    "n_classes": n_classes,
                    "in_channels": int(crops.shape[1]),
                    "conv_bias": config.conv_bias,
                    "architecture": architecture(config),
                },
            )

        bar = tqdm(total=config.epochs, initial=start_epoch, desc=description, unit="epoch", disable=not progress, leave=False)
        saved_epochs, last_saved = start_epoch, time.monotonic()
        between_epochs = True  # model, optimizer and RNG are at an epoch boundary
        try:
            for epoch in range(start_epoch, config.epochs):
                between_epochs = False
                record = _train_one_epoch(model, optimizer, crops, labels, config, seed, epoch, device)
                history.append(record)
                between_epochs = True
                due = epoch + 1 == config.epochs or time.monotonic() - last_saved >= config.checkpoint_every_s
                if checkpoint_path is not None and due:
                    write_checkpoint()
                    saved_epochs, last_saved = len(history), time.monotonic()
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
                if on_epoch_end is not None:
                    on_epoch_end(record)
        except BaseException:
            # Stopped between epochs: keep the completed ones. Inside an epoch the state is
            # half-updated, and the last checkpoint stays as it is.
            if checkpoint_path is not None and between_epochs and len(history) > saved_epochs:
                write_checkpoint()
            raise
        finally:
            bar.close()
    model.eval()
    return TrainedCrop(model, history)


def load_crop_model(checkpoint_path: str | os.PathLike, device: str = "cpu") -> SRNet:
    """The SRNet (or ResNet-34) stored in a training checkpoint, in eval mode on ``device``."""
    state = load_checkpoint(checkpoint_path)
    model = build_model(state["in_channels"], state["n_classes"], state["conv_bias"], 0,
                        **state.get("architecture", {}))
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


def predict_crop_proba(model: SRNet, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Softmax outputs (N, n_classes) float64 of ``model`` in eval mode on crops (N, C, P, P)."""
    crops = _validated_crops(crops)
    device = next(model.parameters()).device
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            batch = torch.from_numpy(crops[start : start + batch_size]).to(device)
            outputs.append(torch.softmax(model(batch), dim=1).double().cpu().numpy())
    if not outputs:
        return np.zeros((0, model.n_classes))
    return np.concatenate(outputs)


def _train_one_epoch(
    model: SRNet,
    optimizer: torch.optim.Optimizer,
    crops: np.ndarray,
    labels: np.ndarray,
    config: SRNetConfig,
    seed: int,
    epoch: int,
    device: torch.device,
) -> dict[str, float]:
    started = time.perf_counter()
    lr = config.lr_at_epoch(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for batch in _batches(epoch_order(labels, seed, epoch, config.oversample), config.batch_size):
        inputs = torch.from_numpy(crops[batch]).to(device)
        targets = torch.from_numpy(labels[batch]).to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits, targets)
        loss.backward()
        optimizer.step()
        model.project_constraints()
        total_loss += float(loss.detach()) * len(batch)
        correct += int((logits.detach().argmax(dim=1) == targets).sum())
        seen += len(batch)
    return {
        "epoch": epoch + 1,
        "loss": total_loss / seen,
        "accuracy": correct / seen,
        "lr": lr,
        "images": seen,
        "seconds": time.perf_counter() - started,
    }


def _readable_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        return load_checkpoint(path)
    except ValueError as exc:
        logger.warning("%s; training from scratch and replacing it", exc)
        return None


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of ``order``; a trailing batch of one joins the previous batch.

    BatchNorm in training mode cannot normalise a single sample once the map is 1x1.
    """
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    ends = starts[1:] + [len(order)]
    return [order[start:end] for start, end in zip(starts, ends)]


def _validated_crops(crops: Any) -> np.ndarray:
    if not isinstance(crops, np.ndarray):
        raise TypeError(f"crops must be a numpy array (N, C, P, P), got {type(crops).__name__}")
    if crops.dtype != np.float32:
        raise TypeError(f"crops must be float32 (as made by extract_crops), got {crops.dtype}")
    if crops.ndim != 4 or crops.shape[1] not in (1, 3) or crops.shape[2] != crops.shape[3]:
        raise ValueError(f"crops must have shape (N, C, P, P) with C 1 or 3, got {crops.shape}")
    return np.ascontiguousarray(crops)


def _validated_training_data(crops: Any, labels: Any, n_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    crops = _validated_crops(crops)
    if len(crops) == 0:
        raise ValueError("no training crops: the training set is empty")
    if not np.isfinite(crops).all():
        raise ValueError("training crops contain NaN or infinite values; check the images they came from")
    labels = np.asarray(labels)
    if labels.shape != (len(crops),):
        raise ValueError(f"labels must have shape ({len(crops)},) to match the crops, got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}; map class names to 0..K-1 first")
    labels = labels.astype(np.int64)
    if n_classes is None:
        n_classes = max(int(labels.max()) + 1, 2)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got values from {labels.min()} to {labels.max()}")
    if len(np.unique(labels)) < 2:
        raise ValueError("the training labels hold a single class; SRNet needs examples of at least two classes")
    return crops, labels, int(n_classes)


def _fingerprint(crops: np.ndarray, labels: np.ndarray, config: SRNetConfig, seed: int, n_classes: int) -> str:
    settings = {key: value for key, value in config.to_dict().items() if key not in _NON_TRAINING_FIELDS}
    # Fields added after checkpoints were written count only when they differ from the value
    # those checkpoints were trained with, so that earlier plain-SRNet checkpoints stay valid.
    for key, default in _LATER_FIELDS.items():
        if settings.get(key) == default:
            settings.pop(key)
    settings.update(seed=seed, n_classes=n_classes, shape=list(crops.shape))
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(crops)
    digest.update(np.ascontiguousarray(labels))
    return digest.hexdigest()
