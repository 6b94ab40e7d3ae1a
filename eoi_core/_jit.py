"""The one place that decides how the core's Numba kernels are compiled.

Numba's on-disk cache (``cache=True``) saves seconds of compilation per
process, but it needs a writable place: ``NUMBA_CACHE_DIR``, a ``__pycache__``
next to the module, or the user's cache directory.  A read-only install (a
system site-packages, a container image, a zip) may have none of them, and
then ``numba.njit(cache=True)`` raises ``RuntimeError: cannot cache function
...: no locator available``.  :func:`jit` asks for the cache and, when no
locator is available, compiles without it (once per process, as any
uncached Numba function does) and says so in a single warning per process.

>>> from eoi_core._jit import jit
>>> @jit(nogil=True)
... def twice(x):
...     return 2 * x
>>> twice(21)
42
"""

from __future__ import annotations

import inspect
import os
import threading
import warnings
from typing import Any, Callable

from numba import njit

__all__ = ["NumbaCacheWarning", "jit"]


class NumbaCacheWarning(RuntimeWarning):
    """The kernels compile in every process because no Numba cache is writable."""


_warned = False
_lock = threading.Lock()


def _warn_once(name: str, error: RuntimeError) -> None:
    global _warned
    with _lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        f"eoi_core: Numba cannot cache compiled kernels ({error}); they are compiled "
        f"in this process without caching (first seen for {name!r}). Set NUMBA_CACHE_DIR "
        "to a writable directory to keep them between runs.",
        NumbaCacheWarning,
        stacklevel=3,
    )


def jit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(cache=True, **options)``, or without the cache when none is writable.

    Parameters
    ----------
    **options
        Keyword options for :func:`numba.njit` (``nogil=True``, ...); ``cache``
        is decided here and may not be passed.

    Returns
    -------
    callable
        A decorator turning a Python function into a Numba dispatcher.  The
        dispatcher caches its machine code on disk when Numba finds a writable
        cache locator, and otherwise compiles on first call in each process; the
        first fallback in a process emits one :class:`NumbaCacheWarning`.  A
        function with no source file (typed at a prompt, or in a doctest) is
        never cached, silently.

    Examples
    --------
    >>> @jit()
    ... def add(a, b):
    ...     return a + b
    >>> add(1, 2)
    3
    """
    if "cache" in options:
        raise TypeError("jit() decides caching itself; do not pass cache=")

    def decorate(function: Callable[..., Any]) -> Any:
        if not os.path.isfile(inspect.getsourcefile(function) or ""):
            # Defined interactively or in a doctest: there is no file to key a cache on.
            return njit(cache=False, **options)(function)
        try:
            # Numba looks for a cache locator here, at decoration time.
            return njit(cache=True, **options)(function)
        except RuntimeError as error:
            if "no locator available" not in str(error):
                raise
            _warn_once(function.__qualname__, error)
            return njit(cache=False, **options)(function)

    return decorate
