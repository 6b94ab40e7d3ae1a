"""Where a Flax model's kernels are and what layout each one has.

Flax parameters are plain pytrees: a ``kernel`` leaf of shape ``(64, 4, 16)``
does not say whether it belongs to a 1-D ``Conv`` or to the query projection
of an attention layer, and reading the wrong one builds dead rows.  The layer
*types* say it, so they are read wherever Flax keeps them:

* ``nnx`` modules are objects: :func:`nnx_modules` walks ``nnx.iter_graph``;
* ``linen`` modules exist only while the model runs: :func:`linen_modules`
  traces ``model.apply`` once under :func:`jax.eval_shape` (nothing is
  computed) with a method interceptor that records every module called;
* without either, :func:`name_rule` reads a rank-2 kernel as dense, a kernel
  Flax auto-named ``Conv_<i>`` / ``ConvTranspose_<i>`` as a conv, and leaves
  any other kernel of rank >= 3 alone (it could be attention).

:func:`module_rule` maps a module to the arguments of
:func:`eoi_core.kernels.kernel_layout`, or to the reason it cannot be
initialised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import jax

__all__ = ["Rule", "module_rule", "name_rule", "nnx_modules", "linen_modules", "UNKNOWN"]

UNKNOWN = "layout unknown: pass model= (and inputs= for linen) or layouts={name: 'conv' | 'einsum' | ...}"
_AUTO_CONV = re.compile(r"(Conv|ConvTranspose)_\d+")
_ATTENTION_INPUTS = ("query", "key", "value")


@dataclass(frozen=True)
class Rule:
    """How to read one kernel: ``kernel_layout`` arguments, or why it is skipped.

    ``layout`` is None for a skipped kernel, and ``reason`` says why;
    otherwise ``reason`` is a note for the report (``"4 heads"``).
    """

    kind: str
    layout: str | None = None
    options: Mapping[str, int] = field(default_factory=dict)
    reason: str = ""


def _tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def module_rule(module: Any, parent: Any, name: str) -> Rule:
    """The :class:`Rule` for the ``kernel`` of a linen or nnx ``module``.

    ``parent`` is the module that holds it (for attention projections and
    fused LSTM kernels), ``name`` its attribute name in ``parent``.
    """
    import flax.linen as nn
    from flax import nnx

    kind = type(module).__name__
    if isinstance(module, (nn.Dense, nnx.Linear)):
        if isinstance(parent, nnx.OptimizedLSTMCell):
            # nnx fuses the 4 gates into one Linear of 4 * hidden outputs.
            return Rule(kind, "gates", {"gates": 4}, "4 gates (i, f, g, o)")
        return Rule(kind, "dense")
    if isinstance(module, nn.ConvLocal):
        return Rule(kind, reason="locally connected conv: one matrix per position, not supported")
    if isinstance(module, (nn.Conv, nnx.Conv)):
        groups = int(module.feature_group_count)
        note = f"{groups} groups" if groups > 1 else ""
        return Rule(kind, "conv", {"groups": groups}, note)
    if isinstance(module, (nn.ConvTranspose, nnx.ConvTranspose)):
        # Flax's kernel is (*kernel, in, out) (or swapped with transpose_kernel):
        # its centre tap is the orthogonal block either way.
        return Rule(kind, "conv")
    if isinstance(module, (nn.DenseGeneral, nnx.LinearGeneral)):
        batch = module.batch_dims if isinstance(module, nn.DenseGeneral) else tuple(module.batch_axis)
        if batch:
            return Rule(kind, reason="batch dims: one matrix per batch index, not supported")
        in_axes = len(_tuple(module.axis))
        heads = getattr(parent, "num_heads", None)
        if isinstance(parent, (nn.MultiHeadDotProductAttention, nnx.MultiHeadAttention)) and name in _ATTENTION_INPUTS:
            return Rule(kind, "einsum", {"in_axes": in_axes, "groups": int(heads)}, f"{heads} heads")
        return Rule(kind, "einsum", {"in_axes": in_axes})
    if isinstance(module, (nn.Einsum, nnx.Einsum)):
        return Rule(kind, reason=f"einsum {module.einsum_str!r}: " + UNKNOWN)
    return Rule(kind)  # unknown type: name_rule decides by rank


def name_rule(name: str, shape: tuple[int, ...], kind: str = "unknown") -> Rule:
    """The :class:`Rule` for a kernel known only by its layer ``name`` and ``shape``."""
    if len(shape) == 2:
        return Rule(kind, "dense")
    if _AUTO_CONV.fullmatch(name.rsplit("/", 1)[-1]):
        if shape[-2] == 1 and shape[-1] > 1:
            # groups=1 would keep one column of the centre tap: C - 1 dead rows
            # if this is a depthwise conv, whose groups the params do not record.
            return Rule(
                kind,
                reason="in // groups = 1: a depthwise conv or a 1-channel input; pass model= or "
                "groups={name: feature_group_count}",
            )
        return Rule(kind, "conv")
    return Rule(kind, reason=UNKNOWN)


def _key_name(entry: Any) -> str:
    return jax.tree_util.keystr((entry,), simple=True, separator="/")


def nnx_modules(module: Any) -> dict[tuple[str, ...], Any]:
    """Every sub-module of an ``nnx.Module``, by its path of attribute names."""
    from flax import nnx

    return {
        tuple(str(part) for part in path): node
        for path, node in nnx.iter_graph(module)
        if isinstance(node, nnx.Module)
    }


def linen_modules(model: Any, variables: Mapping, inputs: tuple) -> dict[tuple[str, ...], Any]:
    """Every linen module that ``model.apply(variables, *inputs)`` calls, by its path.

    Traced under :func:`jax.eval_shape`: the inputs may be
    ``jax.ShapeDtypeStruct`` and nothing is computed.
    """
    import flax.linen as nn

    found: dict[tuple[str, ...], Any] = {}

    def record(next_fun, args, kwargs, context):
        found.setdefault(tuple(str(part) for part in context.module.path), context.module)
        return next_fun(*args, **kwargs)

    def run(variables, *inputs):
        rngs = {"dropout": jax.random.key(0)}
        return model.apply(variables, *inputs, mutable=True, rngs=rngs)

    try:
        with nn.intercept_methods(record):
            jax.eval_shape(run, variables, *inputs)
    except Exception as error:  # whatever the model raised, say which call it was
        raise ValueError(
            f"could not trace model.apply(variables, *inputs) to read the layer types "
            f"(inputs= must be the positional arguments of the model's __call__): {error}"
        ) from error
    return found
