"""Five-crop fusion: the fusion rules, FiveCropSRNet and the pipeline's fit_predict."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from pipeline.srnet.crops import extract_crops  # noqa: E402
from pipeline.srnet.fusion import FiveCropSRNet, fit_predict, fuse_probabilities, fused_labels, stack_crops  # noqa: E402
from pipeline.srnet.presets import preset_config  # noqa: E402

pytestmark = pytest.mark.cnn

# Three crops, two samples, three classes.
HAND_MADE = {
    "tl": np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]),
    "tr": np.array([[0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]),
    "ce": np.array([[0.5, 0.4, 0.1], [0.1, 0.1, 0.8]]),
}


def test_mean_fusion_averages_the_softmax_outputs():
    fused = fuse_probabilities(HAND_MADE, "mean")
    np.testing.assert_allclose(fused, [[0.4, 0.5, 0.1], [0.2, 0.3, 0.5]])
    assert fused_labels(HAND_MADE, "mean").tolist() == [1, 2]
    np.testing.assert_allclose(fuse_probabilities(np.stack(list(HAND_MADE.values())), "mean"), fused)


def test_vote_fusion_counts_each_crops_most_probable_class():
    np.testing.assert_allclose(fuse_probabilities(HAND_MADE, "vote"), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    # The majority wins even where the mean disagrees (sample 0: mean says class 1).
    assert fused_labels(HAND_MADE, "vote").tolist() == [0, 2]


def test_vote_ties_are_broken_by_the_mean_probability():
    crop_proba = {
        "tl": np.array([[0.9, 0.1, 0.0]]),
        "tr": np.array([[0.4, 0.6, 0.0]]),
        "bl": np.array([[0.0, 0.1, 0.9]]),
        "br": np.array([[0.2, 0.0, 0.8]]),
    }
    # Votes: class 0, 1, 2, 2 -> class 2 has a majority.
    assert fused_labels(crop_proba, "vote").tolist() == [2]
    crop_proba["br"] = np.array([[0.55, 0.0, 0.45]])
    # Votes: class 0, 1, 2, 0 -> class 0 has the most votes.
    assert fused_labels(crop_proba, "vote").tolist() == [0]
    tie = {"tl": np.array([[0.9, 0.1]]), "tr": np.array([[0.3, 0.7]])}
    assert fused_labels(tie, "vote").tolist() == [0]  # mean 0.6 vs 0.4
    tie = {"tl": np.array([[0.6, 0.4]]), "tr": np.array([[0.1, 0.9]])}
    assert fused_labels(tie, "vote").tolist() == [1]  # mean 0.35 vs 0.65


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros((0, 2, 3)), np.zeros((2, 3, 1)), {}])
def test_malformed_crop_probabilities_are_rejected(bad):
    with pytest.raises(ValueError):
        fuse_probabilities(bad)


def test_unknown_fusion_method_is_rejected():
    with pytest.raises(ValueError, match="fusion"):
        fuse_probabilities(HAND_MADE, "max")


def _images(n: int, seed: int, shape=(48, 64, 3)) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    labels = ["new" if i % 2 else "old" for i in range(n)]
    images = []
    for label in labels:
        spread = 40 if label == "new" else 15
        images.append(np.clip(rng.normal(128, spread, shape), 0, 255).astype(np.uint8))
    return images, labels


def _config(**changes):
    settings = {"epochs": 1, "batch_size": 4, "lr_drop_epoch": 1, "patch": 32, "num_threads": 1, "seed": 11}
    settings.update(changes)
    return preset_config("cpu", **settings)


def test_stack_crops_collects_every_crop_of_every_image():
    images, _ = _images(3, seed=0)
    config = _config(crops=("ce", "tl"), channels="luma")
    stacked = stack_crops(images, config)
    assert list(stacked) == ["ce", "tl"] and stacked["ce"].shape == (3, 1, 32, 32)
    np.testing.assert_array_equal(stacked["tl"][2], extract_crops(images[2], 32, "luma", ("tl",))["tl"])
    with pytest.raises(ValueError, match="image 1"):
        stack_crops([images[0], images[1][:20]], config)


def test_five_crop_model_trains_one_network_per_crop_and_fuses_them(tmp_path):
    images, labels = _images(8, seed=1)
    model = FiveCropSRNet(_config(), workdir=tmp_path, progress=False).fit(images, labels)
    assert list(model.models_) == ["tl", "tr", "bl", "br", "ce"]
    assert model.classes_.tolist() == ["new", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"srnet_{name}.pt" for name in model.models_)
    test_images, _ = _images(3, seed=2)
    crop_proba = model.crop_proba(test_images)
    proba = model.predict_proba(test_images)
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba, np.mean(list(crop_proba.values()), axis=0))
    assert set(model.predict(test_images).tolist()) <= {"new", "old"}
    # Different crops get differently seeded networks.
    heads = [m.head.weight.detach().numpy() for m in model.models_.values()]
    assert not np.array_equal(heads[0], heads[1])


def test_an_unfitted_model_refuses_to_predict():
    with pytest.raises(RuntimeError, match="fit"):
        FiveCropSRNet(_config(), progress=False).predict_proba(_images(1, seed=3)[0])


def test_fit_predict_reads_each_image_once_and_resumes_from_its_checkpoints(tmp_path):
    train_images, train_labels = _images(8, seed=4)
    test_images, _ = _images(4, seed=5)
    store = {f"train_{i}.jpg": image for i, image in enumerate(train_images)}
    store |= {f"test_{i}.jpg": image for i, image in enumerate(test_images)}
    reads = []

    def load(path):
        reads.append(path)
        return store[path]

    train_paths = [f"train_{i}.jpg" for i in range(8)]
    test_paths = [f"test_{i}.jpg" for i in range(4)]
    config = _config(crops=("tl", "ce"), fusion="vote")
    result = fit_predict(train_paths, train_labels, test_paths, config, tmp_path / "run0", load=load, progress=False)

    assert sorted(reads) == sorted(store)
    assert result["proba"].shape == (4, 2) and list(result["crop_proba"]) == ["tl", "ce"]
    np.testing.assert_allclose(result["proba"], fuse_probabilities(result["crop_proba"], "vote"))
    assert result["classes"].tolist() == ["new", "old"]
    assert result["predicted"].tolist() == result["classes"][fused_labels(result["crop_proba"], "vote")].tolist()
    assert [len(history) for history in result["history"].values()] == [1, 1]
    assert result["config"]["fusion"] == "vote"

    checkpoints = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "run0").iterdir()}
    again = fit_predict(train_paths, train_labels, test_paths, config, tmp_path / "run0", load=load, progress=False)
    np.testing.assert_array_equal(again["proba"], result["proba"])
    assert {path.name: path.stat().st_mtime_ns for path in (tmp_path / "run0").iterdir()} == checkpoints


def test_fit_predict_names_the_file_it_cannot_use(tmp_path):
    images, labels = _images(4, seed=6)
    store = {"a.jpg": images[0], "b.jpg": images[1], "c.jpg": images[2][:10], "d.jpg": images[3]}

    def load(path):
        if path == "broken.jpg":
            raise OSError("truncated file")
        return store[path]

    config = _config(crops=("tl",))
    with pytest.raises(ValueError, match="c.jpg"):
        fit_predict(list(store), labels, [], config, tmp_path, load=load, progress=False)
    with pytest.raises(ValueError, match="broken.jpg"):
        fit_predict(["a.jpg", "b.jpg"], labels[:2], ["broken.jpg"], config, tmp_path, load=load, progress=False)
    with pytest.raises(ValueError, match="labels"):
        fit_predict(["a.jpg", "b.jpg"], labels[:1], [], config, tmp_path, load=load, progress=False)


def test_labels_outside_the_given_classes_are_rejected():
    images, labels = _images(4, seed=7)
    with pytest.raises(ValueError, match="not among the classes"):
        FiveCropSRNet(_config(crops=("tl",)), progress=False).fit(images, labels, classes=["old", "older"])
