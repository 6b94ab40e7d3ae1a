r"""EOI for a whole Flax model: re-initialise its kernels sparse and orthogonal.

``sparsify`` takes what a Flax user holds:

* linen ``params`` or ``variables`` (boxed ``nn.Partitioned`` leaves included),
  with ``model=`` and ``inputs=`` to read the layer types;
* an ``nnx.Module`` (updated in place, like ``nnx.update``);
* an ``nnx.State`` (``nnx.split(model)``, ``nnx.state(model, nnx.Param)``),
  with ``model=`` the module or its ``GraphDef`` for the layer types.

Every ``kernel`` leaf is read in its layer's layout (:mod:`eoi_jax.discover`),
given a density by a model-wide distribution on the canonical shapes and
replaced by the scheme's weight under its own key; every weight matrix seen is
a row of the report, sparsified or skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eoi_core import mask_count, schemes
from eoi_core.checks import check_center_density, check_gain, kernel_center_density
from eoi_core.distributions import layer_densities
from eoi_core.kernels import KernelLayout, kernel_layout
from eoi_core.report import LayerReport, SparsifyReport
from eoi_core.selection import select
from eoi_core.verify import VERIFY, check_verify, orthogonality

from .discover import Rule, linen_modules, module_rule, name_rule, nnx_modules
from . import partitioning
from .initializers import _constrain, _is_eoi, _request, stage
from .keys import key_words

__all__ = ["sparsify", "Sparsified", "VERIFY"]

KERNEL = "kernel"
_NOT_WEIGHTS = ("bias", "scale")  # per-head attention biases are rank 2, but not weight matrices
_FORMATS = (
    "sparsify takes linen params/variables (boxed or not), an nnx.Module, or an nnx.State "
    "(nnx.split / nnx.state); a pytree from elsewhere must name its weights 'kernel' "
    "(nnx.to_pure_dict(state) and nn.unbox(variables) give such pytrees)"
)


class Sparsified(tuple):
    """``(params, masks)`` as before, with the :class:`~eoi_core.report.SparsifyReport` as ``.report``.

    Unpacks as a pair (``params, masks = sparsify(...)``) and is a pytree of
    the two (the report rides along as static data), so ``jax.jit`` can return it.
    """

    def __new__(cls, params: Any, masks: Any, report: SparsifyReport) -> "Sparsified":
        self = super().__new__(cls, (params, masks))
        self._report = report
        return self

    @property
    def params(self) -> Any:
        """The parameters with the selected kernels replaced (the module itself for nnx)."""
        return self[0]

    @property
    def masks(self) -> Any:
        """Bool masks of trainable entries, the structure of the parameters (for :func:`keep_masked`)."""
        return self[1]

    @property
    def report(self) -> SparsifyReport:
        """Every weight matrix seen: sparsified, or skipped with the reason."""
        return self._report

    def __repr__(self) -> str:
        return f"Sparsified(params=..., masks=..., report=\n{self._report})"


jax.tree_util.register_pytree_node(
    Sparsified,
    lambda result: ((result[0], result[1]), result.report),
    lambda report, children: Sparsified(children[0], children[1], report),
)


def _is_box(node: Any) -> bool:
    from flax import nnx
    from flax.core import meta

    return isinstance(node, (nnx.Variable, meta.AxisMetadata))


def _unbox(node: Any) -> Any:
    from flax import nnx

    if isinstance(node, nnx.Variable):
        return node.get_value()
    return node.unbox() if _is_box(node) else node


def _rebox(node: Any, value: Any) -> Any:
    from flax import nnx

    if isinstance(node, nnx.Variable):
        return node.replace(value)
    return node.replace_boxed(value) if _is_box(node) else value


def _names(path: tuple) -> tuple[str, ...]:
    return tuple(jax.tree_util.keystr((entry,), simple=True, separator="/") for entry in path)


def _user_rule(name: str, kind: str, layouts: Mapping, groups: Mapping) -> Rule | None:
    if name in layouts:
        spec = layouts[name]
        if isinstance(spec, str):
            return Rule(kind, spec, {"groups": groups[name]} if name in groups else {})
        if isinstance(spec, Mapping) and isinstance(spec.get("layout"), str):
            return Rule(kind, spec["layout"], {k: v for k, v in spec.items() if k != "layout"})
        raise TypeError(
            f"layouts[{name!r}] must be a layout name or a mapping {{'layout': name, **kernel_layout options}} "
            f"(e.g. {{'layout': 'einsum', 'in_axes': 2}}), got {spec!r}"
        )
    if name in groups:
        return Rule(kind, "conv", {"groups": groups[name]}, f"{groups[name]} groups")
    return None


def _check_mapping(value: Any, argument: str, names: list[str]) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{argument} must be None or a mapping from layer name, got {value!r}")
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ValueError(f"{argument} names layers that are not kernels of the model: {unknown}; kernels: {names}")
    return value


def _layer_types(target: Any, tree: Any, model: Any, inputs: Any) -> dict[tuple[str, ...], Any]:
    import flax.linen as nn
    from flax import nnx

    if model is None:
        if inputs is not None:
            raise TypeError("inputs= is only used with model= (a linen Module)")
        return {}
    if isinstance(model, nnx.Module):
        return nnx_modules(model)
    if isinstance(model, nnx.GraphDef):
        try:
            return nnx_modules(nnx.merge(model, tree))
        except Exception as error:  # merge needs every variable of the graph
            raise ValueError(
                f"model= a GraphDef needs the full state of nnx.split(model); pass the nnx.Module "
                f"instead: {error}"
            ) from error
    if isinstance(model, nn.Module):
        if isinstance(target, nnx.State):
            raise TypeError("an nnx.State needs model= an nnx.Module or GraphDef, got a linen Module")
        if inputs is None:
            raise TypeError(
                "model= a linen Module needs inputs= (the positional arguments of its __call__, arrays or "
                "jax.ShapeDtypeStruct): linen layers exist only while the model runs"
            )
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        pure = jax.tree.map(_unbox, tree, is_leaf=_is_box)
        variables = pure if isinstance(pure, Mapping) and "params" in pure else {"params": pure}
        return linen_modules(model, variables, inputs)
    raise TypeError(f"model must be None, a linen Module, an nnx.Module or an nnx.GraphDef, got {model!r}")


def _module_rule(types: Mapping, layer: tuple[str, ...]) -> Rule | None:
    # variables["params"] paths start with "params", module paths do not
    for path in [layer] + ([layer[1:]] if layer[:1] == ("params",) else []):
        if path in types:
            parent = types.get(path[:-1]) if path else None
            return module_rule(types[path], parent, path[-1] if path else "")
    return None


def sparsify(
    params: Any,
    density: float | None,
    key: Any,
    *,
    distribution: str | Mapping[str, float] | Callable = "erk",
    include: Any = None,
    exclude: Any = None,
    model: Any = None,
    inputs: Any = None,
    layouts: Mapping[str, Any] | None = None,
    groups: Mapping[str, int] | None = None,
    gain: float = 1.0,
    center_density: float | str | None = None,
    scheme: str | Callable = "eoi",
    verify: str | None = "probe",
) -> Sparsified:
    r"""Re-initialise a Flax model's kernels with EOI; return ``(params, masks)`` and a report.

    Every ``kernel`` whose layout is known (below) and that ``include`` /
    ``exclude`` select is replaced by the scheme's weight of its shape and
    dtype; biases, norms, embeddings and the other kernels are returned
    unchanged.  Kernel ``l`` gets the density ``d_l`` of ``distribution`` over
    the canonical shapes of the selected kernels, so that :math:`\sum_l d_l
    n_l = d \sum_l n_l`, and the key ``jax.random.fold_in(key, l)`` (``l``
    counts the selected kernels in pytree order).

    Layouts (:mod:`eoi_jax.discover`): ``Dense``/``Linear`` dense;
    ``Conv``/``ConvTranspose`` conv with ``feature_group_count`` blocks
    (depthwise included); ``DenseGeneral``/``LinearGeneral`` einsum, one
    block per head for the query/key/value of ``MultiHeadDotProductAttention``
    / ``MultiHeadAttention``; nnx ``OptimizedLSTMCell``'s fused kernels four
    gate blocks (linen's LSTM cells and nnx ``LSTMCell`` keep one Dense per
    gate).  The types come from the module (nnx) or from ``model=`` and
    ``inputs=`` (linen).  Without them a rank-2 kernel is dense, a kernel Flax
    named ``Conv_<i>`` a conv, and any other kernel of rank >= 3 is skipped
    ("layout unknown"): pass ``model=`` or ``layouts=``.

    Parameters
    ----------
    params : linen params/variables, nnx.Module or nnx.State
        The model's parameters (see the module docstring).
    density : float in (0, 1] or None
        Target density of the selected kernels together (``None`` with a
        mapping ``distribution``, which must then be None).
    key : PRNG key
        A single key (typed or raw).
    distribution : {"erk", "uniform", "er", "erdos_renyi"}, mapping or callable
        Per-layer densities (:func:`eoi_core.distributions.layer_densities`);
        a mapping gives ``{layer name: density}`` for every selected layer.
    include, exclude : selector or iterable of selectors, optional
        Layer names (a name selects that layer and everything under it:
        ``"encoder"`` selects ``"encoder/Dense_0"``), glob patterns
        (``"*/query"``) or predicates on the name (:mod:`eoi_core.selection`).
        A name or pattern that matches no weight is a ``ValueError``.
    model : linen Module, nnx.Module or nnx.GraphDef, optional
        Where the layer types come from when ``params`` does not carry them.
    inputs : tuple, optional
        With a linen ``model``: the positional arguments of its ``__call__``
        (arrays or ``jax.ShapeDtypeStruct``; traced with ``jax.eval_shape``).
    layouts : mapping, optional
        ``{layer name: layout}`` overriding what is known: a name of
        :data:`eoi_core.kernels.KERNEL_LAYOUTS`, or ``{"layout": name,
        **options}`` with :func:`eoi_core.kernels.kernel_layout`'s options
        (``groups``, ``gates``, ``in_axes``).
    groups : mapping, optional
        ``{layer name: feature_group_count}``: shorthand for a grouped conv's
        layout when ``model=`` is not given.
    gain : float, optional
        Positive scale of every selected kernel.
    center_density : None, float or "sqrt", optional
        Centre-tap density of conv kernels only
        (:func:`eoi_core.checks.kernel_center_density`); dense, einsum and
        gate kernels have no taps and ignore it.
    scheme : str or callable, optional
        :func:`eoi_core.schemes.get`; ``"eoi"`` by default.
    verify : {"probe", "exact", None}, optional
        The report's orthogonality column, ``max |H^T H - g^2 I| / g^2`` over
        the blocks (:mod:`eoi_core.verify`, shared with the other adapters):
        ``"probe"`` estimates it with random probe vectors at ``O(size)``,
        ``"exact"`` forms the Gram matrices (``O(n^3)``), ``None`` skips it.
        Computed only on concrete (eager) weights; under ``jax.jit`` the
        column is ``None``.

    Returns
    -------
    Sparsified
        Unpacks as ``params, masks``; ``.report`` lists every weight matrix.
        ``params`` has the structure of the input (an nnx.Module is updated
        in place and returned).  ``masks`` holds plain bool arrays, exactly
        ``floor(d_l * size / g + 0.5)`` True entries per block of a selected
        kernel and all True elsewhere, in the structure of the parameters
        (of ``nnx.state(module, nnx.Param)`` for a module, what
        ``nnx.Optimizer(..., wrt=nnx.Param)`` optimises): pass it to
        :func:`eoi_jax.keep_masked`.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, an unknown distribution or scheme, an infeasible
        density, a selector that matches nothing, or no kernel to sparsify
        (each naming the layer).  Everything is generated before anything is
        written, so on an error an nnx.Module is untouched.

    Notes
    -----
    Traceable: ``jax.jit(lambda p, k: sparsify(p, d, k))`` gives the same
    arrays (shapes, layouts and densities are static; the report is built
    while tracing and has no orthogonality column).

    Shardings: every kernel and mask keeps its input's sharding, and each
    device's shard is built alone (:mod:`eoi_jax.shards`): eagerly from the
    array's ``.sharding``; under ``jit`` from the traced array's type (mesh
    axes of type ``Explicit``) or from its box (``nn.Partitioned``,
    ``nn.LogicallyPartitioned``, an ``nnx.Variable`` with ``out_sharding``)
    under ``jax.set_mesh``.  A plain array traced over ``Auto`` axes carries
    no sharding while tracing: its new kernel and mask are staged for the
    sharding XLA gives the input (:mod:`eoi_jax.autoshard`), so they come out
    laid out alike without ``out_shardings``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> model = nn.Sequential([nn.Dense(64), nn.relu, nn.Dense(10)])
    >>> params = model.init(jax.random.key(0), jnp.ones((1, 32)))["params"]
    >>> params, masks = sparsify(params, 0.2, jax.random.key(1))
    >>> sorted(masks["layers_0"])
    ['bias', 'kernel']
    >>> from flax import nnx
    >>> block = nnx.MultiHeadAttention(4, 32, decode=False, rngs=nnx.Rngs(0))
    >>> result = sparsify(block, 0.25, jax.random.key(2))
    >>> [(row.name, row.groups) for row in result.report]
    [('key', 4), ('out', 1), ('query', 4), ('value', 4)]
    """
    from flax import nnx

    key_words(key)  # a single valid key, checked before any work
    gain = check_gain(gain)
    center_density = check_center_density(center_density)
    scheme_fn = schemes.get(scheme)
    check_verify(verify)

    module = params if isinstance(params, nnx.Module) else None
    tree = nnx.state(module, nnx.Param) if module is not None else params
    types = nnx_modules(module) if module is not None else _layer_types(params, tree, model, inputs)

    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_box)
    values = [_unbox(leaf) for _, leaf in leaves]
    rows: list[Any] = [None] * len(leaves)  # a LayerReport, or (name, KernelLayout, note) for a candidate
    kernel_names = []
    for index, ((path, _), value) in enumerate(zip(leaves, values)):
        names = _names(path)
        if np.ndim(value) < 2 or not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            continue
        name, parameter = "/".join(names[:-1]), names[-1]
        if parameter == KERNEL:
            kernel_names.append(name)
        elif parameter not in _NOT_WEIGHTS:
            reason = "embedding table: a lookup, not a linear map" if parameter == "embedding" else "not a kernel"
            kind = type(types[names[:-1]]).__name__ if names[:-1] in types else "unknown"
            rows[index] = LayerReport.skipped(
                name, kind, np.shape(value), jnp.result_type(value).name, reason, parameter
            )
    if not kernel_names:
        raise ValueError(f"sparsify found no kernels (leaves named 'kernel' of rank >= 2): {_FORMATS}")
    layouts = _check_mapping(layouts, "layouts", kernel_names)
    groups = _check_mapping(groups, "groups", kernel_names)

    for index, ((path, _), value) in enumerate(zip(leaves, values)):
        names = _names(path)
        if rows[index] is not None or not names or names[-1] != KERNEL or np.ndim(value) < 2:
            continue
        if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            continue
        name, shape, dtype = "/".join(names[:-1]), tuple(np.shape(value)), jnp.result_type(value).name
        found = _module_rule(types, names[:-1])
        kind = found.kind if found is not None else "unknown"
        rule = _user_rule(name, kind, layouts, groups)
        given = rule is not None
        if rule is None:
            rule = found if found is not None and (found.layout or found.reason) else name_rule(name, shape, kind)
        if rule.layout is None:
            rows[index] = LayerReport.skipped(name, rule.kind, shape, dtype, rule.reason, KERNEL)
            continue
        try:
            layout = kernel_layout(shape, rule.layout, **rule.options)
        except (TypeError, ValueError) as error:
            if given:
                raise type(error)(f"layer {name!r}: {error}") from error
            # e.g. a Dense kernel stacked by nn.scan / nn.vmap: one more axis than the layer's
            reason = f"{rule.kind} kernel of shape {shape} does not fit layout {rule.layout!r} ({error})"
            rows[index] = LayerReport.skipped(name, rule.kind, shape, dtype, reason, KERNEL)
            continue
        rows[index] = (name, layout, rule)

    candidates = [i for i, row in enumerate(rows) if isinstance(row, tuple)]
    seen = [row.name if isinstance(row, LayerReport) else row[0] for row in rows if row is not None]
    chosen_positions = select([rows[i][0] for i in candidates], include, exclude, sep="/", candidates=seen)
    chosen = [candidates[i] for i in chosen_positions]
    for i in sorted(set(candidates) - set(chosen)):
        name, layout, rule = rows[i]
        dtype = jnp.result_type(values[i]).name
        rows[i] = LayerReport.skipped(name, rule.kind, layout.shape, dtype, "not selected (include/exclude)", KERNEL)
    if not chosen:
        skipped = [f"{row.name}: {row.reason}" for row in rows if isinstance(row, LayerReport)]
        raise ValueError(
            f"sparsify found no kernels to sparsify (include={include!r}, exclude={exclude!r}); "
            f"weights seen: {skipped}"
        )

    names = [rows[i][0] for i in chosen]
    kernels: list[KernelLayout] = [rows[i][1] for i in chosen]
    densities = layer_densities(
        distribution, [k.canonical for k in kernels], density, names=names, groups=[k.groups for k in kernels]
    )

    # Generate everything before writing anything: an error leaves a module untouched.
    new_values = list(values)
    # Every output keeps its input's sharding; each device builds its own shard.
    shardings = [partitioning.of_value(leaf, value) for (_, leaf), value in zip(leaves, values)]
    # A traced array over Auto mesh axes shows no sharding: its mask is computed from it, so
    # that the partitioner gives both the same layout.
    hidden = jax.device_count() > 1
    masks = [
        _ones_like(value) if hidden and sharding is None and not _concrete(value) and np.ndim(value)
        else _ones(value, sharding)
        for value, sharding in zip(values, shardings)
    ]
    for layer, index in enumerate(chosen):
        name, layout, rule = rows[index]
        try:
            request = _request(
                layout,
                densities[layer],
                gain,
                kernel_center_density(layout.canonical, center_density),
                jnp.result_type(values[index]),
                scheme_fn,
            )
        except (TypeError, ValueError) as error:
            raise type(error)(f"layer {name!r}: {error}") from error
        # A traced array whose sharding is not visible (Auto mesh axes) lends it to the new
        # kernel at compile time: the partitioner lays both out alike.
        like = values[index] if shardings[index] is None and not _concrete(values[index]) else None
        new_values[index], masks[index] = stage(
            jax.random.fold_in(key, layer), request, shardings[index], like=like
        )
        rows[index] = _row(name, rule, layout, request, new_values[index], masks[index], verify)

    replaced = set(chosen)
    new_leaves = [_rebox(leaf, new_values[i]) if i in replaced else leaf for i, (_, leaf) in enumerate(leaves)]
    result_params = treedef.unflatten(new_leaves)
    result_masks = treedef.unflatten(masks)
    if module is not None:
        nnx.update(module, result_params)
        result_params = module
    return Sparsified(result_params, result_masks, SparsifyReport([row for row in rows if row is not None]))


def _ones(value: Any, sharding: Any) -> jax.Array:
    """An all-True mask of ``value``'s shape, laid out as ``sharding`` (None: default placement)."""
    if sharding is None:
        return jnp.ones(np.shape(value), dtype=jnp.bool_)
    if _concrete(value):
        return jnp.ones(np.shape(value), dtype=jnp.bool_, device=sharding)
    return _constrain(jnp.ones(np.shape(value), dtype=jnp.bool_), sharding)


def _ones_like(value: Any) -> jax.Array:
    """All True, computed from ``value`` so that XLA lays it out as ``value`` (NaN included)."""
    return (value == value) | (value != value)


def _concrete(array: Any) -> bool:
    return not isinstance(array, jax.core.Tracer)


def _row(name: str, rule: Rule, layout: KernelLayout, request: Any, weight: Any, mask: Any, verify: Any) -> LayerReport:
    size = int(np.prod(layout.shape))
    if _concrete(mask):
        count = int(np.asarray(mask).sum())
    elif _is_eoi(request.scheme):
        count = layout.groups * mask_count(request.density, size // layout.groups)
    else:
        count = None
    error = None
    if verify is not None and _is_eoi(request.scheme) and _concrete(weight):
        canonical = layout.to_canonical(np.asarray(weight))
        error = orthogonality(canonical, request.gain, layout.groups, verify)
    return LayerReport(
        name=name,
        kind=rule.kind,
        shape=layout.shape,
        groups=layout.groups,
        dtype=request.dtype.name,
        density=request.density,
        mask_count=count,
        size=size,
        gain=request.gain,
        orthogonality_error=error,
        reason=rule.reason,
        parameter=KERNEL,
    )
