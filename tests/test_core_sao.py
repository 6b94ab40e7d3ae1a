"""SAO: its density constraints, exact orthogonality, biregular expander mask, delta embedding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eoi_core
from eoi_core.sao import feasible_densities, nearest_density, sao


@st.composite
def feasible(draw):
    """A shape (dense or 1-D/2-D kernel, maybe grouped) and one of its feasible densities."""
    groups = draw(st.sampled_from([1, 1, 2]))
    out = groups * draw(st.integers(1, 24))
    cin = draw(st.integers(1, 24))
    kernel = draw(st.sampled_from([(), (), (3,), (3, 3)]))
    shape = (out, cin) + kernel
    density = draw(st.sampled_from(feasible_densities(shape, groups)))
    return shape, groups, density


@settings(max_examples=60, deadline=None)
@given(feasible(), st.integers(0, 2**32 - 1))
def test_every_feasible_density_is_exactly_orthogonal_with_the_exact_count(case, seed):
    shape, groups, density = case
    weight, mask = sao(shape, density, rng=seed, groups=groups, dtype=np.float64, gain=1.5)
    layout = eoi_core.layout.parse_layout(shape, groups)
    per_block = eoi_core.mask_count(density, layout.block_size)
    assert int(mask.sum()) == groups * per_block
    assert not weight[~mask].any()
    assert eoi_core.orthogonality_error(weight, gain=1.5, groups=groups) < 1e-12
    # Delta embedding: everything outside the centre is zero *and* untrainable.
    if len(shape) > 2:
        outside = mask.copy()
        outside[(slice(None), slice(None)) + layout.centre] = False
        assert not outside.any()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 32), st.integers(1, 32), st.integers(0, 1000))
def test_the_mask_is_biregular(rows_out, cols_in, seed):
    shape = (rows_out, cols_in)
    density = feasible_densities(shape)[0]
    _, mask = sao(shape, density, rng=seed)
    wide = mask if rows_out <= cols_in else mask.T
    degree = int(wide.sum(axis=1)[0])
    assert set(wide.sum(axis=1).tolist()) == {degree}
    assert set(wide.sum(axis=0).tolist()) == {wide.shape[0] * degree // wide.shape[1]}


def test_feasible_densities_follow_the_divisibility_rule():
    # rows = 12, cols = 18: d | 18 and 18 | 12 d  ->  d in {3, 6, 9, 18}
    assert feasible_densities((12, 18)) == [12 * d / (12 * 18) for d in (3, 6, 9, 18)]
    # a kernel puts the whole budget on the centre: densities shrink by the taps
    assert feasible_densities((16, 16, 3)) == [d / 48 for d in (1, 2, 4, 8, 16)]


def test_an_infeasible_density_names_the_nearest_feasible_ones():
    with pytest.raises(ValueError, match=r"nearest feasible densities: 0\.0625 or 0\.125"):
        sao((64, 64), 0.1)
    assert nearest_density((64, 64), 0.1) == 0.125
    assert nearest_density((64, 64), 0.05) == 0.0625


def test_densities_that_round_to_a_feasible_count_are_accepted():
    # 0.1249 * 4096 + 0.5 rounds to 512 = 64 * 8 entries: the same mask count rule as EOI.
    _, mask = sao((64, 64), 0.1249, rng=0)
    assert int(mask.sum()) == 512


def test_center_density_is_rejected():
    with pytest.raises(ValueError, match="center_density"):
        sao((16, 16, 3, 3), 1 / 9, center_density="sqrt")


def test_the_same_seed_gives_the_same_weight():
    first = sao((48, 32, 3), feasible_densities((48, 32, 3))[2], rng=7)
    second = sao((48, 32, 3), feasible_densities((48, 32, 3))[2], rng=7)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_the_values_in_a_block_are_haar_like():
    # Entries of a Haar d x d orthogonal matrix have mean 0 and variance 1/d.
    weight, mask = sao((256, 256), 16 / 256, rng=1, dtype=np.float64)
    values = weight[mask]
    assert abs(values.mean()) < 0.02
    assert math.isclose(values.var(), 1 / 16, rel_tol=0.1)
