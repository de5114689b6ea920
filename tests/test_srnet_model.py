"""SRNet architecture: layer shapes, parameter counts, BatchNorm settings, activations, pooling."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import fx, nn  # noqa: E402

from pipeline.srnet.model import STAGE_NAMES, SamePaddingAvgPool2d, SRNet  # noqa: E402

pytestmark = pytest.mark.cnn


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny forwards gain nothing from a second thread and stall when other jobs share the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_stage_output_shapes_for_a_256_input():
    torch.manual_seed(0)
    model = SRNet(in_channels=1, n_classes=2).eval()
    shapes = {}
    for name in STAGE_NAMES:
        getattr(model, name).register_forward_hook(lambda module, args, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
    with torch.inference_mode():
        logits = model(torch.rand(1, 1, 256, 256))
    expected = {
        "layer1": (1, 64, 256, 256),
        "layer2": (1, 16, 256, 256),
        **{f"layer{i}": (1, 16, 256, 256) for i in range(3, 8)},
        "layer8": (1, 16, 128, 128),
        "layer9": (1, 64, 64, 64),
        "layer10": (1, 128, 32, 32),
        "layer11": (1, 256, 16, 16),
        "layer12": (1, 512, 16, 16),
        "gap": (1, 512),
        "head": (1, 2),
    }
    assert shapes == expected
    assert tuple(logits.shape) == (1, 2)


@pytest.mark.parametrize(
    ("in_channels", "conv_bias", "expected"),
    [(1, False, 4_776_962), (1, True, 4_779_618), (3, False, 4_778_114), (3, True, 4_780_770)],
)
def test_parameter_count(in_channels, conv_bias, expected):
    model = SRNet(in_channels=in_channels, n_classes=2, conv_bias=conv_bias)
    assert sum(parameter.numel() for parameter in model.parameters()) == expected


def test_parameter_count_follows_the_layer_table():
    def conv(cin, cout, k=3):
        return cin * cout * k * k

    def bn(c):
        return 2 * c

    table = conv(1, 64) + bn(64) + conv(64, 16) + bn(16)
    table += 5 * (2 * (conv(16, 16) + bn(16)))
    for cin, cout in [(16, 16), (16, 64), (64, 128), (128, 256)]:
        table += conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout) + conv(cin, cout, 1) + bn(cout)
    table += conv(256, 512) + bn(512) + conv(512, 512) + bn(512) + 512 * 3 + 3
    assert sum(p.numel() for p in SRNet(in_channels=1, n_classes=3).parameters()) == table


def test_every_batchnorm_has_the_tensorflow_settings():
    norms = [module for module in SRNet().modules() if isinstance(module, nn.BatchNorm2d)]
    assert len(norms) == 2 + 5 * 2 + 4 * 3 + 2
    assert all(norm.momentum == 0.1 and norm.eps == 1e-3 and norm.affine for norm in norms)


def test_relu_only_after_type1_layers_and_first_convolution_of_blocks():
    graph = fx.symbolic_trace(SRNet()).graph
    modules = dict(SRNet().named_modules())
    relu_inputs = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], nn.ReLU):
            (source,) = node.args
            relu_inputs.append(source.target)
    expected = ["layer1.bn", "layer2.bn"] + [f"layer{i}.bn1" for i in range(3, 13)]
    assert relu_inputs == expected


def test_blocks_add_without_activation():
    torch.manual_seed(1)
    model = SRNet().train()
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        block = model.layer3
        expected = x + block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
        pooled = model.layer9
        main = pooled.pool(pooled.bn2(pooled.conv2(torch.relu(pooled.bn1(pooled.conv1(x))))))
        expected = main + pooled.shortcut_bn(pooled.shortcut_conv(x))
        torch.testing.assert_close(pooled(x), expected, rtol=0, atol=0)
        assert (block(x) < 0).any() and (pooled(x) < 0).any()
        assert (model.feature_map(torch.rand(2, 1, 32, 32)) < 0).any()


def _tf_same_avg_pool_reference(x: np.ndarray) -> np.ndarray:
    """3x3 stride-2 average pooling with TensorFlow 'SAME' padding excluded from the mean."""
    height, width = x.shape
    out_h, out_w = -(-height // 2), -(-width // 2)
    pad_top = max((out_h - 1) * 2 + 3 - height, 0) // 2
    pad_left = max((out_w - 1) * 2 + 3 - width, 0) // 2
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * 2 - pad_top, j * 2 - pad_left
            window = x[max(top, 0) : top + 3, max(left, 0) : left + 3]
            out[i, j] = window.mean()
    return out


@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (4, 4), (5, 8), (7, 7), (8, 5), (16, 16), (17, 17), (32, 31)])
def test_average_pooling_matches_tensorflow_same_padding(shape):
    x = np.random.default_rng(3).normal(size=shape)
    pooled = SamePaddingAvgPool2d()(torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(pooled, _tf_same_avg_pool_reference(x), rtol=1e-12, atol=1e-12)


def test_initialisation_follows_the_original():
    torch.manual_seed(2)
    model = SRNet(conv_bias=True)
    weight = model.layer12.conv2.weight.detach()
    fan_in = 512 * 9
    assert weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.02)
    assert weight.abs().max().item() <= 2 * math.sqrt(1.3 * 2.0 / fan_in)
    assert all(module.bias.eq(0.2).all() for module in model.modules() if isinstance(module, nn.Conv2d))
    assert model.head.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert model.head.bias.eq(0).all()
    assert all(module.bias is None for module in SRNet().modules() if isinstance(module, nn.Conv2d))


def test_weight_decay_applies_to_convolution_weights_only():
    model = SRNet(conv_bias=True)
    decayed, free = model.parameter_groups(2e-4)
    conv_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert decayed["weight_decay"] == 2e-4 and free["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == conv_weights
    assert len(conv_weights) == 2 + 5 * 2 + 4 * 3 + 2
    all_params = {id(p) for p in model.parameters()}
    assert {id(p) for p in free["params"]} == all_params - conv_weights


def test_logits_are_the_head_of_the_pooled_feature_map():
    torch.manual_seed(4)
    model = SRNet(in_channels=3, n_classes=4).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        features = model.feature_map(x)
        assert tuple(features.shape) == (2, 512, 4, 4)
        torch.testing.assert_close(model(x), model.head(features.mean(dim=(2, 3))))


@pytest.mark.parametrize("kwargs", [{"in_channels": 2}, {"n_classes": 1}, {"n_classes": 2.5}])
def test_rejects_unsupported_shapes(kwargs):
    with pytest.raises(ValueError):
        SRNet(**kwargs)
