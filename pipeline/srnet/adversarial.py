"""Adversarial perturbations of a crop network (the camera-bias paper's Fig. 5), behind a numpy API.

:func:`perturb_until_flip` pushes each input, by iterative gradient steps, until the network's
predicted class changes: gradient *ascent* on the cross-entropy of the class it predicts at the
start (untargeted) or *descent* on the cross-entropy of a given target class. Each step is
bounded in L-inf: the gradient is scaled so that its largest entry moves by ``step`` (an
L-inf-normalised gradient step, not the sign of the gradient: a sign step moves every pixel by
the same amount and so would spread the perturbation's energy evenly by construction, hiding
where the network looks). The perturbed input is clipped to ``[lo, hi]`` and to ``epsilon``
around the original after each step; an input stops as soon as its class flips, and after at
most ``max_steps`` steps.

Where the perturbation's energy (its square) sits tells which pixels the decision leans on:
on a network that reads hot pixels it concentrates at the defects, on one that reads scene
content, at edges and texture.

torch is imported here (a :mod:`pipeline.srnet` module); callers outside pipeline/srnet import
this module inside the functions that use it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Perturbation", "perturb_until_flip"]


class Perturbation(NamedTuple):
    """Result of :func:`perturb_until_flip`, one entry per input.

    Attributes
    ----------
    delta : ndarray, float32, (N, C, P, P)
        Perturbed input minus original input.
    steps : ndarray of int, (N,)
        Steps taken (the step that flipped the class, or ``max_steps``).
    flipped : ndarray of bool, (N,)
        Whether the predicted class changed (to ``target``, when given).
    original, final : ndarray of int, (N,)
        Predicted class before and after.
    """

    delta: np.ndarray
    steps: np.ndarray
    flipped: np.ndarray
    original: np.ndarray
    final: np.ndarray


def perturb_until_flip(model, inputs: np.ndarray, *, step: float = 0.01, max_steps: int = 50,
                       epsilon: float | None = 0.25, target=None, lo: float = 0.0, hi: float = 1.0,
                       batch_size: int = 32) -> Perturbation:
    """Perturb each input until ``model`` (eval mode) changes its predicted class.

    Parameters
    ----------
    model : torch.nn.Module
        A crop network returning logits (N, K); it is put in eval mode and not changed.
    inputs : ndarray, float32, (N, C, P, P)
    step : float
        L-inf size of one step (the largest pixel change per step).
    max_steps : int
        Steps at most per input.
    epsilon : float or None
        L-inf bound of the whole perturbation (None: only ``step * max_steps``).
    target : array-like of int, optional
        Class each input is pushed toward (descent on its loss); default: away from the
        predicted class (ascent on its loss).
    lo, hi : float
        Valid input range.
    batch_size : int

    Returns
    -------
    Perturbation
    """
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be (N, C, P, P), got shape {inputs.shape}")
    if not step > 0 or int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"step must be > 0 and max_steps a positive integer, got {step!r}, {max_steps!r}")
    n = len(inputs)
    targets = None if target is None else np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))
    delta = np.zeros_like(inputs)
    steps = np.zeros(n, np.int64)
    flipped = np.zeros(n, bool)
    original = np.zeros(n, np.int64)
    final = np.zeros(n, np.int64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            x0 = torch.from_numpy(inputs[sl]).to(device)
            with torch.no_grad():
                first = model(x0).argmax(dim=1)
            aim = first if targets is None else torch.from_numpy(np.ascontiguousarray(targets[sl])).to(device)
            sign = 1.0 if targets is None else -1.0  # ascent away from the class / descent toward the target
            x = x0.clone()
            active = torch.ones(len(x0), dtype=torch.bool, device=device)
            count = torch.zeros(len(x0), dtype=torch.int64, device=device)
            flip = torch.zeros(len(x0), dtype=torch.bool, device=device)
            for _ in range(int(max_steps)):
                if not bool(active.any()):
                    break
                xs = x[active].detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = F.cross_entropy(model(xs), aim[active], reduction="sum")
                    (grad,) = torch.autograd.grad(loss, xs)
                scale = grad.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
                moved = xs.detach() + sign * step * grad / scale
                base = x0[active]
                if epsilon is not None:
                    moved = torch.minimum(torch.maximum(moved, base - epsilon), base + epsilon)
                x[active] = moved.clamp(lo, hi)
                count[active] += 1
                with torch.no_grad():
                    now = model(x[active]).argmax(dim=1)
                hit = (now != first[active]) if targets is None else (now == aim[active])
                idx = active.nonzero().flatten()
                flip[idx[hit]] = True
                active[idx[hit]] = False
            with torch.no_grad():
                last = model(x).argmax(dim=1)
            delta[sl] = (x - x0).cpu().numpy()
            steps[sl] = count.cpu().numpy()
            flipped[sl] = flip.cpu().numpy()
            original[sl] = first.cpu().numpy()
            final[sl] = last.cpu().numpy()
    finally:
        model.train(was_training)
    return Perturbation(delta, steps, flipped, original, final)
