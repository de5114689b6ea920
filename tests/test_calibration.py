"""Calibrated evidence (pipeline.analysis.calibration): metrics against lir and hand formulas,
ELUB bounding, calibration of uninformative / separated / overconfident scorers, cross-fitting."""

from __future__ import annotations

import numpy as np
import pytest
from lir.data.models import LLRData
from lir.metrics import cllr as lir_cllr
from lir.metrics import cllr_min as lir_cllr_min
from scipy.special import expit, log_softmax
from sklearn.base import clone
from sklearn.metrics import brier_score_loss

from pipeline.analysis.calibration import EvidenceCalibrator, cross_fitted_scores, log_scores
from pipeline.analysis.calibration_figures import reliability_figure, tippett_figure
from pipeline.analysis.metrics import cllr, cllr_min, evidence_metrics, top_label


# ------------------------------------------------------------------ references written by hand

def hand_cllr(llr, h1):
    """Brümmer & du Preez: 1/2 [mean_H1 log2(1 + 1/LR) + mean_H2 log2(1 + LR)]."""
    lr = 10.0 ** np.asarray(llr, dtype=float)
    h1 = np.asarray(h1, dtype=bool)
    return 0.5 * (np.mean(np.log2(1 + 1 / lr[h1])) + np.mean(np.log2(1 + lr[~h1])))


def hand_ece(proba, y_idx, n_bins=10):
    """Top-label ECE with right-closed bins (lo, hi], written as a plain loop."""
    total, n = 0.0, len(y_idx)
    conf = proba.max(axis=1)
    pred = proba.argmax(axis=1)
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(n) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0)]
        if members:
            acc = np.mean([pred[i] == y_idx[i] for i in members])
            avg = np.mean([conf[i] for i in members])
            total += len(members) / n * abs(acc - avg)
    return total


def binary_scores(rng, n, separation, *, multiplier=1.0, prior1=0.5):
    """Two-class log-softmax scores: s ~ N(+-separation/2, 1), logit = multiplier * separation * s.

    With multiplier 1 the logit is the true natural-log LR of class 1 against class 0.
    """
    y = (rng.random(n) < prior1).astype(int)
    s = rng.normal(size=n) + (y - 0.5) * separation
    logits = np.column_stack([np.zeros(n), multiplier * separation * s])
    return log_softmax(logits, axis=1), y


def three_class_scores(rng, n, separation=2.0):
    y = rng.integers(0, 3, n)
    centres = separation * np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.9]])
    x = centres[y] + rng.normal(size=(n, 2))
    logits = -0.5 * ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return log_softmax(logits, axis=1), y


# ------------------------------------------------------------------ metrics

def test_cllr_matches_lir_and_hand_formula():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    llr = rng.normal(size=300) * 1.5 + (y - 0.5) * 2
    ours = cllr(llr, y == 1)
    assert ours == pytest.approx(lir_cllr(LLRData(features=llr.copy(), labels=y)), rel=1e-12)
    assert ours == pytest.approx(hand_cllr(llr, y == 1), rel=1e-12)
    proba = np.column_stack([1 - expit(np.log(10) * llr), expit(np.log(10) * llr)])
    m = evidence_metrics(proba, np.column_stack([-llr, llr]), y, [0, 1])
    assert m["cllr"] == pytest.approx(ours, rel=1e-12)
    # a 1-D array is class 1's log10 LR
    assert evidence_metrics(proba, llr, y, [0, 1])["cllr"] == pytest.approx(ours, rel=1e-12)


def test_cllr_of_lr_one_is_one_and_large_llrs_do_not_overflow():
    y = np.array([0, 1, 1, 0, 1])
    assert cllr(np.zeros(5), y == 1) == pytest.approx(1.0, abs=1e-12)
    # correct and enormous: cost 0; misleading and enormous: large but finite
    assert cllr(np.array([-400.0, 400.0]), np.array([False, True])) == pytest.approx(0.0, abs=1e-12)
    big = cllr(np.array([400.0, -400.0]), np.array([False, True]))
    assert np.isfinite(big) and big == pytest.approx(400 * np.log2(10), rel=1e-9)


@pytest.mark.parametrize("decimals", [None, 1])
def test_cllr_min_matches_lir(decimals):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    llr = rng.normal(size=400) + (y - 0.5) * 1.5
    if decimals is not None:  # many tied scores
        llr = np.round(llr, decimals)
    ours = cllr_min(llr, y == 1)
    assert ours == pytest.approx(lir_cllr_min(LLRData(features=llr.copy(), labels=y)), rel=1e-9, abs=1e-12)
    assert ours <= cllr(llr, y == 1) + 1e-12


def test_cllr_min_hand_values():
    h1 = np.array([False, False, False, True, True, True])
    assert cllr_min(np.array([-3.0, -2, -1, 1, 2, 3]), h1) == pytest.approx(0.0, abs=1e-12)  # separable
    assert cllr_min(np.array([3.0, 2, 1, -1, -2, -3]), h1) == pytest.approx(1.0, abs=1e-12)  # reversed -> LR 1
    assert np.isnan(cllr(np.zeros(3), np.ones(3, bool)))


def test_k3_cllr_is_mean_of_one_vs_rest_lir():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 240)
    llr = rng.normal(size=(240, 3)) + 1.5 * (np.arange(3)[None, :] == y[:, None])
    proba = np.exp(llr) / np.exp(llr).sum(axis=1, keepdims=True)
    m = evidence_metrics(proba, llr, y, [0, 1, 2])
    ref = np.mean([lir_cllr(LLRData(features=llr[:, k].copy(), labels=(y == k).astype(int))) for k in range(3)])
    ref_min = np.mean([lir_cllr_min(LLRData(features=llr[:, k].copy(), labels=(y == k).astype(int)))
                       for k in range(3)])
    assert m["cllr"] == pytest.approx(ref, rel=1e-12)
    assert m["cllr_min"] == pytest.approx(ref_min, rel=1e-9)


@pytest.mark.parametrize("k", [2, 3])
def test_accuracy_ece_brier_confident_wrong_by_hand(k):
    rng = np.random.default_rng(3 + k)
    n = 500
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 3 + 2 * (np.arange(k)[None, :] == y[:, None])
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = evidence_metrics(proba, np.log10(proba), y, list(range(k)))
    pred = proba.argmax(axis=1)
    assert m["n"] == n
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["ece"] == pytest.approx(hand_ece(proba, y), abs=1e-12)
    onehot = np.eye(k)[y]
    if k == 2:
        assert m["brier"] == pytest.approx(brier_score_loss(y, proba[:, 1]), rel=1e-12)
    assert m["brier"] == pytest.approx(np.mean(np.sum((proba - onehot) ** 2, axis=1)) / 2, rel=1e-12)
    wrong_conf = sum(1 for i in range(n) if pred[i] != y[i] and proba[i].max() >= 0.99)
    assert wrong_conf > 0
    assert m["confident_wrong"] == pytest.approx(wrong_conf / n)
    conf, correct = top_label(proba, y, list(range(k)))
    assert np.allclose(conf, proba.max(axis=1)) and np.array_equal(correct, pred == y)


def test_metrics_with_string_classes_and_empty_input():
    y = np.array(["new", "old", "old"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    m = evidence_metrics(proba, np.log10(proba[:, 1] / proba[:, 0]), y, ["new", "old"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    empty = evidence_metrics(np.zeros((0, 2)), np.zeros((0, 2)), np.array([]), ["new", "old"])
    assert empty["n"] == 0 and np.isnan(empty["accuracy"])
    with pytest.raises(ValueError, match="not among classes"):
        evidence_metrics(proba, np.zeros(3), np.array(["new", "old", "mid"]), ["new", "old"])


# ------------------------------------------------------------------ calibrator

@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_elub_bounds_hold_and_respect_sample_size(method):
    rng = np.random.default_rng(4)
    S, y = binary_scores(rng, 300, 3.0, prior1=0.3)
    cal = EvidenceCalibrator(method=method).fit(S, y)
    n1, n0 = int(np.sum(y == 1)), int(np.sum(y == 0))
    lo, hi = cal.bounds_[1]
    # Vergeer et al.: no LR stronger than the data could have shown
    assert -np.log10(n1 + 1) - 1e-9 <= lo < 0 < hi <= np.log10(n0 + 1) + 1e-9
    assert np.allclose(cal.bounds_[0], [-hi, -lo])
    extreme = np.linspace(-1e3, 1e3, 2001)
    probe = np.vstack([S, log_softmax(np.column_stack([np.zeros_like(extreme), extreme]), axis=1)])
    llr = cal.log10_lr(probe)
    assert np.isfinite(llr).all()
    assert np.all(llr[:, 1] >= lo - 1e-12) and np.all(llr[:, 1] <= hi + 1e-12)
    assert llr[:, 1].min() == pytest.approx(lo) and llr[:, 1].max() == pytest.approx(hi)
    assert np.allclose(llr[:, 0], -llr[:, 1])
    # without bounding the same probe goes beyond them
    free = EvidenceCalibrator(method=method, bound=None).fit(S, y).log10_lr(probe)[:, 1]
    assert free.max() > hi + 0.1 and free.min() < lo - 0.1


def test_uninformative_scorer_gives_cllr_one_and_priors():
    rng = np.random.default_rng(5)
    n = 800
    y_tr, y_te = (rng.random(n) < 0.3).astype(int), (rng.random(n) < 0.3).astype(int)
    S_tr = log_softmax(rng.normal(size=(n, 2)) * 2, axis=1)  # independent of the labels
    S_te = log_softmax(rng.normal(size=(n, 2)) * 2, axis=1)
    # PAV follows noise more than a logistic fit does, so isotonic gets a looser worst case
    for method, worst in (("logistic", 0.05), ("isotonic", 0.1)):
        cal = EvidenceCalibrator(method=method).fit(S_tr, y_tr)
        llr, proba = cal.log10_lr(S_te), cal.predict_proba(S_te)
        m = evidence_metrics(proba, llr, y_te, [0, 1])
        assert m["cllr"] == pytest.approx(1.0, abs=0.03), method
        deviation = np.abs(proba[:, 1] - np.mean(y_tr))
        assert np.median(deviation) < 0.01 and deviation.max() < worst, method
        assert m["confident_wrong"] == 0


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_well_separated_scorer_is_strong_and_calibrated(method):
    rng = np.random.default_rng(6)
    S_tr, y_tr = binary_scores(rng, 400, 6.0)
    S_te, y_te = binary_scores(rng, 400, 6.0)
    cal = EvidenceCalibrator(method=method).fit(S_tr, y_tr)
    m = evidence_metrics(cal.predict_proba(S_te), cal.log10_lr(S_te), y_te, cal.classes_)
    assert m["cllr"] < 0.3
    assert m["ece"] < 0.05
    assert m["accuracy"] > 0.97
    if method == "logistic":
        assert m["confident_wrong"] == 0
    else:
        # PAV's outermost blocks are pure, so a test image beyond the last training image of the
        # other class gets the ELUB bound (LR ~200 here, p ~0.995): wrong about 1 in 200 times,
        # which is what p 0.995 means. Over seeds that is 0-2 of 400 images.
        assert m["confident_wrong"] <= 0.01


@pytest.mark.parametrize("seed", [7, 8, 9])
@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_overconfident_scorer_is_repaired_by_calibration(method, seed):
    rng = np.random.default_rng(seed)
    S_tr, y_tr = binary_scores(rng, 1500, 1.5, multiplier=100.0)  # logits 100x the true log LR
    S_te, y_te = binary_scores(rng, 1500, 1.5, multiplier=100.0)
    raw = evidence_metrics(np.exp(S_te), (S_te[:, 1] - S_te[:, 0]) / np.log(10), y_te, [0, 1])
    assert raw["ece"] > 0.05 and raw["confident_wrong"] > 0.01  # the raw softmax is dangerous
    cal = EvidenceCalibrator(method=method).fit(S_tr, y_tr)
    m = evidence_metrics(cal.predict_proba(S_te), cal.log10_lr(S_te), y_te, [0, 1])
    assert m["ece"] <= 0.05
    assert m["confident_wrong"] <= 0.01
    assert m["cllr"] < 0.8 < raw["cllr"]


def test_k2_posterior_uses_training_priors():
    rng = np.random.default_rng(10)
    S, y = binary_scores(rng, 500, 2.0, prior1=0.2)
    cal = EvidenceCalibrator().fit(S, y)
    prior1 = np.mean(y == 1)
    assert np.allclose(cal.priors_, [1 - prior1, prior1])
    llr, proba = cal.log10_lr(S), cal.predict_proba(S)
    expected = expit(np.log(10) * llr[:, 1] + np.log(prior1 / (1 - prior1)))
    assert np.allclose(proba[:, 1], expected) and np.allclose(proba.sum(axis=1), 1)
    even = cal.predict_proba(S, priors=[0.5, 0.5])
    assert np.allclose(even[:, 1], expit(np.log(10) * llr[:, 1]))
    # evidence points the right way
    assert llr[y == 1, 1].mean() > 0 > llr[y == 0, 1].mean()
    # a saved model gives the same answers
    import pickle

    assert np.array_equal(pickle.loads(pickle.dumps(cal)).log10_lr(S), llr)


def test_three_classes():
    rng = np.random.default_rng(11)
    S_tr, y_tr = three_class_scores(rng, 600)
    S_te, y_te = three_class_scores(rng, 600)
    cal = EvidenceCalibrator().fit(S_tr, y_tr)
    llr, proba = cal.log10_lr(S_te), cal.predict_proba(S_te)
    assert llr.shape == proba.shape == (600, 3) and cal.bounds_.shape == (3, 2)
    assert np.isfinite(proba).all() and proba.min() >= 0 and proba.max() <= 1
    assert np.allclose(proba.sum(axis=1), 1)
    for k in range(3):
        assert np.all(llr[:, k] >= cal.bounds_[k, 0] - 1e-12) and np.all(llr[:, k] <= cal.bounds_[k, 1] + 1e-12)
        assert llr[y_te == k, k].mean() > 0 > llr[y_te != k, k].mean()
    m = evidence_metrics(proba, llr, y_te, cal.classes_)
    assert m["accuracy"] > 0.6 and m["cllr"] < 0.9 and m["ece"] < 0.06
    assert np.array_equal(cal.predict(S_te), np.argmax(proba, axis=1))


# ------------------------------------------------------------------ degenerate input

@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_constant_scores_mean_no_evidence(method):
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0])
    S = np.full((8, 2), np.log(0.5))
    cal = EvidenceCalibrator(method=method).fit(S, y)
    assert np.array_equal(cal.log10_lr(S), np.zeros((8, 2)))
    assert np.array_equal(cal.bounds_, np.zeros((2, 2)))
    assert np.allclose(cal.predict_proba(S), [[5 / 8, 3 / 8]] * 8)
    assert cal.notes_


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_one_image_of_a_class(method):
    rng = np.random.default_rng(12)
    S, y = binary_scores(rng, 30, 2.0)
    y[:] = 1
    y[0] = 0
    cal = EvidenceCalibrator(method=method).fit(S, y)
    llr, proba = cal.log10_lr(S), cal.predict_proba(S)
    assert np.isfinite(llr).all() and np.isfinite(proba).all()
    assert proba.min() >= 0 and proba.max() <= 1
    assert cal.bounds_[1, 0] >= -np.log10(29 + 1) - 1e-9 and cal.bounds_[1, 1] <= np.log10(1 + 1) + 1e-9
    with pytest.raises(ValueError, match="at least 2 training images per class"):
        cross_fitted_scores(lambda tr, te: S[te], y)


def test_absent_class_gives_no_evidence_and_zero_probability():
    rng = np.random.default_rng(13)
    S, y = three_class_scores(rng, 90)
    y = np.where(y == 2, 1, y)  # class 2 absent from the calibration data
    cal = EvidenceCalibrator().fit(S, y, classes=[0, 1, 2])
    llr, proba = cal.log10_lr(S), cal.predict_proba(S)
    assert np.array_equal(llr[:, 2], np.zeros(90)) and np.array_equal(cal.bounds_[2], [0.0, 0.0])
    assert np.all(proba[:, 2] == 0) and np.allclose(proba.sum(axis=1), 1) and np.isfinite(proba).all()
    # two classes, only one present
    S2 = log_softmax(rng.normal(size=(10, 2)), axis=1)
    cal2 = EvidenceCalibrator().fit(S2, np.zeros(10, int), classes=[0, 1])
    assert np.array_equal(cal2.log10_lr(S2), np.zeros((10, 2)))
    assert np.allclose(cal2.predict_proba(S2), [[1.0, 0.0]] * 10)
    with pytest.raises(ValueError, match="pass classes"):
        EvidenceCalibrator().fit(S2, np.zeros(10, int))


def test_bad_and_infinite_scores():
    rng = np.random.default_rng(14)
    S, y = binary_scores(rng, 60, 2.0)
    with pytest.raises(ValueError, match="NaN"):
        EvidenceCalibrator().fit(np.where(np.arange(120).reshape(60, 2) == 5, np.nan, S), y)
    with pytest.raises(ValueError, match="method"):
        EvidenceCalibrator(method="kde").fit(S, y)
    with pytest.raises(ValueError, match="not fitted"):
        EvidenceCalibrator().log10_lr(S)
    # probabilities of exactly 0 and 1 (log-score -inf) stay usable
    hard = log_scores(np.eye(2)[(S[:, 1] > S[:, 0]).astype(int)])
    with np.errstate(divide="ignore"):
        raw_hard = np.log(np.eye(2)[(S[:, 1] > S[:, 0]).astype(int)])
    assert np.isneginf(raw_hard).any()
    for scores in (hard, raw_hard):
        cal = EvidenceCalibrator().fit(scores, y)
        assert np.isfinite(cal.log10_lr(scores)).all() and np.isfinite(cal.predict_proba(scores)).all()
    params = clone(EvidenceCalibrator(method="isotonic", bound=None)).get_params()
    assert params == {"method": "isotonic", "bound": None, "random_state": 0}


# ------------------------------------------------------------------ cross-fitting

def test_cross_fitted_scores_never_score_a_row_with_itself():
    y = np.array([0] * 12 + [1] * 7 + [2] * 9)
    calls = []

    def fit_score(train_idx, test_idx):
        calls.append((train_idx.copy(), test_idx.copy()))
        assert set(y[train_idx]) == {0, 1, 2}  # every class to fit on
        return np.column_stack([test_idx, -test_idx, np.full(test_idx.size, len(calls))]).astype(float)

    out = cross_fitted_scores(fit_score, y, n_folds=5, random_state=3)
    assert len(calls) == 5
    scored = np.concatenate([te for _, te in calls])
    assert np.array_equal(np.sort(scored), np.arange(y.size))  # every row exactly once
    for tr, te in calls:
        assert not set(tr) & set(te)
        assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(y.size))
    assert np.array_equal(out[:, 0], np.arange(y.size))  # each row got its own fold's answer
    # fewer folds when a class is small
    y_small = np.array([0] * 3 + [1] * 10 + [2] * 5)
    small_calls = []
    cross_fitted_scores(lambda tr, te: (small_calls.append(set(y_small[tr])), np.zeros((te.size, 3)))[1],
                        y_small, n_folds=5)
    assert small_calls == [{0, 1, 2}] * 3
    with pytest.raises(ValueError, match="shape"):
        cross_fitted_scores(lambda tr, te: np.zeros((te.size, 2)), y)
    # same random_state, same folds
    def folds(seed):
        seen = []
        cross_fitted_scores(lambda tr, te: (seen.append(tuple(te)), np.zeros((te.size, 3)))[1], y, random_state=seed)
        return seen

    assert folds(1) == folds(1) != folds(2)


def test_cross_fitting_removes_in_sample_optimism():
    """A memorising 1-nearest-neighbour scorer is perfect in-sample and at chance out of fold."""
    rng = np.random.default_rng(16)
    X = rng.normal(size=(120, 5))
    y = rng.integers(0, 2, 120)  # labels unrelated to X

    def fit_score(train_idx, test_idx):
        d = ((X[test_idx, None, :] - X[None, train_idx, :]) ** 2).sum(axis=2)
        nearest = y[train_idx][np.argmin(d, axis=1)]
        return log_scores(np.where(np.eye(2)[nearest] > 0, 0.95, 0.05))

    in_sample = fit_score(np.arange(120), np.arange(120))
    assert np.mean(in_sample.argmax(axis=1) == y) == 1.0
    oof = cross_fitted_scores(fit_score, y)
    assert abs(np.mean(oof.argmax(axis=1) == y) - 0.5) < 0.15
    cal = EvidenceCalibrator().fit(oof, y)
    assert np.all(np.abs(cal.log10_lr(in_sample)) < 0.5)  # no strong evidence from a memoriser


# ------------------------------------------------------------------ figures

def test_figures(tmp_path):
    from matplotlib.figure import Figure

    rng = np.random.default_rng(17)
    S_tr, y_tr = binary_scores(rng, 500, 1.5, multiplier=100.0)
    S_te, y_te = binary_scores(rng, 500, 1.5, multiplier=100.0)
    cal = EvidenceCalibrator().fit(S_tr, y_tr)
    raw = np.exp(S_te)
    curves = {"SVM raw": top_label(raw, y_te, [0, 1]), "SVM calibrated": top_label(cal.predict_proba(S_te), y_te, [0, 1])}
    fig = reliability_figure(curves, "Reliability: synthetic overconfident scorer")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "Reliability: synthetic overconfident scorer" and ax.get_ylabel()
    assert fig.axes[1].get_xlabel()
    assert any("n=500" in t.get_text() for t in ax.get_legend().get_texts())
    fig.savefig(tmp_path / "reliability.png", dpi=80)

    llrs = {"raw": ((S_te[:, 1] - S_te[:, 0]) / np.log(10), y_te == 1), "calibrated": (cal.log10_lr(S_te)[:, 1], y_te == 1)}
    fig = tippett_figure(llrs, "Tippett: synthetic", xlim=(-4, 4))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "log10 LR (class 1 vs class 0)" and ax.get_title() == "Tippett: synthetic"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum("n=" in t for t in texts) == 4
    assert ax.get_xlim() == (-4, 4)
    # values beyond the axis sit at its edge: the raw method's H1 curve reaches the right edge
    assert max(line.get_xdata().max() for line in ax.get_lines()[:2]) == pytest.approx(4)
    fig.savefig(tmp_path / "tippett.png", dpi=80)
    assert (tmp_path / "tippett.png").stat().st_size > 0 and (tmp_path / "reliability.png").stat().st_size > 0
