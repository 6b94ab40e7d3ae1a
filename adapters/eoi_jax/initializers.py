r"""EOI as a ``jax.nn.initializers``-style initializer, safe under ``jax.jit``.

Flax keeps weights channels-last: ``nn.Dense`` kernels are ``(in, out)`` and
``nn.Conv`` kernels ``(*kernel, in // feature_group_count, out)``.  The core
speaks the canonical ``(out, in // groups, *kernel)``; this module translates
the shape, turns the key into the core's seed (:mod:`eoi_jax.keys`) and calls
:func:`eoi_core.sparse_orthogonal` through :func:`jax.pure_callback`, so the
weight is the core's, bit for bit, inside and outside ``jit``.

Everything that can be wrong (shape, density, feasibility, groups, dtype) is
static in JAX, so it is checked while tracing, before any callback is staged:
errors surface at ``jax.jit(model.init)`` trace time, not inside XLA.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import eoi_core
from eoi_core.checks import check_density, check_fraction, check_gain, check_int
from eoi_core.budget import CENTER_POLICIES
from eoi_core.dtypes import resolve_dtype
from eoi_core.layout import canonical_shape, to_channels_last

from .keys import key_words, seed_from_words

__all__ = ["eoi", "eoi_with_mask"]

Initializer = Callable[..., jax.Array]


@dataclass(frozen=True)
class _Request:
    """A validated EOI request: Flax shape, canonical shape and NumPy dtype."""

    shape: tuple[int, ...]
    canonical: tuple[int, ...]
    density: float
    gain: float
    center_density: float | str | None
    groups: int
    dtype: np.dtype


def _check_center_density(center_density: Any) -> float | str | None:
    # Shape-free part of the check; whether it fits a layer's budget is
    # decided with the shape, by the core's budget planner.
    if center_density is None:
        return None
    if isinstance(center_density, str):
        if center_density in CENTER_POLICIES:
            return center_density
        raise ValueError(
            f"center_density must be None, a float in (0, 1] or one of {CENTER_POLICIES}, "
            f"got {center_density!r}"
        )
    return check_fraction(center_density, "center_density")


def _resolve_dtype(dtype: Any, *, warn: bool = True) -> np.dtype:
    # JAX's convention: None is the default float dtype, and float64 becomes
    # float32 unless x64 is enabled.  The core then decides what it supports.
    requested = jnp.float_ if dtype is None else dtype
    try:
        canonical = np.dtype(jax.dtypes.canonicalize_dtype(requested))
        resolved = resolve_dtype(canonical)
    except TypeError as error:
        raise TypeError(
            f"dtype must be a floating dtype (float16, bfloat16, float32, float64), "
            f"got {dtype!r}"
        ) from error
    if warn and dtype is not None and np.dtype(dtype) != resolved:
        # The same warning jax.nn.initializers give for an x64 dtype without x64.
        warnings.warn(
            f"Explicitly requested dtype {np.dtype(dtype).name} is not available, and will be "
            f"truncated to dtype {resolved.name}. To enable more dtypes, set the "
            f"jax_enable_x64 configuration option or the JAX_ENABLE_X64 shell environment variable.",
            stacklevel=4,
        )
    return resolved


def _request(
    shape: Any,
    density: Any,
    gain: Any,
    center_density: Any,
    groups: Any,
    dtype: Any,
) -> _Request:
    """Validate everything before anything is staged; raise naming the argument."""
    density = check_density(density)
    gain = check_gain(gain)
    center_density = _check_center_density(center_density)
    groups = check_int(groups, "groups")
    try:
        # NumPy integers (shapes computed with np.prod) read as plain ints.
        dims = tuple(dim.item() if isinstance(dim, np.integer) else dim for dim in shape)
    except TypeError as error:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from error
    if len(dims) < 2:
        raise ValueError(
            f"eoi needs a weight of rank 2 to 5: (in, out) for nn.Dense or "
            f"(*kernel, in // feature_group_count, out) for nn.Conv; got shape {dims!r} "
            f"(use a bias initializer such as jax.nn.initializers.zeros for 1-D parameters)"
        )
    canonical = canonical_shape(dims)
    try:
        eoi_core.validate(canonical, density, gain=gain, groups=groups, center_density=center_density)
    except (TypeError, ValueError) as error:
        raise type(error)(
            f"Flax shape {dims} (canonical (out, in // groups, *kernel) = {canonical}): {error}"
        ) from error
    return _Request(dims, canonical, density, gain, center_density, groups, _resolve_dtype(dtype))


def _host_eoi(words: np.ndarray, *, request: _Request) -> tuple[np.ndarray, np.ndarray]:
    """The core's ``(weight, mask)`` for one key, moved to Flax's layout (runs on the host)."""
    weight, mask = eoi_core.sparse_orthogonal(
        request.canonical,
        request.density,
        gain=request.gain,
        dtype=request.dtype,
        rng=seed_from_words(words),
        groups=request.groups,
        center_density=request.center_density,
    )
    return (
        np.ascontiguousarray(to_channels_last(weight)),
        np.ascontiguousarray(to_channels_last(mask)),
    )


def _stage(key: Any, request: _Request) -> tuple[jax.Array, jax.Array]:
    words = key_words(key)
    result = (
        jax.ShapeDtypeStruct(request.shape, request.dtype),
        jax.ShapeDtypeStruct(request.shape, jnp.bool_),
    )
    # "sequential": under jax.vmap over keys (nn.vmap, nn.scan with split
    # params rngs) the core runs once per key, so a batched init equals the
    # stack of single inits.
    return jax.pure_callback(
        functools.partial(_host_eoi, request=request), result, words, vmap_method="sequential"
    )


def eoi(
    density: float,
    gain: float = 1.0,
    center_density: float | str | None = None,
    groups: int = 1,
    dtype: Any = None,
) -> Initializer:
    r"""Exact Orthogonal Initialization as a ``jax.nn.initializers`` initializer.

    Returns ``init(key, shape, dtype=None)`` for Flax's ``kernel_init``.  For
    a Flax kernel of shape ``(in, out)`` (``nn.Dense``) or
    ``(*kernel, in // groups, out)`` (``nn.Conv``) it returns the core's EOI
    weight for the canonical shape ``(out, in // groups, *kernel)``, moved
    back to Flax's layout:

    * dense: ``K K^T = gain^2 I`` if ``in <= out`` (orthonormal columns of
      the canonical ``W = K^T``, so ``|x K| = gain |x|``), else
      ``K^T K = gain^2 I``;
    * conv: the centre tap ``K[(k - 1) // 2, ..., :, :]`` is such a matrix
      (block-wise per group), every other tap is zero (delta-orthogonal);
    * at most ``floor(density * size / groups + 0.5)`` non-zeros per group
      block (the rest of the mask budget is zero-valued trainable entries,
      which only :func:`eoi_with_mask` and :func:`eoi_jax.sparsify` return).

    Parameters
    ----------
    density : float in (0, 1]
        Fraction of trainable entries; at least :func:`eoi_core.min_density`
        of the canonical shape.
    gain : float, optional
        Positive scale of the orthogonal weight.
    center_density : None, float or "sqrt", optional
        Density of the centre tap of conv kernels (see
        :func:`eoi_core.sparse_orthogonal`).
    groups : int, optional
        The layer's ``feature_group_count``.  Flax hands the initializer the
        kernel shape only, which does not say how many groups the conv has,
        so a grouped conv must pass it here to be orthogonal block by block:
        ``nn.Conv(16, (3, 3), feature_group_count=2, kernel_init=eoi(0.2, groups=2))``.
    dtype : dtype-like, optional
        Default dtype when the caller passes none (JAX's default float).

    Returns
    -------
    init : callable ``(key, shape, dtype=None) -> jax.Array``
        Deterministic in ``key`` (see :func:`eoi_jax.key_seed`); works
        inside ``jax.jit`` and ``jax.vmap`` with the same values as outside.

    Raises
    ------
    TypeError, ValueError
        For an invalid ``density``, ``gain``, ``center_density`` or
        ``groups`` here; for a shape of rank < 2 or > 5, a density below the
        shape's orthogonal floor, ``groups`` not dividing ``out``, a
        non-float dtype or a batched key when ``init`` is traced.

    Examples
    --------
    >>> import jax, flax.linen as nn
    >>> layer = nn.Dense(64, kernel_init=eoi(0.25))
    >>> params = jax.jit(layer.init)(jax.random.key(0), jax.numpy.ones((1, 32)))
    >>> params["params"]["kernel"].shape
    (32, 64)
    """
    density = check_density(density)
    gain = check_gain(gain)
    center_density = _check_center_density(center_density)
    groups = check_int(groups, "groups")
    default_dtype = dtype
    if default_dtype is not None:
        _resolve_dtype(default_dtype, warn=False)  # fail early; warn when used

    def init(key: Any, shape: Sequence[int], dtype: Any = default_dtype, out_sharding: Any = None) -> jax.Array:
        if out_sharding is not None:
            raise NotImplementedError("eoi does not support out_sharding; shard the result instead")
        request = _request(shape, density, gain, center_density, groups, dtype)
        weight, _ = _stage(key, request)
        return weight

    return init


def eoi_with_mask(
    key: Any,
    shape: Sequence[int],
    density: float,
    *,
    gain: float = 1.0,
    center_density: float | str | None = None,
    groups: int = 1,
    dtype: Any = None,
) -> tuple[jax.Array, jax.Array]:
    r"""EOI weight and its trainable mask, both in Flax's layout.

    Same weight as ``eoi(density, gain, center_density, groups)(key, shape,
    dtype)``, plus the bool ``mask`` of trainable entries: exactly
    ``floor(density * size / groups + 0.5)`` True entries per group block
    (blocks split ``out``, the last axis), with the weight's non-zeros a
    subset of it.  Traceable; the same inside and outside ``jit``.

    Parameters
    ----------
    key : PRNG key
        A single key (typed or raw ``uint32[2]``).
    shape : sequence of int
        Flax kernel shape ``(in, out)`` or ``(*kernel, in // groups, out)``.
    density, gain, center_density, groups, dtype
        As in :func:`eoi`.

    Returns
    -------
    weight : jax.Array of ``shape`` and ``dtype``
    mask : jax.Array of bool, ``shape``

    Examples
    --------
    >>> import jax
    >>> weight, mask = eoi_with_mask(jax.random.key(0), (3, 3, 16, 32), 0.1)
    >>> int(mask.sum()) == round(0.1 * 3 * 3 * 16 * 32)
    True
    """
    request = _request(shape, density, gain, center_density, groups, dtype)
    return _stage(key, request)
