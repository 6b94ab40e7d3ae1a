"""Model-wide EOI with masks kept fixed in training: ``sparsify`` and ``kernel_masks``."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import keras
import numpy as np

from eoi_core import distributions, layout

from .constraint import MaskConstraint
from .initializer import EOI
from .seeding import layer_seeds, normalize_seed

__all__ = ["sparsify", "kernel_masks", "SUPPORTED_LAYERS", "is_supported"]

# Layers whose kernel is (in, out) or (*kernel, in // groups, out).  Transposed
# and depthwise convolutions keep their kernels in other layouts: not supported.
SUPPORTED_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.EinsumDense,
)


def _kernel_variable(layer: keras.layers.Layer) -> keras.Variable:
    kernel = layer.kernel
    if not isinstance(kernel, keras.Variable):
        # LoRA-enabled or quantized layers expose a computed tensor as `kernel`.
        raise ValueError(
            f"layer {layer.name!r} exposes its kernel as a computed tensor (LoRA or quantization), "
            "not a variable; sparsify it before enabling LoRA or quantizing"
        )
    return kernel


def is_supported(layer: keras.layers.Layer) -> bool:
    """Whether ``sparsify`` handles ``layer``: Dense, Conv1D/2D/3D, or EinsumDense with a 2-D kernel.

    The layer must be built (its kernel shape decides for ``EinsumDense``).
    """
    if not isinstance(layer, SUPPORTED_LAYERS):
        return False
    if isinstance(layer, keras.layers.EinsumDense):
        return layer.built and len(layer.kernel.shape) == 2
    return True


def _all_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    # Keras' own traversal (what `model.layers` and weight tracking use):
    # nested models and layers, each once, in a deterministic order.
    return list(model._flatten_layers(include_self=True, recursive=True))


def _select(model: keras.layers.Layer, layers: Iterable[Any] | None) -> list[keras.layers.Layer]:
    found = _all_layers(model)
    if layers is None:
        selected = [layer for layer in found if is_supported(layer)]
    else:
        if isinstance(layers, (str, keras.layers.Layer)):
            layers = [layers]
        by_name = {layer.name: layer for layer in found}
        ids = {id(layer) for layer in found}
        selected = []
        for item in layers:
            if isinstance(item, str):
                if item not in by_name:
                    raise ValueError(f"layers names {item!r}, which is not a layer of the model")
                item = by_name[item]
            elif not isinstance(item, keras.layers.Layer) or id(item) not in ids:
                raise ValueError(f"layers must hold names or layers of the model, got {item!r}")
            if not is_supported(item):
                raise ValueError(
                    f"layer {item.name!r} ({type(item).__name__}) is not supported: sparsify handles "
                    "Dense, Conv1D, Conv2D, Conv3D and EinsumDense with a 2-D kernel"
                )
            selected.append(item)
    if not selected:
        raise ValueError(
            "the model has no layer sparsify can handle (Dense, Conv1D, Conv2D, Conv3D, "
            "EinsumDense with a 2-D kernel)"
        )
    names = [layer.name for layer in selected]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"sparsify needs unique layer names, but {duplicates} occur more than once")
    return selected


def sparsify(
    model: keras.layers.Layer,
    density: float | None,
    distribution: str | Mapping[str, float] = "erk",
    *,
    gain: float = 1.0,
    center_density: float | str | None = None,
    seed: Any = None,
    layers: Iterable[str | keras.layers.Layer] | None = None,
) -> dict[str, float]:
    """Initialize a built model's kernels with EOI and keep their masks fixed in training.

    For every selected layer ``l`` (default: every ``Dense``, ``Conv1D``,
    ``Conv2D``, ``Conv3D`` and 2-D ``EinsumDense``, nested models included) the
    kernel is overwritten with an :class:`~eoi_keras.EOI` draw at density
    ``d_l`` (block-wise for ``groups > 1``, read from the layer), and both the
    kernel variable's ``constraint`` (what Keras 3 optimizers apply after each
    update) and the layer's ``kernel_constraint`` (what its config saves) are
    set to a :class:`~eoi_keras.MaskConstraint` holding the mask.  So masked
    entries stay exactly zero through ``fit``, and ``model.save`` /
    ``keras.models.load_model`` restore the masks.  Biases are untouched.

    The per-layer densities ``d_l`` come from
    :func:`eoi_core.distributions.layer_densities`: their parameter-weighted
    mean is ``density``, and each is at least the layer's orthogonal floor.

    Parameters
    ----------
    model : keras.Model or keras.layers.Layer
        Built (called once, or ``model.build(input_shape)``).
    density : float in (0, 1] or None
        Overall density of the selected kernels (``None`` only with a mapping).
    distribution : {"erk", "uniform", "er", "erdos_renyi"} or mapping, optional
        How the density is spread over layers, or ``{layer name: density}``
        covering every selected layer.
    gain, center_density : optional
        As for :class:`~eoi_keras.EOI`.
    seed : None, int >= 0 or keras.random.SeedGenerator, optional
        An int is split into one seed per layer with
        ``numpy.random.SeedSequence(seed).spawn``, so it gives the same
        kernels and masks on every run and every Keras backend.  ``None``
        draws that int from Python's ``random`` (as Keras' initializers do),
        so ``keras.utils.set_random_seed`` makes it reproducible.  A
        ``SeedGenerator`` is advanced once per layer.
    layers : iterable of layer names or layers, optional
        Restrict sparsify to these layers (each must be supported).

    Returns
    -------
    dict
        ``{layer name: density}`` of the layers sparsified, in model order.

    Raises
    ------
    ValueError, TypeError
        Unbuilt model or layer, no supported layer, unknown or duplicate
        names, or an infeasible density.  All kernels are computed before the
        first is written, so a failure leaves the model unchanged.

    Notes
    -----
    A compiled model may be sparsified after training: its traced train step
    is dropped (as ``compile`` does) so that the next ``fit`` applies the
    masks; the optimizer's state is kept.

    Only the masks live in the model (in the constraints); the layers'
    ``kernel_initializer`` is left as it was, so a model rebuilt from its
    config (``keras.models.clone_model``) starts from that initializer and is
    masked after its first optimizer step.

    Examples
    --------
    >>> import keras, eoi_keras
    >>> model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
    ...                           keras.layers.Dense(10)])
    >>> densities = eoi_keras.sparsify(model, 0.1, "erk", seed=0)
    >>> sorted(densities) == sorted(layer.name for layer in model.layers)
    True
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"model must be a keras.Model or keras.layers.Layer, got {type(model).__name__}")
    if not model.built:
        raise ValueError(
            f"model {model.name!r} is not built: call it on data or use model.build(input_shape) "
            "before sparsify, so that its kernels exist"
        )
    seed = normalize_seed(seed)
    selected = _select(model, layers)
    for layer in selected:
        if not layer.built:
            raise ValueError(f"layer {layer.name!r} is not built; build the model before sparsify")
    kernels = [_kernel_variable(layer) for layer in selected]
    names = [layer.name for layer in selected]
    groups = [int(getattr(layer, "groups", 1) or 1) for layer in selected]
    shapes = [layout.canonical_shape(tuple(kernel.shape)) for kernel in kernels]
    densities = distributions.layer_densities(distribution, shapes, density, names=names, groups=groups)

    # Draw everything first: a bad layer must not leave the model half-initialized.
    draws = [
        EOI(layer_density, gain, center_density, seed=layer_seed, groups=layer_groups).weight_and_mask(
            tuple(kernel.shape), kernel.dtype
        )
        for layer_density, layer_groups, layer_seed, kernel in zip(
            densities, groups, layer_seeds(seed, len(kernels)), kernels
        )
    ]
    for layer, kernel, (weight, mask) in zip(selected, kernels, draws):
        constraint = MaskConstraint(mask)
        kernel.assign(weight)
        kernel.constraint = constraint
        layer.kernel_constraint = constraint
    if isinstance(model, keras.Model) and model.compiled:
        # A traced train step (TF, JAX) read the constraints when it was traced:
        # drop it, as `compile` does, so the next `fit` applies the masks.
        model.train_function = None
    return dict(zip(names, densities))


def kernel_masks(model: keras.layers.Layer) -> dict[str, np.ndarray]:
    """The masks of a model's kernels that carry a :class:`MaskConstraint`.

    Returns
    -------
    dict
        ``{layer name: bool ndarray}`` in Keras layout, for every built Dense,
        Conv1D/2D/3D or EinsumDense layer (nested ones included) whose kernel
        variable's constraint is a ``MaskConstraint``.
    """
    masks = {}
    for layer in _all_layers(model):
        if not (isinstance(layer, SUPPORTED_LAYERS) and layer.built):
            continue
        constraint = getattr(layer.kernel, "constraint", None)
        if isinstance(constraint, MaskConstraint):
            masks[layer.name] = constraint.mask
    return masks
