import numpy as np
import pytest

from pipeline.data.splits import (Split, oversample_minority, read_split, stratified_splits,
                                  write_split)


def test_stratified_per_class_and_independent_runs():
    labels = np.array([0] * 60 + [1] * 31)
    runs = stratified_splits(labels, n_runs=10, test_size=0.1, seed=7)
    assert len(runs) == 10
    for train, test, _ in runs:
        assert np.intersect1d(train, test).size == 0
        assert np.union1d(train, test).size == labels.size
        assert (labels[test] == 0).sum() == 6 and (labels[test] == 1).sum() == 3
    tests = [tuple(t) for _, t, _ in runs]
    assert len(set(tests)) == 10
    again = stratified_splits(labels, n_runs=10, test_size=0.1, seed=7)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(runs, again))
    other = stratified_splits(labels, n_runs=10, test_size=0.1, seed=8)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(runs, other))


def test_every_image_is_tested_about_test_size_of_the_runs():
    labels = np.repeat([0, 1], 50)
    runs = stratified_splits(labels, n_runs=400, test_size=0.1, seed=1)
    freq = np.bincount(np.concatenate([t for _, t, _ in runs]), minlength=100) / 400
    # each image is a test image with probability 0.1: binomial(400, 0.1) has sd 0.015
    assert abs(freq.mean() - 0.1) < 1e-12
    assert freq.min() > 0.1 - 5 * 0.015 and freq.max() < 0.1 + 5 * 0.015


@pytest.mark.parametrize("labels,msg", [([0, 0, 1], "fewer than 2"), ([], "non-empty")])
def test_bad_labels(labels, msg):
    with pytest.raises(ValueError, match=msg):
        stratified_splits(labels)


def test_split_file_round_trip(tmp_path):
    split = Split(3, 12345, ("a.jpg", "dir/b,c.jpg"), (0, 1), ('q"uote.jpg',), (1,))
    write_split(tmp_path / "s.csv", split)
    assert read_split(tmp_path / "s.csv") == split
    (tmp_path / "bad.csv").write_text("run,seed,subset,path,label\n1,2,validate,x.jpg,0\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: subset"):
        read_split(tmp_path / "bad.csv")


def test_oversampling_balances_and_keeps_every_sample():
    labels = np.array([0] * 10 + [1] * 3)
    idx = oversample_minority(labels, random_state=0)
    assert np.bincount(labels[idx]).tolist() == [10, 10]
    assert set(idx.tolist()) == set(range(13))
    assert np.array_equal(idx, oversample_minority(labels, random_state=0))
