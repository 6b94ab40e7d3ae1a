"""Keras 3 seeds -> the integer seed the core takes.

Keras' own random initializers (``keras.initializers.RandomNormal`` and
friends, ``RandomInitializer`` in ``keras/src/initializers``) accept
``seed=None | int | keras.random.SeedGenerator`` with these semantics, which
this module reproduces for EOI:

* ``int``: the same values on every call (stateless).  The int is handed to
  the core unchanged, so ``EOI(seed=s)`` gives the same kernel on every backend
  and equals ``eoi_core.sparse_orthogonal(..., rng=s)`` in channels-last layout.
* ``None``: an integer is drawn once, when the initializer is constructed,
  from Python's ``random`` module -- exactly what Keras' ``make_default_seed``
  does.  That module is what ``keras.utils.set_random_seed`` seeds, so
  unseeded models become reproducible with it, and one instance gives the
  same values on every call.
* ``keras.random.SeedGenerator``: every call takes a fresh integer, so every
  call gives new values, and a generator with a fixed seed gives a
  reproducible sequence.  The integer of the ``k``-th EOI draw from a
  generator (``k = 0, 1, ...``, counted per generator object across every EOI
  that shares it) is ``SeedSequence([s, k])`` of the generator's initial seed
  ``s`` (``generator.get_config()["seed"]``; for ``SeedGenerator()`` it comes
  from Python's ``random``, so ``keras.utils.set_random_seed`` fixes it).
  Nothing is read from the generator's backend state: Keras may build a
  model inside a traced function (``fit`` on JAX, a ``tf.function``), where
  that state is a tracer or a symbolic tensor with no value, while EOI's
  values are computed on the host.  So the draws do not depend on the
  backend, on tracing, or on other initializers drawing from the generator.
"""

from __future__ import annotations

import numbers
import random
import weakref
from typing import Any, Union

import keras
import numpy as np

__all__ = ["KerasSeed", "normalize_seed", "draw_core_seed", "layer_seeds", "serialize_seed", "SEED_BOUND"]

KerasSeed = Union[int, keras.random.SeedGenerator]

# Core seeds drawn from a SeedGenerator lie in [0, SEED_BOUND).
SEED_BOUND = 2**31 - 1

# The range of Keras' ``make_default_seed`` (keras/src/random/seed_generator.py).
_DEFAULT_SEED_RANGE = (1, 10**9)


def normalize_seed(seed: Any) -> KerasSeed:
    """Validate ``seed`` and resolve ``None`` to a default seed, as Keras does.

    Parameters
    ----------
    seed : None, int >= 0, keras.random.SeedGenerator, or a serialized SeedGenerator (dict)
        ``None`` becomes an int drawn from Python's ``random`` (the stream
        ``keras.utils.set_random_seed`` seeds); a dict is deserialized with
        ``keras.saving.deserialize_keras_object`` (what ``get_config`` stores).

    Returns
    -------
    int or keras.random.SeedGenerator
    """
    if seed is None:
        return random.randint(*_DEFAULT_SEED_RANGE)
    if isinstance(seed, dict):
        seed = keras.saving.deserialize_keras_object(seed)
    if isinstance(seed, keras.random.SeedGenerator):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)):
        if seed < 0:
            # The core follows SPEC 7, whose integer seeds are non-negative.
            raise ValueError(f"seed must be a non-negative integer, got seed={seed}")
        return int(seed)
    raise TypeError(
        "seed must be None, a non-negative int or a keras.random.SeedGenerator, "
        f"got seed={seed!r} of type {type(seed).__name__}"
    )


# EOI draws taken from each SeedGenerator object (see the module docstring).
_DRAWS: "weakref.WeakKeyDictionary[keras.random.SeedGenerator, int]" = weakref.WeakKeyDictionary()


def draw_core_seed(seed: KerasSeed) -> int:
    """The integer seed for ``eoi_core`` of one initializer call.

    An int is returned as is; a ``SeedGenerator`` yields a fresh int in
    ``[0, SEED_BOUND)``: ``SeedSequence([initial seed, k])`` for its ``k``-th
    EOI draw.  Pure Python, so it works eagerly and under any trace.

    Examples
    --------
    >>> import keras
    >>> generator = keras.random.SeedGenerator(1)
    >>> first, second = draw_core_seed(generator), draw_core_seed(generator)
    >>> first != second, draw_core_seed(keras.random.SeedGenerator(1)) == first
    (True, True)
    """
    if isinstance(seed, keras.random.SeedGenerator):
        count = _DRAWS.get(seed, 0)
        _DRAWS[seed] = count + 1
        initial = int(seed.get_config()["seed"])
        state = np.random.SeedSequence([initial, count]).generate_state(1, dtype=np.uint32)[0]
        return int(state) % SEED_BOUND
    return seed


def layer_seeds(seed: KerasSeed, count: int) -> list[KerasSeed]:
    """Seeds for the ``count`` layers of one model, from one normalized seed.

    An int is spread over the layers with ``numpy.random.SeedSequence(seed).spawn``
    (NumPy's way of deriving independent child seeds, the core's convention),
    so the result does not depend on the Keras backend.  A ``SeedGenerator``
    is shared: each layer takes the next draw from it.
    """
    if isinstance(seed, keras.random.SeedGenerator):
        return [seed] * count
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in children]


def serialize_seed(seed: Any) -> Any:
    """The seed as it goes into a config: an int or None as is, a SeedGenerator as a dict."""
    return keras.saving.serialize_keras_object(seed)
