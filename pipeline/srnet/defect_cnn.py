"""defect-cnn: a small CNN on patches centred on a run's defects, fused per image.

The defect-based estimators look at a handful of sensor positions, the defects identified on
a split's training images; SRNet looks at five large fixed crops. defect-cnn sits between
them: a learned model that sees only 32x32 patches centred on the same defects (the image's
3x3 median residual there, or its pixels; :mod:`pipeline.srnet.defect_patches`), so it can
learn what an aged defect looks like after demosaicking and JPEG without any chance to use
scene content elsewhere in the image, and it stays cheap because its cost grows with the
number of defects, not with the image size.

Design:

* :class:`~pipeline.srnet.defect_model.DefectPatchNet` maps one patch to class logits: three conv-BatchNorm-ReLU blocks
  (16, 32, 64 channels; the first two with stride 2), then both the global average of the last
  feature map and its response at the defect's own position, and a linear head. About 24k
  parameters.
* :class:`~pipeline.srnet.defect_model.DefectImageModel` applies it to every defect patch of an image, which keeps its
  defect slots in the order of the run's table, and fuses the patch logits: their mean, or
  (``fusion='attention'``) a weighted sum whose weights are a softmax over one learned scalar
  per defect slot, so the model can learn which defects carry age information.
* :func:`fit_predict_defect_cnn` is what a caller runs for one split: it reads every image
  once, keeps only the patches, trains with Adam and cross-entropy (minority classes
  oversampled by :func:`pipeline.srnet.train.epoch_order`, seeded, deterministic on CPU),
  recomputes the BatchNorm statistics over the training images with the final weights (so a
  short training predicts as well in eval mode as it trains), and returns the test
  probabilities with the keys of :func:`pipeline.srnet.fusion.fit_predict`.
  A checkpoint after every epoch (``defect_cnn.pt``, 100-300 kB) carries a fingerprint of the
  configuration and data: an interrupted run resumes after its last epoch, a finished one is
  just loaded and predicts the same probabilities bit for bit.
* With no defects there is nothing to look at: no training, and every test image gets the
  training class frequencies (the constant predictor, i.e. chance), with a note saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pipeline.logs import get_logger
from pipeline.srnet.checkpoint import load_checkpoint, save_checkpoint
from pipeline.srnet.defect_patches import defect_patches
from pipeline.srnet.defect_model import DefectImageModel
from pipeline.srnet.defect_presets import DefectCNNConfig
from pipeline.srnet.fusion import _encode_labels, _read_sensor_pixels
from pipeline.srnet.runtime import resolve_device, torch_runtime
from pipeline.srnet.train import epoch_order

logger = get_logger(__name__)

CHECKPOINT_NAME = "defect_cnn.pt"
ZERO_DEFECTS_NOTE = (
    "no defects were identified in the training images: defect-cnn falls back to chance (training class frequencies)"
)
# The attention logits start equal (mean fusion) and live on a log scale: at the network's lr
# they would move by at most a few tenths in a short training, so they learn 10 times faster.
_ATTENTION_LR_FACTOR = 10.0
# Fields that change neither the trained weights nor their meaning (the selected defect
# positions, which max_defects decides, are fingerprinted themselves).
_NON_TRAINING_FIELDS = ("preset", "device", "num_threads", "max_runs", "eval_batch_size", "max_defects")


def fit_predict_defect_cnn(
    train_paths: Sequence[str | os.PathLike],
    train_labels: Sequence[Any],
    test_paths: Sequence[str | os.PathLike],
    rows: Sequence[int],
    cols: Sequence[int],
    config: DefectCNNConfig,
    workdir: str | os.PathLike,
    *,
    load: Callable[[str | os.PathLike], np.ndarray] | None = None,
    classes: Sequence[Any] | None = None,
    progress: bool = True,
    llr: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Train defect-cnn on one split's training images and predict its test images.

    Parameters
    ----------
    train_paths, train_labels : sequences
        Training images and their class labels (any sortable labels).
    test_paths : sequence
        Images to predict.
    rows, cols : sequences of int
        Sensor positions of the defects identified on this split's training images (one
        defect slot per entry, in table order). Empty: the chance fallback, see Returns.
    config : DefectCNNConfig
        Settings; ``config.max_runs`` is for the caller, which decides which runs reach here.
    workdir : path
        Folder of this run's checkpoint ``defect_cnn.pt`` (resumed when present and matching).
    load : callable, optional
        ``load(path) -> pixels`` in the sensor frame (default:
        ``pipeline.data.imageio.read_image(path).pixels``).
    classes : sequence, optional
        Label set and column order (default: the sorted distinct training labels).
    progress : bool, default True
        Show progress bars.
    llr : sequence of float, optional
        The defect table's log-likelihood ratios; with more than ``config.max_defects``
        defects the strongest are kept (without ``llr``: the first ones in table order).

    Returns
    -------
    dict
        ``proba`` (n_test, n_classes) float64, rows summing to 1; ``predicted`` (n_test,)
        labels; ``classes`` (n_classes,) column labels; ``history`` one record per epoch
        (``epoch``, ``loss``, ``accuracy``, ``lr``, ``images``, ``seconds``); ``config`` the
        settings as a dict; ``note`` what a reader of the results should know; ``n_defects``
        the number of defect slots used. With no defects nothing is trained or written:
        ``proba`` is the training class frequencies for every test image, ``predicted`` the
        most frequent training class, ``history`` empty, and ``note`` says so.

    Raises
    ------
    ValueError
        Mismatched lengths, bad labels, an unreadable image or one whose shape does not hold
        the defect positions (the message names the file).
    TypeError
        Non-integer ``rows`` or ``cols``, or images of an unsupported dtype (naming the file).

    Notes
    -----
    The patches of all training images are held in memory, ``4 * n_defects * C * patch**2``
    bytes per image (320 kB for 26 RGB 32x32 patches; 3 MB at 256 defects), then those of
    the test images.
    """
    if len(train_paths) != len(train_labels):
        raise ValueError(f"{len(train_paths)} training paths but {len(train_labels)} labels; give one label per path")
    class_values, encoded = _encode_labels(train_labels, classes)
    keep, note = _selected_defects(rows, cols, llr, config.max_defects)
    if len(keep) == 0:
        return _chance_result(class_values, encoded, len(test_paths), config)
    rows = np.asarray(rows, dtype=np.int64)[keep]
    cols = np.asarray(cols, dtype=np.int64)[keep]
    load = load or _read_sensor_pixels
    train_patches = _patches_of_files(train_paths, load, rows, cols, config, progress)
    model, history = _trained_model(
        train_patches, encoded, len(class_values), rows, cols, config, Path(workdir) / CHECKPOINT_NAME, progress
    )
    if len(test_paths):
        test_patches = _patches_of_files(test_paths, load, rows, cols, config, progress)
        if test_patches.shape[2:] != train_patches.shape[2:]:
            raise ValueError(
                f"test images give patches of shape {test_patches.shape[2:]} but training images "
                f"{train_patches.shape[2:]}; give images of one kind (all RGB or all 2-D)"
            )
        proba = _predict_proba(model, test_patches, config)
    else:
        proba = np.zeros((0, len(class_values)))
    return {
        "proba": proba,
        "predicted": class_values[proba.argmax(axis=1)] if len(proba) else class_values[:0],
        "classes": class_values,
        "history": history,
        "config": config.to_dict(),
        "note": note,
        "n_defects": len(rows),
    }


def predict_defect_cnn(
    workdir: str | os.PathLike,
    test_paths: Sequence[str | os.PathLike],
    rows: Sequence[int],
    cols: Sequence[int],
    config: DefectCNNConfig,
    *,
    train_labels: Sequence[Any],
    classes: Sequence[Any] | None = None,
    load: Callable[[str | os.PathLike], np.ndarray] | None = None,
    llr: Sequence[float] | None = None,
) -> np.ndarray:
    """Class probabilities (n_test, n_classes) of a finished defect-cnn training on other images.

    For the cross-device evaluation: the model of one device's run, with its patches at *that* run's
    defects, applied to any images of the same frame.

    Parameters
    ----------
    workdir : path
        The run's folder holding ``defect_cnn.pt`` (written by :func:`fit_predict_defect_cnn`).
    test_paths : sequence
        Images to predict.
    rows, cols, llr, config :
        As given to :func:`fit_predict_defect_cnn` for that run.
    train_labels : sequence
        That run's training labels: with no defects the prediction is their class frequencies,
        as in training.
    classes : sequence, optional
        Label set and column order (default: the sorted distinct training labels).
    load : callable, optional
        ``load(path) -> pixels`` (default: :func:`pipeline.data.imageio.read_image` pixels).

    Raises
    ------
    FileNotFoundError
        The run has defects but no finished checkpoint.
    ValueError
        The checkpoint belongs to other defects, or is unfinished.
    """
    class_values, encoded = _encode_labels(train_labels, classes)
    keep, _ = _selected_defects(rows, cols, llr, config.max_defects)
    if len(keep) == 0:
        return _chance_result(class_values, encoded, len(test_paths), config)["proba"]
    rows = np.asarray(rows, dtype=np.int64)[keep]
    cols = np.asarray(cols, dtype=np.int64)[keep]
    path = Path(workdir) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the defect-cnn model of this run was not trained or was deleted; "
                                "rerun the experiment for this run")
    model, trained_rows, trained_cols = load_defect_cnn(path, config)
    if trained_rows.tolist() != rows.tolist() or trained_cols.tolist() != cols.tolist():
        raise ValueError(f"{path} was trained at other defect positions than the run's defect table gives; "
                         "rerun the experiment into a new folder")
    if not len(test_paths):
        return np.zeros((0, len(class_values)))
    return _predict_proba(model, defect_cnn_patches(test_paths, rows, cols, config, load=load), config)


def load_defect_cnn(path: str | os.PathLike, config: DefectCNNConfig) -> tuple[DefectImageModel, np.ndarray, np.ndarray]:
    """The finished model of a ``defect_cnn.pt`` checkpoint, in eval mode on ``config.device``.

    Returns
    -------
    model : DefectImageModel
    rows, cols : ndarray of int64
        The sensor positions of its defect slots, in slot order.

    Raises
    ------
    FileNotFoundError
        No checkpoint at ``path``.
    ValueError
        The checkpoint is unreadable, or holds an unfinished training.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the defect-cnn model of this run was not trained or was deleted")
    state = load_checkpoint(path)
    if len(state.get("history", [])) < int(state["config"]["epochs"]):
        raise ValueError(f"{path} holds an unfinished training; rerun the experiment to finish it")
    rows, cols = np.asarray(state["rows"], dtype=np.int64), np.asarray(state["cols"], dtype=np.int64)
    model = DefectImageModel(int(state["in_channels"]), int(state["n_classes"]), len(rows), config.patch,
                             config.fusion)
    model.load_state_dict(state["model"])
    return model.to(resolve_device(config.device)).eval(), rows, cols


def defect_cnn_patches(paths: Sequence[str | os.PathLike], rows: Sequence[int], cols: Sequence[int],
                       config: DefectCNNConfig, *, load: Callable[[str | os.PathLike], np.ndarray] | None = None,
                       progress: bool = False) -> np.ndarray:
    """The model inputs of images: float32 (n_images, n_defects, C, patch, patch), one patch per defect.

    ``load(path) -> pixels`` reads an image (default: :func:`pipeline.data.imageio.read_image` pixels).
    An unreadable image raises ``ValueError`` naming it.
    """
    return _patches_of_files(paths, load or _read_sensor_pixels, np.asarray(rows, dtype=np.int64),
                             np.asarray(cols, dtype=np.int64), config, progress)


def _selected_defects(rows: Any, cols: Any, llr: Any, max_defects: int) -> tuple[np.ndarray, str]:
    """Indices of the defects used (table order) and the note describing the choice."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    for name, values in (("rows", rows), ("cols", cols)):
        if values.ndim != 1:
            raise ValueError(f"{name} must be a 1-D sequence of pixel indices, got shape {values.shape}")
        if values.size and values.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer pixel indices, got dtype {values.dtype}")
    if len(rows) != len(cols):
        raise ValueError(f"rows and cols must have the same length, got {len(rows)} and {len(cols)}")
    n = len(rows)
    if llr is not None:
        llr = np.asarray(llr, dtype=np.float64)
        if llr.shape != (n,) or np.isnan(llr).any():
            raise ValueError(f"llr must hold one number (not NaN) per defect, {n} in all, got shape {llr.shape}")
    if n <= max_defects:
        return np.arange(n), f"{n} defects" if n else ZERO_DEFECTS_NOTE
    if llr is None:
        note = f"the first {max_defects} of {n} defects in table order (max_defects; no llr given)"
        return np.arange(max_defects), note
    strongest = np.argsort(-llr, kind="stable")[:max_defects]
    return np.sort(strongest), f"the {max_defects} strongest of {n} defects by llr (max_defects)"


def _chance_result(classes: np.ndarray, encoded: np.ndarray, n_test: int, config: DefectCNNConfig) -> dict[str, Any]:
    logger.warning(ZERO_DEFECTS_NOTE)
    frequencies = np.bincount(encoded, minlength=len(classes)) / len(encoded)
    return {
        "proba": np.tile(frequencies, (n_test, 1)),
        "predicted": np.full(n_test, classes[frequencies.argmax()], dtype=classes.dtype),
        "classes": classes,
        "history": [],
        "config": config.to_dict(),
        "note": ZERO_DEFECTS_NOTE,
        "n_defects": 0,
    }


def _patches_of_files(
    paths: Sequence[str | os.PathLike],
    load: Callable[[str | os.PathLike], np.ndarray],
    rows: np.ndarray,
    cols: np.ndarray,
    config: DefectCNNConfig,
    progress: bool,
) -> np.ndarray:
    """Patches of every image, float32 (n_images, n_defects, C, P, P)."""
    collected = []
    for path in tqdm(paths, desc="defect-cnn patches", unit="image", disable=not progress, leave=False):
        try:
            pixels = load(path)
        except Exception as exc:
            raise ValueError(f"{path}: could not read the image for defect-cnn ({exc}); fix or exclude it") from exc
        try:
            patches = defect_patches(pixels, rows, cols, config.patch, config.source, config.channels)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{path}: {exc}") from exc
        if collected and patches.shape != collected[0].shape:
            raise ValueError(
                f"{path}: gives patches of shape {patches.shape[1:]} but {paths[0]} gave {collected[0].shape[1:]}; "
                "give images of one kind (all RGB or all 2-D)"
            )
        collected.append(patches)
    return np.stack(collected)


def _build_model(in_channels: int, n_classes: int, n_defects: int, config: DefectCNNConfig) -> DefectImageModel:
    """The model initialised from ``config.seed`` without touching torch's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return DefectImageModel(in_channels, n_classes, n_defects, config.patch, config.fusion)


def _parameter_groups(model: DefectImageModel, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.patch_net.parameters() if p.ndim > 1]  # conv and linear weights
    other = [p for p in model.patch_net.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_factor": 1.0},
        {"params": other, "weight_decay": 0.0, "lr_factor": 1.0},
    ]
    if model.attention is not None:
        groups.append({"params": [model.attention], "weight_decay": 0.0, "lr_factor": _ATTENTION_LR_FACTOR})
    return groups


def _trained_model(
    patches: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    rows: np.ndarray,
    cols: np.ndarray,
    config: DefectCNNConfig,
    checkpoint_path: Path,
    progress: bool,
) -> tuple[DefectImageModel, list[dict[str, float]]]:
    """Train (or resume, or load) the image model; returns it in eval mode and its history."""
    if not np.isfinite(patches).all():
        raise ValueError("training patches contain NaN or infinite values; check the images they came from")
    device = resolve_device(config.device)
    fingerprint = _fingerprint(patches, labels, n_classes, rows, cols, config)
    with torch_runtime(config.num_threads, device, config.deterministic), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _build_model(patches.shape[2], n_classes, patches.shape[1], config).to(device)
        optimizer = torch.optim.Adam(_parameter_groups(model, config.weight_decay), lr=config.lr)
        history: list[dict[str, float]] = []
        if checkpoint_path.exists():
            state = _readable_checkpoint(checkpoint_path)
            if state is not None and state.get("fingerprint") == fingerprint:
                model.load_state_dict(state["model"])
                if state["optimizer"] is not None:
                    optimizer.load_state_dict(state["optimizer"])
                torch.set_rng_state(state["torch_rng_state"])
                history = list(state["history"])
                logger.info("%s: %s after epoch %d of %d", checkpoint_path,
                            "loaded the finished training" if len(history) >= config.epochs else "resuming",
                            len(history), config.epochs)
            elif state is not None:
                logger.warning(
                    "%s belongs to another configuration or training set; training from scratch and replacing it",
                    checkpoint_path,
                )
        bar = tqdm(total=config.epochs, initial=len(history), desc="defect-cnn", unit="epoch", disable=not progress,
                   leave=False)
        try:
            for epoch in range(len(history), config.epochs):
                record = _train_one_epoch(model, optimizer, patches, labels, config, epoch, device)
                history.append(record)
                finished = len(history) == config.epochs
                if finished:
                    _recompute_batchnorm_statistics(model, patches, config.batch_size, device)
                save_checkpoint(
                    checkpoint_path,
                    {
                        "fingerprint": fingerprint,
                        "epoch": len(history),
                        "model": model.state_dict(),
                        # A finished training never resumes: it needs no optimizer state.
                        "optimizer": None if finished else optimizer.state_dict(),
                        "torch_rng_state": torch.get_rng_state(),
                        "history": history,
                        "config": config.to_dict(),
                        "n_classes": n_classes,
                        "in_channels": int(patches.shape[2]),
                        "rows": rows.tolist(),
                        "cols": cols.tolist(),
                    },
                )
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}")
        finally:
            bar.close()
    model.eval()
    return model, history


def _train_one_epoch(
    model: DefectImageModel,
    optimizer: torch.optim.Optimizer,
    patches: np.ndarray,
    labels: np.ndarray,
    config: DefectCNNConfig,
    epoch: int,
    device: torch.device,
) -> dict[str, float]:
    """One (0-based) epoch over the oversampled training images; returns its history record."""
    started = time.perf_counter()
    lr = config.lr_at_epoch(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_factor"]
    model.train()
    order = epoch_order(labels, config.seed, epoch, oversample=True)
    total_loss, correct = 0.0, 0
    for start in range(0, len(order), config.batch_size):
        batch = order[start : start + config.batch_size]
        inputs = torch.from_numpy(patches[batch]).to(device)
        targets = torch.from_numpy(labels[batch]).to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits, targets)
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * len(batch)
        correct += int((logits.detach().argmax(dim=1) == targets).sum())
    return {
        "epoch": epoch + 1,
        "loss": total_loss / len(order),
        "accuracy": correct / len(order),
        "lr": lr,
        "images": len(order),
        "seconds": time.perf_counter() - started,
    }


def _recompute_batchnorm_statistics(
    model: DefectImageModel, patches: np.ndarray, batch_size: int, device: torch.device
) -> None:
    """Set BatchNorm's running statistics to the plain average over the training images.

    The running averages start at mean 0, variance 1 and keep ``0.9 ** steps`` of that start;
    residual patches have variances near 1e-4, so after a short training (a few dozen steps)
    the start still dominates and eval-mode outputs are wrong. One pass with the final weights
    and ``momentum=None`` (a cumulative average) gives the statistics the weights belong to.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(patches), batch_size):
                model(torch.from_numpy(patches[start : start + batch_size]).to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum


def _predict_proba(model: DefectImageModel, patches: np.ndarray, config: DefectCNNConfig) -> np.ndarray:
    """Softmax outputs (N, n_classes) float64 of the model in eval mode."""
    device = next(model.parameters()).device
    outputs = []
    with torch_runtime(config.num_threads, device, config.deterministic), torch.inference_mode():
        for start in range(0, len(patches), config.eval_batch_size):
            batch = torch.from_numpy(patches[start : start + config.eval_batch_size]).to(device)
            outputs.append(torch.softmax(model(batch).double(), dim=1).cpu().numpy())
    return np.concatenate(outputs)


def _readable_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        return load_checkpoint(path)
    except ValueError as exc:
        logger.warning("%s; training from scratch and replacing it", exc)
        return None


def _fingerprint(
    patches: np.ndarray, labels: np.ndarray, n_classes: int, rows: np.ndarray, cols: np.ndarray, config: DefectCNNConfig
) -> str:
    settings = {key: value for key, value in config.to_dict().items() if key not in _NON_TRAINING_FIELDS}
    settings.update(n_classes=n_classes, shape=list(patches.shape), rows=rows.tolist(), cols=cols.tolist())
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(patches))
    digest.update(np.ascontiguousarray(labels, dtype=np.int64))
    return digest.hexdigest()
