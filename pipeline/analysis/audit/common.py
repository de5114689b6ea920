"""What every check shares: its result's base class, the context an audit hands to each check, and the cheap
scikit-learn model that the content and camera checks fit."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from pipeline.analysis.audit.stats import AuditLevels, Figure, worst_verdict

WIDE_INTERVAL = 0.4
"""Screening intervals wider than this get a low-power note."""

__all__ = ["AuditContext", "CheckResult", "content_model", "held_out", "majority_share", "model_seed", "prediction_rows",
           "single_threaded_blas"]


@dataclass
class CheckResult:
    """Result of one check: its figures, verdict and details.

    Attributes
    ----------
    name : str
        Check id (``content``, ``camera``, ``position``, ``patch``).
    title, question : str
        What the check is and what it asks.
    figures : list of Figure
        Verdict-bearing and context figures.
    verdict : str or None
        Most severe verdict of the ``verdict`` figures; None when none could be computed.
    susceptibility : str or None
        Most severe verdict of the ``susceptibility`` figures (a stress test: would the model
        read a non-age cue if the data let it?); None when the check has none.
    notes : list of str
        Interpretation, caveats, and why a part was skipped.
    details : dict
        Check-specific tables (per device, per position, ...), JSON-ready.
    seconds : float
        Wall time of the check.
    predictions : list of dict
        Per-image predictions of its models (written to ``predictions.csv``).
    """

    name: str
    title: str
    question: str
    figures: list[Figure] = field(default_factory=list)
    verdict: str | None = None
    susceptibility: str | None = None
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    seconds: float = 0.0
    predictions: list = field(default_factory=list)

    def settle(self) -> None:
        """Set :attr:`verdict` and :attr:`susceptibility` from the judged figures."""
        verdicts = [f.verdict for f in self.figures if f.role == "verdict"]
        self.verdict = worst_verdict(verdicts) if verdicts else None
        stress = [f.verdict for f in self.figures if f.role == "susceptibility"]
        self.susceptibility = worst_verdict(stress) if stress else None
        wide = [f.key for f in self.figures if f.role in ("verdict", "susceptibility") and f.verdict == "no bias found"
                and f.ci[1] - f.ci[0] > WIDE_INTERVAL]
        if wide:
            self.notes.append(f"Little power: the interval of {', '.join(wide)} spans more than "
                              f"{100 * WIDE_INTERVAL:.0f} points, so 'no bias found' there rules out only large "
                              "biases; more test images would narrow it.")

    def skip(self, why: str, started: float):
        """Record why the check did not run and the time it took; return the result itself.

        Parameters
        ----------
        why : str
            Sentence completing "Skipped: ", naming what is missing and what to do.
        started : float
            ``time.perf_counter()`` when the check began.
        """
        self.notes.append(f"Skipped: {why}")
        self.seconds = time.perf_counter() - started
        return self

    def figure(self, key: str) -> Figure:
        """The figure called ``key``."""
        for f in self.figures:
            if f.key == key:
                return f
        raise KeyError(f"check {self.name!r} has no figure {key!r} (has {[f.key for f in self.figures]})")

    def to_dict(self) -> dict:
        """JSON-ready dict (predictions excluded: they go to predictions.csv)."""
        return {"name": self.name, "title": self.title, "question": self.question, "verdict": self.verdict,
                "susceptibility": self.susceptibility,
                "figures": [f.to_dict() for f in self.figures], "notes": list(self.notes),
                "details": self.details, "seconds": round(self.seconds, 2)}


@dataclass
class AuditContext:
    """What a check needs: the images, the splits, the settings, the shared models.

    Attributes
    ----------
    bank : ImageBank
    levels : AuditLevels
    seed : int
    out : Path or None
        Output folder (split files); None writes nothing.
    content_splits : dict or None
        device -> [(train_idx, test_idx)] of the experiment's splits.
    cnn_split : CnnSplit or None
    cnn : CnnSettings or None
        None: the CNN parts are skipped.
    store : ModelStore or None
    progress : bool
    """

    bank: object
    levels: AuditLevels
    seed: int = 0
    out: Path | None = None
    content_splits: dict | None = None
    cnn_split: object | None = None
    cnn: object | None = None
    store: object | None = None
    progress: bool = False


def majority_share(labels) -> float:
    """Share of the most frequent value in ``labels`` (the accuracy of always guessing it)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return float("nan")
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / labels.size)


def held_out(ctx: AuditContext) -> tuple[np.ndarray, np.ndarray, float]:
    """Test indices of the CNN split, their labels, and the majority-class share among them (chance)."""
    test = ctx.cnn_split.test
    truth = ctx.bank.labels[test]
    return test, truth, majority_share(truth)


def prediction_rows(check: str, model: str, bank, indices, truth, proba, classes, root: Path | None = None) -> list:
    """One dict per image: check, model, image, device, true, predicted, probabilities."""
    rows = []
    classes = list(np.asarray(classes).tolist())
    for i, t, p in zip(np.asarray(indices).tolist(), np.asarray(truth).tolist(), np.asarray(proba)):
        path = bank.samples[i].path
        if root is not None:
            try:
                path = str(Path(path).relative_to(root))
            except ValueError:
                pass
        row = {"check": check, "model": model, "image": path, "device": bank.samples[i].device,
               "true": t, "predicted": classes[int(np.argmax(p))]}
        row.update({f"p_{c}": float(v) for c, v in zip(classes, p)})
        rows.append(row)
    return rows


def model_seed(seed: int, name: str) -> int:
    """Seed of the audit's model called ``name``, derived from the audit's root seed."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0]) % (2 ** 31)


def single_threaded_blas():
    """Context manager limiting BLAS/OpenMP pools to one thread (scikit-learn's many tiny fits).

    The content baselines are hundreds of fits on matrices of a few hundred rows; with a
    multi-threaded BLAS on a busy machine their threads spin and wait (measured: 27 s
    instead of 1.9 s for 80 fits under a load of 12 on 2 cores).
    """
    return threadpool_limits(limits=1)


def content_model(kind: str, n_train: int, seed: int = 0):
    """The scikit-learn pipeline of one content-only baseline (``colour`` or ``thumbnail``).

    The camera check fits the ``colour`` one too, as its cheap model of camera processing.
    """
    classifier = LogisticRegression(C=1.0, max_iter=5000)
    if kind == "colour":
        return make_pipeline(StandardScaler(), classifier)
    if kind == "thumbnail":
        return make_pipeline(StandardScaler(), PCA(n_components=max(1, min(20, n_train - 1)), random_state=seed),
                             classifier)
    raise ValueError(f"unknown content model {kind!r}; use 'colour' or 'thumbnail'")

