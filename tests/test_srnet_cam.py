"""Saliency maps of SRNet (CAM, Grad-CAM, Grad-CAM++, Score-CAM): numerical identities and hooks.

The reference computations here are written out naively (one channel, one image at a time)
and compared with the batched implementations in :mod:`pipeline.srnet.cam`.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F
from torch import nn

from pipeline.srnet.cam import (
    CAM,
    METHODS,
    GradCAM,
    GradCAMPlusPlus,
    ScoreCAM,
    saliency_method,
    upsample_maps,
)
from pipeline.srnet.model import SRNet

pytestmark = pytest.mark.cnn


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny forwards gain nothing from a second thread and stall when other jobs share the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def randomised_srnet(seed: int = 0, in_channels: int = 3) -> SRNet:
    """An SRNet with non-trivial BatchNorm statistics and head bias, in training mode."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SRNet(in_channels=in_channels, n_classes=2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
                module.weight.copy_(0.8 + 0.4 * torch.rand(channels, generator=generator))
                module.bias.copy_(0.1 * torch.randn(channels, generator=generator))
        model.head.weight.copy_(0.05 * torch.randn(model.head.weight.shape, generator=generator))
        model.head.bias.copy_(torch.tensor([0.3, -0.2]))
    return model


def crops(count: int, size: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 3, size, size), dtype=np.float32)


class TinyGapNet(nn.Module):
    """Conv-ReLU features, global average pooling, linear head: the setting of the closed forms."""

    def __init__(self, channels: int = 6, n_classes: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# ---------------------------------------------------------------------- numerical identities

def test_cam_spatial_mean_plus_bias_is_the_logit():
    model = randomised_srnet()
    x = crops(3)
    with CAM(model) as explain:
        result = explain(x, targets=[0, 1, 1])
    assert result.maps.shape == (3, 4, 4) and result.input_size == (64, 64)
    assert model.training, "the model's training flag is restored after the with block"
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(x)).numpy()
    expected = logits[np.arange(3), [0, 1, 1]]
    bias = model.head.bias.detach().numpy()[[0, 1, 1]]
    got = result.maps.mean(axis=(1, 2)) + bias
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(result.logits, logits, rtol=1e-5, atol=1e-6)
    assert (result.maps < 0).any(), "the raw CAM keeps its sign"


def test_cam_explains_the_predicted_class_by_default():
    model = randomised_srnet(seed=3)
    x = crops(4, seed=5)
    result = CAM(model)(x)
    np.testing.assert_array_equal(result.targets, result.logits.argmax(axis=1))
    np.testing.assert_array_equal(result.targets, result.predicted)


def test_gradcam_at_the_pooling_input_is_relu_cam_over_the_map_area():
    model = randomised_srnet(seed=2)
    x = crops(3, seed=2)
    targets = [1, 0, 1]
    cam = CAM(model)(x, targets)
    grad = GradCAM(model)(x, targets)
    area = cam.maps.shape[1] * cam.maps.shape[2]
    scale = np.abs(cam.maps).max()
    # dS_c/dA_k(i, j) = w_ck / Z at every position, so alpha_k = w_ck / Z ...
    np.testing.assert_allclose(grad.weights, model.head.weight.detach().numpy()[targets] / area,
                               rtol=1e-4, atol=1e-9)
    # ... and Grad-CAM = ReLU(CAM) / Z: a positive multiple of ReLU(CAM).
    np.testing.assert_allclose(grad.maps * area, np.maximum(cam.maps, 0), rtol=1e-4, atol=1e-5 * scale)
    assert (grad.maps > 0).any()


def test_gradcam_plus_plus_weights_match_their_closed_form_on_gap_plus_linear():
    model = TinyGapNet()
    x = crops(4, size=12, seed=3)
    targets = np.array([0, 1, 2, 1])
    result = GradCAMPlusPlus(model, target_layer="features")(x, targets)
    with torch.no_grad():
        activations = model.features(torch.from_numpy(x)).double().numpy()  # (N, K, h, w), >= 0
    w = model.head.weight.detach().double().numpy()[targets]  # (N, K)
    mean_activation = activations.mean(axis=(2, 3))
    # g = w/Z everywhere: a_ij = 1 / (2 + w mean(A)), and w_k = sum_ij a_ij ReLU(w/Z) = ReLU(w) / (2 + w mean(A)).
    expected = np.maximum(w, 0) / (2.0 + w * mean_activation)
    np.testing.assert_allclose(result.weights, expected, rtol=1e-4, atol=1e-7)
    expected_maps = np.maximum(np.einsum("nk,nkhw->nhw", expected, activations), 0)
    np.testing.assert_allclose(result.maps, expected_maps, rtol=1e-4, atol=1e-6)


def naive_score_cam_weights(model, x, target, layer, score="probability"):
    """Score-CAM weights of one image, one channel at a time."""
    captured = {}
    handle = layer.register_forward_hook(lambda m, i, o: captured.setdefault("a", o.detach()))
    with torch.no_grad():
        image = torch.from_numpy(x[None])
        model(image)
        handle.remove()
        activations = captured["a"][0]

        def class_score(batch):
            logits = model(batch)
            values = torch.softmax(logits, dim=1) if score == "probability" else logits
            return float(values[0, target])

        baseline = class_score(torch.zeros_like(image))
        scores = []
        for k in range(activations.shape[0]):
            upsampled = F.interpolate(activations[k][None, None], size=x.shape[1:], mode="bilinear",
                                      align_corners=False)[0, 0].double()
            low, high = upsampled.min(), upsampled.max()
            mask = (upsampled - low) / (high - low) if high > low else torch.zeros_like(upsampled)
            scores.append(class_score((image.double() * mask).float()) - baseline)
    scores = np.array(scores)
    weights = np.exp(scores - scores.max())
    return weights / weights.sum(), scores, activations.double().numpy()


@pytest.mark.parametrize("score", ["probability", "logit"])
def test_score_cam_weights_are_the_softmax_of_masked_input_scores(score):
    model = TinyGapNet(channels=7, n_classes=3, seed=4).eval()
    x = crops(2, size=12, seed=4)
    targets = np.array([2, 0])
    result = ScoreCAM(model, target_layer="features", batch_size=3, score=score)(x, targets)
    for n in range(2):
        weights, scores, activations = naive_score_cam_weights(model, x[n], targets[n], model.features, score)
        np.testing.assert_allclose(result.scores[n], scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(result.weights[n], weights, rtol=1e-4, atol=1e-7)
        expected_map = np.maximum(np.einsum("k,khw->hw", weights, activations), 0)
        np.testing.assert_allclose(result.maps[n], expected_map, rtol=1e-4, atol=1e-6)


def test_score_cam_result_does_not_depend_on_its_batch_size():
    model = TinyGapNet(channels=9, seed=5)
    x = crops(2, size=10, seed=6)
    one = ScoreCAM(model, target_layer="features", batch_size=1)(x)
    many = ScoreCAM(model, target_layer="features", batch_size=64)(x)
    np.testing.assert_allclose(one.weights, many.weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(one.maps, many.maps, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------- batching

@pytest.mark.parametrize("name", ["cam", "gradcam", "gradcam++"])
def test_batch_results_equal_per_image_results(name):
    model = randomised_srnet(seed=6)
    x = crops(3, seed=7)
    batched = saliency_method(name, model)(x)
    with saliency_method(name, model) as explain:
        single = [explain(x[i : i + 1]) for i in range(3)]
    for key in ("maps", "weights", "logits"):
        stacked = np.concatenate([getattr(s, key) for s in single])
        scale = np.abs(stacked).max()
        np.testing.assert_allclose(getattr(batched, key), stacked, rtol=1e-4, atol=1e-5 * scale, err_msg=key)
    np.testing.assert_array_equal(batched.targets, np.concatenate([s.targets for s in single]))
    chunked = saliency_method(name, model, batch_size=2)(x)
    np.testing.assert_allclose(chunked.maps, batched.maps, rtol=1e-4, atol=1e-5 * np.abs(batched.maps).max())


def test_score_cam_on_srnet_batch_equals_per_image():
    model = randomised_srnet(seed=8)
    x = crops(2, size=32, seed=8)  # layer11 is 2x2 at 32x32: 256 masked forwards per image
    batched = ScoreCAM(model, target_layer="layer11", batch_size=256)(x)
    assert batched.maps.shape == (2, 2, 2) and batched.weights.shape == (2, 256)
    np.testing.assert_allclose(batched.weights.sum(axis=1), 1.0, rtol=1e-5)
    single = ScoreCAM(model, target_layer="layer11", batch_size=100)(x[1:])
    np.testing.assert_allclose(batched.weights[1:], single.weights, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(batched.maps[1:], single.maps, rtol=1e-4, atol=1e-5 * np.abs(single.maps).max())


def test_torch_tensor_inputs_and_inference_mode_are_accepted():
    model = randomised_srnet(seed=9)
    x = crops(2, seed=9)
    expected = GradCAM(model)(x).maps
    with torch.inference_mode():
        tensor = torch.from_numpy(x)
        got = GradCAM(model)(tensor).maps
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------- hooks and modes

@pytest.mark.parametrize("name", list(METHODS))
def test_hooks_are_released_after_the_context_manager(name):
    model = TinyGapNet()
    model.train()
    explainer = saliency_method(name, model, target_layer="features")
    with explainer as explain:
        assert all_hooks(model) == 1 and explain.active and not model.training
        explain(crops(2, size=8))
    assert all_hooks(model) == 0 and not explainer.active
    assert model.training, "the training flag is restored"


@pytest.mark.parametrize("name", list(METHODS))
def test_hooks_are_released_on_exceptions(name):
    model = TinyGapNet()
    explainer = saliency_method(name, model, target_layer="features")
    with pytest.raises(KeyError), explainer:
        raise KeyError("boom")
    assert all_hooks(model) == 0
    # an error inside a call made outside a with block also leaves no hook behind
    with pytest.raises(ValueError, match="targets must lie in"):
        explainer(crops(2, size=8), targets=7)
    assert all_hooks(model) == 0
    with pytest.raises(ValueError, match="targets must lie in"), explainer as explain:
        explain(crops(2, size=8), targets=[0, 5])
    assert all_hooks(model) == 0 and model.training


def test_explainer_can_be_reused_and_gradients_do_not_touch_parameters():
    model = randomised_srnet(seed=10)
    x = crops(2, seed=10)
    with GradCAMPlusPlus(model) as explain:
        first = explain(x).maps
        second = explain(x).maps
    np.testing.assert_array_equal(first, second)
    assert all(p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled()
    with torch.no_grad():
        inside = GradCAM(model)(x).maps
        assert not torch.is_grad_enabled(), "the caller's grad mode is restored"
    np.testing.assert_allclose(inside, GradCAM(model)(x).maps, rtol=1e-6)


# ---------------------------------------------------------------------- arguments and helpers

def test_target_layer_selection_and_errors():
    model = randomised_srnet()
    x = crops(1, size=64)
    layer11 = GradCAM(model, target_layer="layer11")(x)
    assert layer11.maps.shape == (1, 4, 4) and layer11.weights.shape == (1, 256)
    inner = GradCAMPlusPlus(model, target_layer=model.layer12.relu)(x)
    assert inner.weights.shape == (1, 512)
    with pytest.raises(ValueError, match="not a submodule"):
        GradCAM(model, target_layer="layer99")
    with pytest.raises(ValueError, match="not a submodule"):
        GradCAM(model, target_layer=nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="CAM is defined only"):
        CAM(model, target_layer="layer11")
    with pytest.raises(ValueError, match="unknown saliency method"):
        saliency_method("lime", model)
    with pytest.raises(TypeError, match="float32"):
        CAM(model)(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        CAM(model)(x[0])
    with pytest.raises(ValueError, match="one class index or one per image"):
        CAM(model)(x, targets=[0, 1])


def test_upsampled_maps_are_normalised_per_map_and_keep_raw_scale_on_request():
    maps = np.array([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]], np.float32)
    up = upsample_maps(maps, (8, 8))
    assert up.shape == (2, 8, 8) and up.dtype == np.float32
    assert up[0].min() == 0.0 and up[0].max() == 1.0
    np.testing.assert_array_equal(up[1], 0.0)  # a constant map carries no location
    raw = upsample_maps(maps, (8, 8), normalise=False)
    np.testing.assert_allclose(raw[1], 5.0)
    assert 0.0 <= raw[0].min() and raw[0].max() <= 3.0
    expected = F.interpolate(torch.from_numpy(maps[:1])[:, None], size=(8, 8), mode="bilinear",
                             align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(raw[0], expected)
    model = TinyGapNet()
    result = GradCAM(model, target_layer="features")(crops(2, size=6))
    assert result.upsampled().shape == (2, 6, 6)
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        upsample_maps(maps[0], (4, 4))
