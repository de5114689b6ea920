"""Do the saliency maps point at what the network uses?  Deletion, insertion and randomisation.

Two checks of a saliency method (:mod:`pipeline.srnet.cam`) against the model it explains, and the
rule that combines them:

* **Deletion and insertion** (Petsiuk, Das & Saenko, RISE, BMVC 2018),
  :func:`deletion_insertion`.  The pixels of each input are ranked by its map, upsampled to the
  input size (:func:`pipeline.srnet.cam.upsample_maps`, bilinear), most salient first.  Deletion
  starts from the input and replaces the top ``k`` pixels (all channels of a pixel together) by a
  baseline image; insertion starts from the baseline and puts the top ``k`` pixels back.  At
  ``steps + 1`` evenly spaced fractions of the pixels the softmax probability of the explained
  class is recorded; the area under each curve (trapezoid over the fraction axis, [0, 1]) is the
  figure: a faithful map makes the probability fall fast under deletion (low AUC) and rise fast
  under insertion (high AUC).  Curves depend on the model and the baseline as much as on the map,
  so the map's order is judged against a random order of the same pixels on the same image
  (seeded): ``deletion_gain = AUC_del(random) - AUC_del(map)`` and ``insertion_gain =
  AUC_ins(map) - AUC_ins(random)``, both positive for a map better than chance.  Ties in a map are
  broken by that same random order, so a constant map gains exactly 0 (with one random order).
* **Model-parameter randomisation** (Adebayo et al., "Sanity checks for saliency maps", NeurIPS
  2018), :func:`randomisation_check`.  The model is copied, its weights re-initialised (the whole
  model; optionally also cumulatively from the top, stage by stage: the cascade), and the same
  method explains the same inputs for the same classes.  A method whose maps hardly change
  explains the input, not the model (an edge detector passes for a saliency map this way).  The
  figure is the per-image Spearman rank correlation of the trained and the randomised raw maps
  (:func:`scipy.stats.spearmanr`); the check passes when the median ``|rho|`` is below
  :data:`RANDOMISATION_RHO` (0.5, half-way between no relation and the same ranking: this
  project's line, the paper sets none).
* :func:`faithfulness_verdict`: a method **fails** when its maps do not change under
  randomisation, or when neither its deletion gain nor its insertion gain is positive by a
  one-sided Wilcoxon signed-rank test over the images (:func:`scipy.stats.wilcoxon`, exact for up
  to 50 images without ties; each at level ``SIGNIFICANCE / 2``: a map passes when either gain is
  positive, so that a map no better than chance passes with probability at most
  :data:`SIGNIFICANCE`).  The test is valid here because a map no better than chance is one more
  random order, and the gain of one random order over another is symmetric about 0.  Only
  *informative* images count in that test: those whose baseline image lowers the probability of
  the explained class by at least :data:`MIN_SPAN` (when the baseline leaves the prediction as it
  is -- a network reading colour or illumination keeps its answer on a blurred crop -- every
  pixel order gives the same flat curve and says nothing about the map).  With fewer than 6 informative images no test can reach 2.5 % and the
  deletion/insertion part is *inconclusive* rather than failed.  The exact distribution-free lower
  confidence bound of each median gain (an order statistic, as for the sign test) is reported
  besides.

Everything runs in eval mode (BatchNorm on its running statistics) on the model's device, under
:func:`torch.inference_mode` except where a method needs gradients; the model's training flag is
restored afterwards and the caller's random state is left untouched (re-initialisation runs in
:func:`torch.random.fork_rng`).

Why one module: the verdict is defined on both checks' results, and the checks share the input
and target validation, the eval-mode and device handling and the baseline images; split in two,
each half would import the other's private helpers.  Most of its length is the result classes'
documentation.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.stats import binomtest, spearmanr, wilcoxon
from torch import nn

from pipeline.srnet.cam import METHODS, SaliencyMethod, saliency_method, upsample_maps

__all__ = [
    "BASELINES",
    "BLUR_SIGMA",
    "MIN_SPAN",
    "RANDOMISATION_RHO",
    "SIGNIFICANCE",
    "SRNET_CASCADE",
    "DeletionInsertion",
    "FaithfulnessVerdict",
    "GainTest",
    "RandomisationCheck",
    "baseline_span",
    "deletion_insertion",
    "faithfulness_verdict",
    "randomisation_check",
    "randomised_copy",
]

BASELINES = ("blur", "zero", "mean")
"""What replaces a deleted pixel (and what insertion starts from): a Gaussian blur of the input
(RISE's insertion baseline; it removes fine structure such as hot pixels but keeps the image's
brightness and colour), zeros, or the image's per-channel mean."""
BLUR_SIGMA = 5.0
"""Standard deviation in pixels of the ``'blur'`` baseline (RISE's evaluation code blurs with sigma 5,
there truncated to an 11x11 kernel; here the filter is not truncated that short)."""
RANDOMISATION_RHO = 0.5
"""The randomisation check passes when the median ``|Spearman rho|`` between trained and
randomised maps is below this."""
SIGNIFICANCE = 0.05
"""Chance that a map no better than a random pixel order passes the deletion/insertion check: each
of its two one-sided Wilcoxon signed-rank tests (deletion, insertion) runs at half this level."""
MIN_SPAN = 0.1
"""An image tests a map's pixel order only when its baseline image lowers the probability of the
explained class by at least this much (``p(input) - p(baseline)``); the curves of the others are
flat whatever the order."""
SRNET_CASCADE = ("head",) + tuple(f"layer{i}" for i in range(12, 0, -1))
"""SRNet's stages from the top, for a cascading randomisation (:func:`randomisation_check`)."""

MapsFunction = Callable[[nn.Module, torch.Tensor, np.ndarray], np.ndarray]
"""A saliency method as a function ``(model, inputs, targets) -> maps (N, h, w)``."""


# ---------------------------------------------------------------------- results

@dataclass(frozen=True)
class DeletionInsertion:
    """Deletion and insertion curves of one set of maps, with the random-order reference.

    Attributes
    ----------
    fractions : ndarray, float64, (steps + 1,)
        Fraction of the pixels removed (deletion) or put back (insertion) at each step, from 0 to
        1 (exactly ``k / (H * W)`` for the ``k`` pixels changed).
    deletion, insertion : ndarray, float64, (N, steps + 1)
        Probability of the explained class along the map's order.  ``deletion[:, 0]`` and
        ``insertion[:, -1]`` are the unmodified inputs', ``deletion[:, -1]`` and
        ``insertion[:, 0]`` the baseline images'.
    deletion_random, insertion_random : ndarray, float64, (N, steps + 1)
        The same along random orders of the pixels (mean over ``random_orders`` orders).
    targets : ndarray, int64, (N,)
        The class explained for each image.
    baseline : str
        One of :data:`BASELINES`.
    blur_sigma : float
        Sigma of the ``'blur'`` baseline (pixels).
    seed : int
        Seed of the random orders (and of the tie-breaking).
    random_orders : int
        Random orders averaged per image.
    inputs_digest : str
        SHA-1 of the inputs, to check that a ``reference`` was made on the same inputs.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_random: np.ndarray
    insertion_random: np.ndarray
    targets: np.ndarray
    baseline: str
    blur_sigma: float
    seed: int
    random_orders: int
    inputs_digest: str = field(repr=False)

    @property
    def steps(self) -> int:
        """Number of steps (one less than the points of a curve)."""
        return len(self.fractions) - 1

    def _auc(self, curves: np.ndarray) -> np.ndarray:
        return np.trapezoid(curves, self.fractions, axis=1)

    @property
    def deletion_auc(self) -> np.ndarray:
        """Area under each image's deletion curve (N,); lower is more faithful."""
        return self._auc(self.deletion)

    @property
    def insertion_auc(self) -> np.ndarray:
        """Area under each image's insertion curve (N,); higher is more faithful."""
        return self._auc(self.insertion)

    @property
    def deletion_auc_random(self) -> np.ndarray:
        """Area under each image's random-order deletion curve (N,)."""
        return self._auc(self.deletion_random)

    @property
    def insertion_auc_random(self) -> np.ndarray:
        """Area under each image's random-order insertion curve (N,)."""
        return self._auc(self.insertion_random)

    @property
    def span(self) -> np.ndarray:
        """``p(input) - p(baseline)`` per image (N,): how much the baseline lowers the class's probability."""
        return self.deletion[:, 0] - self.deletion[:, -1]

    @property
    def deletion_gain(self) -> np.ndarray:
        """``AUC_del(random) - AUC_del(map)`` per image: positive when the map beats chance."""
        return self.deletion_auc_random - self.deletion_auc

    @property
    def insertion_gain(self) -> np.ndarray:
        """``AUC_ins(map) - AUC_ins(random)`` per image: positive when the map beats chance."""
        return self.insertion_auc - self.insertion_auc_random


@dataclass(frozen=True)
class RandomisationCheck:
    """The model-parameter randomisation test of one saliency method.

    Attributes
    ----------
    method : str
        The method's name.
    rho : ndarray, float64, (N,)
        Spearman rank correlation, per image, of the raw maps of the trained model and of the
        fully randomised one.  When a map is constant the correlation is taken as 1 if both are
        constant (neither says anything: nothing changed) and 0 otherwise.
    threshold : float
        The check passes when ``median(|rho|)`` is below this.
    cascade : dict of str to ndarray
        Cascading randomisation, in order: after re-initialising the named stage and every stage
        before it in the cascade, the per-image rho (empty when no cascade was asked for).
    trained_maps, randomised_maps : ndarray, float32, (N, h, w)
        The raw maps compared.
    targets : ndarray, int64, (N,)
        The class explained (the same for both models).
    seed : int
        Seed of the re-initialisation.
    """

    method: str
    rho: np.ndarray
    threshold: float
    cascade: dict[str, np.ndarray]
    trained_maps: np.ndarray = field(repr=False)
    randomised_maps: np.ndarray = field(repr=False)
    targets: np.ndarray = field(repr=False)
    seed: int = 0

    @property
    def median_abs_rho(self) -> float:
        """Median over images of ``|rho|`` (NaN without images)."""
        return float(np.median(np.abs(self.rho))) if self.rho.size else float("nan")

    @property
    def passes(self) -> bool:
        """Whether the maps changed enough: ``median_abs_rho < threshold``."""
        return bool(self.median_abs_rho < self.threshold)

    def cascade_medians(self) -> dict[str, float]:
        """Median ``|rho|`` after each cascade step, in order."""
        return {stage: float(np.median(np.abs(values))) for stage, values in self.cascade.items()}


@dataclass(frozen=True)
class GainTest:
    """One-sided Wilcoxon signed-rank test that the per-image gains are positive.

    Attributes
    ----------
    n : int
        Images.
    n_positive, n_negative : int
        Images with a gain above, below zero (zeros are left out of the test).
    median, mean : float
        Of the gains.
    lower : float or None
        Exact distribution-free one-sided ``1 - alpha`` lower confidence bound of the median gain
        (an order statistic; None when ``n`` is too small for one).
    p_value : float
        Of :func:`scipy.stats.wilcoxon` (``alternative='greater'``, zeros left out, exact without
        ties for up to 50 images); 1 when every gain is zero.
    alpha : float
        Level of the test.
    """

    n: int
    n_positive: int
    n_negative: int
    median: float
    mean: float
    lower: float | None
    p_value: float
    alpha: float

    @property
    def positive(self) -> bool:
        """Whether the gains are positive at level ``alpha``."""
        return bool(self.p_value <= self.alpha)

    @property
    def testable(self) -> bool:
        """Whether ``n`` images could reach level ``alpha`` at all (``0.5 ** n <= alpha``)."""
        return bool(self.n > 0 and 0.5 ** self.n <= self.alpha)

    def to_dict(self) -> dict[str, Any]:
        """The fields and ``positive``, for JSON."""
        return {"n": self.n, "n_positive": self.n_positive, "n_negative": self.n_negative, "median": self.median,
                "mean": self.mean, "lower_bound": self.lower, "p_value": self.p_value, "alpha": self.alpha,
                "positive": self.positive}


@dataclass(frozen=True)
class FaithfulnessVerdict:
    """What :func:`faithfulness_verdict` decided about one method.

    Attributes
    ----------
    faithful : bool or None
        False: the method failed a check, its verdicts must not be used.  True: it passed every
        check it was given.  None: nothing could be decided (no check, or too few images).
    reasons : tuple of str
        One sentence per failed or inconclusive check.
    deletion, insertion : GainTest or None
        The tests of the gains (None without curves).
    randomisation_median_abs_rho : float or None
        Median ``|rho|`` of the randomisation check (None without it).
    randomisation_threshold : float or None
        Its threshold.
    n_images : int
        Images with curves.
    n_informative : int
        Of them, those whose baseline lowers the class's probability by at least ``min_span``:
        the images the tests use.
    min_span : float
        That threshold.
    """

    faithful: bool | None
    reasons: tuple[str, ...]
    deletion: GainTest | None
    insertion: GainTest | None
    randomisation_median_abs_rho: float | None
    randomisation_threshold: float | None
    n_images: int = 0
    n_informative: int = 0
    min_span: float = MIN_SPAN

    @property
    def label(self) -> str:
        """``'faithful'``, ``'unfaithful — its verdicts are not used'`` or ``'inconclusive'``."""
        if self.faithful is None:
            return "inconclusive"
        return "faithful" if self.faithful else "unfaithful — its verdicts are not used"

    def to_dict(self) -> dict[str, Any]:
        """Plain types, for JSON."""
        return {
            "faithful": self.faithful,
            "label": self.label,
            "reasons": list(self.reasons),
            "n_images": self.n_images,
            "n_informative": self.n_informative,
            "min_span": self.min_span,
            "deletion_gain": None if self.deletion is None else self.deletion.to_dict(),
            "insertion_gain": None if self.insertion is None else self.insertion.to_dict(),
            "randomisation_median_abs_rho": self.randomisation_median_abs_rho,
            "randomisation_threshold": self.randomisation_threshold,
            "randomisation_passes": (None if self.randomisation_median_abs_rho is None else
                                     bool(self.randomisation_median_abs_rho < self.randomisation_threshold)),
        }


# ---------------------------------------------------------------------- deletion and insertion

def deletion_insertion(model: nn.Module, inputs: np.ndarray | torch.Tensor, maps: np.ndarray,
                       targets: int | Sequence[int] | np.ndarray | None = None, *, steps: int = 16,
                       baseline: str = "blur", blur_sigma: float = BLUR_SIGMA, batch_size: int = 64, seed: int = 0,
                       random_orders: int = 1, reference: DeletionInsertion | None = None) -> DeletionInsertion:
    """Deletion and insertion curves of saliency maps, and of random pixel orders, with their AUCs.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits (N, n_classes); run in eval mode on its device, its
        training flag restored afterwards.
    inputs : ndarray or torch.Tensor, float32, (N, C, H, W)
        The network inputs the maps explain.
    maps : ndarray, (N, h, w)
        One map per input, at any resolution (e.g. :attr:`pipeline.srnet.cam.SaliencyMaps.maps`);
        upsampled bilinearly to (H, W) to rank the pixels, larger values first.
    targets : int, sequence of int or None
        The class whose probability is tracked: one for all, one per image, or None for each
        image's predicted class.
    steps : int, default 16
        Number of equal steps from no pixel to every pixel (``steps + 1`` points per curve).
    baseline : {'blur', 'zero', 'mean'}, default 'blur'
        What deleted pixels become and what insertion starts from (see :data:`BASELINES`).
    blur_sigma : float, default :data:`BLUR_SIGMA`
        Gaussian sigma in pixels of the ``'blur'`` baseline (reflecting edges).
    batch_size : int, default 64
        Modified inputs per forward pass.
    seed : int, default 0
        Seed of the random orders; the first random order of an image also breaks the ties of
        its map.
    random_orders : int, default 1
        Random orders per image whose curves are averaged into the reference.
    reference : DeletionInsertion, optional
        An earlier result on the same inputs, targets, steps, baseline, seed and number of random
        orders (e.g. for another method): its random-order curves are reused instead of computed
        again.

    Returns
    -------
    DeletionInsertion
        The curves; its properties give the AUCs and the gains.

    Raises
    ------
    TypeError, ValueError
        A bad argument (the message names it), or a ``reference`` that does not match.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch = _inputs_tensor(inputs)
    count, _, height, width = batch.shape
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] != count:
        raise ValueError(f"maps must have shape (N, h, w) with N = {count} (one per input), got {maps.shape}")
    if maps.dtype.kind not in "fiu" or not np.isfinite(maps).all():
        raise ValueError("maps must hold finite numbers")
    steps = _positive_int(steps, "steps")
    batch_size = _positive_int(batch_size, "batch_size")
    random_orders = _positive_int(random_orders, "random_orders")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if not (isinstance(blur_sigma, (int, float)) and math.isfinite(blur_sigma) and blur_sigma > 0):
        raise ValueError(f"blur_sigma must be a positive number of pixels, got {blur_sigma!r}")
    digest = hashlib.sha1(batch.numpy().tobytes()).hexdigest()

    with _eval_mode(model):
        device = _device_of(model)
        targets = _resolved_targets(model, batch, targets, device, batch_size)
        pixels = height * width
        counts = (np.arange(steps + 1) * pixels * 2 + steps) // (2 * steps)  # round(j * HW / steps)
        fractions = counts / pixels
        base = _baseline_images(batch, baseline, float(blur_sigma))
        rng = np.random.default_rng(int(seed))
        random_ranks = np.stack([np.stack([_rank_of(rng.permutation(pixels)) for _ in range(random_orders)])
                                 for _ in range(count)])  # (N, R, HW): position of each pixel in each order
        upsampled = upsample_maps(maps.astype(np.float32), (height, width), normalise=False).reshape(count, pixels)
        # most salient first; ties in the order of the image's first random permutation
        map_ranks = np.stack([_rank_of(np.lexsort((random_ranks[i, 0], -upsampled[i].astype(np.float64))))
                              for i in range(count)])
        if reference is not None:
            _check_reference(reference, targets, steps, baseline, float(blur_sigma), int(seed), random_orders, digest)
            deletion_random, insertion_random = reference.deletion_random, reference.insertion_random
            ends = (reference.deletion[:, 0], reference.deletion[:, -1])
        else:
            ends = _probabilities(model, [batch, base], targets, device, batch_size)
            curves = [_curves(model, batch, base, random_ranks[:, r], counts, targets, ends, device, batch_size)
                      for r in range(random_orders)]
            deletion_random = np.mean([c[0] for c in curves], axis=0)
            insertion_random = np.mean([c[1] for c in curves], axis=0)
        deletion, insertion = _curves(model, batch, base, map_ranks, counts, targets, ends, device, batch_size)
    return DeletionInsertion(fractions=fractions, deletion=deletion, insertion=insertion,
                             deletion_random=deletion_random, insertion_random=insertion_random, targets=targets,
                             baseline=baseline, blur_sigma=float(blur_sigma), seed=int(seed),
                             random_orders=random_orders, inputs_digest=digest)


def baseline_span(model: nn.Module, inputs: np.ndarray | torch.Tensor,
                  targets: int | Sequence[int] | np.ndarray | None = None, *, baseline: str = "blur",
                  blur_sigma: float = BLUR_SIGMA, batch_size: int = 64) -> np.ndarray:
    """How much the baseline image lowers the probability of the explained class, per image.

    Deletion and insertion can test a map only on an image whose baseline changes the model's
    answer: :func:`faithfulness_verdict` uses the images where this reaches :data:`MIN_SPAN`, and
    a caller with a budget can pick those first (two forward passes per image).

    Parameters
    ----------
    model, inputs, targets, baseline, blur_sigma, batch_size
        As in :func:`deletion_insertion`.

    Returns
    -------
    ndarray, float64, (N,)
        ``p(input) - p(baseline)``, the :attr:`DeletionInsertion.span` the curves would have.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch = _inputs_tensor(inputs)
    batch_size = _positive_int(batch_size, "batch_size")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if not (isinstance(blur_sigma, (int, float)) and math.isfinite(blur_sigma) and blur_sigma > 0):
        raise ValueError(f"blur_sigma must be a positive number of pixels, got {blur_sigma!r}")
    with _eval_mode(model):
        device = _device_of(model)
        chosen = _resolved_targets(model, batch, targets, device, batch_size)
        original, blank = _probabilities(model, [batch, _baseline_images(batch, baseline, float(blur_sigma))], chosen,
                                         device, batch_size)
    return original - blank


def _curves(model, batch, base, ranks, counts, targets, ends, device, batch_size):
    """Deletion and insertion curves (N, steps + 1) for pixel ranks (N, HW) (0 = first removed)."""
    count, channels, height, width = batch.shape
    steps = len(counts) - 1
    original, blank = ends
    deletion = np.empty((count, steps + 1))
    insertion = np.empty((count, steps + 1))
    deletion[:, 0], deletion[:, -1] = original, blank
    insertion[:, 0], insertion[:, -1] = blank, original
    ranks = torch.from_numpy(ranks.reshape(count, 1, height, width))
    jobs = [(i, j, kind) for i in range(count) for j in range(1, steps) for kind in (0, 1)]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        stacked = []
        for i, j, kind in chunk:
            changed = ranks[i] < int(counts[j])  # (1, H, W): the first counts[j] pixels of the order
            kept, other = (batch[i], base[i]) if kind == 0 else (base[i], batch[i])
            stacked.append(torch.where(changed, other, kept))
        probabilities = _class_probabilities(model, torch.stack(stacked), targets[[i for i, _, _ in chunk]], device)
        for (i, j, kind), value in zip(chunk, probabilities):
            (deletion if kind == 0 else insertion)[i, j] = value
    return deletion, insertion


def _baseline_images(batch: torch.Tensor, baseline: str, sigma: float) -> torch.Tensor:
    if baseline == "zero":
        return torch.zeros_like(batch)
    if baseline == "mean":
        return batch.mean(dim=(2, 3), keepdim=True).expand_as(batch).contiguous()
    blurred = gaussian_filter(batch.numpy().astype(np.float64), sigma=(0, 0, sigma, sigma), mode="reflect")
    return torch.from_numpy(blurred.astype(np.float32))


def _rank_of(order: np.ndarray) -> np.ndarray:
    """Inverse permutation: the position of every element in ``order``."""
    ranks = np.empty(order.size, dtype=np.int64)
    ranks[order] = np.arange(order.size)
    return ranks


def _check_reference(reference, targets, steps, baseline, sigma, seed, random_orders, digest) -> None:
    if not isinstance(reference, DeletionInsertion):
        raise TypeError(f"reference must be a DeletionInsertion, got {type(reference).__name__}")
    mismatches = [name for name, same in [
        ("inputs", reference.inputs_digest == digest),
        ("targets", np.array_equal(reference.targets, targets)),
        ("steps", reference.steps == steps),
        ("baseline", reference.baseline == baseline and (baseline != "blur" or reference.blur_sigma == sigma)),
        ("seed", reference.seed == seed),
        ("random_orders", reference.random_orders == random_orders),
    ] if not same]
    if mismatches:
        raise ValueError(f"reference was made with other {', '.join(mismatches)}; its random-order curves do not "
                         "apply (pass reference=None to compute them)")


# ---------------------------------------------------------------------- randomisation

def randomisation_check(method: str | MapsFunction, model: nn.Module, inputs: np.ndarray | torch.Tensor,
                        targets: int | Sequence[int] | np.ndarray | None = None, *,
                        cascade: Sequence[str] | None = None, seed: int = 0, threshold: float = RANDOMISATION_RHO,
                        method_options: dict[str, Any] | None = None,
                        randomised: nn.Module | None = None) -> RandomisationCheck:
    """Adebayo et al.'s model-parameter randomisation test of one saliency method.

    Parameters
    ----------
    method : str or callable
        A name of :data:`pipeline.srnet.cam.METHODS` (built with
        :func:`~pipeline.srnet.cam.saliency_method` and ``method_options``), or a function
        ``(model, inputs, targets) -> maps (N, h, w)`` with ``inputs`` a float32 tensor and
        ``targets`` an int64 array.
    model : torch.nn.Module
        The trained classifier; it is not modified (a deep copy is randomised).
    inputs : ndarray or torch.Tensor, float32, (N, C, H, W)
        The inputs to explain.
    targets : int, sequence of int or None
        The class explained for both models: one for all, one per image, or None for the trained
        model's prediction.
    cascade : sequence of str, optional
        Dotted submodule names from the top of the network down (for SRNet
        :data:`SRNET_CASCADE`): step ``i`` re-initialises the first ``i + 1`` of them.  The
        verdict always rests on the full randomisation (every parameter), computed besides.
    seed : int, default 0
        Seed of the re-initialisation (torch's global random state is left as it was).
    threshold : float, default :data:`RANDOMISATION_RHO`
        The check passes when the median ``|rho|`` is below this.
    method_options : dict, optional
        Keyword arguments of the method (``target_layer`` as a name, ``batch_size``, ...).
    randomised : torch.nn.Module, optional
        The fully re-initialised model to compare with (default: ``randomised_copy(model, seed)``);
        pass one to share it between the checks of several methods (re-initialising SRNet's 4.8
        million weights takes about a second).

    Returns
    -------
    RandomisationCheck

    Notes
    -----
    Re-initialising a module calls its own ``reset_parameters`` (SRNet's is the original's
    initialisation; a convolution or linear layer gets PyTorch's default, a BatchNorm its
    identity with reset running statistics); a module without one has each of its children
    re-initialised, and a parameter no ``reset_parameters`` covers is drawn from a normal
    distribution with the parameter's own standard deviation (0.01 if it is constant).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch = _inputs_tensor(inputs)
    if not (isinstance(threshold, (int, float)) and 0 < threshold <= 1):
        raise ValueError(f"threshold must be a rank correlation in (0, 1], got {threshold!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    options = dict(method_options or {})
    if isinstance(options.get("target_layer"), nn.Module):  # a module of the original would not be in the copy
        options["target_layer"] = next((name for name, module in model.named_modules()
                                        if module is options["target_layer"]), None)
        if options["target_layer"] is None:
            raise ValueError("method_options['target_layer'] is not a submodule of model")
    explain, name = _maps_function(method, options)
    stages = tuple(cascade or ())
    for stage in stages:
        if not isinstance(stage, str):
            raise TypeError(f"cascade must hold submodule names, got {stage!r}")
        try:
            model.get_submodule(stage)
        except AttributeError:
            raise ValueError(f"cascade stage {stage!r} is not a submodule of the model") from None
    with _eval_mode(model):
        device = _device_of(model)
        chosen = _resolved_targets(model, batch, targets, device, batch_size=64)
        trained = _checked_maps(explain(model, batch, chosen), len(batch), name)
    if randomised is None:
        randomised = randomised_copy(model, seed)
    elif not isinstance(randomised, nn.Module) or randomised is model:
        raise TypeError("randomised must be a re-initialised copy of model (see randomised_copy), not the model itself")
    shuffled = _checked_maps(explain(randomised, batch, chosen), len(batch), name)
    rho = _rank_correlations(trained, shuffled)
    steps: dict[str, np.ndarray] = {}
    if stages:
        partial = copy.deepcopy(model)
        for k, stage in enumerate(stages):
            _reinitialise(partial, partial.get_submodule(stage), seed + 1 + k)
            steps[stage] = _rank_correlations(trained, _checked_maps(explain(partial, batch, chosen), len(batch),
                                                                     name))
    return RandomisationCheck(method=name, rho=rho, threshold=float(threshold), cascade=steps,
                              trained_maps=trained, randomised_maps=shuffled, targets=chosen, seed=int(seed))


def _maps_function(method: str | MapsFunction, options: dict[str, Any]) -> tuple[MapsFunction, str]:
    if isinstance(method, str):
        key = method.strip().lower()
        if key not in METHODS:
            raise ValueError(f"unknown saliency method {method!r}; use one of {', '.join(METHODS)} or a function "
                             "(model, inputs, targets) -> maps")

        def explain(model: nn.Module, inputs: torch.Tensor, targets: np.ndarray) -> np.ndarray:
            explainer: SaliencyMethod = saliency_method(key, model, **options)
            return explainer(inputs, targets).maps

        return explain, key
    if callable(method):
        if options:
            raise ValueError("method_options apply to a named method only; bind them into the function")
        return method, getattr(method, "__name__", "custom")
    raise TypeError(f"method must be a saliency method name or a function (model, inputs, targets) -> maps, "
                    f"got {type(method).__name__}")


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every weight re-initialised (see :func:`randomisation_check`).

    Parameters
    ----------
    model : torch.nn.Module
        The trained model (not modified).
    seed : int, default 0
        Seed of the re-initialisation (torch's global random state is left as it was).

    Returns
    -------
    torch.nn.Module
        The copy, on the model's device, in the model's training mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    copied = copy.deepcopy(model)
    _reinitialise(copied, copied, int(seed))
    return copied


def _reinitialise(model: nn.Module, module: nn.Module, seed: int) -> None:
    """Re-initialise ``module`` (a submodule of ``model``, or the model) in place, seeded."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        with torch.no_grad():
            _reset(module)


def _reset(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    for child in module.children():
        _reset(child)
    for parameter in module.parameters(recurse=False):
        spread = float(parameter.std()) if parameter.numel() > 1 else 0.0
        parameter.normal_(0.0, spread if spread > 0 else 0.01)


def _rank_correlations(trained: np.ndarray, randomised: np.ndarray) -> np.ndarray:
    """Spearman rho per image; 1 when both maps are constant, 0 when only one is."""
    values = np.empty(len(trained))
    for i, (a, b) in enumerate(zip(trained, randomised)):
        a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
        flat_a, flat_b = bool(np.all(a == a[0])), bool(np.all(b == b[0]))
        if flat_a or flat_b:
            values[i] = 1.0 if flat_a and flat_b else 0.0
        else:
            values[i] = float(spearmanr(a, b).statistic)
    return values


def _checked_maps(maps: Any, count: int, name: str) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or maps.shape[0] != count:
        raise ValueError(f"saliency method {name!r} must return maps of shape (N, h, w) with N = {count}, "
                         f"got {maps.shape}")
    if not np.isfinite(maps).all():
        raise ValueError(f"saliency method {name!r} returned maps with NaN or infinite values")
    return maps


# ---------------------------------------------------------------------- verdict

def faithfulness_verdict(curves: DeletionInsertion | Sequence[DeletionInsertion] | None = None,
                         randomisation: RandomisationCheck | Sequence[RandomisationCheck] | None = None, *,
                         alpha: float = SIGNIFICANCE, min_span: float = MIN_SPAN) -> FaithfulnessVerdict:
    """Whether a saliency method's maps can be trusted, from its deletion/insertion and randomisation checks.

    Parameters
    ----------
    curves : DeletionInsertion or a sequence of them, optional
        The method's curves (several, e.g. one per crop network, are pooled over their images).
        An empty sequence means the curves were asked for but no image was informative: that part
        is inconclusive.
    randomisation : RandomisationCheck or a sequence of them, optional
        The method's randomisation checks (pooled over their images; their thresholds must agree).
    alpha : float, default :data:`SIGNIFICANCE`
        Family-wise level of the two one-sided Wilcoxon signed-rank tests of the gains (each at
        ``alpha / 2``, Bonferroni: passing needs only one of them).
    min_span : float, default :data:`MIN_SPAN`
        The images whose baseline lowers the explained class's probability by less than this are
        left out of the tests (their curves are flat whatever the order).

    Returns
    -------
    FaithfulnessVerdict
        ``faithful`` is False when the median ``|rho|`` between trained and randomised maps is
        not below the threshold (the maps do not depend on the weights), or when neither the
        deletion gains nor the insertion gains of the informative images are positive by the
        test (the map's pixel order is no better than a random one); None when the gains
        are not positive but there are too few informative images for the test to reach
        ``alpha``, or when no check is given; True otherwise.
    """
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be a level in (0, 1), got {alpha!r}")
    if not (isinstance(min_span, (int, float)) and 0 <= min_span < 1):
        raise ValueError(f"min_span must be a probability difference in [0, 1), got {min_span!r}")
    curve_list = _as_list(curves, DeletionInsertion, "curves")
    checks = _as_list(randomisation, RandomisationCheck, "randomisation")
    reasons: list[str] = []
    failed, undecided = False, not curve_list and not checks
    deletion = insertion = None
    n_images = n_informative = 0
    if curves is not None and not curve_list:  # asked for, but no image had curves
        undecided = True
        reasons.append(f"inconclusive deletion/insertion: no image whose baseline lowers the explained class's "
                       f"probability by at least {min_span:g}")
    if curve_list:
        span = np.concatenate([c.span for c in curve_list])
        informative = span >= min_span
        n_images, n_informative = int(span.size), int(informative.sum())
        level = alpha / 2  # two tests, one is enough to pass
        deletion = _gain_test(np.concatenate([c.deletion_gain for c in curve_list])[informative], level)
        insertion = _gain_test(np.concatenate([c.insertion_gain for c in curve_list])[informative], level)
        if not (deletion.positive or insertion.positive):
            summary = (f"deletion gain {deletion.median:+.3f} (p = {deletion.p_value:.2g}), insertion gain "
                       f"{insertion.median:+.3f} (p = {insertion.p_value:.2g}), medians over {deletion.n} "
                       f"informative of {n_images} images")
            if deletion.testable:
                failed = True
                reasons.append(f"its pixel order is no better than a random one: {summary}")
            else:
                undecided = True
                baselines = sorted({c.baseline for c in curve_list})
                reasons.append(f"inconclusive deletion/insertion: the {'/'.join(baselines)} baseline lowers the "
                               f"explained class's probability by at least {min_span:g} on only {n_informative} of "
                               f"{n_images} images, too few for a test to reach {level:g}")
    median = threshold = None
    if checks:
        thresholds = {c.threshold for c in checks}
        if len(thresholds) > 1:
            raise ValueError(f"randomisation checks with different thresholds {sorted(thresholds)} cannot be pooled")
        threshold = thresholds.pop()
        rho = np.concatenate([c.rho for c in checks])
        median = float(np.median(np.abs(rho))) if rho.size else float("nan")
        if not median < threshold:
            failed = True
            reasons.append(f"its maps barely change when the model's weights are randomised (median |Spearman rho| "
                           f"{median:.2f}, not below {threshold:g}): they explain the input, not the model")
    faithful = False if failed else (None if undecided else True)
    return FaithfulnessVerdict(faithful=faithful, reasons=tuple(reasons), deletion=deletion, insertion=insertion,
                               randomisation_median_abs_rho=median, randomisation_threshold=threshold,
                               n_images=n_images, n_informative=n_informative, min_span=float(min_span))


def _as_list(value: Any, kind: type, name: str) -> list:
    if value is None:
        return []
    values = [value] if isinstance(value, kind) else list(value)
    for item in values:
        if not isinstance(item, kind):
            raise TypeError(f"{name} must be a {kind.__name__} or a sequence of them, got {type(item).__name__}")
    return values


def _gain_test(gains: np.ndarray, alpha: float) -> GainTest:
    """One-sided Wilcoxon signed-rank test of positive gains, with the order-statistic lower bound of the median."""
    gains = np.sort(np.asarray(gains, dtype=np.float64))
    n = int(gains.size)
    positive, negative = int(np.sum(gains > 0)), int(np.sum(gains < 0))
    p_value = 1.0
    if positive + negative:
        p_value = float(wilcoxon(gains, alternative="greater", zero_method="wilcox", method="auto").pvalue)
    lower = None
    if n:
        # P(x_(k) <= median) = P(Binomial(n, 1/2) >= k): the largest k with coverage >= 1 - alpha
        coverage = np.array([binomtest(k, n, 0.5, alternative="greater").pvalue for k in range(1, n + 1)])
        eligible = np.flatnonzero(coverage >= 1 - alpha)
        if eligible.size:
            lower = float(gains[eligible.max()])
    return GainTest(n=n, n_positive=positive, n_negative=negative,
                    median=float(np.median(gains)) if n else float("nan"),
                    mean=float(gains.mean()) if n else float("nan"), lower=lower, p_value=p_value, alpha=float(alpha))


# ---------------------------------------------------------------------- shared helpers

def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _inputs_tensor(inputs: Any) -> torch.Tensor:
    """The inputs as a contiguous float32 CPU tensor (N, C, H, W) outside inference mode."""
    if isinstance(inputs, np.ndarray):
        if inputs.dtype != np.float32:
            raise TypeError(f"inputs must be float32 network inputs, got {inputs.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(inputs))
    elif isinstance(inputs, torch.Tensor):
        if inputs.dtype != torch.float32:
            raise TypeError(f"inputs must be float32 network inputs, got {inputs.dtype}")
        with torch.inference_mode(False):
            tensor = inputs.detach().cpu().clone().contiguous()
    else:
        raise TypeError(f"inputs must be a numpy array or torch tensor (N, C, H, W), got {type(inputs).__name__}")
    if tensor.ndim != 4 or tensor.shape[0] == 0:
        raise ValueError(f"inputs must have shape (N, C, H, W) with N >= 1, got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError("inputs must hold finite values")
    return tensor


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode, its training flag restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _batches(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, start + size)


def _logits(model: nn.Module, batch: torch.Tensor, device: torch.device, batch_size: int) -> np.ndarray:
    parts = []
    with torch.inference_mode():
        for part in _batches(len(batch), batch_size):
            logits = model(batch[part].to(device))
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise ValueError(f"the model must return logits of shape (N, n_classes), "
                                 f"got {getattr(logits, 'shape', type(logits).__name__)}")
            parts.append(logits.double().cpu().numpy())
    return np.concatenate(parts)


def _resolved_targets(model: nn.Module, batch: torch.Tensor, targets: Any, device: torch.device,
                      batch_size: int) -> np.ndarray:
    """Targets as an int64 array (N,): the predicted classes when None, else validated."""
    count = len(batch)
    if targets is None:
        return _logits(model, batch, device, batch_size).argmax(axis=1).astype(np.int64)
    n_classes = _logits(model, batch[:1], device, 1).shape[1]  # one image tells the number of classes
    values = np.asarray(targets)
    if values.ndim == 0:
        values = np.full(count, values)
    if values.shape != (count,):
        raise ValueError(f"targets must be one class index or one per image ({count}), got shape {values.shape}")
    if values.dtype.kind not in "iu":
        raise TypeError(f"targets must be integer class indices, got {values.dtype}")
    if values.min() < 0 or values.max() >= n_classes:
        raise ValueError(f"targets must lie in [0, {n_classes}), got values from {values.min()} to {values.max()}")
    return values.astype(np.int64)


def _class_probabilities(model: nn.Module, batch: torch.Tensor, targets: np.ndarray,
                         device: torch.device) -> np.ndarray:
    with torch.inference_mode():
        probabilities = torch.softmax(model(batch.to(device)).double(), dim=1).cpu().numpy()
    return probabilities[np.arange(len(targets)), targets]


def _probabilities(model: nn.Module, batches: list[torch.Tensor], targets: np.ndarray, device: torch.device,
                   batch_size: int) -> tuple[np.ndarray, ...]:
    """Probability of each image's target class for each of several aligned batches of images."""
    out = []
    for batch in batches:
        out.append(np.concatenate([_class_probabilities(model, batch[part], targets[part], device)
                                   for part in _batches(len(batch), batch_size)]))
    return tuple(out)
