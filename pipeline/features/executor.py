"""Run per-batch work over a process pool, with progress, on a bounded number of cores.

Work goes out as batches (a task per batch of images, not per image). Each worker process runs
Numba, BLAS and OpenMP single-threaded, so ``workers`` processes use ``workers`` cores and the
kernels' own threads do not oversubscribe them. ``workers=1`` runs in the calling process, which keeps
tracebacks simple and is what tests and small jobs use.

:class:`DaskPool` sends the same batches to a Dask cluster instead (an existing scheduler,
or a ``LocalCluster``): ``dask[distributed]`` is an optional extra, imported only there.

Workers are started by a *forkserver*, never forked from the caller: a process that has run
Numba's parallel (OpenMP) kernels, or imported torch, cannot safely fork. Start-up then costs
an import per worker, so :class:`WorkerPool` keeps one pool alive for a whole experiment.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import numba
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

__all__ = ["default_workers", "map_batches", "batched", "WorkerPool", "DaskPool", "make_pool"]


def default_workers() -> int:
    """Cores available to this process (respects CPU affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _single_threaded_worker() -> None:
    # numba.set_num_threads limits this process's parallel regions; changing the
    # NUMBA_NUM_THREADS variable after Numba has started its pool is an error
    numba.set_num_threads(1)
    # BLAS and OpenMP pools too (numpy, scikit-learn): one per worker otherwise, each as wide as
    # the machine, and their spinning threads made the pool's model fits 3-4x slower (measured)
    threadpool_limits(limits=1)


class WorkerPool:
    """A reusable pool of single-threaded worker processes (a context manager).

    Parameters
    ----------
    workers : int, optional
        Number of processes; default :func:`default_workers`. With 1, no process is started
        and work runs in the caller.
    """

    def __init__(self, workers: int | None = None):
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        self._executor = None

    def __enter__(self) -> "WorkerPool":
        if self.workers > 1:
            context = multiprocessing.get_context("forkserver")
            self._executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                                 initializer=_single_threaded_worker)
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @property
    def executor(self):
        """Something with ``submit(func, batch)`` returning futures (over the process pool), or None
        when work runs in the caller."""
        return None if self._executor is None else _SingleThreadedExecutor(self._executor)


def _run_single_threaded(func: Callable, batch):
    """Run ``func(batch)`` with Numba, BLAS and OpenMP single-threaded (on a Dask worker, whatever
    started it). Limiting again at every task also reaches the BLAS and OpenMP libraries that the
    task's imports loaded after the worker started (threadpoolctl limits only loaded ones)."""
    _single_threaded_worker()
    return func(batch)


class _SingleThreadedExecutor:
    """Wrap an executor (a process pool, a Dask ``ClientExecutor``) so that every task runs single-threaded."""

    def __init__(self, executor):
        self._executor = executor

    def submit(self, func, batch):
        return self._executor.submit(_run_single_threaded, func, batch)


class DaskPool:
    """Run batches on a Dask cluster (a context manager with :class:`WorkerPool`'s interface).

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``). Every worker must have this
        package installed and see the image files (and the cache folder) at the same paths.
        None starts a ``LocalCluster`` of ``workers`` single-threaded worker processes.
    workers : int, optional
        Worker processes of the ``LocalCluster`` (default :func:`default_workers`); ignored
        with a scheduler address.

    Notes
    -----
    Each task runs Numba single-threaded, so a worker with ``t`` threads uses ``t`` cores.
    Results are gathered on the client, in batch order, and merged there.
    """

    def __init__(self, scheduler: str | None = None, workers: int | None = None):
        self.scheduler = scheduler
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        self._client = self._cluster = self._executor = None

    def __enter__(self) -> "DaskPool":
        try:  # an optional extra, so imported only when a Dask pool is opened
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ImportError("the Dask executor needs dask.distributed: install the extra with "
                              "`pip install -e \".[dask]\"` (or use --executor local)") from exc
        if self.scheduler is None:
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None)
            self._client = Client(self._cluster)
        else:
            try:
                self._client = Client(self.scheduler, timeout="30s")
            except OSError as exc:
                raise ConnectionError(f"could not reach the Dask scheduler at {self.scheduler!r} ({exc}); check "
                                   "the address, or leave --scheduler out to start a local cluster") from exc
        self._executor = _SingleThreadedExecutor(self._client.get_executor(pure=False))
        return self

    def __exit__(self, *exc) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = self._executor = None

    @property
    def executor(self):
        """Something with ``submit(func, batch)`` returning concurrent futures."""
        return self._executor


def make_pool(executor: str = "local", *, workers: int | None = None, scheduler: str | None = None):
    """A :class:`WorkerPool` (``'local'``) or :class:`DaskPool` (``'dask'``), not yet entered."""
    if executor == "local":
        if scheduler is not None:
            raise ValueError("a scheduler address needs executor='dask'")
        return WorkerPool(workers)
    if executor == "dask":
        return DaskPool(scheduler, workers)
    raise ValueError(f"executor must be 'local' or 'dask', got {executor!r}")


def batched(items: Sequence, size: int) -> list[Sequence]:
    """Split ``items`` into consecutive batches of at most ``size``."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    return [items[i:i + size] for i in range(0, len(items), size)]


def map_batches(func: Callable, batches: Iterable, *, workers: int | None = None, pool: WorkerPool | None = None,
                desc: str = "", progress: bool = True, unit: str = "batch",
                weights: Sequence[int] | None = None) -> list:
    """Apply ``func`` to each batch, in parallel processes, and return results in batch order.

    Parameters
    ----------
    func : callable
        A module-level (picklable) function of one batch.
    batches : iterable
        The batches.
    workers : int, optional
        Processes of a pool started for this call only (when no ``pool`` is given); default
        :func:`default_workers`. ``1`` runs serially in-process.
    pool : WorkerPool or DaskPool, optional
        An open pool to reuse (preferred for repeated calls).
    desc : str
        Progress-bar label.
    progress : bool, default True
        Show a progress bar (tqdm).
    unit : str
        Progress-bar unit.
    weights : sequence of int, optional
        Progress increment per batch (e.g. its number of images); 1 per batch by default.

    Returns
    -------
    list
        ``func(batch)`` for every batch, in the order given. An exception raised by ``func``
        propagates (callers catch per-image errors inside ``func`` and return them as data).
    """
    batches = list(batches)
    weights = list(weights) if weights is not None else [1] * len(batches)
    if pool is None:
        with WorkerPool(workers) as own:
            return map_batches(func, batches, pool=own, desc=desc, progress=progress, unit=unit, weights=weights)
    bar = tqdm(total=sum(weights), desc=desc, unit=unit, disable=not progress, leave=False)
    try:
        if pool.executor is None or len(batches) <= 1:
            results = []
            for batch, weight in zip(batches, weights):
                results.append(func(batch))
                bar.update(weight)
            return results
        results = [None] * len(batches)
        futures = {pool.executor.submit(func, batch): i for i, batch in enumerate(batches)}
        try:
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                bar.update(weights[i])
        except BrokenProcessPool as exc:
            raise RuntimeError(
                "a worker process died. If this was called from a script, the script's top-level code must "
                "be under `if __name__ == \"__main__\":` (worker processes import the main module, as "
                "Python's multiprocessing requires); otherwise the worker may have run out of memory. "
                "workers=1 runs everything in this process.") from exc
        return results
    finally:
        bar.close()
