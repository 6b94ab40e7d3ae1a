"""Model-wide EOI with masks kept fixed in training: ``sparsify`` and ``kernel_masks``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import keras
import numpy as np

import eoi_core
from eoi_core import distributions, selection
from eoi_core.checks import kernel_center_density
from eoi_core.dtypes import DTYPES
from eoi_core.kernels import KernelLayout
from eoi_core.report import LayerReport, SparsifyReport
from eoi_core.verify import check_verify, orthogonality

from .constraint import MaskConstraint
from .layouts import KernelSpec, layer_specs
from .seeding import draw_core_seed, layer_seeds, normalize_seed

__all__ = ["sparsify", "kernel_masks", "find_kernels", "Kernel"]


@dataclass(frozen=True)
class Kernel:
    """One weight matrix of a model, as :func:`sparsify` sees it.

    ``key`` is its qualified name: the layer's path (``"block/mha/query"``),
    followed by ``".parameter"`` for any parameter but ``kernel``
    (``"lstm/lstm_cell.recurrent_kernel"``), the spelling of the report table.
    """

    key: str
    name: str
    layer: Any
    parent: Any
    variable: Any
    spec: KernelSpec | None
    reason: str

    @property
    def parameter(self) -> str:
        return self.variable.name

    def layout(self) -> KernelLayout:
        return self.spec.kernel_layout(tuple(self.variable.shape))

    def skipped(self, reason: str) -> LayerReport:
        return LayerReport.skipped(self.name, type(self.layer).__name__, tuple(self.variable.shape),
                                   keras.backend.standardize_dtype(self.variable.dtype), reason, self.parameter)


def _walk(layer: Any, parent: Any, seen: set[int], prefix: str = "") -> Iterator[tuple[Any, Any, str]]:
    # Keras' own traversal (what weight tracking and saving use), with parents
    # and the qualified name: the layer names below the root, joined by "/".
    # (Variable paths are not used: a reloaded Bidirectional drops its own name from them.)
    if id(layer) in seen:
        return
    seen.add(id(layer))
    yield layer, parent, prefix or layer.name
    for child in layer._flatten_layers(include_self=False, recursive=False):
        yield from _walk(child, layer, seen, f"{prefix}/{child.name}" if prefix else child.name)


def _own_variables(layer: Any) -> list:
    # The variables the layer itself created (its sublayers' are theirs), as
    # Keras' save_own_variables lists them.
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def _reason(layer: Any, variable: Any, spec: KernelSpec | None, constraint: Any) -> str:
    dtype = keras.backend.standardize_dtype(variable.dtype)
    if dtype not in DTYPES:
        return f"dtype {dtype} (a quantized or integer weight)"
    if getattr(layer, "lora_enabled", False):
        return "LoRA is enabled on the layer: sparsify before enabling LoRA"
    if spec is None:
        return f"{type(layer).__name__}.{variable.name} has no layout EOI knows"
    if spec.layout is None:
        return spec.note
    if constraint is not None and not isinstance(constraint, MaskConstraint):
        return f"it has the constraint {constraint!r}, which a mask constraint would replace"
    return ""


def find_kernels(model: Any) -> list[Kernel]:
    """Every float weight of rank >= 2 in ``model`` (nested layers included), in Keras' order.

    Each comes with its :class:`~eoi_keras.layouts.KernelSpec`, or the reason
    ``sparsify`` cannot initialise it.
    """
    found = []
    for layer, parent, name in _walk(model, None, set()):
        specs = layer_specs(layer, parent)
        for variable in _own_variables(layer):
            # Biases of rank 2 (EinsumDense, GRU with reset_after) are no weight matrices.
            if len(variable.shape) < 2 or variable.name.endswith("bias"):
                continue
            spec = specs.get(variable.name)
            owner = parent if _shared_constraint(layer, parent) else layer
            attribute = "_kernel_constraint" if owner is parent else (spec.constraint if spec else "")
            constraint = getattr(owner, attribute, None) if attribute else None
            reason = _reason(layer, variable, spec, constraint)
            key = name if variable.name == "kernel" else f"{name}.{variable.name}"
            found.append(Kernel(key, name, layer, parent, variable, None if reason else spec, reason))
    return found


def _shared_constraint(layer: Any, parent: Any) -> bool:
    # MultiHeadAttention hands its one kernel_constraint to every projection
    # (and saves only that one in its config).
    return isinstance(parent, keras.layers.MultiHeadAttention) and isinstance(layer, keras.layers.EinsumDense)


def _selector(value: Any, names: dict[int, str]) -> Any:
    # A layer object is callable, so it would pass for a name predicate: use its qualified name.
    if isinstance(value, keras.layers.Layer):
        if id(value) not in names:
            raise ValueError(f"include/exclude holds the layer {value.name!r}, which is not in the model")
        return names[id(value)]
    if isinstance(value, (list, tuple, set)):
        return [_selector(item, names) for item in value]
    return value


def _layers_alias(layers: Any, include: Any) -> Any:
    if layers is None:
        return include
    if include is not None:
        raise ValueError("pass include= only; layers= is its deprecated alias")
    warnings.warn("sparsify(layers=...) is deprecated: use include=", DeprecationWarning, stacklevel=3)
    return layers


def _ancestors(kernel: Kernel, parents: dict[int, Any]) -> list:
    chain, layer = [], kernel.layer
    while layer is not None:
        chain.append(layer)
        layer = parents.get(id(layer))
    return chain


def sparsify(
    model: keras.layers.Layer,
    density: float | None,
    distribution: str | Mapping[str, float] | Callable = "erk",
    *,
    gain: float = 1.0,
    center_density: float | str | None = None,
    seed: Any = None,
    include: Any = None,
    exclude: Any = None,
    scheme: str | Callable = "eoi",
    verify: str | None = "probe",
    layers: Iterable[Any] | None = None,
) -> SparsifyReport:
    """Initialize a built model's kernels with EOI and keep their masks fixed in training.

    Every weight matrix of the model is found (nested layers included) and
    read in its layer's layout (:mod:`eoi_keras.layouts`): ``Dense``,
    ``EinsumDense`` and ``MultiHeadAttention`` (input and output axes
    flattened, one orthogonal block per head for the query, key and value
    projections), ``Conv*`` (centre tap per group), ``Conv*Transpose``,
    ``DepthwiseConv*`` and the depthwise half of ``SeparableConv*`` (one block
    per channel), ``SimpleRNN``, ``LSTM`` / ``GRU`` (one block per gate, for
    both the kernel and the recurrent kernel) and ``ConvLSTM*``.  Each
    selected kernel is overwritten with a draw of ``scheme`` at its density
    ``d_l``, and its variable's ``constraint`` (what Keras 3 optimizers apply
    after each update) and the layer's constraint attribute (what its config
    saves) are set to a :class:`~eoi_keras.MaskConstraint` holding the mask.
    So masked entries stay exactly zero through ``fit``, and the masks are
    saved with the weights: ``model.save`` / ``keras.models.load_model``
    restore them, and so does ``model.load_weights`` into a model built and
    sparsified the same way (the file's kernels and masks replace the new
    ones).  Biases are untouched.  Every other weight of rank >= 2
    (embeddings, unknown layers, LoRA or quantized kernels, kernels with a
    constraint of their own, unselected ones) is listed in the report as
    skipped, with the reason.

    The per-layer densities ``d_l`` come from
    :func:`eoi_core.distributions.layer_densities` over the kernels'
    canonical shapes and blocks.

    Parameters
    ----------
    model : keras.Model or keras.layers.Layer
        Built (called once, or ``model.build(input_shape)``).
    density : float in (0, 1] or None
        Overall density of the selected kernels (``None`` with a mapping).
    distribution : {"erk", "uniform", "er", "erdos_renyi"}, mapping or callable, optional
        How the density is spread over kernels, ``{key: density}`` covering
        every selected kernel (keys as in the report: ``"dense"``,
        ``"lstm/lstm_cell.recurrent_kernel"``), or a callable (see
        :func:`~eoi_core.distributions.layer_densities`).
    gain : float, optional
        Positive scale of the orthogonal blocks.
    center_density : None, float or "sqrt", optional
        The centre-tap density of convolution kernels (rank >= 3); dense
        kernels use their layer density (:func:`eoi_core.checks.kernel_center_density`).
    seed : None, int >= 0 or keras.random.SeedGenerator, optional
        An int is split into one seed per kernel with
        ``numpy.random.SeedSequence(seed).spawn``, so it gives the same
        kernels and masks on every run and every Keras backend.  ``None``
        draws that int from Python's ``random`` (as Keras' initializers do),
        so ``keras.utils.set_random_seed`` makes it reproducible.  A
        ``SeedGenerator`` gives one draw per kernel.
    include, exclude : selector or iterable of selectors, optional
        Which kernels (see :mod:`eoi_core.selection`): layer paths with
        ``"/"`` (``"encoder"`` selects everything inside it), kernel keys,
        glob patterns, predicates on the key, or layer types (a kernel is
        selected when its layer or any layer around it is an instance).  A
        name or pattern that matches nothing is an error.
    scheme : str or callable, optional
        A name in :data:`eoi_core.schemes.SCHEMES` or a function with the
        core's signature.  Only ``"eoi"`` promises orthogonality.
    verify : {"probe", "exact", None}, optional
        The report's orthogonality column (:mod:`eoi_core.verify`): a few
        random probe vectors per block (``O(size)``), the exact Gram error
        (``O(n^3)``), or not computed.
    layers : optional
        Deprecated alias of ``include``.

    Returns
    -------
    eoi_core.report.SparsifyReport
        One row per weight matrix of rank >= 2: sparsified (density, mask
        count, gain, orthogonality error, blocks) or skipped (why).

    Raises
    ------
    ValueError, TypeError
        Unbuilt model, nothing to sparsify, unmatched selectors, or an
        infeasible density.  All kernels are computed before the first is
        written, so a failure leaves the model unchanged.

    Notes
    -----
    A compiled model may be sparsified after training: its traced train step
    is dropped (as ``compile`` does) so that the next ``fit`` applies the
    masks; the optimizer's state is kept.  The masks are NumPy constants of
    the traced train step: after ``load_weights`` into a model that has
    already been fitted, call ``compile`` again so that ``fit`` re-traces.

    Examples
    --------
    >>> import keras, eoi_keras
    >>> model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
    ...                           keras.layers.Dense(10)])
    >>> report = eoi_keras.sparsify(model, 0.1, "erk", seed=0)
    >>> [row.name for row in report.sparsified] == [layer.name for layer in model.layers]
    True
    >>> round(report.density, 3)
    0.1
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"model must be a keras.Model or keras.layers.Layer, got {type(model).__name__}")
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built: call it on data or use model.build(input_shape) "
            "before sparsify, so that its kernels exist"
        )
    verify = check_verify(verify)
    from eoi_core import schemes  # the registry imports every scheme: load it on first use

    make = schemes.get(scheme)
    seed = normalize_seed(seed)
    found = find_kernels(model)
    walked = list(_walk(model, None, set()))
    names = {id(layer): name for layer, _, name in walked}
    include = _selector(_layers_alias(layers, include), names)
    exclude = _selector(exclude, names)
    parents = {id(layer): parent for layer, parent, _ in walked if parent is not None}
    candidates = [kernel for kernel in found if kernel.spec is not None]
    keys = [kernel.key for kernel in candidates]
    every_name = sorted({k.key for k in found} | {name for _, _, name in walked})
    chosen = selection.select(
        keys, include, exclude, sep="/", candidates=every_name,
        objects=[_ancestors(kernel, parents) for kernel in candidates], other=(type,), other_doc="a layer type",
        match_other=lambda kind, chain: any(isinstance(layer, kind) for layer in chain),
    )
    selected = [candidates[i] for i in chosen]
    if not selected:
        raise ValueError(
            f"model {model.name!r} has no kernel to sparsify"
            + (" (include/exclude left none)" if candidates else f"; seen: {[k.key for k in found]}")
        )
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"sparsify needs unique layer paths, but {duplicates} occur more than once")

    layouts = [kernel.layout() for kernel in selected]
    densities = distributions.layer_densities(
        distribution, [k.canonical for k in layouts], density,
        names=[k.key for k in selected], groups=[k.groups for k in layouts],
    )
    # Draw everything first: a bad kernel must not leave the model half-initialized.
    draws = []
    for kernel, kl, layer_density, layer_seed in zip(selected, layouts, densities, layer_seeds(seed, len(selected))):
        dtype = keras.backend.standardize_dtype(kernel.variable.dtype)
        try:
            weight, mask = make(
                kl.canonical, layer_density, gain=gain, dtype=dtype, rng=draw_core_seed(layer_seed),
                groups=kl.groups, center_density=kernel_center_density(kl.canonical, center_density),
            )
        except ValueError as error:
            raise ValueError(f"{kernel.key} ({kl.kind} kernel {kl.shape}, canonical {kl.canonical}): {error}") from error
        error = orthogonality(weight, gain, kl.groups, verify) if scheme == "eoi" else None
        draws.append((kl.from_canonical(weight), kl.from_canonical(mask), error))

    _write(selected, draws)
    if isinstance(model, keras.Model) and model.compiled:
        # A traced train step (TF, JAX) read the constraints when it was traced:
        # drop it, as `compile` does, so the next `fit` applies the masks.
        model.train_function = None

    rows = {}
    for kernel, kl, layer_density, (weight, mask, error) in zip(selected, layouts, densities, draws):
        rows[kernel.key] = LayerReport(
            name=kernel.name, kind=type(kernel.layer).__name__, shape=kl.shape, groups=kl.groups,
            dtype=keras.backend.standardize_dtype(kernel.variable.dtype), density=float(layer_density),
            mask_count=int(mask.sum()), size=int(mask.size), gain=float(gain), orthogonality_error=error,
            reason=kernel.spec.note, parameter=kernel.parameter,
        )
    chosen_keys = set(rows)
    report = []
    for kernel in found:
        if kernel.key in chosen_keys:
            report.append(rows[kernel.key])
        else:
            report.append(kernel.skipped(kernel.reason or "not selected (include/exclude)"))
    return SparsifyReport(report)


def _write(selected: list[Kernel], draws: list) -> None:
    banks: dict[int, dict[str, np.ndarray]] = {}
    for kernel, (weight, mask, _) in zip(selected, draws):
        kernel.variable.assign(weight)
        if _shared_constraint(kernel.layer, kernel.parent):
            banks.setdefault(id(kernel.parent), {})[f"{kernel.layer.name}/{kernel.parameter}"] = mask
            continue
        constraint = MaskConstraint(mask)
        kernel.variable.constraint = constraint
        setattr(kernel.layer, kernel.spec.constraint, constraint)
    # One MaskConstraint per MultiHeadAttention holds the masks of its
    # projections, keyed by "projection/kernel": the layer hands its one
    # kernel_constraint to every projection, on rebuild from its config too.
    by_id = {id(kernel.parent): kernel.parent for kernel in selected if kernel.parent is not None}
    for parent_id, masks in banks.items():
        attention = by_id[parent_id]
        bank = MaskConstraint(masks)
        attention._kernel_constraint = bank
        for projection in attention._flatten_layers(include_self=False, recursive=False):
            if isinstance(projection, keras.layers.EinsumDense):
                projection.kernel_constraint = bank
                projection.kernel.constraint = bank


def kernel_masks(model: keras.layers.Layer) -> dict[str, np.ndarray]:
    """The masks of a model's kernels that carry a :class:`MaskConstraint`.

    Returns
    -------
    dict
        ``{key: bool ndarray}`` in Keras layout, keyed as in :func:`sparsify`'s
        report (``"dense"``, ``"mha/query"``, ``"lstm/lstm_cell.recurrent_kernel"``).
        A constraint made from a config whose weights were never loaded
        (``keras.models.clone_model``) holds no mask yet and is left out.
    """
    masks = {}
    for kernel in find_kernels(model):
        constraint = getattr(kernel.variable, "constraint", None)
        if isinstance(constraint, MaskConstraint) and constraint.loaded:
            mask = constraint.mask_for(kernel.variable)
            if mask is not None:
                masks[kernel.key] = mask
    return masks
