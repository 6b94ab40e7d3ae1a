"""EOI for a whole Flax model: re-initialise its kernels sparse and orthogonal.

A Flax model's parameters are a pytree (``variables`` or
``variables["params"]``); its weights are the leaves named ``kernel``.  Each
selected kernel is read in Flax's layout (``(in, out)`` or
``(*kernel, in // groups, out)``), given a density by a model-wide
distribution (:func:`eoi_core.distributions.layer_densities` on the canonical
shapes) and replaced by :func:`eoi_jax.eoi_with_mask` under its own key.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eoi_core.distributions import layer_densities
from eoi_core.layout import canonical_shape, parse_layout

from .initializers import eoi_with_mask
from .keys import key_words

__all__ = ["sparsify", "layer_name"]

KERNEL = "kernel"


def _entry_name(entry: Any) -> str:
    return jax.tree_util.keystr((entry,), simple=True, separator="/")


def layer_name(path: tuple) -> str:
    """Name of the layer that owns the leaf at ``path``: its path without the leaf.

    ``{"params": {"Conv_0": {"kernel": ...}}}`` gives ``"params/Conv_0"``;
    ``variables["params"]`` gives ``"Conv_0"``.
    """
    return jax.tree_util.keystr(tuple(path[:-1]), simple=True, separator="/")


def _is_kernel(path: tuple, leaf: Any) -> bool:
    return bool(path) and _entry_name(path[-1]) == KERNEL and np.ndim(leaf) >= 2


def _include_predicate(include: Any) -> Callable[[str], bool]:
    if include is None:
        return lambda name: True
    if callable(include):
        return lambda name: bool(include(name))
    if isinstance(include, str):
        include = (include,)
    if isinstance(include, Collection) and all(isinstance(part, str) for part in include):
        parts = tuple(include)
        return lambda name: any(part in name for part in parts)
    raise TypeError(
        "include must be None, a predicate on the layer name, or a collection of "
        f"layer-name substrings, got {include!r}"
    )


def _groups_list(groups: Any, names: list[str]) -> list[Any]:
    if groups is None:
        return [1] * len(names)
    if not isinstance(groups, Mapping):
        raise TypeError(
            "groups must be None or a mapping from layer name to the layer's "
            f"feature_group_count, got {groups!r}"
        )
    unknown = sorted(set(groups) - set(names))
    if unknown:
        raise ValueError(f"groups names layers that are not selected kernels: {unknown}; selected: {names}")
    return [groups.get(name, 1) for name in names]


def _with_layer(name: str, error: Exception) -> Exception:
    return type(error)(f"layer {name!r}: {error}")


def sparsify(
    params: Any,
    density: float | None,
    key: Any,
    *,
    distribution: str | Mapping[str, float] = "erk",
    include: Callable[[str], bool] | Collection[str] | str | None = None,
    groups: Mapping[str, int] | None = None,
    gain: float = 1.0,
    center_density: float | str | None = None,
) -> tuple[Any, Any]:
    r"""Re-initialise a Flax model's kernels with EOI; return ``(params, masks)``.

    Every leaf named ``kernel`` of rank >= 2 (and accepted by ``include``) is
    replaced by an EOI weight of its shape and dtype; biases, norms,
    embeddings and excluded kernels are returned unchanged.  Layer ``l`` gets
    the density ``d_l`` of ``distribution`` over the canonical shapes of the
    selected kernels, so that :math:`\sum_l d_l n_l = d \sum_l n_l`, and the
    key ``jax.random.fold_in(key, l)`` (``l`` counts the selected kernels in
    pytree order).

    Parameters
    ----------
    params : pytree
        Flax parameters, e.g. ``model.init(...)`` or its ``["params"]``.
    density : float in (0, 1] or None
        Target density of the selected kernels together (``None`` only with a
        mapping ``distribution``).
    key : PRNG key
        A single key (typed or raw).
    distribution : {"erk", "uniform", "er", "erdos_renyi"} or mapping, optional
        Per-layer densities; a mapping gives ``{layer name: density}`` for
        every selected layer.
    include : predicate, str or collection of str, optional
        Which kernels to sparsify: a predicate on the layer name, or
        substrings of which the layer name must contain one.  Default: all.
    groups : mapping, optional
        ``{layer name: feature_group_count}`` for grouped convolutions; the
        parameters alone do not record it, and without it a grouped kernel is
        orthogonal as a whole instead of block by block.
    gain, center_density
        As in :func:`eoi_jax.eoi`, for every selected layer.

    Returns
    -------
    params : pytree
        Same structure; selected kernels replaced.
    masks : pytree
        Same structure and leaf shapes, bool: each selected kernel's mask
        (exactly ``floor(d_l * size / g + 0.5)`` True entries per group
        block), all True for every other leaf.  Pass it to
        :func:`eoi_jax.keep_masked`.

    Notes
    -----
    The *layer name* is the leaf's path without ``/kernel``, joined by ``/``
    (``"params/Conv_0"``, or ``"Conv_0"`` when given ``variables["params"]``).
    Traceable: ``jax.jit(lambda p, k: sparsify(p, d, k))`` gives the same
    result (the shapes, and so the densities, are static).
    Kernels of rank >= 3 are read as conv kernels ``(*kernel, in, out)``:
    exclude ``nn.DenseGeneral`` / attention kernels, whose extra axes are not
    spatial, with ``include``.  Kernels boxed in ``nn.Partitioned`` are not
    found; pass ``nn.unbox(params)``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> model = nn.Sequential([nn.Dense(64), nn.relu, nn.Dense(10)])
    >>> params = model.init(jax.random.key(0), jnp.ones((1, 32)))["params"]
    >>> params, masks = sparsify(params, 0.2, jax.random.key(1))
    >>> sorted(masks["layers_0"])
    ['bias', 'kernel']
    """
    key_words(key)  # a single valid key, checked before any work
    select = _include_predicate(include)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    kernels = [i for i, (path, leaf) in enumerate(leaves) if _is_kernel(path, leaf)]
    chosen = [i for i in kernels if select(layer_name(leaves[i][0]))]
    if not chosen:
        available = [layer_name(leaves[i][0]) for i in kernels]
        raise ValueError(
            f"sparsify found no kernels to sparsify (include={include!r}); "
            f"kernel layers in params: {available}"
        )
    names = [layer_name(leaves[i][0]) for i in chosen]
    shapes = [canonical_shape(np.shape(leaves[i][1])) for i in chosen]
    group_counts = _groups_list(groups, names)
    for name, shape, count in zip(names, shapes, group_counts):
        try:
            parse_layout(shape, count)
        except (TypeError, ValueError) as error:
            raise _with_layer(name, error) from error
    densities = layer_densities(distribution, shapes, density, names=names, groups=group_counts)

    new_leaves = [leaf for _, leaf in leaves]
    masks = [jnp.ones(np.shape(leaf), dtype=jnp.bool_) for _, leaf in leaves]
    for layer, (index, name) in enumerate(zip(chosen, names)):
        leaf = leaves[index][1]
        try:
            new_leaves[index], masks[index] = eoi_with_mask(
                jax.random.fold_in(key, layer),
                np.shape(leaf),
                densities[layer],
                gain=gain,
                center_density=center_density,
                groups=group_counts[layer],
                dtype=jnp.result_type(leaf),
            )
        except (TypeError, ValueError) as error:
            raise _with_layer(name, error) from error
    return treedef.unflatten(new_leaves), treedef.unflatten(masks)
