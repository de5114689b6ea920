"""The learned model the CNN checks train: one SRNet on one kind of crop, and a small model store.

Every CNN check trains the project's SRNet (:mod:`pipeline.srnet`) through
:func:`pipeline.srnet.train.train_crop_model` with a configuration derived from a preset
(``cpu`` by default: small patch, few epochs) and predicts with
:func:`pipeline.srnet.train.predict_crop_proba`. torch is imported only inside the functions
that train or predict, never when this module is imported.

:class:`ModelStore` trains a model the first time a check asks for it by name and hands the
same model to every later check (the Balanced model serves the camera, position and colour
checks), so an audit never trains one model twice. Given a folder, it keeps each model's
training checkpoint there (``models/<name>.pt`` of the audit's output), so that an audit run
again after an interruption loads the models it finished, resumes the one it was training,
and recomputes only the cheap evaluations: the figures equal those of an uninterrupted run.

The camera check's protocols choose their training images here too (:func:`disjoint_groups`,
:func:`protocol_sets`), because the Balanced model they define (:func:`balanced_model`) is the
one the camera, position and colour checks share.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.analysis.audit.common import AuditContext, model_seed
from pipeline.logs import get_logger
from pipeline.srnet.crops import median_residual_inputs
from pipeline.srnet.presets import SRNET_VARIANTS, variant_config

__all__ = ["CnnSettings", "ModelStore", "TrainedModel", "balanced_model", "cnn_builder", "colour_jitter",
           "disjoint_groups", "model_inputs", "model_runtime", "predict_proba", "protocol_sets", "random_crop_model", "seeded_rng",
           "spread_sample", "train_model"]

logger = get_logger(__name__)


@dataclass(frozen=True)
class CnnSettings:
    """Settings of the CNN checks (all recorded in ``audit.json``).

    Parameters
    ----------
    preset : str
        SRNet preset the configuration starts from (``cpu`` or ``paper``).
    patch : int
        Side of the fixed crops (the five-crop layout).
    random_patch : int
        Side of the random crops of the patch-size check (the paper's 32 x 32).
    n_random_train, n_random_test : int
        Random crops per training image, and per test image (their softmax outputs averaged).
    epochs, batch_size : int
        Training length and minibatch; the learning rate drops after 75 % of the epochs.
    test_size : float
        Fraction of every (device, class) cell held out for the balanced test set.
    main_crop : str
        Fixed crop the main models train on (in the left half, so that the position check can
        test them on the right half).
    max_train : int or None
        Cap on the training images of one model (a stratified subsample), to bound runtime.
    camera_extras : bool
        Also train the Partial protocol of the camera check (context figures only; one network
        fewer when False).
    device_id : bool
        Also train the camera check's device-identification network and test it on the mirrored
        crop in the position check (the paper's Table VI; context figures only). Off by default:
        one network more, and the default audit must fit in 6 minutes on 2 cores.
    threads : int or None
        torch CPU threads (None: every core, as the presets). On a machine shared with other
        jobs one thread can be several times faster than two (OpenMP threads wait on each
        other when a core is taken away).
    overrides : dict
        Further :class:`pipeline.srnet.presets.SRNetConfig` fields (e.g. ``{"device": "cuda"}``).
    method : {'srnet', 'srnet-res', 'srnet-cs'}
        The learned model every CNN check trains and audits: SRNet, SRNet on the 3x3 median-filter
        residual of its crops, or SRNet behind a constrained prediction-error layer
        (:data:`pipeline.srnet.presets.SRNET_VARIANTS`). The residual is taken after any change a
        check makes to the pixels (colour jitter, greyscale), as the model would see such an image.
    resnet : bool
        The camera check also trains the Balanced and Disjoint protocols with a randomly
        initialised ResNet-34 (:mod:`pipeline.srnet.resnet`; the camera-bias paper's architecture
        comparison) and reports its figures beside SRNet's. Off by default: two ResNet-34 trainings
        add about as much time as the whole default audit (check ``camera-resnet`` of the command line).
    adversarial_images : int
        Balanced test crops the adversarial check perturbs per model.
    """

    preset: str = "cpu"
    patch: int = 64
    random_patch: int = 32
    n_random_train: int = 4
    n_random_test: int = 8
    epochs: int = 8
    batch_size: int = 8
    test_size: float = 0.3
    main_crop: str = "tl"
    max_train: int | None = 1000
    camera_extras: bool = True
    device_id: bool = False
    threads: int | None = None
    overrides: dict = field(default_factory=dict)
    method: str = "srnet"
    resnet: bool = False
    adversarial_images: int = 24

    def __post_init__(self):
        if self.method not in SRNET_VARIANTS:
            raise ValueError(f"the audit's CNN checks train one of {', '.join(SRNET_VARIANTS)}, got {self.method!r} "
                             "(defect-cnn needs a run's identified defects: audit it with ml_age and cross_device)")
        for name in ("patch", "random_patch", "n_random_train", "n_random_test", "epochs", "batch_size",
                     "adversarial_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CNN setting {name} must be a positive integer, got {value!r}")
        if self.patch < 8 or self.random_patch < 8:
            raise ValueError(f"patch and random_patch must be at least 8 pixels (SRNet pools four times), got "
                             f"{self.patch} and {self.random_patch}")
        if not 0 < self.test_size < 1:
            raise ValueError(f"CNN test_size must lie in (0, 1), got {self.test_size!r}")
        if self.main_crop not in ("tl", "bl"):
            raise ValueError(f"main_crop must be a crop of the left half ('tl' or 'bl'), got {self.main_crop!r}")
        if self.max_train is not None and (int(self.max_train) != self.max_train or self.max_train < 4):
            raise ValueError(f"max_train must be None or an integer >= 4, got {self.max_train!r}")
        if self.threads is not None and (int(self.threads) != self.threads or self.threads < 1):
            raise ValueError(f"threads must be None or a positive integer, got {self.threads!r}")

    def srnet_config(self, *, patch: int | None = None, channels: str = "rgb", seed: int = 0,
                     architecture: str = "srnet"):
        """The :class:`~pipeline.srnet.presets.SRNetConfig` of one model (no torch import).

        ``architecture='resnet34'`` gives the same training settings for a ResNet-34 on pixels
        (the SRNet variant's input and stem changes do not apply to it)."""
        values = {"epochs": self.epochs, "batch_size": self.batch_size,
                  "lr_drop_epoch": max(1, round(0.75 * self.epochs)), "patch": patch or self.patch,
                  "channels": channels, "seed": int(seed) % (2 ** 31), "num_threads": self.threads}
        values.update(self.overrides)
        if architecture != "srnet":
            return variant_config("srnet", self.preset, **values, architecture=architecture)
        return variant_config(self.method, self.preset, **values)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class TrainedModel:
    """A trained crop network with what the report needs about it.

    Attributes
    ----------
    name : str
        Store key (``"balanced"``, ``"disjoint"``, ...).
    model : torch.nn.Module
        The network, eval mode.
    classes : ndarray
        Label of each output column.
    train_index : ndarray
        Bank indices of the training images.
    train_accuracy : float
        Accuracy on its own training inputs, eval mode.
    history : list of dict
        Per-epoch records of :func:`pipeline.srnet.train.train_crop_model`.
    config : dict
        The SRNet configuration.
    seconds : float
        Training wall time (summed over the epochs when the model was loaded from its checkpoint).
    epochs_trained_now : int
        Epochs trained in this process (0: loaded whole from a checkpoint of an earlier run).
    """

    name: str
    model: Any
    classes: np.ndarray
    train_index: np.ndarray
    train_accuracy: float
    history: list
    config: dict
    seconds: float
    num_threads: int | None = None
    device: str = "cpu"
    epochs_trained_now: int = 0

    def summary(self) -> dict:
        """JSON-ready description (no weights)."""
        return {"name": self.name, "classes": self.classes.tolist(), "n_train": int(self.train_index.size),
                "train_accuracy": self.train_accuracy, "seconds": round(self.seconds, 2),
                "final_epoch": self.history[-1] if self.history else None, "config": self.config}


def _encode(labels, classes=None) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    lookup = {value: i for i, value in enumerate(classes.tolist())}
    try:
        encoded = np.array([lookup[value] for value in labels.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"label {exc.args[0]!r} is not among the classes {classes.tolist()}") from None
    return classes, encoded


def train_model(name: str, inputs: np.ndarray, labels, config, *, train_index=None, classes=None,
                progress: bool = False, checkpoint_path=None) -> TrainedModel:
    """Train one SRNet on ``inputs`` (N, C, P, P) float32 and report its training accuracy.

    Parameters
    ----------
    name : str
        What the model is (progress bar and report).
    inputs : ndarray
        Network inputs, e.g. from :meth:`ImageBank.crop_input`.
    labels : array-like
        One label per input (any sortable values).
    config : SRNetConfig
        From :meth:`CnnSettings.srnet_config`.
    train_index : array-like, optional
        Bank indices of the images behind the inputs (recorded).
    classes : array-like, optional
        Label set and output order (default: the sorted distinct labels).
    progress : bool
        Show a progress bar over epochs.
    checkpoint_path : path, optional
        Training checkpoint: a finished one of the same data and configuration is loaded instead
        of training, an unfinished one is resumed (see
        :func:`pipeline.srnet.train.train_crop_model`).

    Returns
    -------
    TrainedModel
    """
    from pipeline.srnet.train import train_crop_model

    classes, encoded = _encode(labels, classes)
    if len(np.unique(encoded)) < 2:
        raise ValueError(f"model {name!r}: its training set holds a single class; it needs at least two")
    epochs_now = []
    started = time.perf_counter()
    trained = train_crop_model(_model_inputs(inputs, config.input), encoded, config,
                               n_classes=len(classes), seed=config.seed, checkpoint_path=checkpoint_path,
                               progress=progress, description=f"audit: {name}", on_epoch_end=epochs_now.append)
    seconds = time.perf_counter() - started
    if not epochs_now:  # loaded whole: report the time its training took
        seconds = float(sum(record["seconds"] for record in trained.history))
    result = TrainedModel(name, trained.model, classes,
                          np.asarray(train_index if train_index is not None else np.arange(len(encoded))),
                          float("nan"), trained.history, config.to_dict(), seconds, config.num_threads, config.device,
                          len(epochs_now))
    proba = predict_proba(result, inputs)
    result.train_accuracy = float(np.mean(proba.argmax(axis=1) == encoded))
    return result


def predict_proba(trained: TrainedModel, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax outputs (N, K) of a trained model on inputs (N, C, P, P), eval mode."""
    from pipeline.srnet.runtime import resolve_device, torch_runtime
    from pipeline.srnet.train import predict_crop_proba

    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if len(inputs) == 0:
        return np.zeros((0, len(trained.classes)))
    inputs = _model_inputs(inputs, trained.config.get("input", "pixels"))
    device = resolve_device(trained.device)
    with torch_runtime(trained.num_threads, device, True):
        return predict_crop_proba(trained.model, inputs, batch_size)


def _model_inputs(inputs: np.ndarray, input_mode: str) -> np.ndarray:
    """Pixel crops as the model sees them: unchanged, or their median residual (``srnet-res``)."""
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    return median_residual_inputs(inputs) if input_mode == "median-residual" else inputs


model_inputs = _model_inputs


def model_runtime(trained: TrainedModel):
    """Context manager: torch's threads and device as the model was trained with (imports torch)."""
    from pipeline.srnet.runtime import resolve_device, torch_runtime

    return torch_runtime(trained.num_threads, resolve_device(trained.device), True)


class ModelStore:
    """Trains each named model once and hands it to every check that asks.

    Parameters
    ----------
    progress : bool
        Show training progress bars.
    folder : path, optional
        Where each model's training checkpoint ``<name>.pt`` is kept (None: nowhere, no resume).
    """

    def __init__(self, progress: bool = False, folder=None):
        self.progress = progress
        self.folder = None if folder is None else Path(folder)
        self.models: dict[str, TrainedModel] = {}

    def get(self, name: str, build: Callable[[], tuple]) -> TrainedModel:
        """The model called ``name``, trained with ``build() -> (inputs, labels, config, train_index, classes)``."""
        if name not in self.models:
            inputs, labels, config, train_index, classes = build()
            checkpoint = None if self.folder is None else self.folder / f"{name}.pt"
            model = train_model(name, inputs, labels, config, train_index=train_index, classes=classes,
                                progress=self.progress, checkpoint_path=checkpoint)
            done, epochs = model.epochs_trained_now, len(model.history)
            how = (f"trained {name}" if done == epochs else f"loaded {name} from {checkpoint} (trained earlier)"
                   if done == 0 else f"resumed {name} from {checkpoint} ({done} of {epochs} epochs trained now)")
            logger.info(f"  {how}: {len(labels)} training inputs, training accuracy {model.train_accuracy:.3f}, "
                     f"{model.seconds:.1f} s")
            self.models[name] = model
        return self.models[name]

    def trained(self, name: str) -> TrainedModel | None:
        """The model called ``name`` if it has been trained, else None."""
        return self.models.get(name)


# ---------------------------------------------------------------- the camera protocols' training sets

def seeded_rng(seed: int, what: str) -> np.random.Generator:
    """The audit's random stream for one purpose (``what``) under the audit seed."""
    return np.random.default_rng([seed, zlib.crc32(what.encode())])


def disjoint_groups(split, bank) -> tuple[dict, bool]:
    """Assign every device of the split to one class's group for the Disjoint protocol.

    Whole camera models are dealt out, largest first, to the group with the fewest devices,
    when there are at least as many models as classes; otherwise devices are dealt out one
    by one (and the groups may share a model).

    Returns
    -------
    (dict, bool)
        ``class -> list of devices`` (empty dict when there are fewer devices than classes),
        and whether the groups differ by camera model.
    """
    classes = list(split.classes)
    devices = list(split.devices)
    if len(devices) < len(classes) or len(classes) < 2:
        return {}, False
    model_of = {}
    for s in bank.samples:
        model_of.setdefault(s.device, s.camera_model)
    by_model: dict[str, list] = {}
    for d in devices:
        by_model.setdefault(model_of[d], []).append(d)
    by_model_models = len(by_model) >= len(classes)
    units = list(by_model.values()) if by_model_models else [[d] for d in devices]
    units.sort(key=lambda u: (-len(u), devices.index(u[0])))
    groups = {c: [] for c in classes}
    for unit in units:
        target = min(classes, key=lambda c: (len(groups[c]), classes.index(c)))
        groups[target].extend(unit)
    return groups, by_model_models


def spread_sample(by_device: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices drawn as evenly as possible from several devices' index arrays."""
    queues = [list(rng.permutation(a)) for a in by_device if len(a)]
    chosen = []
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def protocol_sets(split, groups: dict, seed: int, max_train: int | None = None) -> dict:
    """Training indices of the Balanced, Partial and Disjoint protocols (and the class counts they share).

    Without groups (fewer devices than classes) only ``balanced`` is given: every training
    image, subsampled to ``max_train``.
    """
    classes = list(split.classes)
    if not groups:
        pool = split.pool_of()
        if max_train is not None and pool.size > max_train:
            per_class = {c: max_train // len(classes) for c in classes}
            rng = seeded_rng(seed, "balanced")
            pool = np.sort(np.concatenate([spread_sample([split.pool[(d, c)] for d in split.devices
                                                          if (d, c) in split.pool], per_class[c], rng)
                                           for c in classes]))
        return {"balanced": pool}
    disjoint = {c: split.pool_of(groups[c], [c]) for c in classes}
    counts = {c: disjoint[c].size for c in classes}
    if max_train is not None and sum(counts.values()) > max_train:
        scale = max_train / sum(counts.values())
        counts = {c: max(1, int(counts[c] * scale)) for c in classes}
    sets = {}
    rng = seeded_rng(seed, "disjoint")
    sets["disjoint"] = np.sort(np.concatenate([
        spread_sample([split.pool[(d, c)] for d in groups[c] if (d, c) in split.pool], counts[c], rng)
        for c in classes]))
    rng = seeded_rng(seed, "balanced")
    sets["balanced"] = np.sort(np.concatenate([
        spread_sample([split.pool[(d, c)] for d in split.devices if (d, c) in split.pool], counts[c], rng)
        for c in classes]))
    partial_devices = groups[classes[0]]
    rng = seeded_rng(seed, "partial")
    sets["partial"] = np.sort(np.concatenate([
        spread_sample([split.pool[(d, c)] for d in partial_devices if (d, c) in split.pool], counts[c], rng)
        for c in classes]))
    sets["counts"] = counts
    sets["partial_devices"] = list(partial_devices)
    return sets


def cnn_builder(ctx: AuditContext, name: str, index: np.ndarray, labels, classes, *, crop=None,
                channels: str = "rgb", architecture: str = "srnet"):
    """The ``build`` callable from which :meth:`ModelStore.get` trains model ``name`` (crops of images ``index``)."""
    def build():
        inputs = ctx.bank.crop_input(index, crop or ctx.cnn.main_crop, channels)
        config = ctx.cnn.srnet_config(channels=channels, seed=model_seed(ctx.seed, name), architecture=architecture)
        return inputs, np.asarray(labels), config, index, classes
    return build


def balanced_model(ctx: AuditContext):
    """The Balanced model (trained once per audit; the position and colour checks use it too)."""
    split = ctx.cnn_split
    groups, _ = disjoint_groups(split, ctx.bank)
    sets = protocol_sets(split, groups, ctx.seed, ctx.cnn.max_train)
    index = sets["balanced"]
    return ctx.store.get("balanced", cnn_builder(ctx, "balanced", index, ctx.bank.labels[index], split.classes))


def random_crop_model(ctx: AuditContext):
    """The random-crop model (``n_random_train`` random crops of every Balanced training image), trained once.

    The patch check tests it on random crops; the location check on a grid of positions.
    """
    cnn, bank, split = ctx.cnn, ctx.bank, ctx.cnn_split
    index = protocol_sets(split, disjoint_groups(split, bank)[0], ctx.seed, cnn.max_train)["balanced"]

    def build_random():
        crops = bank.random_input(index)[:, :cnn.n_random_train]
        inputs = crops.reshape((-1,) + crops.shape[2:])
        return (inputs, np.repeat(bank.labels[index], crops.shape[1]),
                cnn.srnet_config(patch=cnn.random_patch, seed=model_seed(ctx.seed, "random_crops")), index,
                split.classes)

    return ctx.store.get("random_crops", build_random)


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = np.linalg.inv(_YIQ)


def colour_jitter(inputs: np.ndarray, rng: np.random.Generator, *, brightness: float = 0.4, contrast: float = 0.4,
                  saturation: float = 0.7, hue: float = 0.5) -> np.ndarray:
    """Random brightness, contrast, saturation and hue per input (N, 3, P, P) float32 in [0, 1].

    Each input gets its own factors: brightness ``b``, contrast ``c`` and saturation ``s``
    uniform in ``[1 - x, 1 + x]``, and a hue rotation uniform in ``[-hue, hue]`` turns (0.5:
    the whole colour circle). Hue and saturation act on the chroma plane of YIQ, contrast on
    its luma about the crop's mean; the result is clipped to [0, 1]. The transform is linear
    per crop, so local structure (a hot pixel, a texture) survives while the crop's global
    colour statistics are randomised, as in the paper's Table IV.
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 4 or inputs.shape[1] != 3:
        raise ValueError(f"colour jitter needs RGB inputs (N, 3, P, P), got shape {inputs.shape}")
    n = inputs.shape[0]
    b = rng.uniform(1 - brightness, 1 + brightness, n)
    c = rng.uniform(1 - contrast, 1 + contrast, n)
    s = rng.uniform(max(0.0, 1 - saturation), 1 + saturation, n)
    theta = rng.uniform(-hue, hue, n) * 2 * np.pi
    out = np.empty_like(inputs)
    for i in range(n):
        rot = np.array([[1, 0, 0],
                        [0, s[i] * np.cos(theta[i]), -s[i] * np.sin(theta[i])],
                        [0, s[i] * np.sin(theta[i]), s[i] * np.cos(theta[i])]])
        yiq = np.tensordot(rot @ _YIQ, inputs[i], axes=([1], [0]))
        mean = yiq[0].mean()
        yiq[0] = mean + c[i] * (yiq[0] - mean)
        rgb = np.tensordot(_YIQ_INV, yiq, axes=([1], [0])) * b[i]
        out[i] = np.clip(rgb, 0.0, 1.0)
    return out
