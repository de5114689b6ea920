"""Five-crop fusion: one SRNet per fixed crop position, outputs fused into one prediction.

Each network sees only its own sensor region (top-left, top-right, bottom-left,
bottom-right, centre) of every image, in training and in prediction.  The fused class
probabilities are the mean of the five softmax outputs (default), or, with
``fusion='vote'``, the fraction of networks voting for each class.

:func:`fit_predict` is what the experiment pipeline calls for one split: it reads every
image once, keeps only its crops in memory, trains the crop networks (with a checkpoint per
crop in ``workdir``, so an interrupted run resumes) and returns the test probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline.data.imageio import read_image
from pipeline.srnet.crops import CROP_NAMES, extract_crops
from pipeline.srnet.presets import FUSION_METHODS, SRNetConfig
from pipeline.srnet.runtime import resolve_device, torch_runtime
from pipeline.srnet.train import crop_seed, predict_crop_proba, train_crop_model


def fuse_probabilities(crop_proba: Mapping[str, np.ndarray] | np.ndarray, method: str = "mean") -> np.ndarray:
    """Fuse per-crop class probabilities into one (N, K) array.

    Parameters
    ----------
    crop_proba : mapping name -> (N, K) array, or array (n_crops, N, K)
        Softmax outputs of each crop network.
    method : {'mean', 'vote'}
        ``'mean'``: the mean of the crops' probabilities.  ``'vote'``: for each class, the
        fraction of crops whose most probable class it is.

    Returns
    -------
    ndarray, float64, (N, K)
        Rows sum to 1.
    """
    stacked = _stack_crop_proba(crop_proba)
    if method == "mean":
        return stacked.mean(axis=0)
    if method == "vote":
        n_classes = stacked.shape[2]
        votes = np.eye(n_classes)[stacked.argmax(axis=2)]  # (n_crops, N, K) one-hot
        return votes.mean(axis=0)
    raise ValueError(f"unknown fusion method {method!r}; use one of {', '.join(FUSION_METHODS)}")


def fused_labels(crop_proba: Mapping[str, np.ndarray] | np.ndarray, method: str = "mean") -> np.ndarray:
    """Fused class index per sample (N,).

    ``'mean'`` takes the most probable class of the mean.  ``'vote'`` takes the class with the
    most votes; a tie between classes is broken by the mean probability, then by the lower
    class index.
    """
    fused = fuse_probabilities(crop_proba, method)
    if method == "vote":
        mean = fuse_probabilities(crop_proba, "mean")
        # Votes are multiples of 1/n_crops, so adding less than 1/n_crops only reorders ties.
        n_crops = _stack_crop_proba(crop_proba).shape[0]
        fused = fused + mean / (2.0 * n_crops)
    return fused.argmax(axis=1)


def stack_crops(
    images: Iterable[np.ndarray],
    config: SRNetConfig,
    *,
    describe: Callable[[int], str] | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Crops of every image, ``name -> float32 (N, C, patch, patch)``, for ``config.crops``.

    ``describe(i)`` names image ``i`` in error messages (default ``'image i'``).
    """
    describe = describe or (lambda index: f"image {index}")
    collected: dict[str, list[np.ndarray]] = {name: [] for name in config.crops}
    for index, pixels in enumerate(tqdm(images, desc="SRNet crops", unit="image", disable=not progress, leave=False)):
        try:
            crops = extract_crops(pixels, config.patch, config.channels, config.crops, input=config.input)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{describe(index)}: {exc}") from exc
        for name, crop in crops.items():
            collected[name].append(crop)
    if not collected[config.crops[0]]:
        raise ValueError("no images were given")
    return {name: np.stack(arrays) for name, arrays in collected.items()}


class FiveCropSRNet:
    """One SRNet per fixed crop, fused by the mean of softmax outputs or a majority vote.

    Parameters
    ----------
    config : SRNetConfig, optional
        Training, crop and fusion settings (default: the ``paper`` preset).
    workdir : path, optional
        Folder for per-crop checkpoints ``srnet_<crop>.pt``; training resumes from them.
    progress : bool, default True
        Show progress bars.

    Attributes
    ----------
    classes_ : ndarray
        Class labels in the order of the probability columns.
    models_ : dict
        Crop name -> trained :class:`~pipeline.srnet.model.SRNet` (eval mode).
    history_ : dict
        Crop name -> per-epoch training records.
    """

    def __init__(self, config: SRNetConfig | None = None, *, workdir: str | os.PathLike | None = None, progress: bool = True):
        self.config = config if config is not None else SRNetConfig()
        self.workdir = None if workdir is None else Path(workdir)
        self.progress = progress

    def checkpoint_path(self, crop: str) -> Path | None:
        """Checkpoint file of one crop's network, or None without a workdir."""
        return None if self.workdir is None else self.workdir / f"srnet_{crop}.pt"

    def fit(self, images: Iterable[np.ndarray], labels: Sequence[Any], *, classes: Sequence[Any] | None = None) -> FiveCropSRNet:
        """Train the crop networks on images (sensor-frame pixel arrays) and their labels."""
        return self.fit_crops(stack_crops(images, self.config, progress=self.progress), labels, classes=classes)

    def fit_crops(
        self, crops: Mapping[str, np.ndarray], labels: Sequence[Any], *, classes: Sequence[Any] | None = None
    ) -> FiveCropSRNet:
        """Train on precomputed crops, ``name -> float32 (N, C, P, P)`` as from :func:`stack_crops`.

        ``classes`` fixes the label set and column order (default: the sorted distinct labels).
        """
        self.classes_, encoded = _encode_labels(labels, classes)
        missing = [name for name in self.config.crops if name not in crops]
        if missing:
            raise ValueError(f"crops for {', '.join(missing)} are missing; give one array per crop in config.crops")
        self.models_, self.history_ = {}, {}
        for name in self.config.crops:
            trained = train_crop_model(
                crops[name],
                encoded,
                self.config,
                n_classes=len(self.classes_),
                seed=crop_seed(self.config.seed, CROP_NAMES.index(name)),
                checkpoint_path=self.checkpoint_path(name),
                progress=self.progress,
                description=f"SRNet {name}",
            )
            self.models_[name], self.history_[name] = trained
        return self

    def crop_proba_from_crops(self, crops: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-crop softmax outputs, ``name -> (N, n_classes)``."""
        self._check_fitted()
        device = resolve_device(self.config.device)
        with torch_runtime(self.config.num_threads, device, self.config.deterministic):
            return {
                name: predict_crop_proba(model, crops[name], self.config.eval_batch_size)
                for name, model in self.models_.items()
            }

    def crop_proba(self, images: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        """Per-crop softmax outputs for images, ``name -> (N, n_classes)``."""
        return self.crop_proba_from_crops(stack_crops(images, self.config, progress=self.progress))

    def predict_proba(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """Fused class probabilities (N, n_classes), columns ordered as ``classes_``."""
        return fuse_probabilities(self.crop_proba(images), self.config.fusion)

    def predict(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """Fused class label per image (values from ``classes_``)."""
        return self.classes_[fused_labels(self.crop_proba(images), self.config.fusion)]

    def _check_fitted(self) -> None:
        if not hasattr(self, "models_"):
            raise RuntimeError("this FiveCropSRNet is not fitted yet; call fit() or fit_crops() first")


def fit_predict(
    train_paths: Sequence[str | os.PathLike],
    train_labels: Sequence[Any],
    test_paths: Sequence[str | os.PathLike],
    config: SRNetConfig,
    workdir: str | os.PathLike,
    *,
    load: Callable[[str | os.PathLike], np.ndarray] | None = None,
    classes: Sequence[Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train five-crop SRNet on one split's training images and predict its test images.

    Parameters
    ----------
    train_paths, train_labels : sequences
        Training images and their class labels (any sortable labels).
    test_paths : sequence
        Images to predict.
    config : SRNetConfig
        Settings; ``config.max_runs`` is for the caller, which decides which runs reach here.
    workdir : path
        Folder for this run's per-crop checkpoints (resumed when present and matching).
    load : callable, optional
        ``load(path) -> pixels`` in the sensor frame (default:
        ``pipeline.data.imageio.read_image(path).pixels``).
    classes : sequence, optional
        Label set and column order (default: the sorted distinct training labels).
    progress : bool, default True
        Show progress bars.

    Returns
    -------
    dict
        ``proba`` (n_test, n_classes) fused probabilities; ``predicted`` (n_test,) fused labels;
        ``crop_proba`` crop name -> (n_test, n_classes); ``classes`` (n_classes,) column
        labels; ``history`` crop name -> per-epoch records; ``config`` the settings as a dict.
    """
    if len(train_paths) != len(train_labels):
        raise ValueError(f"{len(train_paths)} training paths but {len(train_labels)} labels; give one label per path")
    load = load or _read_sensor_pixels
    model = FiveCropSRNet(config, workdir=workdir, progress=progress)
    train_crops = _crops_of_files(train_paths, load, config, progress)
    model.fit_crops(train_crops, train_labels, classes=classes)
    if len(test_paths) == 0:
        crop_proba = {name: np.zeros((0, len(model.classes_))) for name in config.crops}
    else:
        crop_proba = model.crop_proba_from_crops(_crops_of_files(test_paths, load, config, progress))
    return {
        "proba": fuse_probabilities(crop_proba, config.fusion),
        "predicted": model.classes_[fused_labels(crop_proba, config.fusion)],
        "crop_proba": crop_proba,
        "classes": model.classes_,
        "history": model.history_,
        "config": config.to_dict(),
    }


def _crops_of_files(
    paths: Sequence[str | os.PathLike], load: Callable[[str | os.PathLike], np.ndarray], config: SRNetConfig, progress: bool
) -> dict[str, np.ndarray]:
    def images() -> Iterable[np.ndarray]:
        for path in paths:
            try:
                yield load(path)
            except Exception as exc:
                raise ValueError(f"{path}: could not read the image for SRNet ({exc}); fix or exclude it") from exc

    return stack_crops(images(), config, describe=lambda index: str(paths[index]), progress=progress)


def _read_sensor_pixels(path: str | os.PathLike) -> np.ndarray:
    return read_image(path).pixels


def _encode_labels(labels: Sequence[Any], classes: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    if len(classes) < 2 or len(np.unique(classes)) != len(classes):
        raise ValueError(f"classes must hold at least two distinct labels, got {list(classes)}")
    index = {value: position for position, value in enumerate(classes.tolist())}
    unknown = sorted({value for value in labels.tolist() if value not in index}, key=str)
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
    return classes, np.array([index[value] for value in labels.tolist()], dtype=np.int64)


def _stack_crop_proba(crop_proba: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
    if isinstance(crop_proba, Mapping):
        if not crop_proba:
            raise ValueError("no crop probabilities to fuse")
        stacked = np.stack([np.asarray(value, dtype=np.float64) for value in crop_proba.values()])
    else:
        stacked = np.asarray(crop_proba, dtype=np.float64)
    if stacked.ndim != 3 or stacked.shape[0] == 0 or stacked.shape[2] < 2:
        raise ValueError(
            f"crop probabilities must be (n_crops, N, K) with n_crops >= 1 and K >= 2, got shape {stacked.shape}"
        )
    return stacked
