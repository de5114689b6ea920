"""Saliency faithfulness (issue 16, point 5): deletion/insertion curves and the randomisation check.

Two toy models whose true attribution is known:

* :class:`SquareLogit` -- the class-1 logit is ``W * (sum of the pixels in one known 8x8 square) + B``
  and the class-0 logit is 0.  With a zero baseline the exact contribution of pixel ``p`` is
  ``W * x_p`` inside the square and 0 outside, so the deletion and insertion curves of any pixel
  order follow in closed form (cumulative sums of the contributions, then a logistic); the
  references below compute them with numpy alone, independently of the code under test.
* :class:`PlantedDetector` -- a hand-set 3x3 matched filter for a planted "plus" pattern, a
  pass-through second convolution, ReLU, global average pooling and a head that reads only the
  matched filter's channel: what it looks at depends on its weights, so Grad-CAM's maps must
  change when the weights are randomised; an edge detector of the input does not change at all.

Planted cases, each with its explicit threshold: the true map passes deletion/insertion, the
inverted, a random and a constant map fail; the edge detector fails the randomisation check and
Grad-CAM passes it; combined, Grad-CAM on the detector is faithful and the edge detector is not.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from scipy.ndimage import gaussian_filter
from torch import nn

from pipeline.srnet.cam import GradCAM
from pipeline.srnet.faithfulness import (
    RANDOMISATION_RHO,
    SIGNIFICANCE,
    DeletionInsertion,
    deletion_insertion,
    faithfulness_verdict,
    randomisation_check,
    randomised_copy,
)

pytestmark = pytest.mark.cnn

SIZE = 32
SQUARE = (slice(8, 16), slice(16, 24))  # 64 of the 1024 pixels: 1/16 of the image
W, B = 0.25, -4.0  # logit at the input about +4 (p ~ 0.98), at the zero baseline -4 (p ~ 0.018)
N_IMAGES = 16
STEPS = 16

# explicit thresholds of the planted cases
TRUE_MAP_MIN_GAIN = 0.3  # the true map beats a random order by at least this much AUC, both curves
CURVE_ATOL = 1e-5  # float32 model against the float64 reference
PLUS_THRESHOLD = 4.0  # matched-filter response: about 8.9 at a planted plus, noise std about 0.9


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class SquareLogit(nn.Module):
    """Class-1 logit ``W * sum(x in SQUARE) + B``, class-0 logit 0; ``gate`` outputs ``x * mask``."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Conv2d(1, 1, 1, bias=False)
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[0, 0, SQUARE[0], SQUARE[1]] = 1.0
        self.register_buffer("mask", mask)
        self.gate = nn.Identity()  # its output (N, 1, H, W) is what the head pools: Grad-CAM's layer
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.scale.weight.fill_(1.0)
            self.head.weight.copy_(torch.tensor([[0.0], [W * SIZE * SIZE]]))
            self.head.bias.copy_(torch.tensor([0.0, B]))

    def forward(self, x):
        return self.head(self.gate(self.scale(x) * self.mask).mean(dim=(2, 3)))


def plus_kernel() -> torch.Tensor:
    plus = torch.tensor([[-1.0, 1, -1], [1, 1, 1], [-1, 1, -1]])
    return plus - plus.mean()


class PlantedDetector(nn.Module):
    """Matched filter for a planted plus (channel 0 of eight hand-set 3x3 kernels), read by the head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.features = nn.ReLU()
        self.head = nn.Linear(8, 2)
        sobel = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
        kernels = torch.stack([plus_kernel(), sobel, sobel.T, -sobel, -sobel.T,
                               torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]]),
                               torch.ones(3, 3) / 9, -torch.ones(3, 3) / 9])[:, None]
        with torch.no_grad():
            self.conv1.weight.copy_(kernels)
            self.conv1.bias.zero_()
            self.conv1.bias[0] = -PLUS_THRESHOLD  # the noise alone rarely reaches it, a planted plus does
            self.conv2.weight.zero_()
            self.conv2.bias.zero_()
            for channel in range(8):  # pass every channel through unchanged
                self.conv2.weight[channel, channel, 1, 1] = 1.0
            self.head.weight.zero_()
            self.head.weight[1, 0] = 1000.0  # logit about +2.5 with the plus, -2.5 without
            self.head.bias.copy_(torch.tensor([0.0, -2.5]))

    def forward(self, x):
        return self.head(self.features(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3)))


def square_images(seed: int = 0) -> np.ndarray:
    """Positive pixels without ties: every contribution in the square is distinct and positive."""
    return np.random.default_rng(seed).uniform(0.05, 1.0, (N_IMAGES, 1, SIZE, SIZE)).astype(np.float32)


def planted_images(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = (0.3 * rng.standard_normal((N_IMAGES, 1, SIZE, SIZE))).astype(np.float32)
    for image in images:
        row, col = rng.integers(4, SIZE - 4, 2)
        image[0, row - 1:row + 2, col] += 2.0
        image[0, row, col - 1:col + 2] += 2.0
    return images


def edge_detector(model, inputs, targets):
    """A "saliency method" that ignores the model: the gradient magnitude of the input."""
    gy, gx = np.gradient(inputs.numpy()[:, 0].astype(np.float64), axis=(1, 2))
    return np.hypot(gx, gy)


# ---------------------------------------------------------------------- the independent reference

def reference_curves(images: np.ndarray, keys: np.ndarray, steps: int, fill: np.ndarray | None = None):
    """Deletion and insertion curves of SquareLogit by closed form, and their AUCs, per image.

    ``keys`` (N, H, W): the pixel order is by decreasing key; the keys used here have no ties
    inside the square, and the order of the pixels outside it does not matter (they contribute 0).
    ``fill`` (N,): the constant each deleted pixel becomes (default 0).
    """
    count = len(images)
    pixels = SIZE * SIZE
    inside = np.zeros((SIZE, SIZE), bool)
    inside[SQUARE] = True
    fill = np.zeros(count) if fill is None else fill
    deletion, insertion = np.empty((count, steps + 1)), np.empty((count, steps + 1))
    ks = np.array([round(j * pixels / steps) for j in range(steps + 1)])
    for i in range(count):
        x = images[i, 0].astype(np.float64)
        order = np.argsort(-keys[i].ravel(), kind="stable")
        gained = (W * (x - fill[i]) * inside).ravel()[order]  # what each pixel adds over the fill value
        cumulative = np.concatenate([[0.0], np.cumsum(gained)])
        floor = B + W * fill[i] * inside.sum()
        deletion[i] = 1 / (1 + np.exp(-(floor + cumulative[-1] - cumulative[ks])))
        insertion[i] = 1 / (1 + np.exp(-(floor + cumulative[ks])))
    fractions = ks / pixels
    auc = lambda curves: np.sum((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fractions), axis=1)  # noqa: E731
    return deletion, insertion, auc(deletion), auc(insertion)


def true_map(images: np.ndarray) -> np.ndarray:
    out = np.zeros(images.shape[:1] + images.shape[2:], np.float32)
    out[:, SQUARE[0], SQUARE[1]] = W * images[:, 0, SQUARE[0], SQUARE[1]]
    return out


# ---------------------------------------------------------------------- deletion and insertion

def test_curves_and_aucs_match_the_closed_form_of_the_toy_model():
    model, images = SquareLogit(), square_images()
    maps = {"true": true_map(images), "inverted": -true_map(images),
            "random": np.random.default_rng(7).random((N_IMAGES, SIZE, SIZE)).astype(np.float32)}
    first = None
    for name, saliency in maps.items():
        result = deletion_insertion(model, images, saliency, 1, steps=STEPS, baseline="zero", seed=3, reference=first)
        first = first or result
        deletion, insertion, deletion_auc, insertion_auc = reference_curves(images, saliency, STEPS)
        np.testing.assert_allclose(result.fractions, np.arange(STEPS + 1) / STEPS)
        np.testing.assert_allclose(result.deletion, deletion, atol=CURVE_ATOL, err_msg=name)
        np.testing.assert_allclose(result.insertion, insertion, atol=CURVE_ATOL, err_msg=name)
        np.testing.assert_allclose(result.deletion_auc, deletion_auc, atol=CURVE_ATOL, err_msg=name)
        np.testing.assert_allclose(result.insertion_auc, insertion_auc, atol=CURVE_ATOL, err_msg=name)
        np.testing.assert_array_equal(result.targets, np.ones(N_IMAGES, np.int64))
    # the random-order reference of a linear model with a zero baseline: every deleted pixel lowers
    # the logit, so its deletion curve falls and its insertion curve rises; their mean AUC is close
    # to the AUC of the mean curve, sigmoid(B + (1 - f) * total) (0.5 by symmetry when total = -2B)
    assert np.all(np.diff(first.deletion_random, axis=1) <= 1e-7)
    assert np.all(np.diff(first.insertion_random, axis=1) >= -1e-7)
    totals = W * images[:, 0, SQUARE[0], SQUARE[1]].sum(axis=(1, 2))
    f = np.linspace(0, 1, 1001)
    mean_curve_auc = np.mean([np.trapezoid(1 / (1 + np.exp(-(B + (1 - f) * t))), f) for t in totals])
    assert first.deletion_auc_random.mean() == pytest.approx(mean_curve_auc, abs=0.05)


def test_the_true_map_passes_and_inverted_random_and_constant_maps_fail():
    model, images = SquareLogit(), square_images(1)
    truth = deletion_insertion(model, images, true_map(images), 1, steps=STEPS, baseline="zero")
    assert truth.deletion_gain.min() >= TRUE_MAP_MIN_GAIN and truth.insertion_gain.min() >= TRUE_MAP_MIN_GAIN
    verdict = faithfulness_verdict(truth)
    assert verdict.faithful is True and verdict.label == "faithful"
    assert verdict.deletion.p_value <= SIGNIFICANCE / 2 and verdict.insertion.p_value <= SIGNIFICANCE / 2
    assert verdict.deletion.n_positive == N_IMAGES and verdict.deletion.lower > 0

    inverted = deletion_insertion(model, images, -true_map(images), 1, steps=STEPS, baseline="zero", reference=truth)
    assert inverted.deletion_gain.max() < 0 and inverted.insertion_gain.max() < 0
    verdict = faithfulness_verdict(inverted)
    assert verdict.faithful is False and verdict.label == "unfaithful — its verdicts are not used"
    assert "no better than a random one" in verdict.reasons[0]

    noise = np.random.default_rng(11).random((N_IMAGES, 8, 8)).astype(np.float32)  # any resolution works
    random_map = deletion_insertion(model, images, noise, 1, steps=STEPS, baseline="zero", reference=truth)
    verdict = faithfulness_verdict(random_map)
    assert verdict.deletion.p_value > SIGNIFICANCE / 2 and verdict.insertion.p_value > SIGNIFICANCE / 2
    assert verdict.faithful is False

    # a constant map is ranked by the tie-breaking random order: exactly the random reference
    constant = deletion_insertion(model, images, np.ones((N_IMAGES, 4, 4), np.float32), 1, steps=STEPS,
                                  baseline="zero")
    np.testing.assert_array_equal(constant.deletion_gain, 0.0)
    np.testing.assert_array_equal(constant.insertion_gain, 0.0)
    assert faithfulness_verdict(constant).faithful is False

    # Grad-CAM at the pooled layer of the toy gives the true attribution up to scale: the same curves
    with GradCAM(model, target_layer="gate") as explain:
        maps = explain(images, 1).maps
    gradcam = deletion_insertion(model, images, maps, 1, steps=STEPS, baseline="zero", reference=truth)
    np.testing.assert_allclose(gradcam.deletion, truth.deletion, atol=CURVE_ATOL)


def test_mean_and_blur_baselines():
    model, images = SquareLogit(), square_images(2)
    means = images.mean(axis=(1, 2, 3)).astype(np.float64)
    result = deletion_insertion(model, images, true_map(images), 1, steps=8, baseline="mean")
    deletion, insertion, _, _ = reference_curves(images, true_map(images), 8, fill=means)
    np.testing.assert_allclose(result.deletion, deletion, atol=CURVE_ATOL)
    np.testing.assert_allclose(result.insertion, insertion, atol=CURVE_ATOL)
    blurred = deletion_insertion(model, images, true_map(images), 1, steps=4, baseline="blur", blur_sigma=2.0)
    smooth = gaussian_filter(images[:, 0].astype(np.float64), sigma=(0, 2.0, 2.0), mode="reflect")
    expected = 1 / (1 + np.exp(-(B + W * smooth[:, SQUARE[0], SQUARE[1]].sum(axis=(1, 2)))))
    np.testing.assert_allclose(blurred.deletion[:, -1], expected, atol=CURVE_ATOL)
    np.testing.assert_allclose(blurred.insertion[:, 0], expected, atol=CURVE_ATOL)


def test_curves_are_deterministic_and_a_mismatched_reference_is_refused():
    model, images = SquareLogit(), square_images(3)[:4]
    maps = true_map(images)
    first = deletion_insertion(model, images, maps, steps=4, baseline="zero", seed=5, batch_size=3)
    again = deletion_insertion(model, images, maps, steps=4, baseline="zero", seed=5)
    np.testing.assert_array_equal(first.deletion_random, again.deletion_random)
    np.testing.assert_array_equal(first.insertion, again.insertion)
    other_seed = deletion_insertion(model, images, maps, steps=4, baseline="zero", seed=6)
    assert not np.array_equal(first.deletion_random, other_seed.deletion_random)
    reused = deletion_insertion(model, images, maps, steps=4, baseline="zero", seed=5, reference=first)
    np.testing.assert_array_equal(reused.deletion_random, first.deletion_random)
    assert isinstance(reused, DeletionInsertion) and reused.steps == 4
    np.testing.assert_array_equal(first.targets, [1, 1, 1, 1])  # None: the predicted class
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, images, maps, steps=4, baseline="zero", seed=5, reference=other_seed.__class__(
            **{**first.__dict__, "fractions": np.linspace(0, 1, 9)}))
    with pytest.raises(ValueError, match="inputs"):
        deletion_insertion(model, images + 1, maps, steps=4, baseline="zero", seed=5, reference=first)
    assert model.training  # restored


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps"),
    ({"baseline": "noise"}, "baseline"),
    ({"batch_size": 0}, "batch_size"),
    ({"random_orders": 0}, "random_orders"),
    ({"blur_sigma": -1.0}, "blur_sigma"),
    ({"targets": 2}, "targets"),
    ({"targets": [1, 1]}, "targets"),
])
def test_bad_arguments_are_named(kwargs, message):
    model, images = SquareLogit(), square_images()[:3]
    kwargs = {"targets": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        deletion_insertion(model, images, true_map(images), **kwargs)


def test_bad_inputs_and_maps_are_named():
    model, images = SquareLogit(), square_images()[:3]
    with pytest.raises(ValueError, match="maps"):
        deletion_insertion(model, images, true_map(images)[:2])
    with pytest.raises(ValueError, match="maps"):
        deletion_insertion(model, images, np.full((3, 4, 4), np.nan))
    with pytest.raises(TypeError, match="inputs"):
        deletion_insertion(model, images.astype(np.float64), true_map(images))
    with pytest.raises(TypeError, match="model"):
        deletion_insertion("model", images, true_map(images))


# ---------------------------------------------------------------------- randomisation

def test_an_edge_detector_fails_the_randomisation_check_and_gradcam_passes():
    model, images = PlantedDetector(), planted_images()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    edges = randomisation_check(edge_detector, model, images, 1, seed=0)
    assert edges.median_abs_rho >= RANDOMISATION_RHO and not edges.passes
    np.testing.assert_allclose(edges.rho, 1.0)
    gradcam = randomisation_check("gradcam", model, images, 1, seed=0, method_options={"target_layer": "features"})
    assert gradcam.median_abs_rho < RANDOMISATION_RHO and gradcam.passes
    assert not np.all(gradcam.randomised_maps == gradcam.randomised_maps[:, :1, :1])  # not a degenerate zero map
    # the trained model is untouched and the caller's random state too
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    # not one lucky seed: every one of five re-initialisations passes
    for seed in range(1, 6):
        assert randomisation_check("gradcam", model, images, 1, seed=seed,
                                   method_options={"target_layer": "features"}).passes, seed


def test_the_rank_correlation_is_spearmans_and_the_cascade_goes_from_the_top():
    from scipy.stats import spearmanr

    model, images = PlantedDetector(), planted_images(1)[:6]
    check = randomisation_check("gradcam", model, images, 1, seed=2, cascade=("head", "conv2", "conv1"),
                                method_options={"target_layer": model.features})
    assert list(check.cascade) == ["head", "conv2", "conv1"]
    for i in range(6):
        a, b = check.trained_maps[i].ravel(), check.randomised_maps[i].ravel()
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            assert check.rho[i] == pytest.approx(spearmanr(a, b).statistic)
    assert set(check.cascade_medians()) == {"head", "conv2", "conv1"}
    with pytest.raises(ValueError, match="cascade stage 'layer99'"):
        randomisation_check("gradcam", model, images, 1, cascade=("layer99",))
    with pytest.raises(ValueError, match="unknown saliency method"):
        randomisation_check("lime", model, images, 1)
    with pytest.raises(ValueError, match="threshold"):
        randomisation_check(edge_detector, model, images, 1, threshold=1.5)
    with pytest.raises(ValueError, match="must return maps"):
        randomisation_check(lambda m, x, t: np.zeros((2, 4, 4)), model, images, 1)


class MeanBrightness(nn.Module):
    """Reads only the image's mean: a network whose evidence survives a blur or a mean-colour fill."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[0.0], [20.0]]))
            self.head.bias.copy_(torch.tensor([0.0, -8.0]))

    def forward(self, x):
        return self.head(x.mean(dim=(1, 2, 3))[:, None])


def test_a_baseline_that_keeps_the_prediction_is_inconclusive_not_a_failure():
    model, images = MeanBrightness(), square_images(4)
    noise = np.random.default_rng(5).random((N_IMAGES, 8, 8)).astype(np.float32)
    flat = deletion_insertion(model, images, noise, 1, steps=8, baseline="mean")
    np.testing.assert_allclose(flat.span, 0.0, atol=1e-6)  # the mean fill keeps the mean: flat curves
    verdict = faithfulness_verdict(flat)
    assert verdict.faithful is None and verdict.n_informative == 0 and verdict.n_images == N_IMAGES
    assert "mean baseline lowers the explained class's probability by at least 0.1 on only 0 of 16" in \
        verdict.reasons[0]
    # the zero baseline does change this model's answer: the same random map is then tested, and fails
    zero = deletion_insertion(model, images, noise, 1, steps=8, baseline="zero")
    assert zero.span.min() >= 0.1
    assert faithfulness_verdict(zero).faithful is False


# ---------------------------------------------------------------------- the combined verdict

def test_gradcam_on_the_detector_is_faithful_and_the_edge_detector_is_not():
    model, images = PlantedDetector(), planted_images(2)
    with GradCAM(model, target_layer="features") as explain:
        maps = explain(images, 1).maps
    curves = deletion_insertion(model, images, maps, 1, steps=8, baseline="zero")
    randomised = randomisation_check("gradcam", model, images, 1, method_options={"target_layer": "features"})
    verdict = faithfulness_verdict(curves, randomised)
    assert verdict.faithful is True, verdict.reasons
    edge_maps = edge_detector(model, torch.from_numpy(images), None)
    edge_curves = deletion_insertion(model, images, edge_maps, 1, steps=8, baseline="zero", reference=curves)
    # edges find the plus too, so the curves alone would pass it; the randomisation check does not
    assert faithfulness_verdict(edge_curves).faithful is True
    edge_verdict = faithfulness_verdict(edge_curves, randomisation_check(edge_detector, model, images, 1))
    assert edge_verdict.faithful is False
    assert any("explain the input, not the model" in reason for reason in edge_verdict.reasons)
    record = edge_verdict.to_dict()
    assert record["randomisation_passes"] is False and record["faithful"] is False
    # pooled over two groups of images (two crop networks): the same as one group
    pooled = faithfulness_verdict([curves, curves], [randomised, randomised])
    assert pooled.deletion.n == 2 * N_IMAGES and pooled.faithful is True


def test_the_signed_rank_test_and_the_interval_by_hand():
    model, images = SquareLogit(), square_images()[:10]
    result = deletion_insertion(model, images, true_map(images), 1, steps=4, baseline="zero")
    # replace the gains by planted values through the curves' random reference
    gains = np.array([0.3, 0.22, 0.1, 0.05, 0.4, -0.12, 0.25, 0.15, 0.0, -0.2])
    planted = result.__class__(**{**result.__dict__,
                                  "deletion_random": result.deletion + gains[:, None],
                                  "insertion_random": result.insertion + gains[:, None]})
    np.testing.assert_allclose(planted.deletion_gain, gains, atol=1e-12)
    test = faithfulness_verdict(planted).deletion
    # 7 positive, 2 negative, 1 zero (left out); the exact null distribution of the signed-rank sum
    # by enumerating the 2^9 sign patterns of the ranks of |gain|
    assert test.n_positive == 7 and test.n_negative == 2
    nonzero = gains[gains != 0]
    ranks = np.argsort(np.argsort(np.abs(nonzero))) + 1  # no ties in |gain|
    observed = ranks[nonzero > 0].sum()
    patterns = np.array(list(itertools.product([0, 1], repeat=nonzero.size)))
    assert test.p_value == pytest.approx(np.mean(patterns @ ranks >= observed))  # 0.0488
    # each of the two tests at 2.5 %; lower bound: the largest k with P(Binomial(10, 1/2) >= k) >= 0.975
    # is k = 2 (1 - 11/1024 = 0.989; k = 3: 1 - 56/1024 = 0.945) -> the 2nd smallest gain
    assert 1 - 11 / 1024 >= 0.975 > 1 - 56 / 1024
    assert test.alpha == SIGNIFICANCE / 2 and not test.positive
    assert test.lower == pytest.approx(-0.12)
    # too few images for the sign test to reach 5 %: inconclusive, not failed
    few = result.__class__(**{**result.__dict__, **{k: getattr(result, k)[:4] for k in
                                                     ("deletion", "insertion", "deletion_random", "insertion_random",
                                                      "targets")}})
    few = few.__class__(**{**few.__dict__, "deletion_random": few.deletion, "insertion_random": few.insertion})
    verdict = faithfulness_verdict(few)
    assert verdict.faithful is None and verdict.label == "inconclusive"
    assert "on only 4 of 4 images, too few for a test to reach 0.025" in verdict.reasons[0]
    assert faithfulness_verdict().faithful is None
    with pytest.raises(TypeError, match="curves"):
        faithfulness_verdict(curves=[1])


def test_a_shared_randomised_copy_gives_the_same_check():
    model, images = PlantedDetector(), planted_images(3)[:6]
    options = {"target_layer": "features"}
    own = randomisation_check("gradcam", model, images, 1, seed=4, method_options=options)
    shared = randomisation_check("gradcam", model, images, 1, seed=4, method_options=options,
                                 randomised=randomised_copy(model, 4))
    np.testing.assert_array_equal(own.rho, shared.rho)
    with pytest.raises(TypeError, match="randomised"):
        randomisation_check("gradcam", model, images, 1, method_options=options, randomised=model)
