r"""Sparse initialisation schemes behind one signature, for comparing them on any model.

Every scheme is a function

.. code-block:: text

    scheme(shape, density, *, gain=1.0, dtype=np.float32, rng=None, groups=1,
           center_density=None) -> (weight, mask)

on the canonical (PyTorch) layout, exactly like
:func:`eoi_core.sparse_orthogonal`: ``mask`` is boolean, the weight is zero
off it, ``rng`` follows SPEC 7, ``groups`` splits the ``out`` axis into
independent blocks.  So an adapter that calls ``get(name)(shape, density,
...)`` per layer can run any of them.

=================  ===========================================================  ==========================
name               what                                                         mask count per group block
=================  ===========================================================  ==========================
``eoi``            Exact Orthogonal Initialization (:func:`sparse_orthogonal`)  ``mask_count(d, b)``, floor
``sao``            expander mask + orthogonal values (:mod:`eoi_core.sao`)      ``rows * degree``, centre only
``ai``             approximate isometry (:mod:`eoi_core.isometry`)              ``mask_count(d, b)``, floor
``kaiming``        random mask, dense-fan-in Kaiming values                     ``mask_count(d, b)``
``kaiming_fanin``  random mask, actual-fan-in Kaiming values                    ``mask_count(d, b)``
=================  ===========================================================  ==========================

("floor": a density below the orthogonal floor ``min(out/g, in/g) /
block_size`` is an error; SAO accepts only the densities it can build and
names the nearest ones otherwise.)  ``center_density`` is the kernel-centre
policy of the schemes with a delta embedding (``eoi``, ``ai``); the others
have no centre policy and accept only ``None``.

Examples
--------
>>> from eoi_core import schemes
>>> sorted(schemes.SCHEMES)
['ai', 'eoi', 'kaiming', 'kaiming_fanin', 'sao']
>>> weight, mask = schemes.get("sao")((64, 64, 3, 3), 0.125 / 9, rng=0)
>>> int(mask.sum()) == 64 * 8
True
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np

from .api import sparse_orthogonal
from .isometry import approximate_isometry
from .random_sparse import kaiming, kaiming_fanin
from .sao import sao

__all__ = ["SCHEMES", "Scheme", "get", "with_options", "eoi", "sao", "ai", "kaiming", "kaiming_fanin"]

Scheme = Callable[..., "tuple[np.ndarray, np.ndarray]"]


def eoi(
    shape: Sequence[int],
    density: float,
    *,
    gain: float = 1.0,
    dtype: Any = np.float32,
    rng: Any = None,
    groups: int = 1,
    center_density: float | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """EOI: :func:`eoi_core.sparse_orthogonal` with the registry's signature (Numba engine)."""
    return sparse_orthogonal(
        shape, density, gain=gain, dtype=dtype, rng=rng, groups=groups, center_density=center_density
    )


def ai(
    shape: Sequence[int],
    density: float,
    *,
    gain: float = 1.0,
    dtype: Any = np.float32,
    rng: Any = None,
    groups: int = 1,
    center_density: float | str | None = None,
    steps: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate isometry (:func:`eoi_core.isometry.approximate_isometry`), ``steps`` gradient steps.

    ``functools.partial(ai, steps=1000)`` is a scheme too (the paper's setting).
    """
    return approximate_isometry(
        shape, density, gain=gain, dtype=dtype, rng=rng, groups=groups, center_density=center_density,
        steps=steps,
    )


#: Scheme name -> function; ``get`` also accepts a callable with the same signature.
SCHEMES: dict[str, Scheme] = {
    "eoi": eoi,
    "sao": sao,
    "ai": ai,
    "kaiming": kaiming,
    "kaiming_fanin": kaiming_fanin,
}


def get(scheme: str | Scheme) -> Scheme:
    """The scheme function for a name in :data:`SCHEMES`, or ``scheme`` itself if it is callable.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    TypeError
        For anything that is neither a string nor callable.

    Examples
    --------
    >>> get("eoi") is eoi
    True
    >>> get("orthogonal")
    Traceback (most recent call last):
    ...
    ValueError: scheme must be one of ['ai', 'eoi', 'kaiming', 'kaiming_fanin', 'sao'] or a callable ..., got 'orthogonal'
    """
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ValueError(
                f"scheme must be one of {sorted(SCHEMES)} or a callable (shape, density, *, gain, dtype, "
                f"rng, groups, center_density) -> (weight, mask), got {scheme!r}"
            )
        return SCHEMES[scheme]
    if callable(scheme):
        return scheme
    raise TypeError(
        f"scheme must be a name in {sorted(SCHEMES)} or a callable, got {scheme!r} of type "
        f"{type(scheme).__name__}"
    )


def with_options(scheme: str | Scheme, **options: Any) -> Scheme:
    """``get(scheme)`` with extra keyword options bound, e.g. ``with_options("ai", steps=1000)``."""
    return functools.partial(get(scheme), **options)


