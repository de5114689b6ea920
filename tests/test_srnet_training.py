"""Training one crop network: a step lowers the loss, oversampling, checkpoints, resume, learnability."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.srnet.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pipeline.srnet.presets import preset_config  # noqa: E402
from pipeline.srnet.train import (  # noqa: E402
    _batches,
    build_model,
    epoch_order,
    load_crop_model,
    oversampled_indices,
    predict_crop_proba,
    train_crop_model,
)

pytestmark = pytest.mark.cnn


def _tiny_config(**changes):
    settings = {"epochs": 3, "batch_size": 4, "lr_drop_epoch": 2, "patch": 32, "num_threads": 1, "seed": 5}
    settings.update(changes)
    return preset_config("cpu", **settings)


def _noise_level_data(n: int, size: int, seed: int, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 has twice the pixel noise of class 0 around a random scene brightness."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    brightness = rng.uniform(0.3, 0.7, (n, 1, 1, 1))
    noise = rng.normal(0.0, 1.0, (n, channels, size, size)) * np.where(labels == 1, 0.08, 0.04)[:, None, None, None]
    return (brightness + noise).astype(np.float32), labels


def _state_arrays(model) -> dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.state_dict().items()}


def test_one_training_step_lowers_the_loss_on_a_tiny_batch():
    crops, labels = _noise_level_data(8, 32, seed=0)
    config = _tiny_config(epochs=1, batch_size=8, oversample=False)
    inputs, targets = torch.from_numpy(crops), torch.from_numpy(labels)
    initial = build_model(1, 2, False, seed=config.seed).train()
    with torch.no_grad():
        loss_before = torch.nn.functional.cross_entropy(initial(inputs), targets).item()
    model, history = train_crop_model(crops, labels, config, progress=False)
    with torch.no_grad():
        loss_after = torch.nn.functional.cross_entropy(model.train()(inputs), targets).item()
    assert history[0]["loss"] == pytest.approx(loss_before, rel=1e-5)
    assert loss_after < loss_before


def test_oversampling_brings_every_class_to_the_largest_class():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 2)
    indices = oversampled_indices(labels, np.random.default_rng(0))
    assert np.bincount(labels[indices]).tolist() == [7, 7, 7]
    assert set(indices.tolist()) == set(range(len(labels)))
    counts = np.bincount(indices, minlength=len(labels))
    assert set(counts[labels == 1].tolist()) <= {2, 3} and counts[labels == 1].sum() == 7
    assert counts[labels == 0].tolist() == [1] * 7


def test_epoch_order_depends_only_on_seed_and_epoch():
    labels = np.array([0] * 5 + [1] * 2)
    np.testing.assert_array_equal(epoch_order(labels, 3, 4), epoch_order(labels, 3, 4))
    assert not np.array_equal(epoch_order(labels, 3, 4), epoch_order(labels, 3, 5))
    assert sorted(epoch_order(labels, 3, 0, oversample=False).tolist()) == list(range(7))


def test_a_trailing_batch_of_one_joins_the_previous_batch():
    assert [len(b) for b in _batches(np.arange(9), 4)] == [4, 5]
    assert [len(b) for b in _batches(np.arange(10), 4)] == [4, 4, 2]
    assert [len(b) for b in _batches(np.arange(1), 4)] == [1]


def test_interrupted_training_resumes_to_the_uninterrupted_weights(tmp_path):
    crops, labels = _noise_level_data(10, 32, seed=1)
    labels[:3] = 1  # 7 of class 1, 3 of class 0: oversampling is exercised
    config = _tiny_config()

    uninterrupted = train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "a.pt", progress=False)

    class Interrupted(Exception):
        pass

    def stop_after_first_epoch(record):
        if record["epoch"] == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "b.pt", progress=False, on_epoch_end=stop_after_first_epoch)
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 1
    epochs_run = []
    resumed = train_crop_model(
        crops, labels, config, checkpoint_path=tmp_path / "b.pt", progress=False, on_epoch_end=lambda r: epochs_run.append(r["epoch"])
    )

    assert epochs_run == [2, 3]
    expected, actual = _state_arrays(uninterrupted.model), _state_arrays(resumed.model)
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
    drop_time = [{k: v for k, v in record.items() if k != "seconds"} for record in uninterrupted.history]
    assert [{k: v for k, v in record.items() if k != "seconds"} for record in resumed.history] == drop_time
    assert [record["lr"] for record in resumed.history] == [1e-3, 1e-3, 1e-4]


@pytest.mark.parametrize("every_s, written", [(0.0, [1, 2, 3]), (1e9, [3])])
def test_checkpoints_are_written_at_the_interval_and_after_the_last_epoch(tmp_path, monkeypatch, every_s, written):
    import pipeline.srnet.train as train_module

    epochs = []

    def recording_save(path, state):
        epochs.append(state["epoch"])
        return save_checkpoint(path, state)

    monkeypatch.setattr(train_module, "save_checkpoint", recording_save)
    crops, labels = _noise_level_data(8, 32, seed=4)
    train_crop_model(crops, labels, _tiny_config(checkpoint_every_s=every_s), checkpoint_path=tmp_path / "e.pt",
                     progress=False)
    assert epochs == written
    assert load_checkpoint(tmp_path / "e.pt")["optimizer"] is None  # finished: the model only


def test_an_interruption_inside_an_epoch_keeps_the_last_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    import pipeline.srnet.train as train_module

    crops, labels = _noise_level_data(10, 32, seed=6)
    config = _tiny_config(checkpoint_every_s=0.0)
    uninterrupted = train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "a.pt", progress=False)
    one_epoch = train_module._train_one_epoch

    def interrupted_in_epoch_3(model, optimizer, crops, labels, config, seed, epoch, device):
        if epoch == 2:
            one_epoch(model, optimizer, crops, labels, config, seed, epoch, device)  # weights move ...
            raise KeyboardInterrupt  # ... and the epoch never completes
        return one_epoch(model, optimizer, crops, labels, config, seed, epoch, device)

    monkeypatch.setattr(train_module, "_train_one_epoch", interrupted_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "b.pt", progress=False)
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 2  # the half-updated third epoch is not saved
    monkeypatch.setattr(train_module, "_train_one_epoch", one_epoch)
    resumed = train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "b.pt", progress=False)
    expected, actual = _state_arrays(uninterrupted.model), _state_arrays(resumed.model)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def test_a_finished_checkpoint_is_loaded_without_training(tmp_path):
    crops, labels = _noise_level_data(8, 32, seed=2)
    config = _tiny_config(epochs=1)
    first = train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "c.pt", progress=False)
    calls = []
    again = train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "c.pt", progress=False, on_epoch_end=calls.append)
    assert calls == [] and again.history == first.history
    stored = load_crop_model(tmp_path / "c.pt")
    np.testing.assert_array_equal(predict_crop_proba(stored, crops), predict_crop_proba(first.model, crops))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary files left behind


def test_a_checkpoint_of_other_data_or_unreadable_is_replaced_with_a_warning(tmp_path, caplog):
    crops, labels = _noise_level_data(8, 32, seed=3)
    config = _tiny_config(epochs=1)
    train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "d.pt", progress=False)
    calls = []
    with caplog.at_level(logging.WARNING, logger="agetrace.srnet.train"):
        train_crop_model(crops, 1 - labels, config, checkpoint_path=tmp_path / "d.pt", progress=False, on_epoch_end=calls.append)
    assert len(calls) == 1 and "another configuration" in caplog.text
    (tmp_path / "d.pt").write_bytes(b"truncated")
    calls.clear()
    with caplog.at_level(logging.WARNING, logger="agetrace.srnet.train"):
        train_crop_model(crops, labels, config, checkpoint_path=tmp_path / "d.pt", progress=False, on_epoch_end=calls.append)
    assert len(calls) == 1 and "not a readable" in caplog.text


def test_the_same_seed_repeats_a_run_and_another_seed_does_not():
    crops, labels = _noise_level_data(8, 32, seed=4)
    config = _tiny_config(epochs=1)
    first = _state_arrays(train_crop_model(crops, labels, config, progress=False).model)
    second = _state_arrays(train_crop_model(crops, labels, config, progress=False).model)
    other = _state_arrays(train_crop_model(crops, labels, config, seed=99, progress=False).model)
    assert all(np.array_equal(first[name], second[name]) for name in first)
    assert not np.array_equal(first["head.weight"], other["head.weight"])


def test_training_leaves_global_torch_state_as_it_was():
    crops, labels = _noise_level_data(8, 32, seed=5)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    train_crop_model(crops, labels, _tiny_config(epochs=1, num_threads=1), progress=False)
    torch.testing.assert_close(torch.rand(3), expected_next)
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()


class _NotAllowlisted:
    """An object ``torch.load(weights_only=True)`` must refuse to unpickle."""


def test_checkpoints_are_loaded_with_weights_only(tmp_path):
    torch.save({"format": 1, "payload": _NotAllowlisted()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "sub" / "ok.pt", {"epoch": 2, "weights": torch.ones(2)})
    assert load_checkpoint(tmp_path / "sub" / "ok.pt")["epoch"] == 2


@pytest.mark.parametrize(
    ("crops", "labels", "error"),
    [
        (np.zeros((4, 1, 8, 8), np.float64), [0, 1, 0, 1], TypeError),
        (np.zeros((4, 2, 8, 8), np.float32), [0, 1, 0, 1], ValueError),
        (np.zeros((4, 1, 8, 8), np.float32), [0, 1, 0], ValueError),
        (np.zeros((4, 1, 8, 8), np.float32), [0, 0, 0, 0], ValueError),
        (np.zeros((4, 1, 8, 8), np.float32), [0.0, 1.0, 0.0, 1.0], TypeError),
        (np.full((4, 1, 8, 8), np.nan, np.float32), [0, 1, 0, 1], ValueError),
        (np.zeros((0, 1, 8, 8), np.float32), [], ValueError),
    ],
)
def test_bad_training_data_is_rejected(crops, labels, error):
    with pytest.raises(error):
        train_crop_model(crops, np.asarray(labels), _tiny_config(epochs=1), progress=False)


@pytest.mark.slow
def test_srnet_learns_a_noise_level_difference_in_a_few_epochs():
    # 72 optimiser steps: BatchNorm's running variance starts at 1 and keeps 0.9**steps of
    # it, so eval-mode predictions need a few dozen steps before they match training mode.
    train_crops, train_labels = _noise_level_data(24, 32, seed=6, channels=3)
    test_crops, test_labels = _noise_level_data(40, 32, seed=7, channels=3)
    config = _tiny_config(epochs=12, batch_size=4, lr_drop_epoch=10)
    model, history = train_crop_model(train_crops, train_labels, config, progress=False)
    accuracy = (predict_crop_proba(model, test_crops).argmax(axis=1) == test_labels).mean()
    assert accuracy >= 0.9
    assert history[-1]["loss"] < history[0]["loss"]
