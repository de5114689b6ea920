"""ResNet-34 (pipeline.srnet.resnet): size against torchvision's published figure, shapes, training and loading."""

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.srnet.presets import SRNetConfig, preset_config  # noqa: E402
from pipeline.srnet.resnet import ResNet34  # noqa: E402
from pipeline.srnet.train import _fingerprint, load_crop_model, predict_crop_proba, train_crop_model  # noqa: E402

TORCHVISION_RESNET34_PARAMETERS = 21_797_672
"""torchvision.models.resnet34(num_classes=1000): the published parameter count."""


def _reference_count(in_channels: int, n_classes: int, standard_stem: bool) -> int:
    """Parameters of ResNet-34 from its layer table alone (He et al. 2016, Table 1), independent of the code."""
    def bn(c):
        return 2 * c

    k = 7 if standard_stem else 3
    total = in_channels * 64 * k * k + bn(64)
    cin = 64
    for blocks, width in ((3, 64), (4, 128), (6, 256), (3, 512)):
        for b in range(blocks):
            total += cin * width * 9 + bn(width) + width * width * 9 + bn(width)
            if cin != width:  # projection shortcut: 1x1 convolution + BN
                total += cin * width + bn(width)
            cin = width
    return total + 512 * n_classes + n_classes


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_matches_torchvision():
    assert _reference_count(3, 1000, True) == TORCHVISION_RESNET34_PARAMETERS
    assert _count(ResNet34(3, 1000, stem="standard")) == TORCHVISION_RESNET34_PARAMETERS
    assert _count(ResNet34(3, 2, stem="small")) == _reference_count(3, 2, False)
    assert _count(ResNet34(1, 5, stem="small")) == _reference_count(1, 5, False)


@pytest.mark.parametrize("stem,side", [("small", 16), ("standard", 64)])
def test_output_and_feature_shapes(stem, side):
    model = ResNet34(3, 3, stem=stem).eval()
    x = torch.zeros(1, 3, side, side)
    with torch.no_grad():
        assert model(x).shape == (1, 3)
        fm = model.feature_map(x)
    expected = side // 8 if stem == "small" else side // 32
    assert fm.shape == (1, 512, expected, expected)


def test_invalid_settings_rejected():
    with pytest.raises(ValueError):
        ResNet34(3, 1)
    with pytest.raises(ValueError):
        ResNet34(3, 2, stem="huge")
    with pytest.raises(ValueError):
        SRNetConfig(architecture="vgg")
    with pytest.raises(ValueError):
        SRNetConfig(architecture="resnet34", stem="constrained")


def test_plain_srnet_fingerprint_unchanged():
    """The new field is left out of the fingerprint at its default, so earlier SRNet checkpoints stay valid."""
    config = preset_config("cpu")
    crops = np.zeros((4, 3, 16, 16), np.float32)
    labels = np.array([0, 1, 0, 1])
    old = {k: v for k, v in config.to_dict().items()
           if k not in ("preset", "fusion", "crops", "max_runs", "device", "num_threads", "checkpoint_every_s",
                        "eval_batch_size", "seed", "input", "stem", "constrained_filters", "constrained_kernel",
                        "architecture")}
    old.update(seed=0, n_classes=2, shape=list(crops.shape))
    digest = hashlib.sha256(json.dumps(old, sort_keys=True).encode())
    digest.update(crops)
    digest.update(np.ascontiguousarray(labels))
    assert _fingerprint(crops, labels, config, 0, 2) == digest.hexdigest()
    assert _fingerprint(crops, labels, config.replace(architecture="resnet34"), 0, 2) != digest.hexdigest()


def test_trains_learns_and_loads(tmp_path):
    """Trained through train_crop_model on a trivially separable cue, then loaded back with the same outputs."""
    rng = np.random.default_rng(0)
    n = 24
    labels = np.arange(n) % 2
    crops = rng.uniform(0.3, 0.5, (n, 3, 16, 16)).astype(np.float32)
    crops[labels == 1] += 0.4  # bright class
    config = preset_config("cpu", architecture="resnet34", patch=16, epochs=4, lr_drop_epoch=4, batch_size=4, lr=1e-2,
                           num_threads=1, device="cpu")
    path = tmp_path / "r.pt"
    trained = train_crop_model(crops, labels, config, n_classes=2, checkpoint_path=path, progress=False)
    assert isinstance(trained.model, ResNet34)
    proba = predict_crop_proba(trained.model, crops)
    assert np.mean(proba.argmax(1) == labels) >= 0.9  # a constant predictor scores 0.5
    loaded = load_crop_model(path)
    assert isinstance(loaded, ResNet34)
    np.testing.assert_allclose(predict_crop_proba(loaded, crops), proba, atol=1e-5)
