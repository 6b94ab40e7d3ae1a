"""``sparsify``: EOI for every supported layer of a model, masks kept by ``torch.nn.utils.parametrize``."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Mapping, Union

import torch
from torch import nn
from torch.nn.utils import parametrize

import eoi_core
from eoi_core.distributions import layer_densities

from .init import as_tensor, check_generator, check_tensor, draw_seed, generate
from .mask import EOIMask
from .report import LayerReport, SparsifyReport
from .select import Layer, select_layers

__all__ = ["sparsify"]

Selector = Union[type, str, Iterable[Union[type, str]], None]


def _check_gain_value(value: Any, where: str) -> float:
    # Same rule as the core (a finite positive real, bool excluded), with the layer named.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"gain {where} must be a finite positive real number, "
            f"got {value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"gain {where} must be a finite positive real number, got {value!r}")
    return float(value)


def _gains(gain: Any, layers: list[Layer]) -> list[float]:
    if callable(gain):
        return [
            _check_gain_value(gain(layer.module), f"returned for layer {layer.name!r} ({layer.kind})")
            for layer in layers
        ]
    value = _check_gain_value(gain, "(a number or a callable of the module)")
    return [value] * len(layers)


def _densities(distribution: Any, density: Any, layers: list[Layer]) -> list[float]:
    if isinstance(distribution, Mapping) and density is not None:
        raise ValueError(
            f"density must be None when distribution is a mapping of layer name to density "
            f"(the mapping gives every layer's density), got density={density!r}"
        )
    return layer_densities(
        distribution,
        [layer.shape for layer in layers],
        density,
        names=[layer.name for layer in layers],
        groups=[layer.groups for layer in layers],
    )


def sparsify(
    model: nn.Module,
    density: float | None,
    *,
    distribution: str | Mapping[str, float] = "erk",
    gain: float | Callable[[nn.Module], float] = 1.0,
    center_density: float | str | None = None,
    include: Selector = None,
    exclude: Selector = None,
    generator: torch.Generator | None = None,
) -> SparsifyReport:
    r"""Initialise a model's layers with EOI and keep them sparse through training.

    Every selected ``nn.Linear``, ``nn.Conv1d/2d/3d`` and
    ``nn.ConvTranspose1d/2d/3d`` weight is filled with :func:`eoi_torch.eoi_`
    at its own density, and its mask is registered with
    ``torch.nn.utils.parametrize`` (:class:`eoi_torch.EOIMask`), so that

    .. math:: \text{layer.weight} = \text{original} \odot \text{mask}

    is recomputed on every access (one element-wise multiply per forward) and
    stays exactly zero off the mask under any optimizer, weight decay
    included.  The trainable ``Parameter`` is
    ``layer.parametrizations.weight.original`` (the same object as the old
    ``layer.weight``, so an existing optimizer keeps working); the mask is a
    buffer in ``state_dict``.  Biases are untouched.

    ``ConvTranspose`` weights have layout ``(in, out // groups, *kernel)``; the
    core is given that shape and the layer's ``groups``, so each group's centre
    block ``H`` is ``(in/g, out/g)`` and the layer computes ``y = H^T x`` per
    position: norm-preserving when ``in <= out`` (``H H^T = g^2 I``). Their
    distribution score uses that shape too.

    Parameters
    ----------
    model : nn.Module
        Built (not lazy) and not yet sparsified.
    density : float in (0, 1] or None
        Target density over all selected weights (their parameter-weighted
        mean density, to within one entry per layer).  ``None`` when
        ``distribution`` is a mapping.
    distribution : {"erk", "er", "erdos_renyi", "uniform"} or mapping, optional
        How the density is spread over layers (see
        :mod:`eoi_core.distributions`; no layer goes below its orthogonal
        floor), or a mapping of qualified layer name to density covering every
        selected layer.
    gain : float or callable, optional
        A positive number for every layer, or ``gain(module) -> float`` per
        layer, e.g. ``lambda m: nn.init.calculate_gain("relu")``.
    center_density : None, float or "sqrt", optional
        Centre-tap density of convolution kernels (see :func:`eoi_torch.eoi_`);
        dense layers have no taps (their whole weight is the centre) and ignore it.
    include, exclude : type, str or iterable of these, optional
        Select layers by type (``isinstance``) or qualified name (that module
        and everything inside it).  By default every supported layer.
    generator : torch.Generator, optional
        Source of the per-layer seeds; ``None`` uses torch's default CPU
        generator, so ``torch.manual_seed`` makes the model reproducible.

    Returns
    -------
    SparsifyReport
        Per layer: shape, groups, dtype, density, mask count, gain and
        orthogonality error at init; ``print(report)`` shows a table.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, an unknown distribution, an infeasible density,
        a ``gain`` callable returning anything but a finite positive real, an
        unsupported dtype or an already sparsified layer (each naming the
        layer).  The model is left untouched: every weight is generated before
        the first one is written.

    Examples
    --------
    >>> import torch, eoi_torch
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10))
    >>> report = eoi_torch.sparsify(model, 0.1)
    >>> [layer.kind for layer in report], f"{report.density:.3f}"
    (['Conv2d', 'Linear'], '0.100')
    >>> bool((model[3].weight[~eoi_torch.masks(model)["3"]] == 0).all())
    True
    """
    check_generator(generator)
    layers = select_layers(model, include, exclude)
    for layer in layers:
        check_tensor(layer.module.weight, f"the weight of layer {layer.name!r} ({layer.kind})")
    densities = _densities(distribution, density, layers)
    gains = _gains(gain, layers)

    # Generate everything before writing anything: an error (say, an infeasible density for
    # the fifth layer) leaves the model untouched.
    generated = []
    for layer, layer_density, layer_gain in zip(layers, densities, gains):
        weight = layer.module.weight
        try:
            values, mask = generate(
                layer.shape,
                layer_density,
                weight.dtype,
                seed=draw_seed(generator),
                gain=layer_gain,
                groups=layer.groups,
                center_density=center_density if weight.dim() > 2 else None,
            )
        except (TypeError, ValueError) as error:
            raise type(error)(f"layer {layer.name!r} ({layer.kind}): {error}") from error
        generated.append((values, mask))

    rows = []
    for layer, layer_density, layer_gain, (values, mask) in zip(layers, densities, gains, generated):
        module, weight = layer.module, layer.module.weight
        with torch.no_grad():
            weight.copy_(as_tensor(values, weight.dtype))
        mask_on_device = torch.from_numpy(mask).to(weight.device)
        parametrize.register_parametrization(module, "weight", EOIMask(mask_on_device))
        rows.append(
            LayerReport(
                name=layer.name,
                kind=layer.kind,
                shape=layer.shape,
                groups=layer.groups,
                dtype=str(weight.dtype),
                density=layer_density,
                mask_count=int(mask.sum()),
                size=mask.size,
                gain=layer_gain,
                orthogonality_error=eoi_core.orthogonality_error(
                    values, gain=layer_gain, groups=layer.groups
                ),
            )
        )
    return SparsifyReport(rows)
