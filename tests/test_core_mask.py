"""Promise: the mask has exactly floor(density * size + 0.5) entries per group block,
and the weight's support is a subset of it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from _strategies import dense_shapes, feasible_density, kernel_shapes, seeds


@pytest.mark.parametrize(
    ("density", "size", "count"),
    [(0.25, 10, 3), (0.35, 10, 4), (0.5, 3, 2), (0.1, 15, 2), (1.0, 7, 7), (0.05, 10, 1)],
)
def test_rounding_rule_is_round_half_up(density, size, count):
    assert eoi_core.mask_count(density, size) == count


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=dense_shapes(), seed=seeds())
def test_dense_mask_count_is_exact(data, shape, seed):
    density = data.draw(feasible_density(shape))
    weight, mask = eoi_core.sparse_orthogonal(shape, density, rng=seed)
    assert mask.dtype == np.bool_ and mask.shape == weight.shape
    assert int(mask.sum()) == math.floor(density * math.prod(shape) + 0.5)
    assert not np.any((weight != 0) & ~mask)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layer=kernel_shapes(), seed=seeds())
def test_kernel_mask_count_is_exact_per_group_block(data, layer, seed):
    shape, groups = layer
    density = data.draw(feasible_density(shape, groups))
    weight, mask = eoi_core.sparse_orthogonal(shape, density, groups=groups, rng=seed)
    block = shape[0] // groups
    for g in range(groups):
        block_mask = mask[g * block : (g + 1) * block]
        assert int(block_mask.sum()) == eoi_core.mask_count(density, block_mask.size)
    assert not np.any((weight != 0) & ~mask)


def test_fill_entries_are_zero_valued_and_spread_over_the_kernel():
    weight, mask = eoi_core.sparse_orthogonal((32, 32, 3, 3), 0.2, rng=5)
    trainable_zeros = mask & (weight == 0)
    off_centre = np.ones((3, 3), dtype=bool)
    off_centre[1, 1] = False
    # the fill reaches every off-centre tap, not only the centre slice
    assert trainable_zeros[:, :, off_centre].sum(axis=(0, 1)).min() > 0
