"""eoi_jax: Exact Orthogonal Initialization for JAX, Flax (linen and nnx) and optax.

>>> import jax, jax.numpy as jnp, flax.linen as nn, optax
>>> import eoi_jax
>>> model = nn.Sequential([nn.Dense(64, kernel_init=eoi_jax.eoi(0.25)), nn.relu, nn.Dense(10)])
>>> params = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 32)))["params"]
>>> params, masks = eoi_jax.sparsify(params, 0.2, jax.random.key(1))
>>> optimizer = optax.chain(optax.adamw(1e-3), eoi_jax.keep_masked(masks))

Public API
----------
eoi            ``jax.nn.initializers``-style factory: ``eoi(density, layout=...)(key, shape, dtype)``
eoi_with_mask  the weight and its bool mask of trainable entries, Flax layout
sparsify       EOI for every kernel of a Flax model: ``params, masks`` (and ``.report``)
Sparsified     what sparsify returns: unpacks as ``(params, masks)``, carries the report
keep_masked    optax transformation keeping masked-out entries exactly zero
key_seed       the integer seed the core receives for a concrete key
AmbiguousLayoutWarning  a rank >= 3 kernel read as a conv without ``layout=``

On a mesh, each device builds only its shard of a kernel, bit-identical to the
unsharded one (``out_sharding=``, Flax's partitioning annotations, the
shardings ``sparsify`` is given, and under ``jit`` whatever sharding XLA
picks, e.g. from ``out_shardings`` alone; see :mod:`eoi_jax.shards` and
:mod:`eoi_jax.autoshard`).
"""

from .initializers import AmbiguousLayoutWarning, eoi, eoi_with_mask
from .keys import key_seed
from .sparsify import Sparsified, sparsify
from .transforms import KeepMaskedState, keep_masked

__all__ = [
    "eoi",
    "eoi_with_mask",
    "sparsify",
    "Sparsified",
    "keep_masked",
    "KeepMaskedState",
    "key_seed",
    "AmbiguousLayoutWarning",
]
