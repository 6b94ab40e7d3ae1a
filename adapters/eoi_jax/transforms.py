"""Training with a fixed sparsity pattern: an optax transformation.

Chained *after* the optimizer, :func:`keep_masked` sets the final update of
every masked-out entry to exactly zero.  EOI starts those entries at exactly
zero, so ``p + 0 = p`` keeps them zero for ever, whatever the optimizer did
before (momentum, Adam statistics, decoupled weight decay, clipping).
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["keep_masked", "KeepMaskedState"]


class KeepMaskedState(NamedTuple):
    """State of :func:`keep_masked`: the bool masks themselves.

    Keeping them in the state (not closed over) passes them to a jitted step
    as arguments rather than baking them into the compiled program as
    constants, and checkpoints them with the rest of the optimizer state.
    """

    masks: Any


def _check_masks(masks: Any, tree: Any, what: str) -> None:
    mask_structure = jax.tree.structure(masks)
    tree_structure = jax.tree.structure(tree)
    if mask_structure != tree_structure:
        raise ValueError(
            f"masks must have the structure of the {what}: got masks {mask_structure} "
            f"and {what} {tree_structure}"
        )
    for mask, leaf in zip(jax.tree.leaves(masks), jax.tree.leaves(tree)):
        if jnp.shape(mask) != jnp.shape(leaf):
            raise ValueError(
                f"every mask must have the shape of its {what} leaf, got mask shape "
                f"{jnp.shape(mask)} for a leaf of shape {jnp.shape(leaf)}"
            )


def _pure(tree: Any) -> Any:
    # nnx.Optimizer hands tx.init the Param state with Variable leaves, and
    # tx.update plain arrays: compare the arrays either way.
    nnx = sys.modules.get("flax.nnx")
    if nnx is None:
        return tree
    return jax.tree.map(
        lambda node: node.get_value() if isinstance(node, nnx.Variable) else node,
        tree,
        is_leaf=lambda node: isinstance(node, nnx.Variable),
    )


def _is_masked_node(node: Any) -> bool:
    return isinstance(node, optax.MaskedNode)


def _restrict(masks: Any, tree: Any) -> Any:
    """``masks`` with ``MaskedNode`` wherever ``tree`` has one.

    ``optax.masked`` and ``optax.multi_transform`` hand an inner
    transformation the parameters with the leaves it does not own replaced by
    ``MaskedNode`` (an empty node); the masks follow suit, so ``keep_masked``
    composes with both.
    """
    if not any(map(_is_masked_node, jax.tree.leaves(tree, is_leaf=_is_masked_node))):
        return masks
    try:
        return jax.tree.map(
            lambda node, mask: node if _is_masked_node(node) else mask, tree, masks, is_leaf=_is_masked_node
        )
    except ValueError:
        return masks  # structures differ beyond MaskedNode: _check_masks says how


def keep_masked(masks: Any) -> optax.GradientTransformation:
    r"""An optax transformation that zeroes updates outside ``masks``.

    .. math:: u' = \mathrm{where}(m, u, 0)

    leaf by leaf.  ``where`` rather than ``u * m`` so that a NaN or inf
    update at a masked-out entry cannot leak (``nan * 0`` is NaN).  Chain it
    last, after everything that produces the update::

        optax.chain(optax.adamw(1e-3, weight_decay=1e-4), eoi_jax.keep_masked(masks))

    Parameters
    ----------
    masks : pytree of bool arrays
        Same structure and leaf shapes as the parameters (what
        :func:`eoi_jax.sparsify` returns); True marks trainable entries.
        Inside ``optax.masked`` or ``optax.multi_transform`` pass the masks of
        all the parameters: the leaves the wrapper hides (``MaskedNode``) are
        dropped from them too.  ``nnx.Variable`` leaves (``nnx.Optimizer``)
        are compared by their values.

    Returns
    -------
    optax.GradientTransformation
        ``init(params)`` checks ``masks`` against ``params`` and stores them
        (:class:`KeepMaskedState`); ``update(updates, state, params=None)``
        returns the masked updates.  Works under ``jax.jit``.

    Raises
    ------
    TypeError
        If a mask leaf is not boolean.
    ValueError
        If ``masks`` does not match the parameters' (or updates') structure
        or leaf shapes.

    Examples
    --------
    >>> import jax.numpy as jnp, optax
    >>> params = {"w": jnp.array([0.0, 1.0])}
    >>> optimizer = optax.chain(optax.sgd(0.1), keep_masked({"w": jnp.array([False, True])}))
    >>> state = optimizer.init(params)
    >>> updates, state = optimizer.update({"w": jnp.array([5.0, 5.0])}, state, params)
    >>> updates["w"].tolist()
    [0.0, -0.5]
    """
    for mask in jax.tree.leaves(masks):
        if jnp.result_type(mask) != jnp.bool_:
            raise TypeError(
                f"masks must be a pytree of bool arrays, got a leaf of dtype {jnp.result_type(mask)}"
            )
    masks = jax.tree.map(jnp.asarray, masks)

    def init_fn(params: Any) -> KeepMaskedState:
        params = _pure(params)
        own = _restrict(masks, params)
        _check_masks(own, params, "params")
        return KeepMaskedState(masks=own)

    def update_fn(updates: Any, state: KeepMaskedState, params: Any = None) -> tuple[Any, KeepMaskedState]:
        del params
        _check_masks(state.masks, updates, "updates")
        updates = jax.tree.map(
            lambda update, mask: jnp.where(mask, update, jnp.zeros_like(update)),
            updates,
            state.masks,
        )
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)
