r"""From a JAX PRNG key to the integer seed the core takes.

The core's randomness is a NumPy ``Generator`` (SPEC 7), so every JAX entry
point turns its ``key`` into one non-negative Python ``int``:

.. math:: \mathrm{seed} = \sum_{i=0}^{w-1} \mathrm{word}_i \, 2^{32 (w - 1 - i)},

the key's ``w`` uint32 words read big-endian (``jax.random.key_data``).  Both
new-style typed keys (``jax.random.key``) and raw ``uint32[2]`` keys
(``jax.random.PRNGKey``) work, and for the default threefry implementation
``jax.random.PRNGKey(s)`` and ``jax.random.key(s)`` give ``seed == s`` for
``0 <= s < 2**32``, so a JAX result can be reproduced with
``eoi_core.sparse_orthogonal(..., rng=s)``.  The words are traced
(:func:`key_words`) and turned into the ``int`` on the host, inside the
callback (:func:`seed_from_words`), which is what makes this work under
``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["key_words", "seed_from_words", "key_seed"]


def key_words(key: Any) -> jax.Array:
    """The uint32 words of a single PRNG key, shape ``(w,)``; traceable.

    Raises
    ------
    TypeError
        If ``key`` is not a PRNG key (typed, or a raw uint32 array).
    ValueError
        If ``key`` is a batch of keys rather than one key.
    """
    try:
        words = jax.random.key_data(key)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"key must be a JAX PRNG key (jax.random.key(...) or jax.random.PRNGKey(...)), "
            f"got {key!r}: {error}"
        ) from error
    if words.ndim != 1:
        raise ValueError(
            f"key must be a single PRNG key, got a batch of keys with key data of shape "
            f"{words.shape}; use jax.vmap to initialise several weights"
        )
    return words.astype(jnp.uint32)


def seed_from_words(words: np.ndarray) -> int:
    """The core's seed for a key's uint32 words (big-endian; host side)."""
    seed = 0
    for word in np.asarray(words, dtype=np.uint32).reshape(-1):
        seed = (seed << 32) | int(word)
    return seed


def key_seed(key: Any) -> int:
    """The integer seed that :func:`eoi_jax.eoi` passes to the core for ``key``.

    Needs a concrete key (not a tracer).  ``eoi_jax.eoi(d)(key, shape)`` equals
    ``eoi_core.sparse_orthogonal(canonical_shape(shape), d, rng=key_seed(key))``
    moved to Flax's layout.

    Examples
    --------
    >>> import jax
    >>> key_seed(jax.random.key(7)), key_seed(jax.random.PRNGKey(7))
    (7, 7)
    """
    return seed_from_words(np.asarray(key_words(key)))
