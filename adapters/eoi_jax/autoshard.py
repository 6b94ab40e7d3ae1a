r"""Shards of a kernel whose sharding only XLA knows, each built on its device's host.

Under ``jax.jit`` an initializer sees tracers: when the kernel is sharded only by
``jax.jit(model.init, out_shardings=...)`` (no Flax annotation, no
``out_sharding=``), or when ``jax.jit(eoi_jax.sparsify)`` takes plain arrays laid
out over mesh axes of type ``Auto``, nothing visible while tracing says how the
result will be split.  The SPMD partitioner decides that later, while
compiling.  :func:`build` stages the kernel as a
:func:`jax.experimental.custom_partitioning` op, so that the partitioner hands
it the sharding it chose (from ``out_shardings`` propagating backwards, or from
the ``like`` operand's sharding) and lowers it to a per-device body: the body
finds its block's offsets with :func:`jax.lax.axis_index` over the mesh axes and
calls back to its host for that block alone
(:func:`eoi_jax.shards.host_shard`).  The shards are the slices of the
unsharded kernel, bit for bit, and XLA never builds the whole kernel on one
device to split it afterwards.

Why a host callback needs help here.  ``custom_partitioning`` lowers the
per-device body into a separate MLIR module whose list of host callbacks is
dropped: a plain :func:`jax.pure_callback` in it would name callback number 0
of the *enclosing* executable (a segmentation fault when there is none, the
wrong function otherwise).  So the enclosing module registers one dispatcher
(``_dispatch``, by the identity primitive that feeds the op its key), and the
body's callback names that dispatcher's position in the list being compiled,
with the op's id as its first operand.

Scope.  One callback per device (replicas of a block each build it, as under
``shard_map``); a result XLA leaves replicated is built split along an axis
the device count divides, then gathered.  Under :func:`jax.vmap` (``nn.scan``,
``nn.vmap`` over keys) the op is restaged with the keys' axis in front, which
a block may split too.  On one device the op is one host call for the whole
kernel.  Host callbacks from partitioned code exist on CPU and GPU, not TPU:
there :func:`available` is False and the caller keeps the whole-kernel
callback.  Shardy (JAX's default) reads :func:`_rule`; GSPMD reads
:func:`_infer`.

Examples
--------
>>> import jax, numpy as np
>>> whole = np.arange(12.0, dtype=np.float32).reshape(3, 4)
>>> def host(words, index):   # a block of the whole (index None: all of it)
...     return (whole if index is None else whole[index],)
>>> words = jax.random.key_data(jax.random.key(0))
>>> (built,) = jax.jit(lambda w: build(w, host, (3, 4), (np.float32,)))(words)
>>> bool((np.asarray(built) == whole).all())
True
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import callback as _callback
from jax._src import core as _core
from jax._src import ffi as _ffi
from jax._src.interpreters import mlir as _mlir
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["available", "build"]

_CALLBACK_TARGETS = {"cpu": "xla_ffi_python_cpu_callback", "cuda": "xla_ffi_python_gpu_callback",
                     "rocm": "xla_ffi_python_gpu_callback"}

# op id -> _Op, for the life of the process.  A compiled executable names its op by id only, and
# jit keeps executables after the traced jaxpr that held the op is gone: with weak references the
# garbage collector could take an op between compiling and running it, or before a cached
# executable's next call (seen as a KeyError in a callback).  An op is small (shapes, dtypes and
# a closure over the request), one per staged kernel.
_OPS: dict[int, _Op] = {}
_IDS = itertools.count()


class _Op:
    """One staged kernel (one per key of a batch): what a device's callback builds for its block.

    ``shape`` is ``batch + kernel``: under :func:`jax.vmap` over keys the op
    stacks one kernel per key in front, and a block may split that axis too.
    """

    def __init__(self, host: Callable[[np.ndarray, tuple[slice, ...] | None], tuple[np.ndarray, ...]],
                 batch: tuple[int, ...], kernel: tuple[int, ...], dtypes: tuple[np.dtype, ...]):
        self.id = next(_IDS)
        self.host = host  # (one key's words, index) -> that block of each output (index None: whole)
        self.batch = batch
        self.shape = batch + kernel
        self.dtypes = dtypes
        _OPS[self.id] = self

    def build(self, words: np.ndarray, index: tuple[slice, ...] | None) -> tuple[np.ndarray, ...]:
        """The block ``index`` of every output (None: all of them), ``words`` of shape ``batch + (2,)``."""
        words = np.asarray(words)
        if not self.batch:
            return tuple(self.host(words, index))
        depth = len(self.batch)
        keys = index[:depth] if index is not None else tuple(slice(0, n) for n in self.batch)
        inner = index[depth:] if index is not None else None
        chosen = words[keys]  # (*batch block, 2)
        blocks = [self.host(chosen[position], inner) for position in np.ndindex(chosen.shape[:-1])]
        return tuple(
            np.stack([block[output] for block in blocks]).reshape(chosen.shape[:-1] + blocks[0][output].shape)
            if blocks else np.zeros(chosen.shape[:-1] + self.shape[depth:], dtype)
            for output, dtype in enumerate(self.dtypes)
        )

    def block(self, words: np.ndarray, starts: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, ...]:
        """The block of shape ``local`` at ``starts``, padded where an uneven split cuts it short."""
        local = tuple(int(n) for n in np.asarray(local).reshape(-1))
        starts = [min(int(s), size) for s, size in zip(np.asarray(starts).reshape(-1), self.shape)]
        stops = [min(s + n, size) for s, n, size in zip(starts, local, self.shape)]
        arrays = self.build(words, tuple(slice(s, stop) for s, stop in zip(starts, stops)))
        if all(stop - s == n for s, stop, n in zip(starts, stops, local)):
            return arrays
        padded = []  # XLA pads the last blocks of an uneven split; the padding is never read
        for array, dtype in zip(arrays, self.dtypes):
            full = np.zeros(local, dtype=dtype)
            full[tuple(slice(0, n) for n in array.shape)] = array
            padded.append(full)
        return tuple(padded)


def _dispatch(op_id: np.ndarray, words: np.ndarray, starts: np.ndarray, local: np.ndarray) -> tuple:
    # The one host function every enclosing module registers; the op id says which kernel (an
    # op compiled for two shardings has two block shapes: the block's comes with the call).
    return _OPS[int(op_id)].block(words, starts, local)


# -- the identity that registers the dispatcher in the enclosing module ---------------------

_register_p = _core.Primitive("eoi_register_host_callback")
_register_p.def_abstract_eval(lambda words: words)
_register_p.def_impl(lambda words: words)


def _register_lowering(ctx: Any, words: Any) -> list:
    callbacks = ctx.module_context.host_callbacks
    if not any(item is _dispatch for item in callbacks):
        ctx.module_context.add_host_callback(_dispatch)
    return [words]


_mlir.register_lowering(_register_p, _register_lowering)


# -- the per-device callback, lowered inside the partitioner's module -----------------------

_block_p = _core.Primitive("eoi_host_block")
_block_p.multiple_results = True


def _block_abstract(op_id: Any, words: Any, starts: Any, shape: Any, *, local: tuple, dtypes: tuple,
                    index: int) -> list:
    return [_core.ShapedArray(local, dtype) for dtype in dtypes]


_block_p.def_abstract_eval(_block_abstract)


def _block_lowering(ctx: Any, *operands: Any, local: tuple, dtypes: tuple, index: int) -> Any:
    platform = ctx.module_context.platforms[0]
    sharding = _callback._callback_op_sharding(ctx.module_context.axis_context, None, ctx.avals_out)
    op = _ffi.build_ffi_lowering_function(_CALLBACK_TARGETS[platform], has_side_effect=False)(
        ctx, *operands, index=np.uint64(index)
    )
    _mlir.set_sharding(ctx.module_context, op, sharding)
    return op.results


_mlir.register_lowering(_block_p, _block_lowering)


def _dispatcher_index() -> int:
    """Where ``_dispatch`` sits in the host callbacks of the module being partitioned.

    The partitioner calls back from XLA's compiler thread, so no frame of the
    compiling Python code is above this one; JAX's partition hook, the caller
    of :func:`_partition`, holds the enclosing module's lowering context.
    """
    frame = sys._getframe(1)
    while frame is not None:
        context = getattr(frame.f_locals.get("info"), "module_context", None)
        callbacks = getattr(context, "host_callbacks", None)
        if isinstance(callbacks, list):
            for position, item in enumerate(callbacks):
                if item is _dispatch:
                    return position
        frame = frame.f_back
    raise RuntimeError(
        "eoi_jax: the partitioned kernel found no host callback list with its dispatcher "
        "(a JAX version whose partition hook eoi_jax does not know); pass out_sharding= or a Flax "
        "partitioning annotation instead"
    )


# -- the custom_partitioning op ---------------------------------------------------------------

def _split(sharding: NamedSharding, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """The block starts of every device (row ``i``: the device at flat position ``i`` of the
    mesh) and the block shape.

    As the partitioner tiles: an axis split ``p`` ways has blocks of ``ceil(size / p)``
    (the last ones padded when ``p`` does not divide ``size``), numbered row-major over the
    mesh axes that split it, as a ``PartitionSpec`` means.
    """
    mesh = sharding.mesh
    spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
    coords = np.stack(np.unravel_index(np.arange(mesh.devices.size), mesh.devices.shape), axis=1)
    axis_of = {name: position for position, name in enumerate(mesh.axis_names)}
    starts = np.zeros((mesh.devices.size, len(shape)), dtype=np.int64)
    local = []
    for dim, (entry, size) in enumerate(zip(spec, shape)):
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        place = np.zeros(mesh.devices.size, dtype=np.int64)
        for name in names:
            place = place * mesh.shape[name] + coords[:, axis_of[name]]
        length = -(-size // math.prod(mesh.shape[name] for name in names))
        starts[:, dim] = place * length
        local.append(length)
    return starts.astype(np.int32), tuple(local)


def _spread(mesh: Any, shape: tuple[int, ...]) -> NamedSharding | None:
    """A split of a replicated result: the first axis all the mesh's devices divide evenly."""
    for axis, size in enumerate(shape):
        if size % mesh.devices.size == 0:
            spec = [None] * len(shape)
            spec[axis] = tuple(mesh.axis_names)
            return NamedSharding(mesh, PartitionSpec(*spec))
    return None


def _partition(op: _Op, outputs: int, tied: bool, mesh: Any, arg_shapes: Any, result_shape: Any) -> Any:
    results = result_shape if isinstance(result_shape, (tuple, list)) else (result_shape,)
    sharding = results[0].sharding
    if not isinstance(sharding, NamedSharding) or mesh.empty:
        raise NotImplementedError(f"eoi_jax: a kernel sharded as {sharding} (not a NamedSharding over a mesh)")
    if sharding.is_fully_replicated:
        sharding = _spread(mesh, op.shape) or sharding
    table, local = _split(sharding, op.shape)
    index = _dispatcher_index()
    dtypes = op.dtypes

    def lower(words: jax.Array, *like: jax.Array) -> Any:
        flat = jnp.int32(0)
        for name in mesh.axis_names:  # row-major over the mesh, as mesh.devices.flat
            flat = flat * mesh.shape[name] + jax.lax.axis_index(name)
        starts = jnp.asarray(table)[flat]
        built = _block_p.bind(jnp.int32(op.id), words, starts, jnp.asarray(local, jnp.int32), local=local,
                              dtypes=dtypes, index=index)
        return tuple(built) if outputs > 1 else built[0]

    replicated = NamedSharding(mesh, PartitionSpec())
    arg_shardings = (replicated,) + tuple(shape.sharding for shape in arg_shapes[1:])
    out = (sharding,) * outputs
    return mesh, lower, (out if outputs > 1 else out[0]), arg_shardings


def _infer(op: _Op, outputs: int, tied: bool, mesh: Any, arg_shapes: Any, result_shape: Any) -> Any:
    # GSPMD (Shardy off): the result takes the tied operand's sharding, else stays open (replicated)
    sharding = arg_shapes[1].sharding if tied else NamedSharding(mesh, PartitionSpec())
    return (sharding,) * outputs if outputs > 1 else sharding


def _rule(op: _Op, outputs: int, tied: bool, mesh: Any, operand_types: Any, result_types: Any) -> str:
    # the key's words are replicated (their factors are their own); the outputs, and the
    # operand that lends its layout, share one factor per axis
    dims = " ".join(f"d{axis}" for axis in range(len(op.shape)))
    operands = " ".join(f"k{axis}" for axis in range(len(op.batch) + 1)) + (f", {dims}" if tied else "")
    return f"{operands} -> " + ", ".join([dims] * outputs)


def _whole(op: _Op, outputs: int, tied: bool, words: jax.Array, *like: jax.Array) -> Any:
    # The op's meaning, and its lowering on one device: every kernel whole, in one host call.
    results = tuple(jax.ShapeDtypeStruct(op.shape, dtype) for dtype in op.dtypes)
    built = jax.pure_callback(lambda words: op.build(words, None), results, words, vmap_method="sequential")
    return tuple(built) if outputs > 1 else built[0]


_op = custom_partitioning(_whole, static_argnums=(0, 1, 2))
_op.def_partition(
    partition=_partition,
    infer_sharding_from_operands=_infer,
    propagate_user_sharding=None,
    sharding_rule=_rule,
)


def available() -> bool:
    """Whether the default backend runs host callbacks from partitioned code (CPU, GPU)."""
    return jax.default_backend() in _CALLBACK_TARGETS


def build(
    words: jax.Array,
    host: Callable[[np.ndarray, tuple[slice, ...] | None], tuple[np.ndarray, ...]],
    shape: Sequence[int],
    dtypes: Sequence[Any],
    like: jax.Array | None = None,
) -> tuple[jax.Array, ...]:
    """Stage arrays of ``shape`` whose every device block is built by ``host`` for that block.

    Parameters
    ----------
    words : jax.Array of uint32
        The key's words (traced), handed to ``host`` unchanged.
    host : callable ``(words, index) -> tuple of numpy arrays``
        Builds the block ``index`` (a tuple of slices of ``shape``; ``None``
        for the whole) of each output; a block must equal the whole outputs
        sliced with ``index``, bit for bit.
    shape : tuple of int
        The outputs' shape.
    dtypes : sequence of dtypes
        One per output.
    like : jax.Array, optional
        An operand of ``shape`` whose sharding the outputs take (never read).

    Returns
    -------
    tuple of jax.Array
        One per dtype, laid out as the partitioner decides (``out_shardings``,
        or ``like``'s sharding).
    """
    return _build(words, host, tuple(int(n) for n in shape), tuple(np.dtype(d) for d in dtypes), like)


def _build(words: jax.Array, host: Callable, kernel: tuple[int, ...], dtypes: tuple[np.dtype, ...],
           like: jax.Array | None) -> tuple[jax.Array, ...]:
    op = _Op(host, tuple(words.shape[:-1]), kernel, dtypes)
    outputs, tied = len(dtypes), like is not None

    @jax.custom_batching.custom_vmap
    def staged(words: jax.Array, *like: jax.Array) -> Any:
        return _op(op, outputs, tied, _register_p.bind(words), *like)

    @staged.def_vmap
    def _batched(axis_size: int, in_batched: Sequence[bool], words: jax.Array, *like: jax.Array) -> Any:
        # Under vmap (one key per layer of nn.scan): the same op with the keys' axis in front.
        words = words if in_batched[0] else jnp.broadcast_to(words, (axis_size,) + words.shape)
        tie = like[0] if like and in_batched[1] else None  # an unbatched operand cannot lend a layout
        built = _build(words, host, kernel, dtypes, tie)
        return (built if outputs > 1 else built[0]), ((True,) * outputs if outputs > 1 else True)

    built = staged(words, *((like,) if tied else ()))
    return tuple(built) if outputs > 1 else (built,)
