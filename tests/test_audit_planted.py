"""Planted-bias cases for the audit's CNN checks (issue 16): each check flags a planted bias and
passes a case without one, with explicit thresholds.

The images are written here from arrays (one device, two classes, 40 images per class, blocky
noise scenes) so that exactly one cue differs between the classes:

* a bright square in one corner: bound to a position and local (location flags it);
* a gain on the whole frame: a content cue everywhere (position and location's other crops see
  it; binary masks, which keep only structure, do not);
* four small hot clusters at fixed sensor positions in the corner: a defect-like cue (position,
  random crops, colour jitter and grayscale must all pass it);
* a warm against a cool colour cast of equal luma and saturation: global colour (the jitter and
  grayscale drops flag it);
* horizontal bars: scene structure (binary masks flag it).

Networks are tiny (patch 32, a few epochs, two threads). Every positive test needs a model that reads the cue, so a constant
predictor fails it; every negative test also asserts that the model learned its cue, so a
constant predictor fails it too.
"""

import dataclasses

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from pipeline.analysis.audit import FOUND, NO_BIAS, AuditConfig, run_audit
from pipeline.analysis.audit.cnn import CnnSettings
from pipeline.analysis.audit.location import position_permutation_test
from pipeline.data.manifest import load_manifest

pytestmark = [pytest.mark.cnn, pytest.mark.slow]

SIZE, PER_CLASS = 128, 40
CNN = CnnSettings(patch=32, random_patch=32, n_random_train=4, n_random_test=4, epochs=3, threads=2,
                  camera_extras=False)


def planted(root, cue):
    """Write 2 x PER_CLASS noise images; ``cue(image, label, rng)`` plants the class difference."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["path,device,timeslot,label"]
    for label in (0, 1):
        for i in range(PER_CLASS):
            base = rng.normal(110, 25, (SIZE // 8, SIZE // 8, 1)).repeat(8, 0).repeat(8, 1)
            image = np.clip(base + rng.normal(0, 6, (SIZE, SIZE, 3)), 0, 255)
            image = np.clip(cue(image, label, rng), 0, 255).astype(np.uint8)
            name = f"img_{label}_{i:03d}.png"
            Image.fromarray(image).save(root / name)
            lines.append(f"{name},DEV-1,{label + 1},{label}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return load_manifest(root / "manifest.csv")


def audit(root, cue, checks, cnn=CNN):
    result = run_audit(planted(root, cue), None, AuditConfig(checks=checks, cnn=cnn, progress=False))
    return {r.name: r for r in result["results"]}


def corner_square(image, label, rng):
    if label == 1:
        image[:32, :32] = 250.0                     # the cue sits in the top-left corner only
    return image


def brighter_everywhere(image, label, rng):
    return image * (1.6 if label == 1 else 1.0)     # the cue is everywhere in the frame


HOT = ((2, 2), (2, 12), (12, 2), (12, 12))


def hot_clusters(image, label, rng):
    if label == 1:
        for row, col in HOT:                        # inside crop 'tl' = [0:32, 0:32]; no other crop holds them
            image[row:row + 2, col:col + 2] = 255.0
    return image


def colour_cast(image, label, rng):
    # Equal chroma magnitude, opposite hue, and the green shift that keeps BT.601 luma unchanged:
    # only the direction of the colour tells the classes apart.
    d = 30.0 if label == 1 else -30.0
    return image + np.array([-d, d * (0.299 - 0.114) / 0.587, d])


def horizontal_bars(image, label, rng):
    if label == 1:
        image[(np.arange(SIZE) // 4) % 2 == 0] += 60.0     # bars 4 rows high
    return image


def test_permutation_test_separates_position_bound_from_uniform_correctness():
    rng = np.random.default_rng(0)
    bound = np.zeros((30, 16), bool)
    bound[:, :3] = True                              # right at three positions of every image
    assert position_permutation_test(bound, 999, rng)[1] == 0
    uniform = rng.random((30, 16)) < 0.7
    _, exceed = position_permutation_test(uniform, 999, rng)
    assert exceed > 50                               # p > 0.05
    constant = np.repeat(rng.random((30, 1)) < 0.5, 16, axis=1)   # a constant predictor per image
    assert position_permutation_test(constant, 999, rng)[1] == 999


def test_colour_cues_in_the_planted_images_are_as_described():
    # The planted colour cast must not change luma: otherwise the grayscale case below tests nothing.
    warm = colour_cast(np.full((2, 2, 3), 120.0), 0, None)
    cool = colour_cast(np.full((2, 2, 3), 120.0), 1, None)
    luma = np.array([0.299, 0.587, 0.114])
    assert np.allclose(warm @ luma, cool @ luma)
    assert not np.allclose(warm, cool)


def test_location_flags_a_cue_in_one_corner(tmp_path):
    location = audit(tmp_path, corner_square, ("location",))["location"]
    figure = location.figure("position_dependence")
    assert figure.verdict == FOUND and figure.value < 1e-3


def test_a_content_cue_everywhere_is_flagged_by_position_and_passed_by_location_and_binary_masks(tmp_path):
    results = audit(tmp_path, brighter_everywhere, ("position", "location", "binary_mask"))
    position, location, masks = results["position"], results["location"], results["binary_mask"]
    assert position.figure("position_tl_accuracy").value >= 0.9              # learned at its own crop ...
    assert position.figure("left_to_right_accuracy").verdict == FOUND        # ... and a content cue transfers
    assert position.verdict == FOUND
    assert location.figure("grid_accuracy").value > 0.9                      # it did learn the cue ...
    assert location.figure("position_dependence").verdict == NO_BIAS          # ... equally everywhere
    assert masks.figure("balanced_accuracy").value >= 0.9                    # the cue is learnable from pixels ...
    assert masks.verdict == NO_BIAS                                          # ... but not from structure
    assert masks.figure("binary_mask_accuracy").value <= 0.75


def test_a_defect_like_cue_passes_position_random_crops_jitter_and_grayscale(tmp_path):
    # A few pixels take longer to learn than a cue over the whole crop: 8 epochs instead of 3.
    results = audit(tmp_path, hot_clusters, ("position", "patch"), dataclasses.replace(CNN, epochs=8))
    position, patch = results["position"], results["patch"]
    assert position.figure("position_tl_accuracy").value >= 0.9              # learned at its own crop ...
    assert position.figure("left_to_right_accuracy").verdict == NO_BIAS      # ... and bound to it
    assert position.verdict == NO_BIAS
    assert patch.figure("balanced_accuracy").value >= 0.9
    assert patch.figure("random_crop_accuracy").verdict == NO_BIAS           # random crops almost never hold it
    assert patch.figure("jitter_accuracy").value >= 0.9                      # a local outlier survives jitter ...
    assert patch.figure("grayscale_accuracy").value >= 0.9                   # ... and grayscale
    assert patch.verdict == NO_BIAS


def test_patch_colour_check_flags_a_colour_cast(tmp_path):
    patch = audit(tmp_path, colour_cast, ("patch",))["patch"]
    assert patch.figure("balanced_accuracy").value >= 0.9
    assert patch.figure("jitter_drop").verdict == FOUND                      # hue rotation removes the cue
    assert patch.figure("grayscale_drop").verdict == FOUND                   # equal luma: grayscale has no cue
    assert patch.figure("jitter_accuracy").value <= 0.75
    assert patch.verdict == FOUND


def test_binary_mask_check_flags_scene_structure(tmp_path):
    masks = audit(tmp_path, horizontal_bars, ("binary_mask",))["binary_mask"]
    assert masks.figure("binary_mask_accuracy").verdict == FOUND
    assert masks.figure("binary_mask_accuracy").value >= 0.9
