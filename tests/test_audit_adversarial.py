"""Adversarial-perturbation check: planted positive (an edge/texture reader) and negative (a defect reader)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.analysis.audit.adversarial import (  # noqa: E402
    DEFECT_BOX,
    defect_mask,
    draw_examples,
    edge_mask,
    energy_shares,
    judge,
    measure,
)
from pipeline.analysis.audit.stats import FOUND, NO_BIAS, AuditLevels  # noqa: E402
from pipeline.srnet.adversarial import perturb_until_flip  # noqa: E402

P, N = 24, 16
DEFECT = (7, 13)
LEVELS = AuditLevels(2, 0.05, 0.01)
THRESHOLD_EDGE = 0.8
"""Planted positive: at least this share of images must put more energy on edges than their area share."""


def _scenes(seed=0):
    """Crops with a bright rectangle (content edges) on a flat background, a little noise, one defect pixel."""
    rng = np.random.default_rng(seed)
    crops = np.full((N, 3, P, P), 0.3, np.float32)
    for i in range(N):
        r0, c0 = rng.integers(2, 10, 2)
        crops[i, :, r0:r0 + rng.integers(6, 12), c0:c0 + rng.integers(6, 12)] = 0.6 + 0.2 * (i % 2)
    crops += rng.normal(0, 0.005, crops.shape).astype(np.float32)
    crops[:, :, DEFECT[0], DEFECT[1]] = np.where(np.arange(N) % 2 == 0, 0.45, 0.8)[:, None]
    return np.clip(crops, 0, 1)


class TextureReader(torch.nn.Module):
    """Class 1 when the crop holds much high-pass (edge) energy: a scene-content cue."""

    def __init__(self, bias):
        super().__init__()
        lap = torch.tensor([[0., 1., 0.], [1., -4., 1.], [0., 1., 0.]])
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1, bias=False)
        self.conv.weight.data[:] = lap / 3
        self.bias = bias

    def forward(self, x):
        score = self.conv(x)[:, :, 1:-1, 1:-1].square().mean(dim=(1, 2, 3)) * 100 - self.bias
        return torch.stack([-score, score], dim=1)


class DefectReader(torch.nn.Module):
    """Class 1 when the defect pixel is bright: hand-set weights on one pixel only."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        score = self.w * (x[:, :, DEFECT[0], DEFECT[1]].mean(dim=1) - 0.6)
        return torch.stack([-score, score], dim=1)


class Constant(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        one = torch.ones(len(x)) + 0 * x.sum() + 0 * self.w
        return torch.stack([one, -one], dim=1)


def _points():
    return [np.array([DEFECT]) for _ in range(N)]


def _reference_share(delta, crop, point):
    """numpy reference: energy share on the top-quartile gradient pixels outside the 5x5 defect box."""
    luma = crop.mean(axis=0).astype(np.float64)
    gy, gx = np.gradient(luma)
    mag = np.sqrt(gx ** 2 + gy ** 2)
    order = np.argsort(-mag.ravel(), kind="stable")[: P * P // 4]
    edges = np.zeros(P * P, bool)
    edges[order] = True
    edges = edges.reshape(P, P)
    box = np.zeros((P, P), bool)
    box[point[0] - 2:point[0] + 3, point[1] - 2:point[1] + 3] = True
    edges &= ~box
    e = (delta.astype(np.float64) ** 2).sum(axis=0)
    return e[edges].sum() / e.sum(), e[box].sum() / e.sum(), edges.mean(), box.mean()


def _texture_model(crops):
    with torch.no_grad():
        scores = TextureReader(0.0)(torch.from_numpy(crops))[:, 1].numpy()
    return TextureReader(float(np.median(scores))).eval()


def test_masks():
    crop = _scenes()[0]
    assert edge_mask(crop).sum() == P * P // 4
    m = defect_mask(np.array([[0, 0], [10, 10]]), P)
    assert m[:3, :3].all() and m.sum() == 9 + DEFECT_BOX ** 2


def test_planted_positive_edge_reader_is_flagged():
    crops = _scenes()
    m = measure(_texture_model(crops), crops, _points())
    assert m["flipped"].mean() >= 0.8
    for i in range(N):
        ref_edge, ref_defect, ref_area, _ = _reference_share(m["delta"][i], crops[i], DEFECT)
        assert m["edge_share"][i] == pytest.approx(ref_edge, rel=1e-9)
        assert m["edge_area"][i] == pytest.approx(ref_area)
        assert m["defect_share"][i] == pytest.approx(ref_defect, rel=1e-9, abs=1e-12)
    assert np.mean(m["edge_share"] > m["edge_area"]) >= THRESHOLD_EDGE
    figures = judge("balanced", "toy", m, LEVELS, "verdict")
    edge = next(f for f in figures if f.key == "balanced_edge_energy")
    assert edge.verdict == FOUND


def test_planted_negative_defect_reader_passes():
    crops = _scenes()
    m = measure(DefectReader().eval(), crops, _points())
    assert m["flipped"].all()
    # every bit of energy sits at the defect pixel: inside its box, off the edges
    assert np.all(m["defect_share"] > 0.99)
    assert np.all(m["edge_share"] < 0.01)
    figures = judge("balanced", "toy", m, LEVELS, "verdict")
    assert next(f for f in figures if f.key == "balanced_edge_energy").verdict == NO_BIAS
    defect = next(f for f in figures if f.key == "balanced_defect_energy")
    assert defect.ci[0] > 0.5  # reads the defects: above the chance of 0.5


def test_constant_predictor_is_neither():
    crops = _scenes()
    m = measure(Constant().eval(), crops, _points())
    assert not m["flipped"].any()
    assert not np.any(m["edge_share"] > m["edge_area"])  # no energy anywhere: never flagged, never cleared
    assert not np.any(m["defect_share"] > 0.99)


def test_perturbation_is_bounded_and_stops_at_flip():
    crops = _scenes()
    result = perturb_until_flip(DefectReader().eval(), crops, step=0.01, max_steps=50, epsilon=0.2)
    assert np.abs(result.delta).max() <= 0.2 + 1e-6
    assert (result.steps <= 50).all() and result.flipped.all()
    assert (result.final != result.original).all()
    # one step fewer would not have flipped: the defect pixel moved by at most `step` per step
    moved = np.abs(result.delta[:, :, DEFECT[0], DEFECT[1]]).max(axis=1)
    assert np.all(moved <= 0.01 * result.steps + 1e-6)


def test_figure_draws():
    crops = _scenes()
    m = measure(DefectReader().eval(), crops[:3], _points()[:3])
    fig = draw_examples({"crops": crops[:3], "deltas": {"balanced": m["delta"]}, "flipped": {"balanced": m["flipped"]},
                         "points": _points()[:3], "labels": np.array([0, 1, 0]), "devices": ["a", "b", "c"]})
    assert fig is not None and len(fig.axes) == 6
