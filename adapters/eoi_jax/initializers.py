r"""EOI as a ``jax.nn.initializers``-style initializer, safe under ``jax.jit``.

Flax keeps weights channels-last and hands an initializer only the kernel's
shape, which does not always say what the kernel is: ``(64, 4, 16)`` is a 1-D
conv ``(width, in, out)`` or an attention projection ``(in, heads,
head_dim)``.  The ``layout`` argument says which (:mod:`eoi_core.kernels`
does the translation to the core's canonical ``(out, in // groups, *kernel)``
and back); this module turns the key into the core's seed
(:mod:`eoi_jax.keys`) and calls the core on the host:

* with a concrete key (eager code, e.g. ``nnx.Linear(..., rngs=nnx.Rngs(0))``)
  directly;
* with a traced key (``jax.jit(model.init)``) through :func:`jax.pure_callback`.

Both run the same host function, so the weight is the core's, bit for bit,
inside and outside ``jit``.  Everything that can be wrong (shape, layout,
density, feasibility, groups, dtype) is static in JAX and checked while
tracing, before any callback is staged.

Sharded kernels (``out_sharding=``, or ``nn.with_partitioning`` /
``nn.with_logical_partitioning`` / ``nnx.with_partitioning`` around the
initializer under a mesh, read by :mod:`eoi_jax.partitioning`) are built shard
by shard, each on the host of its device (:mod:`eoi_jax.shards`): eagerly in
:func:`jax.make_array_from_callback`, under ``jit`` by one callback per device
inside :func:`jax.shard_map`.  Under ``jit`` with no sharding known while
tracing (a kernel sharded only by ``jax.jit(..., out_shardings=...)``), the
kernel is a ``custom_partitioning`` op that XLA's partitioner hands the
sharding it picked, and each device's callback builds that block
(:mod:`eoi_jax.autoshard`).  The shards are the slices of the unsharded
kernel, bit for bit.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import eoi_core
from eoi_core.checks import check_center_density, check_density, check_gain, check_int
from eoi_core.dtypes import DTYPES, resolve_dtype
from eoi_core.kernels import KERNEL_LAYOUTS, KernelLayout, kernel_layout
from eoi_core.layout import MAX_RANK

from . import partitioning

try:  # per-device blocks at compile time lean on JAX internals (custom_partitioning, host callbacks)
    from . import autoshard
except Exception:  # pragma: no cover - a JAX whose internals moved: kernels are built whole and split
    autoshard = None
from .keys import key_words, seed_from_words
from .shards import host_shard

__all__ = ["eoi", "eoi_with_mask", "AmbiguousLayoutWarning"]

Initializer = Callable[..., jax.Array]


class AmbiguousLayoutWarning(UserWarning):
    """A kernel of rank >= 3 was read as a conv kernel without ``layout=`` saying so."""


@dataclass(frozen=True)
class _Request:
    """A validated request: the kernel's layout, the scheme's arguments and the NumPy dtype."""

    layout: KernelLayout
    density: float
    gain: float
    center_density: float | str | None
    dtype: np.dtype
    scheme: Callable[..., tuple[np.ndarray, np.ndarray]]


def _resolve_dtype(dtype: Any, *, warn: bool = True) -> np.dtype:
    # JAX's convention: None is the default float dtype, and float64 becomes
    # float32 unless x64 is enabled.  The core then decides what it supports.
    requested = jnp.float_ if dtype is None else dtype
    try:
        canonical = np.dtype(jax.dtypes.canonicalize_dtype(requested))
        resolved = resolve_dtype(canonical)
    except TypeError as error:
        raise TypeError(f"dtype must be a floating dtype, one of {DTYPES}, got {dtype!r}") from error
    if warn and dtype is not None and np.dtype(dtype) != resolved:
        # The same warning jax.nn.initializers give for an x64 dtype without x64.
        warnings.warn(
            f"Explicitly requested dtype {np.dtype(dtype).name} is not available, and will be "
            f"truncated to dtype {resolved.name}. To enable more dtypes, set the "
            f"jax_enable_x64 configuration option or the JAX_ENABLE_X64 shell environment variable.",
            stacklevel=4,
        )
    return resolved


def _check_layout(layout: Any) -> str | None:
    if layout is None or (isinstance(layout, str) and layout in KERNEL_LAYOUTS):
        return layout
    raise ValueError(f"layout must be None or one of {KERNEL_LAYOUTS}, got {layout!r}")


def resolve_layout(
    shape: Any,
    layout: str | None,
    *,
    groups: int = 1,
    gates: int | None = None,
    in_axes: int = 1,
    warn: bool = True,
) -> KernelLayout:
    """The :class:`~eoi_core.kernels.KernelLayout` of a Flax kernel of ``shape``.

    ``layout=None`` reads a rank-2 kernel as ``"dense"`` and a kernel of rank
    >= 3 as ``"conv"``; the latter is a guess (an ``nn.DenseGeneral`` or
    attention kernel has the same rank), so it warns unless ``groups > 1``
    (only convolutions have groups) or ``warn`` is False.
    """
    try:
        # NumPy integers (shapes computed with np.prod) read as plain ints.
        dims = tuple(dim.item() if isinstance(dim, np.integer) else dim for dim in shape)
    except TypeError as error:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from error
    if not 2 <= len(dims) <= MAX_RANK:
        raise ValueError(
            f"eoi needs a weight of rank 2 to {MAX_RANK}: (in, out) for nn.Dense, "
            f"(*kernel, in // feature_group_count, out) for nn.Conv, (*in_axes, *out_axes) for "
            f"nn.DenseGeneral; got shape {dims!r} (use a bias initializer such as "
            f"jax.nn.initializers.zeros for 1-D parameters)"
        )
    if layout is None:
        layout = "dense" if len(dims) == 2 else "conv"
        if layout == "conv" and groups == 1 and warn:
            # A DenseGeneral/attention kernel read as a conv keeps one "tap" of its
            # first axis and zeroes the rest: say so rather than build dead rows.
            warnings.warn(
                f"eoi read the kernel of shape {dims} as a conv kernel (*kernel, in, out) with its "
                f"orthogonal block at the centre tap; pass layout='conv' to confirm, or "
                f"layout='einsum' (with in_axes= and groups=heads) for nn.DenseGeneral / attention "
                f"kernels, whose leading axes are not spatial",
                AmbiguousLayoutWarning,
                stacklevel=3,
            )
    try:
        return kernel_layout(dims, layout, groups=groups, gates=gates, in_axes=in_axes)
    except (TypeError, ValueError) as error:
        raise type(error)(f"Flax shape {dims} read as layout={layout!r}: {error}") from error


def _is_eoi(scheme: Callable) -> bool:
    from eoi_core import schemes

    return scheme is schemes.eoi or scheme is eoi_core.sparse_orthogonal


def _request(
    layout: KernelLayout,
    density: float,
    gain: float,
    center_density: Any,
    dtype: Any,
    scheme: Callable = None,
) -> _Request:
    """Validate what the core would reject, before anything is staged; raise naming the shapes."""
    from eoi_core import schemes

    scheme = schemes.eoi if scheme is None else scheme
    if _is_eoi(scheme):
        try:
            eoi_core.validate(
                layout.canonical, density, gain=gain, groups=layout.groups, center_density=center_density
            )
        except (TypeError, ValueError) as error:
            raise type(error)(
                f"Flax shape {layout.shape} ({layout.kind}; canonical (out, in // groups, *kernel) = "
                f"{layout.canonical}, groups={layout.groups}): {error}"
            ) from error
    return _Request(layout, density, gain, center_density, _resolve_dtype(dtype), scheme)


def host_eoi(seed: int, request: _Request) -> tuple[np.ndarray, np.ndarray]:
    """The scheme's ``(weight, mask)`` for one seed, in the kernel's Flax layout (host side)."""
    layout = request.layout
    weight, mask = request.scheme(
        layout.canonical,
        request.density,
        gain=request.gain,
        dtype=request.dtype,
        rng=seed,
        groups=layout.groups,
        center_density=request.center_density,
    )
    return layout.from_canonical(weight), layout.from_canonical(np.asarray(mask, dtype=bool))


def _callback(words: np.ndarray, *, request: _Request) -> tuple[np.ndarray, np.ndarray]:
    return host_eoi(seed_from_words(words), request)


def _sharding(out_sharding: Any, *, concrete: bool = True) -> jax.sharding.Sharding:
    if isinstance(out_sharding, jax.sharding.Sharding):
        return out_sharding
    if isinstance(out_sharding, jax.sharding.PartitionSpec):
        mesh = partitioning.context_mesh(concrete=concrete)
        if mesh is None:
            raise ValueError(
                f"out_sharding={out_sharding!r} is a PartitionSpec but no mesh is set; "
                f"use jax.set_mesh(mesh) or pass a NamedSharding"
            )
        return jax.sharding.NamedSharding(mesh, out_sharding)
    raise TypeError(f"out_sharding must be None, a jax.sharding.Sharding or a PartitionSpec, got {out_sharding!r}")


def _index_key(index: Sequence[slice], shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple(item.indices(size)[:2] for item, size in zip(index, shape))


def _place(seed: int, request: _Request, sharding: jax.sharding.Sharding, mask: bool) -> tuple[jax.Array, Any]:
    """Each addressable device's shard built on the host for that shard alone (``make_array_from_callback``)."""
    shape = request.layout.shape
    built: dict[tuple, tuple[np.ndarray, Any]] = {}  # replicas of one shard share one build

    def weight_shard(index: Sequence[slice]) -> np.ndarray:
        key = _index_key(index, shape)
        if key not in built:
            built[key] = host_shard(seed, request, index, mask=mask)
        return built[key][0]

    weight = jax.make_array_from_callback(shape, sharding, weight_shard)
    if not mask:
        return weight, None
    masks = jax.make_array_from_callback(shape, sharding, lambda index: built[_index_key(index, shape)][1])
    return weight, masks


def _blocks(sharding: jax.sharding.NamedSharding, shape: Sequence[int]) -> tuple[tuple[tuple[str, ...], ...], tuple[int, ...]] | None:
    """Per axis: the mesh axes splitting it and the block length; None when a split is uneven."""
    spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
    names, local = [], []
    for entry, size in zip(spec, shape):
        axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        parts = math.prod(sharding.mesh.shape[axis] for axis in axes)
        if size % parts:
            return None  # no jax.Array has such a sharding; shard_map needs even blocks
        names.append(axes)
        local.append(size // parts)
    return tuple(names), tuple(local)


def _shard_callback(
    words: np.ndarray, position: np.ndarray, *, request: _Request, local: tuple[int, ...], mask: bool
) -> Any:
    index = tuple(slice(int(p) * n, (int(p) + 1) * n) for p, n in zip(np.asarray(position).reshape(-1), local))
    weight, shard_mask = host_shard(seed_from_words(words), request, index, mask=mask)
    return (weight, shard_mask) if mask else weight


def _stage_sharded(
    words: jax.Array, request: _Request, sharding: jax.sharding.NamedSharding, mask: bool
) -> tuple[jax.Array, Any] | None:
    """Under ``jit``: a ``shard_map`` whose body calls back to the host for its own block only."""
    blocks = _blocks(sharding, request.layout.shape)
    if blocks is None:
        return None
    names, local = blocks
    mesh = sharding.mesh

    def body(words: jax.Array) -> Any:
        position = []
        for axes in names:  # row-major over the mesh axes of this dimension, as PartitionSpec means
            place = jnp.int32(0)
            for axis in axes:
                place = place * mesh.shape[axis] + jax.lax.axis_index(axis)
            position.append(place)
        result = jax.ShapeDtypeStruct(local, request.dtype)
        results = (result, jax.ShapeDtypeStruct(local, jnp.bool_)) if mask else result
        callback = functools.partial(_shard_callback, request=request, local=local, mask=mask)
        # Inside shard_map every device runs the callback for its own block, on its own host.
        return jax.pure_callback(callback, results, words, jnp.stack(position), vmap_method="sequential")

    spec = jax.sharding.PartitionSpec(*names)
    out_specs = (spec, spec) if mask else spec
    replicated = jax.sharding.PartitionSpec()
    built = jax.shard_map(body, mesh=mesh, in_specs=replicated, out_specs=out_specs, check_vma=False)(words)
    return built if mask else (built, None)


def _constrain(array: jax.Array, sharding: Any) -> jax.Array:
    if sharding is None:
        return array
    mesh = getattr(sharding, "mesh", None)
    if mesh is not None and mesh.are_all_axes_explicit:
        return jax.sharding.reshard(array, sharding)
    return jax.lax.with_sharding_constraint(array, sharding)


def _stage_unknown(words: jax.Array, request: _Request, mask: bool, like: Any) -> tuple[jax.Array, Any]:
    """Under ``jit``, no sharding known: each device's block built for the sharding XLA picks."""

    def host(words: np.ndarray, index: Any) -> tuple[np.ndarray, ...]:
        seed = seed_from_words(words)
        weight, weight_mask = host_eoi(seed, request) if index is None else host_shard(seed, request, index, mask=mask)
        return (weight, weight_mask) if mask else (weight,)

    dtypes = (request.dtype, np.bool_) if mask else (request.dtype,)
    built = autoshard.build(words, host, request.layout.shape, dtypes, like=like)
    return (built[0], built[1]) if mask else (built[0], None)


def stage(
    key: Any, request: _Request, out_sharding: Any = None, *, mask: bool = True, like: Any = None
) -> tuple[jax.Array, Any]:
    """``(weight, mask)`` for ``key``: computed now for a concrete key, staged for a traced one.

    With an EOI request and a sharding over several devices, each device's
    shard is built alone (:func:`eoi_jax.shards.host_shard`): eagerly in
    ``jax.make_array_from_callback`` (only the addressable shards of this
    process), under ``jit`` in a ``shard_map`` whose body calls back to the
    host for its own block when the sharding is a ``NamedSharding`` that
    splits every axis evenly.  Under ``jit`` with no sharding (or another
    one) and several devices, :func:`eoi_jax.autoshard.build` stages the
    kernel for the sharding XLA's partitioner picks (``out_shardings``, or
    ``like``'s sharding: an array of the same shape whose layout the result
    takes, never read); on one device that is one callback for the whole
    kernel.  Schemes without a shard function get the whole weight once
    (eagerly sliced per device; under ``jit`` one callback, then a sharding
    constraint).  ``mask=False`` returns ``(weight, None)``.
    """
    words = key_words(key)
    concrete = not isinstance(words, jax.core.Tracer)
    sharding = None if out_sharding is None else _sharding(out_sharding, concrete=concrete)
    several = sharding is not None and sharding.num_devices > 1
    per_shard = several and _is_eoi(request.scheme)
    if concrete:
        seed = seed_from_words(np.asarray(words))
        if per_shard:
            return _place(seed, request, sharding, mask)
        weight, weight_mask = host_eoi(seed, request)
        if sharding is None:
            return jnp.asarray(weight), (jnp.asarray(weight_mask) if mask else None)
        return _slices(weight, sharding), (_slices(weight_mask, sharding) if mask else None)
    if per_shard and isinstance(sharding, jax.sharding.NamedSharding):
        built = _stage_sharded(words, request, sharding, mask)
        if built is not None:
            return built
    if (per_shard or sharding is None) and _is_eoi(request.scheme) and jax.device_count() > 1 \
            and autoshard is not None and autoshard.available():
        # No sharding known while tracing (or none a shard_map block can have, e.g. an uneven
        # split): the partitioner hands over the one it picks, at compile time.
        weight, weight_mask = _stage_unknown(words, request, mask, like)
        return _constrain(weight, sharding), (_constrain(weight_mask, sharding) if mask else None)
    shape = request.layout.shape
    result = (jax.ShapeDtypeStruct(shape, request.dtype), jax.ShapeDtypeStruct(shape, jnp.bool_))
    # "sequential": under jax.vmap over keys (nn.vmap, nn.scan with split
    # params rngs) the core runs once per key, so a batched init equals the
    # stack of single inits.
    weight, weight_mask = jax.pure_callback(
        functools.partial(_callback, request=request), result, words, vmap_method="sequential"
    )
    return _constrain(weight, sharding), (_constrain(weight_mask, sharding) if mask else None)


def _slices(array: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """A host array laid out as ``sharding``: each device receives only its slice."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def eoi(
    density: float,
    gain: float = 1.0,
    center_density: float | str | None = None,
    groups: int = 1,
    dtype: Any = None,
    *,
    layout: str | None = None,
    gates: int | None = None,
    in_axes: int = 1,
) -> Initializer:
    r"""Exact Orthogonal Initialization as a ``jax.nn.initializers`` initializer.

    Returns ``init(key, shape, dtype=None, out_sharding=None)`` for Flax's
    ``kernel_init``.  The kernel's ``layout`` says where its orthogonal
    blocks are (:mod:`eoi_core.kernels`); the weight is the core's EOI for the
    canonical shape, moved back to Flax's layout:

    * ``"dense"`` ``(in, out)`` (``nn.Dense``, ``nnx.Linear``): ``K K^T =
      gain^2 I`` if ``in <= out`` (so ``|x K| = gain |x|``), else ``K^T K =
      gain^2 I``;
    * ``"conv"`` ``(*kernel, in // groups, out)`` (``nn.Conv``, depthwise
      included: ``groups = feature_group_count``): the centre tap
      ``K[(k - 1) // 2, ..., :, :]`` is such a matrix block by block, every
      other tap is zero (delta-orthogonal);
    * ``"einsum"`` ``(*in_axes, *out_axes)`` (``nn.DenseGeneral``,
      attention): the kernel reshaped to ``(prod(in), prod(out))`` is dense,
      with ``groups`` blocks along the output (``groups=heads`` for a
      query/key/value kernel ``(in, heads, head_dim)``);
    * ``"gates"`` ``(in, gates * units)``: ``gates`` stacked blocks, each its
      own EOI (fused LSTM/GRU kernels);
    * ``"depthwise"`` ``(*kernel, channels, multiplier)``: one block per channel.

    At most ``floor(density * size / blocks + 0.5)`` non-zeros per block (the
    rest of the mask budget is zero-valued trainable entries, which only
    :func:`eoi_with_mask` and :func:`eoi_jax.sparsify` return).

    Parameters
    ----------
    density : float in (0, 1]
        Fraction of trainable entries; at least :func:`eoi_core.min_density`
        of the canonical shape.
    gain : float, optional
        Positive scale of the orthogonal weight.
    center_density : None, float or "sqrt", optional
        Density of the centre tap of conv kernels (see
        :func:`eoi_core.sparse_orthogonal`); a float for a kernel without taps
        (dense, einsum, gates) is an error, as in the core.
    groups : int, optional
        The conv's ``feature_group_count``, or the heads of an ``"einsum"``
        kernel.  Flax hands the initializer the shape only, so a grouped conv
        passes it here: ``nn.Conv(16, (3, 3), feature_group_count=2,
        kernel_init=eoi(0.2, groups=2))``.
    dtype : dtype-like, optional
        Default dtype when the caller passes none (JAX's default float).
    layout : {None, "dense", "conv", "depthwise", "gates", "einsum"}, optional
        How to read the shape.  ``None``: ``"dense"`` for rank 2, ``"conv"``
        for rank >= 3 with an :class:`AmbiguousLayoutWarning` (unless
        ``groups > 1``), since a DenseGeneral kernel of the same rank read as
        a conv would keep one slice of its first axis and zero the rest.
    gates : int, optional
        Stacked blocks for ``layout="gates"`` (LSTM 4, GRU 3).
    in_axes : int, optional
        Leading input axes for ``layout="einsum"`` (``nn.DenseGeneral(axis=(-2,
        -1))`` has 2).

    Returns
    -------
    init : callable ``(key, shape, dtype=None, out_sharding=None) -> jax.Array``
        Deterministic in ``key`` (see :func:`eoi_jax.key_seed`); works
        inside ``jax.jit`` and ``jax.vmap`` with the same values as outside.
        ``out_sharding`` (a ``Sharding``, or a ``PartitionSpec`` under
        ``jax.set_mesh``) lays the result out across devices, each device
        building only its shard; without it, the annotation of a Flax
        partitioning wrapper around ``init`` (``nn.with_partitioning``,
        ``nn.with_logical_partitioning``, ``nnx.with_partitioning``) is used
        when a mesh is set, and under ``jit`` with neither, the sharding
        XLA picks (e.g. from ``jax.jit(model.init, out_shardings=...)``).

    Raises
    ------
    TypeError, ValueError
        For an invalid argument here; for a shape the layout cannot read, a
        density below the floor of a block, ``groups`` not dividing the
        output, a non-float dtype or a batched key when ``init`` is traced.

    Examples
    --------
    >>> import jax, flax.linen as nn
    >>> layer = nn.Dense(64, kernel_init=eoi(0.25))
    >>> params = jax.jit(layer.init)(jax.random.key(0), jax.numpy.ones((1, 32)))
    >>> params["params"]["kernel"].shape
    (32, 64)
    >>> query = nn.DenseGeneral((4, 16), kernel_init=eoi(0.25, groups=4, layout="einsum"))
    >>> query.init(jax.random.key(0), jax.numpy.ones((1, 64)))["params"]["kernel"].shape
    (64, 4, 16)
    """
    density = check_density(density)
    gain = check_gain(gain)
    center_density = check_center_density(center_density)
    groups = check_int(groups, "groups")
    layout = _check_layout(layout)
    gates = None if gates is None else check_int(gates, "gates")
    in_axes = check_int(in_axes, "in_axes")
    default_dtype = dtype
    if default_dtype is not None:
        _resolve_dtype(default_dtype, warn=False)  # fail early; warn when used

    def init(key: Any, shape: Sequence[int], dtype: Any = default_dtype, out_sharding: Any = None) -> jax.Array:
        kernel = resolve_layout(shape, layout, groups=groups, gates=gates, in_axes=in_axes)
        request = _request(kernel, density, gain, center_density, dtype)
        if out_sharding is None:
            # Flax's partitioning wrappers shard the result after this returns:
            # read their annotation now, so that each device builds its shard.
            traced = isinstance(key_words(key), jax.core.Tracer)
            out_sharding = partitioning.requested(partitioning.caller(1), concrete=not traced)
        weight, _ = stage(key, request, out_sharding, mask=False)
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
    layout: str | None = None,
    gates: int | None = None,
    in_axes: int = 1,
    out_sharding: Any = None,
) -> tuple[jax.Array, jax.Array]:
    r"""EOI weight and its trainable mask, both in Flax's layout.

    Same weight as ``eoi(density, gain, center_density, groups, layout=...)(key,
    shape, dtype)``, plus the bool ``mask`` of trainable entries: exactly
    ``floor(density * size / blocks + 0.5)`` True entries per orthogonal
    block, with the weight's non-zeros a subset of it.  Traceable; the same
    inside and outside ``jit``.

    Parameters
    ----------
    key : PRNG key
        A single key (typed or raw ``uint32[2]``).
    shape : sequence of int
        Flax kernel shape, read as ``layout``.
    density, gain, center_density, groups, dtype, layout, gates, in_axes
        As in :func:`eoi`.
    out_sharding : Sharding or PartitionSpec, optional
        Lay both arrays out across devices.

    Returns
    -------
    weight : jax.Array of ``shape`` and ``dtype``
    mask : jax.Array of bool, ``shape``

    Examples
    --------
    >>> import jax
    >>> weight, mask = eoi_with_mask(jax.random.key(0), (3, 3, 16, 32), 0.1, layout="conv")
    >>> int(mask.sum()) == round(0.1 * 3 * 3 * 16 * 32)
    True
    """
    density = check_density(density)
    gain = check_gain(gain)
    center_density = check_center_density(center_density)
    groups = check_int(groups, "groups")
    kernel = resolve_layout(
        shape, _check_layout(layout), groups=groups, gates=gates, in_axes=check_int(in_axes, "in_axes")
    )
    return stage(key, _request(kernel, density, gain, center_density, dtype), out_sharding)
