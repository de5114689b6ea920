"""Issue 15: the SRNet-family variants ``srnet-res`` (median-residual input) and ``srnet-cs``
(Bayar & Stamm's constrained first layer), checked against references written here.

* The residual input is compared with ``image - scipy.ndimage.median_filter(image, size=(3, 3, 1),
  mode='reflect')`` of the whole scaled image, cropped afterwards, for every crop, channel mode and
  dtype, on an odd-sized image (so every crop touches a border or the centre).
* The constrained layer's kernels are checked directly: every 2-D slice has centre -1 and its other
  weights sum to 1, at initialisation and after optimiser steps that would break the constraint.
* The constrained layer's output does not change when a constant is added to the image (away from
  its zero padding): what the constraint removes, and all it removes.
* A constrained checkpoint loads back with its stem and predicts exactly as the trained model.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import median_filter

from pipeline.srnet.crops import CROP_NAMES, crop_boxes, extract_crops
from pipeline.srnet.presets import SRNET_VARIANTS, SRNetConfig, preset_config, variant_config

FULL_SCALE = {np.uint8: 255.0, np.uint16: 65535.0, np.float32: 1.0}


def _image(dtype, shape=(53, 71, 3), seed=0):
    rng = np.random.default_rng(seed)
    values = rng.random(shape)
    values[::7, ::5] = 1.0  # isolated bright pixels, some at the borders
    if dtype is np.float32:
        return values.astype(np.float32)
    return np.round(values * FULL_SCALE[dtype]).astype(dtype)


def _reference_residual(scaled):
    """Residual of the whole scaled image (H, W, C), reflect borders as scipy defines them."""
    return scaled - median_filter(scaled, size=(3, 3, 1), mode="reflect")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_residual_crops_equal_the_whole_images_residual_rgb(dtype):
    image = _image(dtype)
    scaled = image.astype(np.float64) / FULL_SCALE[dtype]
    reference = _reference_residual(scaled)
    crops = extract_crops(image, 24, "rgb", input="median-residual")
    for name, (top, left, bottom, right) in crop_boxes(image.shape, 24).items():
        expected = np.moveaxis(reference[top:bottom, left:right], 2, 0)
        assert crops[name].dtype == np.float32 and crops[name].shape == (3, 24, 24)
        np.testing.assert_allclose(crops[name], expected, atol=2e-6, err_msg=name)


def test_residual_crops_for_luma_and_cfa_plane():
    image = _image(np.uint16)
    luma = (image.astype(np.float64) / 65535.0) @ np.array([0.299, 0.587, 0.114])
    reference = _reference_residual(luma[..., None])[..., 0]
    crops = extract_crops(image, 16, "luma", input="median-residual")
    for name, (top, left, bottom, right) in crop_boxes(image.shape, 16).items():
        np.testing.assert_allclose(crops[name][0], reference[top:bottom, left:right], atol=2e-6)

    mosaic = _image(np.uint16, shape=(61, 83))
    plane = mosaic[1::2, 0::2].astype(np.float64) / 65535.0
    reference = _reference_residual(plane[..., None])[..., 0]
    crops = extract_crops(mosaic, 12, "cfa-plane", input="median-residual", cfa_offset=(1, 0))
    for name, (top, left, bottom, right) in crop_boxes(plane.shape, 12, align=1).items():
        np.testing.assert_allclose(crops[name][0], reference[top:bottom, left:right], atol=2e-6)


def test_residual_input_removes_a_constant_and_keeps_a_lone_pixel():
    image = np.full((40, 40, 3), 100, np.uint8)
    image[20, 20, 1] = 180
    crops = extract_crops(image, 40, "rgb", names=("ce",), input="median-residual")
    expected = np.zeros((3, 40, 40), np.float32)
    expected[1, 20, 20] = 80 / 255
    np.testing.assert_allclose(crops["ce"], expected, atol=1e-6)


def test_unknown_input_is_refused_with_its_name():
    with pytest.raises(ValueError, match="unknown input 'noise'"):
        extract_crops(_image(np.uint8), 16, input="noise")
    with pytest.raises(ValueError, match="input must be one of pixels, median-residual"):
        SRNetConfig(input="noise")
    with pytest.raises(ValueError, match="stem must be one of plain, constrained"):
        SRNetConfig(stem="median")
    with pytest.raises(ValueError, match="constrained_kernel must be an odd integer"):
        SRNetConfig(stem="constrained", constrained_kernel=4)


def test_variants_change_only_what_they_constrain():
    for preset in ("cpu", "paper"):
        base = preset_config(preset).to_dict()
        for method, changes in SRNET_VARIANTS.items():
            config = variant_config(method, preset, seed=7).to_dict()
            differing = {k for k in base if config[k] != base[k]}
            assert differing == set(changes) | {"seed"}, (method, preset, differing)
    assert variant_config("srnet-res", "cpu").input == "median-residual"
    assert variant_config("srnet-cs", "cpu").stem == "constrained"
    with pytest.raises(ValueError, match="unknown SRNet variant 'srnet-x'"):
        variant_config("srnet-x")


torch = pytest.importorskip("torch")


def _check_constraint(weight, kernel=5):
    weight = weight.detach().double().numpy()
    centre = kernel // 2
    np.testing.assert_allclose(weight[:, :, centre, centre], -1.0, atol=1e-6)
    off_centre = weight.sum(axis=(2, 3)) - weight[:, :, centre, centre]
    np.testing.assert_allclose(off_centre, 1.0, atol=1e-4)  # float32 sums of 24 weights


def test_constrained_stem_holds_its_constraint_through_training():
    from pipeline.srnet.model import SRNet

    model = SRNet(in_channels=3, n_classes=2, stem="constrained")
    assert tuple(model.stem.weight.shape) == (3, 3, 5, 5)
    _check_constraint(model.stem.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    inputs = torch.rand(4, 3, 16, 16)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), torch.tensor([0, 1, 0, 1])).backward()
        optimizer.step()
        with torch.no_grad():
            model.stem.weight[0, 0, 0, 0] += 3.0  # break it on purpose
        model.project_constraints()
        _check_constraint(model.stem.weight)
    # a slice whose neighbours sum to 0 cannot be rescaled: it becomes the neighbour mean
    with torch.no_grad():
        model.stem.weight.zero_()
    model.project_constraints()
    _check_constraint(model.stem.weight)
    np.testing.assert_allclose(model.stem.weight[0, 0, 0, 0].detach().item(), 1 / 24, rtol=1e-6)


def test_constrained_stem_output_is_blind_to_a_constant_offset():
    from pipeline.srnet.model import ConstrainedConv2d

    layer = ConstrainedConv2d(1, 3, 5)
    with torch.no_grad():
        layer.weight.normal_()
    layer.project_()
    image = torch.rand(1, 1, 20, 20)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # away from the zero padding
    difference = layer(image + 0.3)[inner] - layer(image)[inner]
    assert float(difference.abs().max()) < 1e-5


def test_plain_srnet_parameters_and_weight_decay_groups_are_unchanged_by_the_option():
    from pipeline.srnet.model import SRNet

    torch.manual_seed(0)
    plain = SRNet(in_channels=3, n_classes=2)
    torch.manual_seed(0)
    constrained = SRNet(in_channels=3, n_classes=2, stem="constrained")
    n_plain = sum(p.numel() for p in plain.parameters())
    n_constrained = sum(p.numel() for p in constrained.parameters())
    assert n_constrained - n_plain == 3 * 3 * 5 * 5  # the stem (no bias); layer 1 still takes 3 channels
    decayed = {id(p) for p in constrained.parameter_groups(2e-4)[0]["params"]}
    assert id(constrained.stem.weight) not in decayed


def test_a_constrained_srnet_checkpoint_loads_back_with_its_stem(tmp_path):
    from pipeline.srnet.train import load_crop_model, predict_crop_proba, train_crop_model

    rng = np.random.default_rng(1)
    crops = rng.random((12, 1, 16, 16)).astype(np.float32)
    labels = np.array([0, 1] * 6)
    config = variant_config("srnet-cs", "cpu", epochs=1, batch_size=4, lr_drop_epoch=1, patch=16, channels="luma",
                            device="cpu", num_threads=1)
    trained = train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "cs.pt", progress=False)
    loaded = load_crop_model(tmp_path / "cs.pt")
    assert loaded.stem_mode == "constrained"
    _check_constraint(loaded.stem.weight)
    np.testing.assert_array_equal(predict_crop_proba(trained.model, crops), predict_crop_proba(loaded, crops))
