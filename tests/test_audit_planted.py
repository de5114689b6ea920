"""Planted-bias cases for the audit's CNN checks (issue 16): each check flags a planted bias and
passes a case without one, with explicit thresholds.

The images are written here from arrays (one device, two classes, 40 images per class, noise
scenes) so that exactly one cue differs between the classes: a bright square in one corner
(location) or a brightness everywhere (location's negative case, position). Networks are tiny (patch 32, a
few epochs, one thread). Every positive test needs a model that reads the cue, so a constant
predictor fails it; every negative test also asserts that the model learned its cue, so a
constant predictor fails it too.
"""

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
CNN = CnnSettings(patch=32, random_patch=32, n_random_train=4, n_random_test=4, epochs=3, threads=1,
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


def audit(root, cue, checks):
    result = run_audit(planted(root, cue), None, AuditConfig(checks=checks, cnn=CNN, progress=False))
    return {r.name: r for r in result["results"]}


def corner_square(image, label, rng):
    if label == 1:
        image[:32, :32] = 250.0                     # the cue sits in the top-left corner only
    return image


def brighter_everywhere(image, label, rng):
    return image * (1.6 if label == 1 else 1.0)     # the cue is everywhere in the frame


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


def test_location_flags_a_cue_in_one_corner(tmp_path):
    location = audit(tmp_path, corner_square, ("location",))["location"]
    figure = location.figure("position_dependence")
    assert figure.verdict == FOUND and figure.value < 1e-3


def test_location_passes_a_cue_everywhere(tmp_path):
    location = audit(tmp_path, brighter_everywhere, ("location",))["location"]
    assert location.figure("position_dependence").verdict == NO_BIAS
    assert location.figure("grid_accuracy").value > 0.9                      # it did learn the cue


def test_position_check_flags_a_content_cue_that_transfers_to_the_mirrored_crop(tmp_path):
    # TODO(issue 16): the planted defect-only case (hot pixels inside 'tl', must NOT transfer) and the
    # patch/colour cases (colour cast -> jitter drop flagged; local cue -> not flagged) were written but
    # did not reach their thresholds with 3 epochs and 24 test images; not yet in this file.
    content = audit(tmp_path / "content", brighter_everywhere, ("position",))["position"]
    assert content.figure("position_tl_accuracy").value >= 0.9              # learned at its own crop ...
    assert content.figure("left_to_right_accuracy").verdict == FOUND        # ... and a content cue transfers
    assert content.verdict == FOUND
