"""How many threads the Numba engine uses, and the pool they run on.

The engine splits the value pass into bands of rows of the wide Givens
matrix (each row evolves on its own) and runs the bands on Python threads;
its kernels release the GIL, so the bands run truly in parallel.  Results are
bit-identical for every thread count: a band writes its own part of the
output and nothing else.

The count is, in order of precedence, what :func:`set_num_threads` set, the
environment variable ``EOI_NUM_THREADS`` (read once, when first needed), or
the number of CPUs this process may run on (``os.sched_getaffinity``), at
most ``MAX_DEFAULT_THREADS``.

No ``numba.prange``: Numba's threading layers abort when two Python threads
call parallel kernels at once, which JAX callbacks and concurrent layer
initialisation do.  A :class:`concurrent.futures.ThreadPoolExecutor` over
``nogil`` kernels has no such limit.

>>> import eoi_core
>>> previous = eoi_core.get_num_threads()
>>> eoi_core.set_num_threads(1)
>>> eoi_core.get_num_threads()
1
>>> eoi_core.set_num_threads(previous)
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

from .checks import check_int

__all__ = ["get_num_threads", "set_num_threads", "run_all", "start", "MAX_DEFAULT_THREADS", "ENV_VAR"]

MAX_DEFAULT_THREADS = 8
ENV_VAR = "EOI_NUM_THREADS"

_lock = threading.Lock()
_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _default() -> int:
    value = os.environ.get(ENV_VAR)
    if value is not None and value.strip():
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"{ENV_VAR} must be a positive integer, got {value!r}")
        return count
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_THREADS))


def get_num_threads() -> int:
    """Threads the engine uses (see the module docstring for the default)."""
    global _threads
    with _lock:
        if _threads is None:
            _threads = _default()
        return _threads


def set_num_threads(threads: int) -> None:
    """Use ``threads`` threads (a positive int) from now on; 1 runs everything on the caller's thread.

    Raises
    ------
    TypeError, ValueError
        When ``threads`` is not a positive integer.
    """
    global _threads
    threads = check_int(threads, "threads")
    with _lock:
        _threads = threads


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool when one is needed."""
    global _pool, _pool_size, _lock
    _lock = threading.Lock()
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            # The old pool finishes what it was given and is dropped; callers
            # holding futures of it are unaffected.
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eoi")
            _pool_size = workers
        return _pool


def run_all(tasks: Sequence[Callable[[], Any]], threads: int | None = None) -> None:
    """Run every task; with more than one thread, on the pool and the caller's thread together.

    Tasks must write disjoint memory.  The first exception raised by a task is
    re-raised here, after every task has finished.
    """
    threads = get_num_threads() if threads is None else threads
    if threads <= 1 or len(tasks) <= 1:
        threads = 1  # no helpers: the caller runs every task
    # Tasks are taken in order from one shared counter, so threads that finish
    # early take more (the tasks' costs differ).  A failing task does not stop
    # the others: the caller gets the first error once every task has run.
    lock = threading.Lock()
    cursor = iter(range(len(tasks)))
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            try:
                tasks[index]()
            except BaseException as raised:
                with lock:
                    errors.append(raised)

    helpers = min(threads, len(tasks)) - 1
    futures = [_executor(helpers).submit(worker) for _ in range(helpers)] if helpers else []
    worker()
    for future in futures:
        if not future.cancel():  # a helper that never started (the pool was busy) has nothing left to do
            future.result()
    if errors:
        raise errors[0]


def start(task: Callable[[], Any], threads: int | None = None) -> Future:
    """Run ``task`` on the pool from now on, beside the caller; join it with ``.result()``.

    The pool is sized for a later :func:`run_all` with ``threads`` threads, so
    its helpers queue behind ``task`` rather than start a thread more.
    """
    threads = get_num_threads() if threads is None else threads
    return _executor(max(1, threads - 1)).submit(task)
