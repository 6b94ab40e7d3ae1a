"""Masked sparse MLPs in PyTorch, initialised by any scheme of :mod:`eoi_bench.schemes`.

The mask of each layer is fixed for the whole of training: it is a buffer and
the forward pass uses ``weight * mask``, so the gradient of every masked-out
entry is exactly zero and the layer keeps its density whatever the optimiser
does.  (This module deliberately does not use ``eoi_torch``: the benchmarks
exercise the core directly.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .schemes import TANH_CRITICAL_BIAS_STD, TANH_CRITICAL_GAIN, eoi, initialise

__all__ = ["MaskedLinear", "SparseMLP", "ACTIVATIONS", "TANH_CRITICAL_GAIN", "TANH_CRITICAL_BIAS_STD"]

ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "hardtanh": F.hardtanh,
    "linear": lambda x: x,
}


class MaskedLinear(nn.Module):
    """``y = x (W * M)^T + b`` with a fixed boolean mask ``M``.

    Parameters
    ----------
    weight : ndarray ``(out, in)``
        Initial weight (entries off the mask are zeroed).
    mask : bool ndarray ``(out, in)``
    bias : ndarray ``(out,)``
    """

    def __init__(self, weight: np.ndarray, mask: np.ndarray, bias: np.ndarray):
        super().__init__()
        mask_tensor = torch.as_tensor(np.asarray(mask, dtype=np.float32))
        self.weight = nn.Parameter(torch.as_tensor(np.asarray(weight, dtype=np.float32)) * mask_tensor)
        self.bias = nn.Parameter(torch.as_tensor(np.asarray(bias, dtype=np.float32)))
        self.register_buffer("mask", mask_tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)

    @property
    def density(self) -> float:
        return float(self.mask.mean())

    def extra_repr(self) -> str:
        out, inp = self.weight.shape
        return f"in_features={inp}, out_features={out}, density={self.density:.4g}"


class SparseMLP(nn.Module):
    """A vanilla deep MLP: ``depth`` hidden layers of ``width`` units and a linear read-out.

    No residual connections and no normalisation.  Every layer (the input
    layer, the ``depth - 1`` square hidden layers and the read-out) is a
    :class:`MaskedLinear` at the same ``density``, initialised by ``scheme``
    with ``gain``; biases are ``N(0, bias_std^2)``.  Each layer draws from its
    own child of ``numpy.random.default_rng(seed)``, so a seed fixes the network.

    Parameters
    ----------
    features, classes, width, depth : int
        Input size, output size, hidden width and number of hidden layers.
    density : float in (0, 1]
    scheme : str
        A key of :data:`eoi_bench.schemes.SCHEMES`.
    activation : {"tanh", "relu", "hardtanh", "linear"}
    gain, bias_std : float
    seed : int
    angle : float, optional
        Fixed Givens angle in radians for ``scheme="eoi"`` (Appendix G); ``None`` draws uniform angles.
    """

    def __init__(
        self,
        features: int,
        classes: int,
        *,
        width: int = 128,
        depth: int = 200,
        density: float = 0.125,
        scheme: str = "eoi",
        activation: str = "tanh",
        gain: float = TANH_CRITICAL_GAIN,
        bias_std: float = TANH_CRITICAL_BIAS_STD,
        seed: int = 0,
        angle: float | None = None,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if angle is not None and scheme != "eoi":
            raise ValueError(f"angle applies only to scheme='eoi', got scheme={scheme!r}")
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]
        sizes = [features] + [width] * depth + [classes]
        generators = np.random.default_rng(seed).spawn(len(sizes) - 1)
        layers = []
        for inp, out, rng in zip(sizes[:-1], sizes[1:], generators):
            if angle is None:
                weight, mask = initialise(scheme, (out, inp), density, gain, rng)
            else:
                weight, mask = eoi((out, inp), density, gain, rng, angle=angle)
            bias = rng.standard_normal(out) * bias_std
            layers.append(MaskedLinear(weight, mask, bias))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, readout = self.layers
        for layer in hidden:
            x = self.activation(layer(x))
        return readout(x)

    @property
    def depth(self) -> int:
        return len(self.layers) - 1

    def density(self) -> float:
        """Overall fraction of trainable weights (biases excluded)."""
        total = sum(layer.mask.numel() for layer in self.layers)
        kept = sum(float(layer.mask.sum()) for layer in self.layers)
        return kept / total if total else math.nan
