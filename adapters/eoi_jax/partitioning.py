r"""Which sharding a kernel is about to get, known while its initializer runs.

To build only each device's shard, an initializer must know the sharding when
it is called, but Flax's annotations wrap the *result*: ``nn.with_partitioning``,
``nn.with_logical_partitioning`` and ``nnx.with_partitioning`` call
``init(key, shape, dtype)`` and then box the array with the names (and the
mesh), which a sharding constraint applies afterwards.  So :func:`requested`
looks at the initializer's caller: when it is one of those three wrappers
(recognised by its code object, not by name), the wrapper's own ``names`` /
``metadata`` and mesh are read and turned into the ``PartitionSpec`` by
Flax's own rules (logical names through ``nn.logical_axis_rules`` or the
annotation's ``rules``/``sharding_rules``).  The mesh is the annotation's, else
the one set by ``jax.set_mesh`` (the abstract mesh inside ``jit``).  Without a
mesh nothing is sharded, exactly as Flax does.

:func:`of_value` reads the sharding a parameter already has (for
``sparsify``): a concrete array's ``.sharding``; a traced one's type under an
``Explicit`` mesh; else its box's annotation.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["requested", "of_value", "context_mesh"]


@functools.cache
def _wrapper_codes() -> dict[Any, str]:
    """The code objects of Flax's partitioning wrappers (every wrapper of one kind shares its code)."""
    codes = {}
    try:
        import flax.linen as nn
        from flax.core import meta
        from flax.nnx import variablelib
    except ImportError:  # pragma: no cover - flax is optional for eoi_jax.eoi
        return codes

    def probe(*args: Any) -> None:
        return None

    codes[meta.with_partitioning(probe, ()).__code__] = "linen"
    codes[nn.with_logical_partitioning(probe, ()).__code__] = "logical"
    codes[variablelib.with_metadata(probe, out_sharding=()).__code__] = "nnx"
    return codes


def context_mesh(*, concrete: bool) -> Any:
    """The mesh of ``jax.set_mesh`` (a concrete ``Mesh``, or the abstract one under ``jit``), or None."""
    if concrete:
        mesh = jax.sharding.get_mesh()
        return None if mesh is None or mesh.empty else mesh
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh is None or mesh.empty else mesh


def _named(spec: Any, mesh: Any, concrete: bool) -> NamedSharding | None:
    if isinstance(spec, NamedSharding):
        return spec
    if spec is None:
        return None
    if mesh is None:
        mesh = context_mesh(concrete=concrete)
    if mesh is None:
        return None
    return NamedSharding(mesh, spec if isinstance(spec, PartitionSpec) else PartitionSpec(*spec))


def requested(frame: Any, *, concrete: bool) -> NamedSharding | None:
    """The sharding a Flax partitioning wrapper calling from ``frame`` will give the result, or None.

    ``concrete``: eager code needs a concrete mesh (devices), traced code
    accepts the abstract one.
    """
    kind = _wrapper_codes().get(getattr(frame, "f_code", None))
    if kind is None:
        return None
    local = frame.f_locals
    if kind == "linen":
        from flax.core import meta

        box = meta.Partitioned(None, local["names"], mesh=local["mesh"])
        return _named(box.get_partition_spec(), local["mesh"], concrete)
    if kind == "logical":
        import flax.linen as nn

        spec = nn.logical_to_mesh_axes(tuple(local["names"]), local["rules"])
        return _named(spec, local["mesh"], concrete)
    from flax.core import spmd as core_spmd

    metadata = local["metadata"]
    out_sharding = metadata.get("out_sharding")
    if not out_sharding:
        return None
    spec = core_spmd.apply_rules(out_sharding, metadata.get("sharding_rules"))
    return _named(spec, metadata.get("mesh"), concrete)


def caller(depth: int) -> Any:
    """The frame ``depth`` levels above the caller of this function."""
    return sys._getframe(depth + 1)


def of_value(leaf: Any, value: Any) -> Any:
    """The sharding ``value`` (the unboxed ``leaf``) has or is annotated with, or None.

    A concrete ``jax.Array`` gives its ``.sharding``; a traced one its type's
    sharding when that names mesh axes (``Explicit`` mesh axes); otherwise a
    boxed leaf's annotation (``nn.Partitioned``, ``nn.LogicallyPartitioned``,
    an ``nnx.Variable`` with ``out_sharding``) under the context mesh.
    """
    concrete = not isinstance(value, jax.core.Tracer)
    if concrete:
        sharding = getattr(value, "sharding", None)
        return sharding if isinstance(sharding, jax.sharding.Sharding) and len(sharding.device_set) > 1 else None
    typed = getattr(jax.typeof(value), "sharding", None)
    if isinstance(typed, NamedSharding) and not typed.mesh.empty and any(axis is not None for axis in typed.spec):
        return typed
    from flax import nnx
    from flax.core import meta
    from flax.core import spmd as core_spmd

    import flax.linen as nn

    if isinstance(leaf, nn.LogicallyPartitioned):
        return _named(nn.logical_to_mesh_axes(tuple(leaf.names), leaf.rules), leaf.mesh, concrete=False)
    if isinstance(leaf, meta.Partitioned):
        return _named(leaf.get_partition_spec(), leaf.mesh, concrete=False)
    if isinstance(leaf, nnx.Variable):
        metadata = leaf.get_metadata()
        if metadata.get("out_sharding"):
            spec = core_spmd.apply_rules(metadata["out_sharding"], metadata.get("sharding_rules"))
            return _named(spec, metadata.get("mesh"), concrete=False)
    return None
