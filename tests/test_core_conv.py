"""Promise: the delta-orthogonal embedding, its two centre-density variants, and groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from _strategies import feasible_density, kernel_shapes, seeds


def circular_conv(x: np.ndarray, kernel: np.ndarray, groups: int) -> np.ndarray:
    """Grouped circular convolution (cross-correlation layout does not matter for norms).

    ``x``: ``(in, *spatial)``; ``kernel``: ``(out, in // groups, *k)``; computed by FFT.
    """
    spatial = x.shape[1:]
    axes = tuple(range(1, x.ndim))
    x_hat = np.fft.fftn(x, axes=axes)
    k_hat = np.fft.fftn(kernel, s=spatial, axes=tuple(range(2, kernel.ndim)))
    out_per_group = kernel.shape[0] // groups
    in_per_group = kernel.shape[1]
    y_hat = np.zeros((kernel.shape[0],) + spatial, dtype=complex)
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        cols = slice(g * in_per_group, (g + 1) * in_per_group)
        y_hat[rows] = np.einsum("oi...,i...->o...", k_hat[rows], x_hat[cols])
    return np.fft.ifftn(y_hat, axes=axes).real


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layer=kernel_shapes(), seed=seeds())
def test_every_tap_but_the_centre_is_zero(data, layer, seed):
    shape, groups = layer
    density = data.draw(feasible_density(shape, groups))
    weight, _ = eoi_core.sparse_orthogonal(shape, density, groups=groups, rng=seed)
    centre = tuple((k - 1) // 2 for k in shape[2:])
    off_centre = weight.copy()
    off_centre[(slice(None), slice(None)) + centre] = 0
    assert not off_centre.any()


@settings(max_examples=25, deadline=None)
@given(data=st.data(), layer=kernel_shapes(max_channels=8), seed=seeds())
def test_conv_preserves_norms_when_out_channels_cover_in_channels(data, layer, seed):
    shape, groups = layer
    out_per_group = shape[0] // groups
    if out_per_group < shape[1]:
        shape = (shape[1] * groups, shape[1]) + shape[2:]
    density = data.draw(feasible_density(shape, groups))
    weight, _ = eoi_core.sparse_orthogonal(shape, density, groups=groups, dtype=np.float64, rng=seed)
    x = np.random.default_rng(seed).standard_normal((shape[1] * groups,) + tuple(k + 3 for k in shape[2:]))
    y = circular_conv(x, weight, groups)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-10)


def centre_count(mask: np.ndarray) -> int:
    centre = tuple((k - 1) // 2 for k in mask.shape[2:])
    return int(mask[(slice(None), slice(None)) + centre].sum())


def test_base_variant_puts_the_layer_density_in_the_centre():
    weight, mask = eoi_core.sparse_orthogonal((64, 64, 3, 3), 0.1, rng=0)
    centre_support = np.count_nonzero(weight[:, :, 1, 1])
    # the Givens phase stops at the last rotation within H's budget round(0.1 * 64 * 64)
    assert 64 <= centre_support <= eoi_core.mask_count(0.1, 64 * 64)
    assert centre_count(mask) >= centre_support


@pytest.mark.parametrize("density", [0.01, 0.05, 0.2])
def test_sqrt_variant_uses_min_of_one_dK_and_sqrt_d(density):
    shape = (32, 32, 3, 3)
    weight, mask = eoi_core.sparse_orthogonal(shape, density, center_density="sqrt", rng=0)
    taps = 9
    centre_budget = eoi_core.mask_count(min(1.0, density * taps, math.sqrt(density)), 32 * 32)
    centre_budget = min(max(centre_budget, 32), eoi_core.mask_count(density, mask.size))
    support = np.count_nonzero(weight[:, :, 1, 1])
    # stops within one rotation of the centre budget: a rotation adds at most 2 * 32 entries
    assert centre_budget - 2 * 32 < support <= centre_budget
    assert int(mask.sum()) == eoi_core.mask_count(density, mask.size)


def test_explicit_center_density_sets_the_centre_budget():
    weight, mask = eoi_core.sparse_orthogonal((16, 16, 3), 0.3, center_density=0.5, rng=2)
    support = np.count_nonzero(weight[:, :, 1])
    assert eoi_core.mask_count(0.5, 256) - 32 < support <= eoi_core.mask_count(0.5, 256)


def test_even_kernels_use_index_k_minus_1_over_2():
    weight, _ = eoi_core.sparse_orthogonal((8, 8, 4, 2), 0.2, dtype=np.float64, rng=3)
    assert np.abs(weight[:, :, 1, 0].T @ weight[:, :, 1, 0] - np.eye(8)).max() < 1e-12
    weight[:, :, 1, 0] = 0
    assert not weight.any()


def test_groups_are_independent_orthogonal_blocks():
    weight, mask = eoi_core.sparse_orthogonal((24, 8, 3, 3), 0.3, groups=3, dtype=np.float64, rng=4)
    blocks = [weight[8 * g : 8 * (g + 1), :, 1, 1] for g in range(3)]
    for block in blocks:
        assert np.abs(block.T @ block - np.eye(8)).max() < 1e-12
    assert not np.array_equal(blocks[0], blocks[1])
