"""Dynamical isometry: a deep linear MLP sparsified with EOI has an exactly orthogonal Jacobian."""

from __future__ import annotations

import torch
from torch import nn

import eoi_torch


def test_200_layer_linear_mlp_has_all_jacobian_singular_values_one():
    torch.manual_seed(0)
    width, depth = 64, 200
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).double()
    report = eoi_torch.sparsify(model, 0.125)
    assert len(report) == depth and report.mask_count == depth * round(0.125 * width * width)

    inputs = torch.randn(width, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(model, inputs)
    singular_values = torch.linalg.svdvals(jacobian)
    assert singular_values.shape == (width,)
    assert (singular_values - 1).abs().max() < 1e-10

    # The same network at a default (dense, non-orthogonal) init is far from an isometry.
    torch.manual_seed(0)
    dense = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).double()
    dense_values = torch.linalg.svdvals(torch.autograd.functional.jacobian(dense, inputs))
    assert dense_values.max() / dense_values.min() > 1e3
