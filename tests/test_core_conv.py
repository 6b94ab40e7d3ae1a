"""Promise: the delta-orthogonal embedding, its two centre-density variants, and groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from _helpers import assert_orthogonal, centre_blocks, centre_index, off_centre_taps
from _strategies import feasible_density, kernel_shapes, seeds
from eoi_core.budget import plan_budget
from eoi_core.layout import parse_layout


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
    assert not off_centre_taps(weight).any()


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
    return int(mask[centre_index(mask.shape)].sum())


def assert_centre_fills_its_budget(weight: np.ndarray, mask: np.ndarray, density: float, groups: int = 1,
                                   center_density=None) -> None:
    """Per group, the centre is orthogonal and its Givens phase used the whole centre budget.

    The phase stops at the last rotation that keeps the support within ``h``
    (``plan_budget``'s centre count).  A rotation grows each row of the wide
    ``n x m`` form by at most one entry (``n = min(out/g, in/g)``), so a phase
    that stopped because the next rotation would exceed ``h`` holds more than
    ``h - n`` non-zeros: a centre left at the identity (``n``) fails unless
    ``h`` is the floor itself.
    """
    budget = plan_budget(parse_layout(weight.shape, groups), density, center_density)
    floor = min(weight.shape[0] // groups, weight.shape[1])
    assert_orthogonal(weight, groups=groups)
    rows_per_group = weight.shape[0] // groups
    for g, block in enumerate(centre_blocks(weight, groups)):
        support = int(np.count_nonzero(block))
        assert budget.centre - floor < support <= budget.centre, (g, support, budget)
        rows = slice(g * rows_per_group, (g + 1) * rows_per_group)
        assert int(mask[rows].sum()) == budget.block  # the fill completes the block's budget exactly
        assert centre_count(mask[rows]) >= support and not np.any(weight[rows][~mask[rows]])


def test_base_variant_puts_the_layer_density_in_the_centre():
    weight, mask = eoi_core.sparse_orthogonal((64, 64, 3, 3), 0.1, rng=0)
    assert plan_budget(parse_layout(weight.shape), 0.1).centre == eoi_core.mask_count(0.1, 64 * 64)
    assert_centre_fills_its_budget(weight, mask, 0.1)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layer=kernel_shapes(), seed=seeds(), policy=st.sampled_from([None, "sqrt", "explicit"]))
def test_every_centre_is_orthogonal_and_uses_its_whole_budget(data, layer, seed, policy):
    shape, groups = layer
    density = data.draw(feasible_density(shape, groups))
    center_density = policy
    if policy == "explicit":  # any centre count between the floor and the block budget
        layout = parse_layout(shape, groups)
        size = layout.out_per_group * layout.in_per_group
        most = min(plan_budget(layout, density).block, size)
        center_density = data.draw(st.integers(layout.floor, most)) / size
    weight, mask = eoi_core.sparse_orthogonal(shape, density, groups=groups, center_density=center_density,
                                              dtype=np.float64, rng=seed)
    assert_centre_fills_its_budget(weight, mask, density, groups, center_density)


@pytest.mark.parametrize("density", [0.01, 0.05, 0.2])
def test_sqrt_variant_uses_min_of_one_dK_and_sqrt_d(density):
    shape = (32, 32, 3, 3)
    weight, mask = eoi_core.sparse_orthogonal(shape, density, center_density="sqrt", rng=0)
    taps = 9
    centre_budget = eoi_core.mask_count(min(1.0, density * taps, math.sqrt(density)), 32 * 32)
    centre_budget = min(max(centre_budget, 32), eoi_core.mask_count(density, mask.size))
    assert plan_budget(parse_layout(shape), density, "sqrt").centre == centre_budget
    assert_centre_fills_its_budget(weight, mask, density, center_density="sqrt")


def test_explicit_center_density_sets_the_centre_budget():
    weight, mask = eoi_core.sparse_orthogonal((16, 16, 3), 0.3, center_density=0.5, rng=2)
    assert plan_budget(parse_layout(weight.shape), 0.3, 0.5).centre == eoi_core.mask_count(0.5, 256)
    assert_centre_fills_its_budget(weight, mask, 0.3, center_density=0.5)


def test_even_kernels_use_index_k_minus_1_over_2():
    weight, _ = eoi_core.sparse_orthogonal((8, 8, 4, 2), 0.2, dtype=np.float64, rng=3)
    assert centre_index(weight.shape)[2:] == (1, 0)
    assert_orthogonal(weight)
    assert not off_centre_taps(weight).any()


def test_groups_are_independent_orthogonal_blocks():
    weight, mask = eoi_core.sparse_orthogonal((24, 8, 3, 3), 0.3, groups=3, dtype=np.float64, rng=4)
    assert_orthogonal(weight, groups=3)
    blocks = centre_blocks(weight, 3)
    assert not np.array_equal(blocks[0], blocks[1])
