"""Which layers of a model :func:`sparsify` initialises.

A layer is selected when it is one of :data:`SUPPORTED_LAYERS` (or a subclass),
matches ``include`` (when given) and does not match ``exclude``.  A selector
is a layer type (matched with ``isinstance``) or a qualified name as in
``model.named_modules()`` (matching that module and everything inside it), or
an iterable of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.utils import parametrize

__all__ = ["SUPPORTED_LAYERS", "Layer", "select_layers"]

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@dataclass(frozen=True)
class Layer:
    """A selected layer: its qualified name, the module, and its weight's core layout."""

    name: str
    module: nn.Module
    # The class name before sparsify's parametrization renames the class to "Parametrized...".
    kind: str

    @property
    def groups(self) -> int:
        return int(getattr(self.module, "groups", 1))

    @property
    def shape(self) -> tuple[int, ...]:
        # The core shape is the weight's torch shape: (out, in // g, *k) for Linear/Conv and
        # (in, out // g, *k) for ConvTranspose, whose groups also split the first axis.
        return tuple(self.module.weight.shape)


def _selectors(value: Any, argument: str) -> list[type | str]:
    if value is None:
        return []
    items = [value] if isinstance(value, (str, type)) else value
    try:
        items = list(items)
    except TypeError:
        raise TypeError(
            f"{argument} must be None, a layer type, a qualified layer name or an iterable of these, "
            f"got {value!r}"
        ) from None
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, nn.Module):
                raise TypeError(f"{argument} types must be nn.Module subclasses, got {item!r}")
        elif not isinstance(item, str):
            raise TypeError(
                f"{argument} entries must be layer types or qualified layer names (str), "
                f"got {item!r} of type {type(item).__name__}"
            )
    return items


def _matches(name: str, module: nn.Module, selector: type | str) -> bool:
    if isinstance(selector, type):
        return isinstance(module, selector)
    return selector == "" or name == selector or name.startswith(selector + ".")


def _check_names(selectors: list[type | str], names: list[str], argument: str) -> None:
    # A name that matches nothing is almost always a typo; say so instead of ignoring it.
    for selector in selectors:
        if isinstance(selector, str) and not any(_matches(name, None, selector) for name in names):
            shown = ", ".join(repr(name) for name in names[:12]) + (", ..." if len(names) > 12 else "")
            raise ValueError(f"{argument} names {selector!r}, which is no module of the model ({shown})")


def select_layers(model: nn.Module, include: Any = None, exclude: Any = None) -> list[Layer]:
    """The supported layers of ``model`` that ``include`` selects and ``exclude`` does not.

    Raises
    ------
    TypeError
        For a malformed ``include``/``exclude`` or a ``model`` that is not an ``nn.Module``.
    ValueError
        For a name that is no module of the model, an ``include`` entry that can
        only select unsupported layers, a lazy or already parametrized layer, or
        an empty selection.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    included = _selectors(include, "include")
    excluded = _selectors(exclude, "exclude")
    named = list(model.named_modules())
    names = [name for name, _ in named]
    _check_names(included, names, "include")
    _check_names(excluded, names, "exclude")
    for selector in included:
        if isinstance(selector, type):
            # A subclass of a supported layer, or a base class of one (nn.Module, _ConvNd), can match.
            if not issubclass(selector, SUPPORTED_LAYERS) and not any(
                issubclass(layer, selector) for layer in SUPPORTED_LAYERS
            ):
                raise ValueError(f"include names the type {selector.__name__}, but {_supported()}")
        elif not any(
            _matches(name, module, selector) and isinstance(module, SUPPORTED_LAYERS)
            for name, module in named
        ):
            raise ValueError(f"include names {selector!r}, which holds no supported layer; {_supported()}")

    layers = []
    for name, module in named:
        if not isinstance(module, SUPPORTED_LAYERS):
            continue
        if included and not any(_matches(name, module, s) for s in included):
            continue
        if any(_matches(name, module, s) for s in excluded):
            continue
        layers.append(Layer(name, _check_layer(name, module), type(module).__name__))
    if not layers:
        raise ValueError(f"no layer to sparsify: include/exclude leave no supported layer; {_supported()}")
    _check_shared(layers)
    return layers


def _supported() -> str:
    return "sparsify supports: " + ", ".join(layer.__name__ for layer in SUPPORTED_LAYERS)


def _check_layer(name: str, module: nn.Module) -> nn.Module:
    if parametrize.is_parametrized(module, "weight") or hasattr(module, "weight_orig"):
        raise ValueError(
            f"layer {name!r} ({type(module).__name__}) already has a parametrization or pruning on its "
            "weight; sparsify a freshly built model (eoi_torch.make_permanent removes EOI masks)"
        )
    weight = getattr(module, "weight", None)
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError(
            f"layer {name!r} ({type(module).__name__}) is lazy and has no weight shape yet; "
            "run one forward pass before sparsify"
        )
    if not isinstance(weight, nn.Parameter):
        raise ValueError(f"layer {name!r} ({type(module).__name__}) has no weight Parameter to sparsify")
    return module


def _check_shared(layers: list[Layer]) -> None:
    # A weight shared by two layers would get two masks; torch's parametrization cannot express that.
    seen: dict[int, str] = {}
    for layer in layers:
        key = id(layer.module.weight)
        if key in seen:
            raise ValueError(
                f"layers {seen[key]!r} and {layer.name!r} share one weight; exclude one of them"
            )
        seen[key] = layer.name
