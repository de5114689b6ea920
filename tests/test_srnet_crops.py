"""Five-crop geometry in the sensor frame and the shared input scaling (numpy only, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.srnet.crops import (
    CROP_NAMES,
    cfa_plane,
    crop_box,
    crop_boxes,
    extract_crops,
    input_channels,
    to_tensor_input,
)


def test_crop_boxes_on_odd_image_sizes_are_aligned_to_the_cfa_tile():
    boxes = crop_boxes((101, 151), 32)
    assert boxes == {
        "tl": (0, 0, 32, 32),
        "tr": (0, 118, 32, 150),
        "bl": (68, 0, 100, 32),
        "br": (68, 118, 100, 150),
        "ce": (34, 58, 66, 90),
    }


def test_unaligned_crop_boxes_touch_the_image_corners():
    boxes = crop_boxes((101, 151, 3), 32, align=1)
    assert boxes["tr"] == (0, 119, 32, 151)
    assert boxes["br"] == (69, 119, 101, 151)
    assert boxes["ce"] == (34, 59, 66, 91)


@pytest.mark.parametrize("shape", [(64, 64), (65, 97), (256, 300), (1023, 767)])
@pytest.mark.parametrize("size", [16, 33, 64])
def test_every_box_lies_inside_the_image_with_the_requested_size(shape, size):
    for top, left, bottom, right in crop_boxes(shape, size).values():
        assert 0 <= top and 0 <= left and bottom <= shape[0] and right <= shape[1]
        assert bottom - top == size and right - left == size
        assert top % 2 == 0 and left % 2 == 0


def test_a_crop_filling_the_image_is_the_whole_image_for_every_name():
    assert set(crop_boxes((48, 48), 48).values()) == {(0, 0, 48, 48)}


@pytest.mark.parametrize(
    ("name", "shape", "size"),
    [("xx", (64, 64), 16), ("tl", (15, 64), 16), ("tl", (64, 15), 16), ("tl", (64, 64), 0), ("tl", (64,), 8)],
)
def test_bad_crop_requests_are_rejected(name, shape, size):
    with pytest.raises(ValueError):
        crop_box(name, shape, size)


def test_rgb_crops_are_scaled_uint8_patches_in_channel_first_layout():
    pixels = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    crops = extract_crops(pixels, 32, "rgb")
    assert list(crops) == list(CROP_NAMES)
    for name, crop in crops.items():
        top, left, bottom, right = crop_box(name, pixels.shape, 32)
        expected = pixels[top:bottom, left:right].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        assert crop.dtype == np.float32 and crop.shape == (3, 32, 32) and crop.flags.c_contiguous
        np.testing.assert_array_equal(crop, expected)


def test_uint16_is_scaled_by_the_full_16_bit_range():
    pixels = np.array([[0, 65535], [4095, 32768]], dtype=np.uint16)
    np.testing.assert_allclose(to_tensor_input(pixels, "luma")[0], pixels / 65535.0, rtol=1e-6)


def test_luma_uses_bt601_weights_and_keeps_grey_images_as_they_are():
    pixels = np.zeros((2, 2, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)
    pixels[0, 1] = (0, 255, 0)
    pixels[1, 0] = (0, 0, 255)
    pixels[1, 1] = (255, 255, 255)
    np.testing.assert_allclose(to_tensor_input(pixels, "luma")[0], [[0.299, 0.587], [0.114, 1.0]], rtol=1e-6)
    grey = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    np.testing.assert_allclose(to_tensor_input(grey, "luma")[0], grey / 255.0, rtol=1e-6)


def test_float_pixels_are_taken_as_already_scaled():
    pixels = np.random.default_rng(1).random((8, 8, 3))
    np.testing.assert_allclose(to_tensor_input(pixels, "rgb"), pixels.transpose(2, 0, 1), rtol=1e-6)


def test_cfa_plane_crops_come_from_one_colour_of_the_mosaic():
    mosaic = np.arange(40 * 60, dtype=np.uint16).reshape(40, 60)
    crops = extract_crops(mosaic, 8, "cfa-plane", ("tl", "br"), cfa_offset=(1, 0))
    plane = mosaic[1::2, 0::2]
    np.testing.assert_array_equal(crops["tl"][0], plane[:8, :8] / np.float32(65535))
    np.testing.assert_array_equal(crops["br"][0], plane[-8:, -8:] / np.float32(65535))
    assert cfa_plane(mosaic, (0, 1))[2, 3] == mosaic[4, 7]


def test_explanation_inputs_equal_training_inputs():
    pixels = np.random.default_rng(2).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    top, left, bottom, right = crop_box("ce", pixels.shape, 16)
    np.testing.assert_array_equal(
        extract_crops(pixels, 16, "luma", ("ce",))["ce"], to_tensor_input(pixels[top:bottom, left:right], "luma")
    )


@pytest.mark.parametrize(
    ("pixels", "channels", "error"),
    [
        (np.zeros((8, 8), np.uint8), "rgb", ValueError),
        (np.zeros((8, 8, 4), np.uint8), "luma", ValueError),
        (np.zeros((8, 8, 3), np.uint8), "cfa-plane", ValueError),
        (np.zeros((8, 8, 3), np.int32), "rgb", TypeError),
        (np.zeros((8, 8, 3), bool), "rgb", TypeError),
        (np.full((8, 8, 3), np.nan, np.float32), "rgb", ValueError),
        (np.zeros((8, 8, 3), np.uint8), "hsv", ValueError),
    ],
)
def test_bad_pixels_are_rejected(pixels, channels, error):
    with pytest.raises(error):
        to_tensor_input(pixels, channels)


def test_input_channels_per_mode():
    assert [input_channels(mode) for mode in ("rgb", "luma", "cfa-plane")] == [3, 1, 1]
