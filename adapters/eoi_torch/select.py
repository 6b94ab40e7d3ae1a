"""Layers whose ``weight`` is a Linear/Conv matrix, selected by ``include``/``exclude``.

A small view over :func:`eoi_torch.discover.find_weights` and
:func:`eoi_core.selection.select` for tools that mask one ``weight`` per layer
(:mod:`eoi_torch.pai`); :func:`eoi_torch.sparsify` uses the full discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from eoi_core.selection import select

from .discover import SUPPORTED_LAYERS, find_weights

__all__ = ["Layer", "SUPPORTED_LAYERS", "select_layers"]


@dataclass(frozen=True)
class Layer:
    """A selected layer: its qualified name, the module, its class name, groups and weight shape."""

    name: str
    module: nn.Module
    kind: str
    groups: int
    shape: tuple[int, ...]


def select_layers(model: nn.Module, include: Any = None, exclude: Any = None) -> list[Layer]:
    """The Linear / Conv / ConvTranspose layers of ``model`` that ``include`` selects and ``exclude`` does not.

    Raises
    ------
    TypeError
        For a malformed ``include``/``exclude`` or a ``model`` that is not an ``nn.Module``.
    ValueError
        For a name that matches no module of the model, or an empty selection.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    targets = [
        t for t in find_weights(model)
        if t.supported and t.parameter == "weight" and isinstance(t.module, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    chosen = select(
        [t.name for t in targets], include, exclude,
        candidates=[name for name, _ in model.named_modules()], objects=[t.module for t in targets],
        other=(type,), other_doc="a layer type", match_other=lambda selector, module: isinstance(module, selector),
    )
    if not chosen:
        raise ValueError("no layer to select: include/exclude leave no Linear or Conv layer")
    return [Layer(targets[i].name, targets[i].module, targets[i].kind, targets[i].groups, tuple(targets[i].tensor.shape))
            for i in chosen]
