"""Where and how torch runs: device choice, CPU threads and determinism."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """``'auto'`` -> CUDA when available, CPU otherwise; other specs are checked and returned.

    Raises
    ------
    ValueError
        A CUDA device was asked for but torch sees none.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} was requested but torch sees no CUDA device; use device='auto' or 'cpu'")
    return device


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_runtime(num_threads: int | None, device: torch.device, deterministic: bool) -> Iterator[None]:
    """Set torch's CPU thread count and (on CPU) deterministic algorithms, restoring both after.

    Parameters
    ----------
    num_threads : int or None
        Threads for intra-op parallelism; None means :func:`available_cores`.
    device : torch.device
        Determinism is only switched on for CPU runs: on CUDA it would need
        ``CUBLAS_WORKSPACE_CONFIG`` and slower kernels, and GPU runs are not promised to repeat
        bit for bit.
    deterministic : bool
        Ask for deterministic algorithms.
    """
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(num_threads or available_cores())
    if deterministic and device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
