"""Atomic checkpoint files for SRNet training.

A checkpoint is a dict of tensors and plain Python values, written with :func:`torch.save` to
a temporary file in the target folder, flushed to disk and moved over the target with
:func:`os.replace`, so that an interruption leaves either the previous checkpoint or the new
one, never half a file.  It is read back with ``torch.load(weights_only=True)``, which refuses
arbitrary pickled objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pipeline.data.atomic import atomic_write

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (parent folders are created)."""
    path = Path(path)
    with atomic_write(path, "wb") as stream:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, stream)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU.

    Raises
    ------
    ValueError
        The file cannot be read as a checkpoint of this format.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable SRNet checkpoint ({exc}); delete it to train from scratch") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an SRNet checkpoint of format {CHECKPOINT_FORMAT}; delete it to train from scratch")
    return state

