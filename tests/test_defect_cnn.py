"""defect-cnn: defect-centred patches, its configuration, and training on planted and null data.

Expected values are built here from numpy and scipy (``numpy.pad(mode='reflect')``,
``scipy.ndimage.median_filter``, the documented dtype scales and BT.601 weights), never from
the code under test. Every acceptance test fails for a constant predictor: the planted data
need >= 90 % accuracy, and the zero-defect fallback must give the (unbalanced) training
frequencies, not any constant.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import median_filter
from scipy.stats import binomtest

from pipeline.srnet.defect_patches import defect_patches
from pipeline.srnet.defect_presets import DEFECT_CNN_PRESETS, DefectCNNConfig, defect_cnn_preset

ROOT = Path(__file__).resolve().parents[1]
LUMA = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------- references


def _scaled_reference(pixels: np.ndarray, channels: str) -> np.ndarray:
    """(H, W, C) float64 network values: dtype scale, then RGB, BT.601 luma, or the 2-D plane."""
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype, 1.0)
    values = pixels.astype(np.float64) / scale
    if values.ndim == 2:
        return values[:, :, None]
    if channels == "luma":
        return (values * LUMA).sum(axis=2, keepdims=True)
    return values


def _reference_patches(image_hwc: np.ndarray, rows, cols, patch: int) -> np.ndarray:
    """(n, C, P, P) patches of an (H, W, C) array with numpy's reflect padding."""
    half = patch // 2
    padded = np.pad(image_hwc, ((half, half), (half, half), (0, 0)), mode="reflect")
    return np.stack([padded[r : r + patch, c : c + patch].transpose(2, 0, 1) for r, c in zip(rows, cols)])


def _interior_mask(shape, rows, cols, patch: int) -> np.ndarray:
    """(n, P, P): patch pixels that come from image pixels off the outermost rows and columns."""
    half = patch // 2
    row_of = np.pad(np.arange(shape[0]), half, mode="reflect")
    col_of = np.pad(np.arange(shape[1]), half, mode="reflect")
    masks = []
    for r, c in zip(rows, cols):
        rr, cc = row_of[r : r + patch], col_of[c : c + patch]
        masks.append(((rr > 0) & (rr < shape[0] - 1))[:, None] & ((cc > 0) & (cc < shape[1] - 1))[None, :])
    return np.stack(masks)


def _random_image(rng, shape, dtype):
    if dtype == np.uint8:
        return rng.integers(0, 256, shape).astype(np.uint8)
    if dtype == np.uint16:
        return rng.integers(0, 65536, shape).astype(np.uint16)
    return rng.random(shape).astype(dtype)


POSITIONS = ([0, 0, 23, 11, 5, 23], [0, 30, 0, 17, 29, 30])  # corners, edges, interior of a 24x31 image


# --------------------------------------------------------------------------- patches


def test_the_position_lands_at_the_patch_centre():
    image = np.zeros((50, 60), np.float32)
    image[20, 33] = 1.0
    patches = defect_patches(image, [20], [33], 32, source="pixels")
    assert patches.shape == (1, 1, 32, 32) and patches.dtype == np.float32
    assert patches[0, 0, 16, 16] == 1.0 and patches.sum() == 1.0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("channels", ["rgb", "luma"])
def test_pixel_patches_match_reflect_padding_and_the_dtype_scale(dtype, channels):
    rng = np.random.default_rng(1)
    image = _random_image(rng, (24, 31, 3), dtype)
    rows, cols = POSITIONS
    got = defect_patches(image, rows, cols, 16, source="pixels", channels=channels)
    want = _reference_patches(_scaled_reference(image, channels), rows, cols, 16)
    assert got.shape == (6, 3 if channels == "rgb" else 1, 16, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype, value, expected", [(np.uint8, 255, 1.0), (np.uint8, 51, 0.2),
                                                    (np.uint16, 65535, 1.0), (np.uint16, 13107, 0.2),
                                                    (np.float32, 0.2, 0.2)])
def test_dtype_scaling(dtype, value, expected):
    image = np.full((12, 12, 3), value, dtype=dtype)
    patches = defect_patches(image, [6], [6], 8, source="pixels")
    np.testing.assert_allclose(patches, expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", ["rgb", "luma"])
def test_residual_equals_the_whole_image_scipy_residual_off_the_image_border(dtype, channels):
    rng = np.random.default_rng(2)
    image = _random_image(rng, (24, 31, 3), dtype)
    rows, cols = POSITIONS
    scaled = _scaled_reference(image, channels).astype(np.float32)
    residual = scaled - median_filter(scaled, size=(3, 3, 1), mode="reflect")
    want = _reference_patches(residual, rows, cols, 32)  # 32 > 24: reflected more than once
    got = defect_patches(image, rows, cols, 32, source="residual", channels=channels)
    mask = np.broadcast_to(_interior_mask(image.shape, rows, cols, 32)[:, None], got.shape)
    assert mask.mean() > 0.7
    np.testing.assert_allclose(got[mask], want[mask], rtol=1e-5, atol=2e-6)
    # on the outermost image rows and columns the patch reflects where the whole image repeats
    assert not np.allclose(got[~mask], want[~mask], atol=1e-3)


def test_residual_of_a_two_d_mosaic():
    rng = np.random.default_rng(3)
    mosaic = rng.integers(0, 4096, (40, 36)).astype(np.uint16)
    rows, cols = [0, 20, 39], [35, 18, 0]
    for channels in ("rgb", "luma"):
        got = defect_patches(mosaic, rows, cols, 8, source="residual", channels=channels)
        assert got.shape == (3, 1, 8, 8)
        scaled = (mosaic / 65535.0).astype(np.float32)
        residual = (scaled - median_filter(scaled, size=3, mode="reflect"))[:, :, None]
        want = _reference_patches(residual, rows, cols, 8)
        mask = _interior_mask(mosaic.shape, rows, cols, 8)[:, None]
        np.testing.assert_allclose(got[mask], want[mask], rtol=1e-5, atol=1e-7)
        pixels = defect_patches(mosaic, rows, cols, 8, source="pixels", channels=channels)
        np.testing.assert_allclose(pixels, _reference_patches(scaled[:, :, None], rows, cols, 8), rtol=1e-6)


def test_a_hot_pixel_stands_out_at_the_centre_of_its_residual_patch():
    image = np.full((30, 30, 3), 0.5, np.float32)
    image[10, 12, 1] = 0.9
    patch = defect_patches(image, [10], [12], 16, source="residual")[0]
    assert patch[1, 8, 8] == pytest.approx(0.4)
    assert np.count_nonzero(patch) == 1


@pytest.mark.parametrize("pixels", [np.zeros((20, 20), np.uint8), np.zeros((20, 20, 3), np.float32)])
def test_zero_positions_give_an_empty_stack(pixels):
    patches = defect_patches(pixels, [], [], 32)
    assert patches.shape == (0, 1 if pixels.ndim == 2 else 3, 32, 32) and patches.dtype == np.float32


GOOD = np.zeros((20, 20, 3), np.uint8)


@pytest.mark.parametrize("kwargs, error, name", [
    ({"pixels": np.zeros((20, 20, 4), np.uint8)}, ValueError, "pixels"),
    ({"pixels": np.zeros((0, 20), np.uint8)}, ValueError, "pixels"),
    ({"pixels": np.zeros((20, 20, 3), np.int32)}, TypeError, "pixels"),
    ({"pixels": np.full((20, 20, 3), np.nan, np.float32)}, ValueError, "pixels"),
    ({"rows": [[1, 2]], "cols": [[1, 2]]}, ValueError, "rows"),
    ({"rows": [1.5]}, TypeError, "rows"),
    ({"rows": [20]}, ValueError, "rows"),
    ({"cols": [-1]}, ValueError, "cols"),
    ({"rows": [1, 2]}, ValueError, "rows and cols"),
    ({"patch": 15}, ValueError, "patch"),
    ({"patch": 6}, ValueError, "patch"),
    ({"patch": 16.0}, ValueError, "patch"),
    ({"source": "raw"}, ValueError, "source"),
    ({"channels": "cfa-plane"}, ValueError, "channels"),
])
def test_bad_arguments_raise_naming_them(kwargs, error, name):
    arguments = {"pixels": GOOD, "rows": [3], "cols": [4], "patch": 16, "source": "residual", "channels": "rgb"}
    arguments.update(kwargs)
    with pytest.raises(error, match=name):
        defect_patches(**arguments)


# --------------------------------------------------------------------------- configuration


def test_presets_round_trip_and_differ_as_documented():
    for name, config in DEFECT_CNN_PRESETS.items():
        assert config.preset == name
        assert DefectCNNConfig.from_dict(config.to_dict()) == config
        assert defect_cnn_preset(name) == config
    paper, cpu = DEFECT_CNN_PRESETS["paper"], DEFECT_CNN_PRESETS["cpu"]
    assert cpu.epochs < paper.epochs and cpu.patch == paper.patch == 32
    changed = defect_cnn_preset("cpu", fusion="attention", seed=9)
    assert (changed.fusion, changed.seed, changed.epochs) == ("attention", 9, cpu.epochs)
    assert changed.replace(seed=1).seed == 1


def test_lr_schedule():
    config = DefectCNNConfig(lr=1e-3, lr_after_drop=1e-5, lr_drop_epoch=2)
    assert [config.lr_at_epoch(e) for e in range(4)] == [1e-3, 1e-3, 1e-5, 1e-5]


@pytest.mark.parametrize("field, value", [
    ("preset", ""), ("patch", 31), ("patch", 6), ("patch", 32.0), ("patch", True), ("source", "cfa"),
    ("channels", "cfa-plane"), ("fusion", "vote"), ("max_defects", 0), ("epochs", 0), ("batch_size", 0),
    ("lr", 0.0), ("lr", float("nan")), ("lr_after_drop", -1.0), ("lr_drop_epoch", -1), ("weight_decay", -1e-4),
    ("device", "gpu"), ("seed", -1), ("max_runs", 0), ("num_threads", 0), ("deterministic", "yes"),
    ("eval_batch_size", 0),
])
def test_every_field_is_validated_with_its_name(field, value):
    with pytest.raises(ValueError, match=field):
        DefectCNNConfig(**{field: value})


def test_unknown_presets_and_keys_are_refused():
    with pytest.raises(ValueError, match="unknown defect-cnn preset"):
        defect_cnn_preset("gpu")
    with pytest.raises(ValueError, match="crops"):
        defect_cnn_preset("cpu", crops=("tl",))
    with pytest.raises(ValueError, match="crops"):
        DefectCNNConfig.from_dict({"crops": ["tl"]})


def test_the_numpy_modules_do_not_import_torch():
    code = ("import sys\nimport pipeline.srnet.defect_patches, pipeline.srnet.defect_presets\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# --------------------------------------------------------------------------- training

DEFECTS = ([5, 12, 20, 28, 33, 8], [7, 30, 20, 9, 33, 22])
INFORMATIVE = 4  # the first four positions carry age information on planted data


def _images(n: int, seed: int, planted: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """40x40 grey noise images (sigma 0.03 around 0.5), half labelled 0 ("young"), half 1 ("old").

    Planted: in old images each of the first four defect positions is hot (+0.3) with
    probability 0.75, in young ones never; the last two positions are never hot. Null: every
    position is hot with probability 0.4 whatever the class.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = {}
    for index, label in enumerate(labels):
        image = rng.normal(0.5, 0.03, (40, 40)).astype(np.float32)
        if planted:
            p_hot = np.where(np.arange(len(DEFECTS[0])) < INFORMATIVE, 0.75 * label, 0.0)
        else:
            p_hot = np.full(len(DEFECTS[0]), 0.4)
        for r, c, is_hot in zip(*DEFECTS, rng.random(len(p_hot)) < p_hot):
            image[r, c] += np.float32(0.3) * is_hot
        images[f"img_{seed}_{index:03d}.tif"] = image
    return images, labels


def _split(images: dict[str, np.ndarray], labels: np.ndarray, n_train: int):
    paths = list(images)
    return paths[:n_train], labels[:n_train], paths[n_train:], labels[n_train:]


def _config(**changes):
    settings = {"epochs": 12, "batch_size": 4, "lr": 3e-3, "lr_drop_epoch": 9, "num_threads": 1, "device": "cpu",
                "seed": 3}
    settings.update(changes)
    return defect_cnn_preset("cpu", **settings)


@pytest.mark.cnn
@pytest.mark.parametrize("fusion", ["mean", "attention"])
def test_planted_defects_are_learned_and_null_data_stays_at_chance(fusion, tmp_path):
    torch = pytest.importorskip("torch")
    from pipeline.srnet.defect_cnn import fit_predict_defect_cnn

    images, labels = _images(60, seed=10, planted=True)
    train, y_train, test, y_test = _split(images, labels, 30)
    result = fit_predict_defect_cnn(train, y_train, test, *DEFECTS, _config(fusion=fusion), tmp_path / "planted",
                                    load=images.__getitem__, progress=False)
    assert result["proba"].shape == (30, 2) and result["proba"].dtype == np.float64
    np.testing.assert_allclose(result["proba"].sum(axis=1), 1.0)
    assert list(result["classes"]) == [0, 1] and result["n_defects"] == 6
    assert np.array_equal(result["predicted"], result["proba"].argmax(axis=1))
    accuracy = np.mean(result["predicted"] == y_test)
    assert accuracy >= 0.9, accuracy
    if fusion == "attention":  # the attention weights were trained, not left at the mean
        state = torch.load(tmp_path / "planted" / "defect_cnn.pt", weights_only=True)["model"]
        assert state["attention"].std() > 0

    images, labels = _images(100, seed=11, planted=False)
    train, y_train, test, y_test = _split(images, labels, 40)
    result = fit_predict_defect_cnn(train, y_train, test, *DEFECTS, _config(fusion=fusion), tmp_path / "null",
                                    load=images.__getitem__, progress=False)
    correct = int(np.sum(result["predicted"] == y_test))
    interval = binomtest(correct, len(y_test)).proportion_ci(confidence_level=0.99)
    assert interval.low <= 0.5 <= interval.high, (correct, len(y_test))


@pytest.mark.cnn
def test_zero_defects_fall_back_to_the_training_frequencies(tmp_path, monkeypatch, caplog):
    pytest.importorskip("torch")
    from pipeline.srnet import defect_cnn

    def fail(*args, **kwargs):
        raise AssertionError("nothing may be read or trained without defects")

    monkeypatch.setattr(defect_cnn, "_train_one_epoch", fail)
    labels = ["old"] * 4 + ["young"] * 8
    with caplog.at_level(logging.WARNING, logger="agetrace"):
        result = defect_cnn.fit_predict_defect_cnn([f"t{i}" for i in range(12)], labels, ["a", "b", "c"], [], [],
                                                   _config(), tmp_path / "work", load=fail, progress=False,
                                                   classes=["young", "old", "middle"])
    np.testing.assert_allclose(result["proba"], [[8 / 12, 4 / 12, 0.0]] * 3)
    assert list(result["predicted"]) == ["young"] * 3
    assert list(result["classes"]) == ["young", "old", "middle"]
    assert result["history"] == [] and result["n_defects"] == 0
    assert "falls back to chance" in result["note"] and "training class frequencies" in result["note"]
    assert any("falls back to chance" in record.getMessage() for record in caplog.records)
    assert not (tmp_path / "work" / "defect_cnn.pt").exists()


@pytest.mark.cnn
def test_a_finished_run_is_loaded_and_an_interrupted_one_resumes_bit_for_bit(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from pipeline.srnet import defect_cnn

    images, labels = _images(60, seed=10, planted=True)
    train, y_train, test, y_test = _split(images, labels, 30)
    config = _config(epochs=6, lr_drop_epoch=4)

    def run(workdir):
        return defect_cnn.fit_predict_defect_cnn(train, y_train, test, *DEFECTS, config, tmp_path / workdir,
                                                 load=images.__getitem__, progress=False)

    first = run("whole")
    assert len(first["history"]) == 6 and np.mean(first["predicted"] == y_test) >= 0.9
    real_epoch = defect_cnn._train_one_epoch

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must be loaded, not retrained")

    monkeypatch.setattr(defect_cnn, "_train_one_epoch", no_training)
    again = run("whole")
    assert np.array_equal(again["proba"], first["proba"]) and again["history"] == first["history"]

    calls = []

    def interrupted(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(defect_cnn, "_train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run("interrupted")
    assert torch.load(tmp_path / "interrupted" / "defect_cnn.pt", weights_only=True)["epoch"] == 3
    monkeypatch.setattr(defect_cnn, "_train_one_epoch", real_epoch)
    resumed = run("interrupted")
    assert np.array_equal(resumed["proba"], first["proba"])
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in first["history"]]

    # another configuration does not reuse the checkpoint
    other = defect_cnn.fit_predict_defect_cnn(train, y_train, test, *DEFECTS, config.replace(seed=4),
                                              tmp_path / "whole", load=images.__getitem__, progress=False)
    assert not np.array_equal(other["proba"], first["proba"])


@pytest.mark.cnn
def test_max_defects_keeps_the_strongest_by_llr(tmp_path):
    pytest.importorskip("torch")
    from pipeline.srnet.defect_cnn import fit_predict_defect_cnn

    images, labels = _images(12, seed=12, planted=True)
    train, y_train, test, _ = _split(images, labels, 8)
    llr = [1.0, 9.0, 2.0, 8.0, 7.0, 0.5]
    result = fit_predict_defect_cnn(train, y_train, test, *DEFECTS, _config(epochs=1, max_defects=3),
                                    tmp_path, load=images.__getitem__, progress=False, llr=llr)
    assert result["n_defects"] == 3 and "3 strongest of 6" in result["note"]
    torch = pytest.importorskip("torch")
    state = torch.load(tmp_path / "defect_cnn.pt", weights_only=True)
    assert (state["rows"], state["cols"]) == ([12, 28, 33], [30, 9, 33])


@pytest.mark.cnn
def test_errors_name_the_file_or_argument(tmp_path):
    pytest.importorskip("torch")
    from pipeline.srnet.defect_cnn import fit_predict_defect_cnn

    images, labels = _images(8, seed=13, planted=True)
    paths = list(images)
    images[paths[2]] = np.zeros((20, 20), np.float32)  # too small for the defect at (33, 33)
    with pytest.raises(ValueError, match=paths[2]):
        fit_predict_defect_cnn(paths, labels, [], *DEFECTS, _config(), tmp_path, load=images.__getitem__,
                               progress=False)

    def unreadable(path):
        raise OSError("truncated file")

    with pytest.raises(ValueError, match=f"{paths[0]}: could not read"):
        fit_predict_defect_cnn(paths, labels, [], *DEFECTS, _config(), tmp_path, load=unreadable, progress=False)
    with pytest.raises(ValueError, match="labels"):
        fit_predict_defect_cnn(paths, labels[:3], [], *DEFECTS, _config(), tmp_path, load=images.__getitem__)
    with pytest.raises(ValueError, match="rows and cols"):
        fit_predict_defect_cnn(paths, labels, [], [1, 2], [3], _config(), tmp_path, load=images.__getitem__)
    with pytest.raises(ValueError, match="llr"):
        fit_predict_defect_cnn(paths, labels, [], *DEFECTS, _config(), tmp_path, load=images.__getitem__,
                               llr=[1.0])


@pytest.mark.cnn
def test_image_model_fuses_patch_logits():
    torch = pytest.importorskip("torch")
    from pipeline.srnet.defect_model import DefectImageModel, DefectPatchNet

    assert sum(p.numel() for p in DefectPatchNet(3, 2, 32).parameters()) < 100_000
    torch.manual_seed(0)
    patches = torch.randn(4, 5, 3, 32, 32)
    for fusion in ("mean", "attention"):
        model = DefectImageModel(3, 2, 5, 32, fusion).eval()
        if fusion == "attention":
            with torch.no_grad():
                model.attention.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0, 0.5]))
        with torch.no_grad():
            per_patch = torch.stack([model.patch_net(patches[:, d]) for d in range(5)], dim=1)
            weights = torch.ones(5) / 5 if fusion == "mean" else torch.exp(model.attention) / torch.exp(
                model.attention).sum()
            want = (per_patch * weights[None, :, None]).sum(dim=1)
            got = model(patches)
        assert got.shape == (4, 2)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="batch, 5"):
        model(torch.randn(2, 4, 3, 32, 32))


@pytest.mark.parametrize("fusion", ["mean", "attention"])
def test_contributions_split_the_logit_margin_exactly_and_maps_cover_the_patch(fusion):
    torch = pytest.importorskip("torch")
    from pipeline.srnet.defect_cam import explain_defect_patches
    from pipeline.srnet.defect_model import DefectImageModel

    torch.manual_seed(3)
    model = DefectImageModel(3, 3, 5, 32, fusion).eval()
    if model.attention is not None:
        with torch.no_grad():
            model.attention.copy_(torch.randn(5))
    patches = np.random.default_rng(0).random((4, 5, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(patches)).double().numpy()     # the model as it predicts
    explained = explain_defect_patches(model, patches, "gradcam")
    assert np.array_equal(explained.targets, logits.argmax(axis=1))
    np.testing.assert_allclose(explained.logits, logits, rtol=1e-5, atol=1e-5)
    margin = logits[np.arange(4), explained.targets] - logits.mean(axis=1)
    np.testing.assert_allclose(explained.contributions.sum(axis=1), margin, rtol=1e-5, atol=1e-5)
    assert explained.maps.shape == (4, 5, 32, 32) and (explained.maps >= -1e-6).all()
    other = explain_defect_patches(model, patches, "gradcam++", targets=0)
    assert (other.targets == 0).all() and not model.training
    with pytest.raises(ValueError, match="CAM needs"):
        explain_defect_patches(model, patches, "cam")
